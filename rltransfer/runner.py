"""Run a study: resolve the spec, get the source policy (cache, training or a checkpoint),
train every condition x seed on the target, then summarize.

Everything the user can get wrong is checked before the study folder is created, so a bad
input never leaves a half-written study behind.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from filelock import FileLock, Timeout
from rich.console import Console
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy

from . import algos, checkpoints, vecnorm
from . import conditions as registry
from .env_factory import make_env, make_vec, resolve, reward_threshold
from .errors import (
    CheckpointError,
    ConfigError,
    HyperparameterError,
    OutputError,
    RLTransferError,
    SourceFailedError,
)
from .execution import Execution, Job, Outcome, make_backend
from .features import caches_features
from .io_utils import atomic_write_json, file_sha256, read_json, remove_stale_temporaries
from .kickstart import check_teacher
from .metrics import ASYMPTOTE_WINDOW
from .normalization import Normalization, RandomScore, choose, derived_warning, human_scores
from .normalization import source_score as evaluations_score
from .pixels import is_image_observation
from .progress import StudyProgress
from .replay import check as check_replay
from .specs import AgentSpec, EnvSpec, RunSpec, stable_hash
from .study_spec import STUDY_FORMAT, ResolvedStudySpec, StudySpec, flat_spec
from .training import (
    EVAL_SEED_OFFSET,
    MAX_EVAL_ENVS,
    build_model,
    frozen_features,
    read_evaluations,
)
from .transfer import apply_transfer, check_algorithm, check_options, load_checkpoint

CACHE_DIR = ".cache/sources"
RUN_CACHE_DIR = ".cache/scratch"  # finished scratch runs, reused by studies with the same target


@dataclass(frozen=True)
class Plan:
    """A resolved study: every default filled in, the agents for source and target."""

    spec: ResolvedStudySpec
    source_agent: AgentSpec
    target_agent: AgentSpec
    encoder_agent: AgentSpec | None = None  # the target agent of the pretrained-encoder condition

    @property
    def study_dir(self) -> Path:
        return self.spec.study_dir

    def source_run(self) -> RunSpec:
        spec = self.spec
        return RunSpec(spec.env.source, self.source_agent, "scratch", spec.protocol.seed,
                       spec.source_timesteps, max(spec.source_timesteps // 20, 1),
                       spec.protocol.eval_episodes)

    def agent_for(self, condition: str) -> AgentSpec:
        if registry.get(condition).image_encoder:
            assert self.encoder_agent is not None
            return self.encoder_agent
        return self.target_agent

    def policy_run(self) -> RunSpec:
        """A target run that uses the policy's own network (the one source weights go into)."""
        run = self.target_runs()[0]
        return dataclasses.replace(run, agent=self.target_agent, condition=registry.REFERENCE)

    def target_runs(self) -> list[RunSpec]:
        spec = self.spec
        return [RunSpec(spec.env.target, self.agent_for(condition), condition, seed,
                        spec.timesteps, spec.eval_freq, spec.protocol.eval_episodes)
                for condition in spec.transfer.conditions for seed in spec.protocol.seed_list]


def _preset(spec: StudySpec, env: EnvSpec, algo: algos.Algorithm) -> dict[str, Any]:
    family, base_id, _ = resolve(env)
    ids = [env.id, base_id] + (list(family.env_ids) if family else [])
    if base_id.startswith("ALE/"):
        ids.append("atari")  # RL-Zoo keys its Atari hyperparameters by "atari"
    preset = algos.preset(algo.name, ids)
    given = spec.agent.hparams
    hparams = {**preset, **given}
    if isinstance(preset.get("policy_kwargs"), dict) and isinstance(
            given.get("policy_kwargs"), dict):  # override the tuned table key by key
        hparams["policy_kwargs"] = {**preset["policy_kwargs"], **given["policy_kwargs"]}
    algos.validate_hparams(algo, hparams)
    return hparams


def _observe(spec: StudySpec, env: EnvSpec, hparams: dict[str, Any],
             algo: algos.Algorithm) -> tuple[EnvSpec, bool]:
    """`env` with the study's observation options, and whether it observes images."""
    env = dataclasses.replace(env, pixels=spec.env.pixels, image_size=spec.env.image_size,
                              grayscale=spec.env.grayscale)
    probe = make_env(env)
    try:
        algos.check_action_space(algo, probe.action_space, str(env))
        image = is_image_observation(probe.observation_space)
    finally:
        probe.close()
    default_stack = int(hparams.get("frame_stack", 4 if image else 1))
    return dataclasses.replace(env, frame_stack=spec.env.frame_stack or default_stack), image


def _agent(spec: StudySpec, hparams: dict[str, Any], env: EnvSpec, image: bool,
           algo: algos.Algorithm, encoder: dict[str, Any] | None = None) -> AgentSpec:
    hparams = dict(hparams)
    if image:
        if hparams.get("policy", "MlpPolicy") == "MlpPolicy":
            hparams["policy"] = "CnnPolicy"
        encoder = encoder or {"encoder": "nature-cnn"}
        hparams["policy_kwargs"] = {
            **(hparams.get("policy_kwargs") or {}),
            "features_extractor": {**encoder, "frame_stack": env.frame_stack,
                                   "augment": spec.agent.augment},
        }
    return AgentSpec(algo.name, hparams, spec.agent.n_envs or hparams.get("n_envs", 1),
                     spec.agent.device)


def plan(spec: StudySpec) -> Plan:
    """Validate `spec` against the environments and algorithms and fill in every default."""
    spec.validate()
    weights = spec.transfer.encoder_weights
    if weights not in ("imagenet", "none"):  # workers may run in other folders
        spec = spec.update(encoder_weights=str(Path(weights).resolve()))
    algo = algos.get_algorithm(spec.agent.algo)
    source_hparams = _preset(spec, spec.env.source, algo)
    target_hparams = _preset(spec, spec.env.target, algo)
    if spec.transfer.source_model is not None:  # its network, for the source and every target
        source_hparams, target_hparams = checkpoints.adopt_network(
            spec.transfer.source_model, algo, spec.agent.hparams, source_hparams, target_hparams)
    source, source_image = _observe(spec, spec.env.source, source_hparams, algo)
    target, target_image = _observe(spec, spec.env.target, target_hparams, algo)
    source_agent = _agent(spec, source_hparams, source, source_image, algo)
    target_agent = _agent(spec, target_hparams, target, target_image, algo)
    encoder_agent = None
    if any(registry.get(c).image_encoder for c in spec.transfer.conditions):
        if not target_image:
            raise ConfigError(f"the pretrained-encoder condition needs image observations, but "
                              f"{spec.env.target} observes vectors: add --pixels")
        encoder_agent = _agent(spec, target_hparams, target, True, algo,
                               spec.transfer.encoder_config())
    algos.resolve_device(spec.agent.device,
                         str(target_agent.hparams.get("policy", "MlpPolicy")))
    protocol = spec.protocol
    timesteps = protocol.timesteps or target_hparams.get("n_timesteps", 100_000)
    name = spec.output.name or "{}--{}--{}-{}".format(
        spec.env.source.slug, spec.env.target.slug, algo.name, time.strftime("%Y%m%d-%H%M%S"))
    given = spec.update(
        algo=algo.name, source=source, target=target, timesteps=timesteps,
        source_timesteps=protocol.source_timesteps or source_hparams.get("n_timesteps",
                                                                         100_000),
        eval_freq=protocol.eval_freq or max(timesteps // 20, 1),
        n_envs=target_agent.n_envs, name=name, frame_stack=target.frame_stack)
    resolved = ResolvedStudySpec(given.env, given.agent, given.transfer, given.protocol,
                                 given.output)
    return Plan(resolved, source_agent, target_agent, encoder_agent)


RANDOM_EPISODES = 100  # the random policy's return anchors every normalized score
RANDOM_STEP_CAP = 50_000  # but long-episode games (Atari) should not take minutes


def random_return(env: EnvSpec, episodes: int, seed: int) -> RandomScore:
    """Mean and std of the uniformly random policy's returns on `env` (the 0 of the normalized
    score; the std sizes an evaluation's standard error), over `episodes` episodes, or fewer
    (at least 10) once RANDOM_STEP_CAP steps are spent."""
    instance = make_env(env)
    instance.action_space.seed(seed)
    totals: list[float] = []
    steps = 0
    try:
        for episode in range(episodes):
            if len(totals) >= 10 and steps >= RANDOM_STEP_CAP:
                break
            instance.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, _ = instance.step(instance.action_space.sample())
                total += float(reward)
                steps += 1
                done = terminated or truncated
            totals.append(total)
    finally:
        instance.close()
    return RandomScore(float(np.mean(totals)), float(np.std(totals, ddof=1)) if len(totals) > 1
                       else 0.0, len(totals))


def check_writable(out: Path) -> None:
    """Raise OutputError unless files can be created in `out`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(
            f"cannot write to --out {out}: {err.strerror or err}; choose a folder you can write"
        ) from None


def versions() -> dict[str, str]:
    """The versions of Python and the packages that shape a result."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    # Asked once per process: every cache key needs them, and each lookup scans sys.path.
    names = ["rltransfer", "gymnasium", "stable-baselines3", "torch", "numpy", "scipy"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return tuple(found.items())


@dataclass
class Source:
    """The source policy's weights and where they came from."""

    state_dict: dict[str, torch.Tensor]
    label: str
    record: dict[str, Any]


def _probe_model(run: RunSpec) -> BaseAlgorithm:
    """Build `run`'s model once, so a hyperparameter value SB3 rejects is a user error here,
    before the study folder exists, not a traceback mid-study."""
    env = make_vec(run.env, run.agent.n_envs, run.seed)
    try:
        env, _ = frozen_features(run, env)  # reads the encoder's weights file, as a run will
        return build_model(run, env)
    except _MODEL_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HyperparameterError(
            f"cannot build {run.agent.algo} for {run.env} with these hyperparameters "
            f"({type(err).__name__}: {reason}): fix --hparams"
        ) from None
    finally:
        env.close()


_MODEL_ERRORS = (TypeError, ValueError, AssertionError, KeyError, NotImplementedError,
                 IndexError, gym.error.Error)


def _check_external(plan_: Plan) -> Source | None:
    """Load --source-model and make sure it fits the source and transfers to the target,
    before anything is written."""
    if plan_.spec.transfer.source_model is None:
        return None
    model = plan_.spec.transfer.source_model
    path = checkpoints.resolve_source_model(model)  # hf:// in the hub cache
    checkpoint = load_checkpoint(path)
    check_algorithm(checkpoint, plan_.spec.agent.algo)
    stats = vecnorm.source_stats(path)  # a refused vecnormalize.pkl stops the study here
    source_model = _probe_model(plan_.source_run())
    fit = apply_transfer(source_model, checkpoint.state_dict, "finetune", str(path))
    if fit.copied != len(fit.tensors):
        raise CheckpointError(
            f"{path} does not fit {plan_.spec.env.source} with this study's network "
            f"({fit.summary()})"
            f": give a checkpoint trained on SOURCE or set --hparams policy_kwargs to its network"
        )
    if plan_.spec.transfers:
        target = _probe_model(plan_.policy_run())
        _probe_teachers(plan_, target, checkpoint.state_dict, source_model, str(path))
        apply_transfer(target, checkpoint.state_dict, "finetune", str(path))
    # Its score on the source env: the threshold for targets that register none. It then
    # plays as many episodes as the last ASYMPTOTE_WINDOW evaluations of a trained source.
    window = ASYMPTOTE_WINDOW if _derives_threshold(plan_) else 1
    episodes = plan_.spec.protocol.eval_episodes * window
    source_env = make_vec(plan_.spec.env.source, min(episodes, MAX_EVAL_ENVS),
                          plan_.spec.protocol.seed + EVAL_SEED_OFFSET)
    try:
        source_env.seed(plan_.spec.protocol.seed + EVAL_SEED_OFFSET)
        source_env = vecnorm.evaluation_env(source_env, stats[0] if stats else None,
                                            dict(plan_.source_agent.hparams))
        score, _ = evaluate_policy(source_model, source_env, n_eval_episodes=episodes)
    finally:
        source_env.close()
    record = {"kind": "external", "path": os.path.abspath(path), "sha256": file_sha256(path),
              "algo_in_checkpoint": checkpoint.algo, "trained_steps": 0,
              "final_return": float(score), "score": float(score),
              "score_from": f"source checkpoint's mean return over {episodes} episodes on "
                            f"{plan_.spec.env.source}",
              **checkpoints.source_record(plan_.spec.transfer.source_model, path, checkpoint)}
    return Source(checkpoint.state_dict, str(path), record)


def _derives_threshold(plan_: Plan) -> bool:
    """Whether the threshold will be the source's own score (nothing else gives one)."""
    target = plan_.spec.env.target
    return (plan_.spec.protocol.threshold is None and human_scores(target) is None
            and reward_threshold(target) is None)


def encoder_note(plan_: Plan) -> str | None:
    """One line on how the pretrained-encoder condition computes its features, or None."""
    if plan_.encoder_agent is None:
        return None
    encoder = algos.encoder_config(dict(plan_.encoder_agent.hparams)) or {}
    if caches_features(encoder):
        return ("pretrained-encoder: the frozen encoder's features are computed once per "
                "observation and reused by every update")
    if encoder.get("freeze"):
        return (f"warning: --augment {encoder.get('augment')} changes the images at every "
                f"update, so the frozen encoder's features cannot be cached: it runs again on "
                f"every sample of every update (several times slower)")
    return None


def _probe_encoder(plan_: Plan) -> None:
    """Build the pretrained-encoder model (its weights file read as a run will), first: an
    unusable file is then an error at once, before the random policy is measured."""
    if plan_.encoder_agent is not None:
        _probe_model(next(r for r in plan_.target_runs()
                          if registry.get(r.condition).image_encoder))


def _probe(plan_: Plan, train_source: bool) -> None:
    """Build every model the study will train; dry-run the transfer from a fresh source (or
    from the cached one the study will reuse)."""
    target = _probe_model(plan_.policy_run())
    for condition in plan_.spec.transfer.conditions:  # e.g. freeze-features:layers=k fits
        check_options(target.policy, condition)
        # replay: the prefill fits the budget and the buffer; a dataset is there and fits
        check_replay(target, condition, plan_.spec.timesteps, None, "", str(plan_.spec.env.target))
    if train_source:
        cached = _source_from_cache(plan_)
        if cached is not None:
            # Trained from this very run spec, so its model builds; the weights the study
            # will transfer dry-run the transfer.
            if plan_.spec.transfers:
                state = load_checkpoint(cached / "model.zip").state_dict
                label = f"the cached {plan_.spec.env.source} policy"
                if _takes_policy(plan_):  # a teacher's spaces: those of the source's model
                    _probe_teachers(plan_, target, state, _probe_model(plan_.source_run()),
                                    label)
                apply_transfer(target, state, "finetune", label)
            return
        source = _probe_model(plan_.source_run())
        if plan_.spec.transfers:
            label = f"the {plan_.spec.env.source} policy"
            _probe_teachers(plan_, target, source.policy.state_dict(), source, label)
            apply_transfer(target, source.policy.state_dict(), "finetune", label)


def _takes_policy(plan_: Plan) -> bool:
    return any(registry.get(c).takes in (registry.POLICY, registry.TRANSITIONS)  # replay's too
               for c in plan_.spec.transfer.conditions)


def _probe_teachers(plan_: Plan, target: BaseAlgorithm, state: dict[str, torch.Tensor],
                    source: BaseAlgorithm, label: str) -> None:
    """Conditions that take the source policy as a teacher: it must fit the target's policy
    (`kickstart.check_teacher`: spaces, network, algorithm)."""
    for condition in plan_.spec.transfer.conditions:
        if registry.get(condition).takes == registry.POLICY:
            check_teacher(target, state, (source.observation_space, source.action_space),
                          condition, label)
        if registry.parse(condition).needs_source:  # replay: the source acts on the target
            check_replay(target, condition, plan_.spec.timesteps, state, label,
                         str(plan_.spec.env.target))


def source_key(run: RunSpec) -> str:
    """Cache key of a source policy: its run spec plus the versions that shape the result."""
    pinned = {k: v for k, v in versions().items()
              if k in ("rltransfer", "stable-baselines3", "torch", "gymnasium")}
    return stable_hash({"run": run.cache_key, "versions": pinned})


def _scratch_cache(plan_: Plan, run: RunSpec) -> Path:
    return Path(plan_.spec.output.out) / RUN_CACHE_DIR / source_key(run)


def _reuse_scratch(plan_: Plan, run: RunSpec, run_dir: Path) -> str | None:
    """Copy a finished identical scratch run instead of training it again; its cache key."""
    cache = _scratch_cache(plan_, run)
    status = cache / "status.json"
    if not status.is_file() or read_json(status).get("state") != "done":
        return None
    _copy_atomically(cache, run_dir)
    return cache.name


def _copy_atomically(folder: Path, to: Path) -> None:
    """Replace `to` with a copy of `folder`; an interruption leaves the old `to` or the new
    one whole, never a "done" status.json without the files it vouches for."""
    tmp = to.with_name(f".{to.name}.copy-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    shutil.rmtree(to, ignore_errors=True)
    tmp.rename(to)


def _store_scratch(plan_: Plan, run: RunSpec, run_dir: Path) -> None:
    cache = _scratch_cache(plan_, run)
    if cache.exists():
        return
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir, tmp)
    try:
        tmp.rename(cache)
    except OSError:  # another study stored the same run meanwhile
        shutil.rmtree(tmp, ignore_errors=True)


def _source_from_cache(plan_: Plan) -> Path | None:
    """The cached source policy's folder, when there is one to reuse."""
    cache = Path(plan_.spec.output.out) / CACHE_DIR / source_key(plan_.source_run())
    if (cache / "model.zip").is_file() and not plan_.spec.transfer.retrain_source:
        return cache
    return None


def _store_source(plan_: Plan, trained: Path) -> Path:
    """Copy a source policy trained in a study into the cache; return the cache folder."""
    run = plan_.source_run()
    key = source_key(run)
    cache = Path(plan_.spec.output.out) / CACHE_DIR / key
    atomic_write_json(trained / "spec.json", run.to_dict())
    if cache.exists() and not plan_.spec.transfer.retrain_source:
        return cache  # another study cached the same source meanwhile: keep that one
    tmp = cache.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(trained, tmp, ignore=shutil.ignore_patterns("source.json"))
    if cache.exists():  # --retrain-source: swap in the new policy
        old = cache.with_name(f"{key}.old-{os.getpid()}")
        cache.rename(old)
        shutil.rmtree(old)
    try:
        tmp.rename(cache)
    except OSError:  # another study stored it between our check and now
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def _source_record(plan_: Plan, folder: Path, cache: Path, reused: bool) -> Source:
    """The source policy in `folder` (the study's source/), cached as `cache`."""
    checkpoint = load_checkpoint(folder / "model.zip")
    steps, returns = read_evaluations(folder / "evaluations.csv")
    score, used = evaluations_score(steps, returns)
    status = read_json(folder / "status.json") if (folder / "status.json").is_file() else {}
    record = {"kind": "cache", "cache": str(cache.resolve()), "key": cache.name,
              "reused": reused, "trained_steps": 0 if reused else status.get("timesteps", 0),
              "final_return": float(returns[-1]), "score": score,
              "score_from": f"source's mean return over its last {used} evaluation"
                            f"{'s' if used != 1 else ''} on {plan_.spec.env.source}",
              "run": plan_.source_run().to_dict()}
    return Source(checkpoint.state_dict, f"cache:{cache.name}", record)


LOCK_FILE = ".lock"


class StudyLock:
    """An exclusive lock on a study folder while a process writes it, so a second study
    started on the same folder stops with a clear error instead of interleaving files.

    `filelock`'s native (flock) lock, with its fallback to a soft lock turned off: a flock
    dies with its process (kill -9 included), a soft lock would outlive it. The holder writes
    its pid and host into the lock file (read, never truncated, by a process that fails to
    get the lock), and removes the file before it releases the lock."""

    def __init__(self, study_dir: Path) -> None:
        self.study_dir = study_dir
        self.path = study_dir / LOCK_FILE
        self.created = False
        self._lock: FileLock | None = None

    def __enter__(self) -> StudyLock:
        try:
            self.study_dir.mkdir(parents=True)
            self.created = True
        except FileExistsError:
            pass
        lock = FileLock(self.path, timeout=0, thread_local=False, fallback_to_soft=False,
                        on_acquired=_write_holder)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = self.path.read_text(encoding="utf-8").strip()
            except OSError:
                holder = ""
            raise OutputError(f"{self.study_dir} is in use by {holder or 'another process'} "
                              f"(lock file {self.path}): wait for that study to finish, or "
                              f"choose another --name") from None
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self.path.unlink(missing_ok=True)  # while still locked: no one can hold it stale
            self._lock.release()
            self._lock = None


def _write_holder(fd: int) -> None:
    """Write who holds the lock into the lock file (filelock's on_acquired hook)."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"rltransfer pid {os.getpid()} on {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())


def _run_states(study_dir: Path, runs: list[RunSpec]) -> dict[str, str]:
    """'condition/seed_k' -> state in its status.json ('missing' without one)."""
    states = {}
    for run in runs:
        path = study_dir / run_key(run) / "status.json"
        states[run_key(run)] = read_json(path).get("state", "?") if path.is_file() else "missing"
    return states


def run_key(run: RunSpec) -> str:
    return f"{run.condition}/seed_{run.seed}"


def _existing_study(study_dir: Path) -> dict[str, Any] | None:
    """study.json of the study already in `study_dir`; None if the folder holds nothing."""
    if (study_dir / "study.json").is_file():
        return read_json(study_dir / "study.json")
    others = [p.name for p in study_dir.iterdir() if p.name != LOCK_FILE]
    if others:
        raise OutputError(f"{study_dir} exists and is not a study folder (it holds "
                          f"{', '.join(sorted(others)[:3])}): choose another --name")
    return None


_IGNORED_ON_RESUME = ("out", "name", "retrain_source")


def _check_same_study(plan_: Plan, record: dict[str, Any], study_dir: Path) -> None:
    # compared flat, so a study.json of any format compares; an option added after the
    # study was started had its default value then (flat_spec)
    before = {k: v for k, v in flat_spec(record["spec"]).items() if k not in _IGNORED_ON_RESUME}
    now = {k: v for k, v in flat_spec(plan_.spec.to_dict()).items()
           if k not in _IGNORED_ON_RESUME}
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        key = changed[0]
        raise OutputError(
            f"{study_dir} was started with other options ({key}: {before.get(key)!r} there, "
            f"{now.get(key)!r} now): resume it with 'python -m rltransfer resume {study_dir}', "
            f"or choose another --name for a new study")


def run_study(spec: StudySpec, *, command: str = "", console: Console | None = None,
              execution: Execution | None = None, resume: bool = False) -> Path:
    """Run a whole study (or, with `resume`, finish one) and return its folder.

    Runs that fail are marked failed and the study goes on; the summary reports them."""
    console = console or Console()
    execution = execution or Execution()
    execution.validate()
    if resume and spec.output.name is None:
        raise ConfigError("--resume needs --name NAME, the study to finish (or run "
                          "'python -m rltransfer resume runs/<study>')")
    plan_ = plan(spec)
    check_writable(Path(plan_.spec.output.out))
    study_dir = plan_.study_dir
    with StudyLock(study_dir) as lock:
        try:
            _run_locked(plan_, command, console, execution, resume)
        except BaseException:
            states = _run_states(study_dir, plan_.target_runs()) if study_dir.is_dir() else {}
            if lock.created and set(states.values()) <= {"missing", "pending"} \
                    and not (study_dir / "source" / "status.json").is_file():
                shutil.rmtree(study_dir, ignore_errors=True)  # nothing trained: no half study
            raise
    return study_dir


def resume_study(study_dir: Path, *, console: Console | None = None,
                 execution: Execution | None = None) -> Path:
    """Finish the study in `study_dir` with the options it was started with."""
    study_dir = Path(study_dir).resolve()
    record = load_study(study_dir)
    spec = StudySpec.from_dict(record["spec"]).update(out=str(study_dir.parent),
                                                      name=study_dir.name)
    return run_study(spec, command=record.get("command", ""), console=console,
                     execution=execution, resume=True)


def _start_record(plan_: Plan, command: str) -> tuple[dict[str, Any], Source | None]:
    """Check everything a new study needs before its first file, and its study.json."""
    _probe_encoder(plan_)
    external = _check_external(plan_)
    eval_seed = plan_.spec.protocol.seed + EVAL_SEED_OFFSET
    random = random_return(plan_.spec.env.target,
                           max(plan_.spec.protocol.eval_episodes, RANDOM_EPISODES), eval_seed)
    known = _threshold(plan_, random, external)  # None: wait for the source's score
    _probe(plan_, _needs_source(plan_, known, external))
    record: dict[str, Any] = {
        "format": STUDY_FORMAT, "spec": plan_.spec.to_dict(), "command": command,
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": None,
        "source_agent": plan_.source_agent.to_dict(),
        "target_agent": plan_.target_agent.to_dict(),
        "target_random_return": random.mean,
        "measured_random_return": random.mean, "measured_random_std": random.std,
        "measured_random_episodes": random.episodes,
    }
    if known is not None:
        record.update(known.record())
    return record, external


def _recorded_random(record: dict[str, Any]) -> RandomScore:
    """The measured random returns of a study.json (a study started before the std was
    recorded has none: its threshold is then checked against the mean only)."""
    mean = record.get("measured_random_return", record["target_random_return"])
    return RandomScore(float(mean), record.get("measured_random_std"),
                       int(record.get("measured_random_episodes", 0)))


def _needs_source(plan_: Plan, known: Normalization | None, external: Source | None) -> bool:
    return external is None and (plan_.spec.transfers or known is None)


def _run_locked(plan_: Plan, command: str, console: Console, execution: Execution,
                resume: bool) -> None:
    study_dir = plan_.study_dir
    record = _existing_study(study_dir)
    if record is not None and not resume:
        states = _run_states(study_dir, plan_.target_runs())
        done = sum(state == "done" for state in states.values())
        raise OutputError(
            f"{study_dir} already holds a study ({done} of {len(states)} runs done): pass "
            f"--resume to finish it, or choose another --name for a new study")
    external: Source | None = None
    if record is None:
        if resume:
            console.print(f"--resume: {study_dir} has no study yet; starting it", markup=False)
        record, external = _start_record(plan_, command)
    else:
        _check_same_study(plan_, record, study_dir)
    study = _Study(plan_, record, console, execution, resume)
    study.run(external)


class _Study:
    """The scheduling of one study: the source first, runs that need it after it, scratch
    runs at once; on any backend; failures recorded and the rest carried on."""

    def __init__(self, plan_: Plan, record: dict[str, Any], console: Console,
                 execution: Execution, resume: bool) -> None:
        self.plan, self.record, self.console = plan_, record, console
        self.execution, self.resume = execution, resume
        self.dir = plan_.study_dir.resolve()  # absolute: Ray tasks may run elsewhere
        self.threads = execution.torch_threads()
        self.source_error: str | None = None
        self.threshold_warned = False

    def _save(self) -> None:
        atomic_write_json(self.dir / "study.json", self.record)

    def _source(self, external: Source | None) -> tuple[str | None, str, Job | None]:
        """(checkpoint path, label) of a source that is ready, or the job that trains it
        (into the study's source/ folder, from where it is copied into the cache)."""
        if external is not None:
            self.record["source"] = external.record
            atomic_write_json(self.dir / "source" / "source.json", external.record)
            return str(external.record["path"]), external.label, None
        known = self.record.get("source")
        if known and known.get("kind") == "external":
            return str(known["path"]), str(known["path"]), None
        if known and (self.dir / "source" / "model.zip").is_file():
            return str(self.dir / "source" / "model.zip"), f"cache:{known['key']}", None
        if not (self.plan.spec.transfers or "threshold" not in self.record):
            return None, "", None
        status = self.dir / "source" / "status.json"
        if status.is_file() and read_json(status).get("state") == "done":  # trained, then cut
            cache = _store_source(self.plan, self.dir / "source")
            return self._adopt_source(cache, reused=False), f"cache:{cache.name}", None
        cache = _source_from_cache(self.plan)
        if cache is not None:
            self.console.print(f"source: reusing cached policy {cache.name} (0 training steps)",
                               markup=False)
            _copy_atomically(cache, self.dir / "source")
            return self._adopt_source(cache, reused=True), f"cache:{cache.name}", None
        run = self.plan.source_run()
        return None, "", Job("source", f"source {run.env} seed {run.seed}", run,
                             str(self.dir / "source"), resume=self.resume, threads=self.threads)

    def _adopt_source(self, cache: Path, reused: bool) -> str:
        """Record the source in study/source (cached as `cache`) and the threshold it sets."""
        source = _source_record(self.plan, self.dir / "source", cache, reused)
        atomic_write_json(self.dir / "source" / "source.json", source.record)
        self.record["source"] = source.record
        if "threshold" not in self.record:
            known = _threshold(self.plan, _recorded_random(self.record), source, required=True)
            assert known is not None
            self.record.update(known.record())
            self._warn_threshold()
        self._save()
        return str(self.dir / "source" / "model.zip")

    def _target_jobs(self, progress: StudyProgress) -> list[Job]:
        """A job per run not done yet; done runs (and cached scratch runs) are skipped."""
        jobs = []
        for run in self.plan.target_runs():
            key = run_key(run)
            run_dir = self.dir / key
            status = run_dir / "status.json"
            state = read_json(status).get("state") if status.is_file() else None
            label = f"{run.condition} seed {run.seed}"
            if state == "done":
                progress.skip_run(label, run.timesteps, "done before this resume")
                continue
            if run.condition == "scratch" and (cached := _reuse_scratch(self.plan, run, run_dir)):
                progress.skip_run(label, run.timesteps,
                                  f"reused cached run {cached} (0 training steps)")
                continue
            if state is None:
                atomic_write_json(status, {"state": "pending", "run": run.to_dict()})
            elif self.resume and state != "pending":
                progress.print(f"{label}: was {state}; runs again")
            jobs.append(Job(key, label, run, str(run_dir), resume=self.resume,
                            threads=self.threads))
        return jobs

    def run(self, external: Source | None) -> None:
        remove_stale_temporaries(self.dir)  # e.g. study.json's, if a kill cut a write short
        for partial in self.dir.glob("*/.seed_*.copy-*"):  # a cached run's copy, cut short
            shutil.rmtree(partial, ignore_errors=True)
        self.record.setdefault("executions", []).append(
            {**self.execution.describe(), "resume": self.resume,
             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.record["ended"] = None
        self._save()
        source_path, source_label, source_job = self._source(external)
        runs = self.plan.target_runs()
        total = sum(r.timesteps for r in runs) + (source_job.run.timesteps if source_job else 0)
        conditions = ", ".join(self.plan.spec.transfer.conditions)
        self.console.print(f"study {self.dir}: {len(runs)} target runs ({conditions} x "
                           f"{self.plan.spec.protocol.seeds} seeds) on {self._where()}",
                           markup=False, highlight=False, soft_wrap=True)
        self._warn_threshold()
        note = encoder_note(self.plan)
        if note:
            self.console.print(note, markup=False, highlight=False, soft_wrap=True,
                               style="yellow" if note.startswith("warning") else None)
        with StudyProgress(self.console, total, len(runs) + int(source_job is not None)) as bar:
            self.progress = bar
            jobs = self._target_jobs(bar)
            ready: deque[Job] = deque([source_job] if source_job else [])
            waiting: list[Job] = []
            for job in jobs:
                if registry.parse(job.run.condition).needs_source and source_path is None:
                    waiting.append(job)
                else:
                    ready.append(dataclasses.replace(job, source=source_path,
                                                     source_label=source_label))
            self._schedule(ready, waiting)
        self.record["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.record["executions"][-1]["ended"] = self.record["ended"]
        self._save()
        if self.source_error is not None:
            raise SourceFailedError(
                f"the source run failed ({self.source_error}), so no transfer run could start; "
                f"fix the cause, then: python -m rltransfer resume {self.dir}")

    def _warn(self, text: str) -> None:
        printer = getattr(self, "progress", None)
        if printer is not None:
            printer.print(f"warning: {text}", style="yellow")
        else:
            self.console.print(f"warning: {text}", style="yellow", markup=False,
                               highlight=False, soft_wrap=True)

    def _warn_threshold(self) -> None:
        """Say so, loudly, when the threshold is (or will be) the source's own score."""
        record = self.record
        if record.get("threshold_warning") and not self.threshold_warned:
            self._warn(f"{record['threshold_warning']} (threshold {record['threshold']:g}, "
                       f"{record['threshold_from']})")
            self.threshold_warned = True
        elif "threshold" not in record:
            self._warn(derived_warning(self.plan.spec.env.target, self.plan.spec.env.source))
        if record.get("normalization_note"):
            self._warn(record["normalization_note"])

    def _where(self) -> str:
        e = self.execution
        if e.backend == "ray":
            return (f"Ray ({e.address or 'local instance'}, {e.cpus_per_run or 1:g} CPU and "
                    f"{e.gpus_per_run or 0:g} GPU per run)")
        if e.n_workers == 1:
            return f"1 worker (this process), {e.torch_threads()} torch thread(s)"
        return f"{e.n_workers} worker processes, {e.torch_threads()} torch thread(s) each"

    def _schedule(self, ready: deque[Job], waiting: list[Job]) -> None:
        in_flight: dict[str, Job] = {}
        at_once = _at_once(ready, waiting)
        if self.execution.backend == "local" and self.execution.n_workers > 1 and at_once == 1:
            self.progress.print("one run to train at a time: it trains in this process")
        backend = make_backend(self.execution, lambda event: self._event(event, in_flight),
                               at_once)
        finished = False
        try:
            while ready or in_flight:
                while ready and len(in_flight) < backend.capacity:
                    job = ready.popleft()
                    backend.submit(job)
                    in_flight[job.key] = job
                for event in backend.wait(0.25):
                    if event[0] != "done":
                        self._event(event, in_flight)
                        continue
                    job = in_flight.pop(event[1])
                    released = self._finished(job, event[2], waiting)
                    ready.extend(released)
                    if released or job.key == "source":
                        waiting.clear()
            finished = True
        finally:
            backend.close(interrupted=not finished)

    def _event(self, event: tuple[str, str, Any], in_flight: dict[str, Job]) -> None:
        kind, key, value = event
        job = in_flight.get(key)
        if job is None:
            return
        if kind == "start":
            self.progress.start_run(key, job.label, value["total"], value["resumed_from"])
            if value.get("note"):
                self.progress.print(f"{job.label}: {value['note']}")
        elif kind == "advance":
            self.progress.advance(key, int(value))

    def _finished(self, job: Job, outcome: Outcome, waiting: list[Job]) -> list[Job]:
        """Record a finished job; return the jobs it releases (the source's dependents)."""
        if outcome.ok and job.key == "source":
            try:
                cache = _store_source(self.plan, Path(job.run_dir))
                path = self._adopt_source(cache, reused=False)
            except (RLTransferError, OSError) as err:  # e.g. its score is not above random
                outcome = dataclasses.replace(outcome, ok=False, error=str(err))
        if outcome.interrupted:
            self.progress.interrupt_run(job.key, job.label)
            return []
        if not outcome.ok:
            self._failed(job, outcome.error)
            if job.key == "source":
                self.source_error = outcome.error
                for dependent in waiting:
                    self._failed(dependent, f"the source run failed ({outcome.error})")
            return []
        note = f", final return {outcome.final_return:.1f}"
        if outcome.transfer:
            note += f"; {outcome.transfer}"
        self.progress.finish_run(job.key, job.run.timesteps, note)
        if job.key == "source":
            return [dataclasses.replace(d, source=path, source_label=f"cache:{cache.name}")
                    for d in waiting]
        if job.run.condition == "scratch" and outcome.resumed_from is None:
            _store_scratch(self.plan, job.run, Path(job.run_dir))  # only uninterrupted runs
        return []

    def _failed(self, job: Job, error: str) -> None:
        status = Path(job.run_dir) / "status.json"
        current = read_json(status) if status.is_file() else {}
        if current.get("state") != "failed":  # e.g. its worker died, or it never started
            atomic_write_json(status, {**current, "state": "failed", "error": error,
                                       "run": job.run.to_dict(), "ended": time.time()})
        self.progress.fail_run(job.key, job.label, error, job.run.timesteps)


def _at_once(ready: deque[Job], waiting: list[Job]) -> int:
    """The most jobs that can run at the same time: the ready ones, or, once the source (if
    it is among them) is done, the others and the jobs that wait for it."""
    if waiting and any(job.key == "source" for job in ready):
        return max(len(ready), len(ready) - 1 + len(waiting))
    return len(ready)


def _threshold(plan_: Plan, random: RandomScore, source: Source | None,
               required: bool = False) -> Normalization | None:
    """The study's normalization (`normalization.choose`): --threshold, else Atari's
    human-normalized score, else the target's reward_threshold, else the source policy's mean
    score over its last evaluations; None while that score is not known yet."""
    spec = plan_.spec
    return choose(spec.env.target, spec.env.source, spec.protocol.threshold, random,
                  spec.protocol.eval_episodes, source.record if source is not None else None,
                  required=required)


def load_study(study_dir: Path) -> dict[str, Any]:
    """study.json of a study folder, with a clear error when it is not one."""
    path = study_dir / "study.json"
    if not path.is_file():
        raise OutputError(f"{study_dir} is not a study folder (no study.json): give runs/<study>")
    return read_json(path)

