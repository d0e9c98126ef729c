"""Run a study: resolve the spec, get the source policy (cache, training or a checkpoint),
train every condition x seed on the target, then summarize.

Everything the user can get wrong is checked before the study folder is created, so a bad
input never leaves a half-written study behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy

from . import algos
from .env_factory import make_env, make_vec, resolve, reward_threshold
from .errors import CheckpointError, ConfigError, HyperparameterError, OutputError
from .io_utils import atomic_write_json, read_json
from .pixels import is_image_observation
from .progress import StudyProgress
from .specs import AgentSpec, EnvSpec, RunSpec, StudySpec, stable_hash
from .training import EVAL_SEED_OFFSET, MAX_EVAL_ENVS, build_model, read_evaluations, train_run
from .transfer import apply_transfer, check_algorithm, load_checkpoint

CACHE_DIR = ".cache/sources"
RUN_CACHE_DIR = ".cache/scratch"  # finished scratch runs, reused by studies with the same target


@dataclass(frozen=True)
class Plan:
    """A resolved study: every default filled in, the agents for source and target."""

    spec: StudySpec
    source_agent: AgentSpec
    target_agent: AgentSpec
    encoder_agent: AgentSpec | None = None  # the target agent of the pretrained-encoder condition

    @property
    def study_dir(self) -> Path:
        assert self.spec.name is not None
        return Path(self.spec.out) / self.spec.name

    def source_run(self) -> RunSpec:
        spec = self.spec
        assert spec.source_timesteps is not None
        return RunSpec(spec.source, self.source_agent, "scratch", spec.seed,
                       spec.source_timesteps, max(spec.source_timesteps // 20, 1),
                       spec.eval_episodes)

    def agent_for(self, condition: str) -> AgentSpec:
        if condition == "pretrained-encoder":
            assert self.encoder_agent is not None
            return self.encoder_agent
        return self.target_agent

    def policy_run(self) -> RunSpec:
        """A target run that uses the policy's own network (the one source weights go into)."""
        run = self.target_runs()[0]
        return dataclasses.replace(run, agent=self.target_agent, condition="scratch")

    def target_runs(self) -> list[RunSpec]:
        spec = self.spec
        assert spec.timesteps is not None and spec.eval_freq is not None
        return [RunSpec(spec.target, self.agent_for(condition), condition, seed, spec.timesteps,
                        spec.eval_freq, spec.eval_episodes)
                for condition in spec.conditions for seed in spec.seed_list]


def _preset(spec: StudySpec, env: EnvSpec, algo: algos.Algorithm) -> dict[str, Any]:
    family, base_id, _ = resolve(env)
    ids = [env.id, base_id] + (list(family.env_ids) if family else [])
    if base_id.startswith("ALE/"):
        ids.append("atari")  # RL-Zoo keys its Atari hyperparameters by "atari"
    preset = algos.preset(algo.name, ids)
    hparams = {**preset, **spec.hparams}
    if isinstance(preset.get("policy_kwargs"), dict) and isinstance(
            spec.hparams.get("policy_kwargs"), dict):  # override the tuned table key by key
        hparams["policy_kwargs"] = {**preset["policy_kwargs"], **spec.hparams["policy_kwargs"]}
    algos.validate_hparams(algo, hparams)
    return hparams


def _observe(spec: StudySpec, env: EnvSpec, hparams: dict[str, Any],
             algo: algos.Algorithm) -> tuple[EnvSpec, bool]:
    """`env` with the study's observation options, and whether it observes images."""
    env = dataclasses.replace(env, pixels=spec.pixels, image_size=spec.image_size,
                              grayscale=spec.grayscale)
    probe = make_env(env)
    try:
        algos.check_action_space(algo, probe.action_space, str(env))
        image = is_image_observation(probe.observation_space)
    finally:
        probe.close()
    default_stack = int(hparams.get("frame_stack", 4 if image else 1))
    return dataclasses.replace(env, frame_stack=spec.frame_stack or default_stack), image


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
                                   "augment": spec.augment},
        }
    return AgentSpec(algo.name, hparams, spec.n_envs or hparams.get("n_envs", 1), spec.device)


def plan(spec: StudySpec) -> Plan:
    """Validate `spec` against the environments and algorithms and fill in every default."""
    spec.validate()
    algo = algos.get_algorithm(spec.algo)
    source_hparams = _preset(spec, spec.source, algo)
    target_hparams = _preset(spec, spec.target, algo)
    source, source_image = _observe(spec, spec.source, source_hparams, algo)
    target, target_image = _observe(spec, spec.target, target_hparams, algo)
    source_agent = _agent(spec, source_hparams, source, source_image, algo)
    target_agent = _agent(spec, target_hparams, target, target_image, algo)
    encoder_agent = None
    if "pretrained-encoder" in spec.conditions:
        if not target_image:
            raise ConfigError(f"the pretrained-encoder condition needs image observations, but "
                              f"{spec.target} observes vectors: add --pixels")
        encoder_agent = _agent(spec, target_hparams, target, True, algo, {
            "encoder": spec.encoder, "weights": spec.encoder_weights,
            "freeze": spec.freeze_encoder, "lr_scale": spec.encoder_lr_scale})
    algos.resolve_device(spec.device, str(target_agent.hparams.get("policy", "MlpPolicy")))
    timesteps = spec.timesteps or target_hparams.get("n_timesteps", 100_000)
    name = spec.name or "{}--{}--{}-{}".format(
        spec.source.slug, spec.target.slug, algo.name, time.strftime("%Y%m%d-%H%M%S"))
    resolved = dataclasses.replace(
        spec, algo=algo.name, source=source, target=target, timesteps=timesteps,
        source_timesteps=spec.source_timesteps or source_hparams.get("n_timesteps", 100_000),
        eval_freq=spec.eval_freq or max(timesteps // 20, 1),
        n_envs=target_agent.n_envs, name=name, frame_stack=target.frame_stack,
    )
    return Plan(resolved, source_agent, target_agent, encoder_agent)


RANDOM_EPISODES = 100  # the random policy's return anchors every normalized score
RANDOM_STEP_CAP = 50_000  # but long-episode games (Atari) should not take minutes


def random_return(env: EnvSpec, episodes: int, seed: int) -> float:
    """Mean return of the uniformly random policy on `env` (the 0 of the normalized score),
    over `episodes` episodes, or fewer (at least 10) once RANDOM_STEP_CAP steps are spent."""
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
    return float(np.mean(totals))


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
    names = ["rltransfer", "gymnasium", "stable-baselines3", "torch", "numpy", "scipy"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


@dataclass
class Source:
    """The source policy's weights and where they came from."""

    state_dict: dict[str, torch.Tensor]
    label: str
    record: dict[str, Any]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _probe_model(run: RunSpec) -> BaseAlgorithm:
    """Build `run`'s model once, so a hyperparameter value SB3 rejects is a user error here,
    before the study folder exists, not a traceback mid-study."""
    env = make_vec(run.env, run.agent.n_envs, run.seed)
    try:
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
    if plan_.spec.source_model is None:
        return None
    path = Path(plan_.spec.source_model)
    checkpoint = load_checkpoint(path)
    check_algorithm(checkpoint, plan_.spec.algo)
    source_model = _probe_model(plan_.source_run())
    fit = apply_transfer(source_model, checkpoint.state_dict, "finetune", str(path))
    if fit.copied != len(fit.tensors):
        raise CheckpointError(
            f"{path} does not fit {plan_.spec.source} with this study's network ({fit.summary()})"
            f": give a checkpoint trained on SOURCE or set --hparams policy_kwargs to its network"
        )
    if plan_.spec.transfers:
        apply_transfer(_probe_model(plan_.policy_run()), checkpoint.state_dict, "finetune",
                       str(path))
    # Its score on the source env: the default threshold for targets that register none.
    source_env = make_vec(plan_.spec.source, min(plan_.spec.eval_episodes, MAX_EVAL_ENVS),
                          plan_.spec.seed + EVAL_SEED_OFFSET)
    try:
        source_env.seed(plan_.spec.seed + EVAL_SEED_OFFSET)
        score, _ = evaluate_policy(source_model, source_env,
                                   n_eval_episodes=plan_.spec.eval_episodes)
    finally:
        source_env.close()
    record = {"kind": "external", "path": str(path.resolve()), "sha256": _sha256(path),
              "algo_in_checkpoint": checkpoint.algo, "trained_steps": 0,
              "final_return": float(score)}
    return Source(checkpoint.state_dict, str(path), record)


def _probe(plan_: Plan, train_source: bool) -> None:
    """Build every model the study will train; dry-run the transfer from a fresh source."""
    runs = plan_.target_runs()
    target = _probe_model(plan_.policy_run())
    if plan_.encoder_agent is not None:  # the image encoder, its weights file
        _probe_model(next(r for r in runs if r.condition == "pretrained-encoder"))
    if train_source:
        source = _probe_model(plan_.source_run())
        if plan_.spec.transfers:
            apply_transfer(target, source.policy.state_dict(), "finetune",
                           f"the {plan_.spec.source} policy")


def source_key(run: RunSpec) -> str:
    """Cache key of a source policy: its run spec plus the versions that shape the result."""
    pinned = {k: v for k, v in versions().items()
              if k in ("rltransfer", "stable-baselines3", "torch", "gymnasium")}
    return stable_hash({"run": run.cache_key, "versions": pinned})


def _scratch_cache(plan_: Plan, run: RunSpec) -> Path:
    return Path(plan_.spec.out) / RUN_CACHE_DIR / source_key(run)


def _reuse_scratch(plan_: Plan, run: RunSpec, run_dir: Path, progress: StudyProgress) -> bool:
    """Copy a finished identical scratch run instead of training it again."""
    cache = _scratch_cache(plan_, run)
    status = cache / "status.json"
    if not status.is_file() or read_json(status).get("state") != "done":
        return False
    shutil.copytree(cache, run_dir)
    progress.reused_run(f"scratch seed {run.seed}", run.timesteps,
                        f"reused cached run {cache.name} (0 training steps)")
    return True


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


def _cached_source(plan_: Plan, progress: StudyProgress) -> Source:
    run = plan_.source_run()
    key = source_key(run)
    cache = Path(plan_.spec.out) / CACHE_DIR / key
    reused = (cache / "model.zip").is_file() and not plan_.spec.retrain_source
    trained = 0
    if reused:
        progress.console.print(f"source: reusing cached policy {key} (0 training steps)",
                               markup=False)
    else:
        tmp = cache.with_name(f"{key}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        progress.start_run(f"source {run.env} seed {run.seed}", run.timesteps)
        try:
            result = train_run(run, tmp, progress=progress)
            atomic_write_json(tmp / "spec.json", run.to_dict())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # never leave half a cache entry
            raise
        progress.finish_run(f", final return {result.final_return:.1f}")
        trained = result.timesteps
        if cache.exists() and not plan_.spec.retrain_source:
            shutil.rmtree(tmp)  # another study cached the same source meanwhile: use it
        else:
            if cache.exists():  # --retrain-source: swap in the new policy
                old = cache.with_name(f"{key}.old-{os.getpid()}")
                cache.rename(old)
                shutil.rmtree(old)
            tmp.rename(cache)
    checkpoint = load_checkpoint(cache / "model.zip")
    _, returns = read_evaluations(cache / "evaluations.csv")
    record = {"kind": "cache", "cache": str(cache.resolve()), "key": key, "reused": reused,
              "trained_steps": trained, "final_return": float(returns[-1]),
              "run": run.to_dict()}
    return Source(checkpoint.state_dict, f"cache:{key}", record)


def run_study(spec: StudySpec, *, command: str = "", console: Console | None = None) -> Path:
    """Run a whole study and return its folder."""
    console = console or Console()
    plan_ = plan(spec)
    check_writable(Path(plan_.spec.out))
    study_dir = plan_.study_dir
    if study_dir.exists() and any(study_dir.iterdir()):
        raise OutputError(f"{study_dir} already exists and is not empty: choose another --name")
    external = _check_external(plan_)
    eval_seed = plan_.spec.seed + EVAL_SEED_OFFSET
    random_score = random_return(plan_.spec.target, max(plan_.spec.eval_episodes, RANDOM_EPISODES),
                                 eval_seed)
    known = _threshold(plan_, random_score, external)  # None: wait for the source's score
    train_source = external is None and (plan_.spec.transfers or known is None)
    _probe(plan_, train_source)

    study_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "spec": plan_.spec.to_dict(), "command": command, "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": None,
        "source_agent": plan_.source_agent.to_dict(),
        "target_agent": plan_.target_agent.to_dict(),
        "target_random_return": random_score,
    }
    runs = plan_.target_runs()
    total = sum(r.timesteps for r in runs) + (plan_.source_run().timesteps if train_source else 0)
    target_started = False
    try:
        atomic_write_json(study_dir / "study.json", record)
        console.print(f"study {study_dir}: {len(runs)} target runs "
                      f"({', '.join(plan_.spec.conditions)} x {plan_.spec.seeds} seeds)",
                      markup=False)
        with StudyProgress(console, total, len(runs) + int(train_source)) as progress:
            source = external
            if train_source:
                source = _cached_source(plan_, progress)
                shutil.copytree(source.record["cache"], study_dir / "source")
            if source is not None:
                atomic_write_json(study_dir / "source" / "source.json", source.record)
                record["source"] = source.record
            known = known or _threshold(plan_, random_score, source, required=True)
            assert known is not None
            record["threshold"], record["threshold_from"] = known
            atomic_write_json(study_dir / "study.json", record)
            for run in runs:
                target_started = True
                run_dir = study_dir / run.condition / f"seed_{run.seed}"
                if run.condition == "scratch" and _reuse_scratch(plan_, run, run_dir, progress):
                    continue
                progress.start_run(f"{run.condition} seed {run.seed}", run.timesteps)
                result = train_run(run, run_dir, progress=progress,
                                   source_state=source.state_dict if source else None,
                                   source_label=source.label if source else "")
                note = f", final return {result.final_return:.1f}"
                if result.transfer is not None:
                    note += f"; {result.transfer.summary()}"
                progress.finish_run(note)
                if run.condition == "scratch":
                    _store_scratch(plan_, run, run_dir)
    except BaseException:
        if not target_started:  # nothing of the study's own yet: leave no half study behind
            shutil.rmtree(study_dir, ignore_errors=True)
        raise
    record["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(study_dir / "study.json", record)
    return study_dir


def _threshold(plan_: Plan, random_score: float, source: Source | None,
               required: bool = False) -> tuple[float, str] | None:
    """(threshold, where it came from): --threshold, else the target's reward_threshold,
    else the source policy's final score; None while that score is not known yet."""
    given = plan_.spec.threshold
    if given is not None:
        threshold, origin = float(given), "--threshold"
    elif (registered := reward_threshold(plan_.spec.target)) is not None:
        threshold, origin = float(registered), "target reward_threshold"
    elif source is not None and "final_return" in source.record:
        threshold, origin = float(source.record["final_return"]), "source final score"
    elif not required:
        return None
    else:
        raise ConfigError(
            f"{plan_.spec.target} registers no reward_threshold and there is no source score: "
            f"pass --threshold"
        )
    if threshold <= random_score:
        raise ConfigError(
            f"threshold {threshold:g} ({origin}) is not above the random policy's return "
            f"{random_score:.4g} on {plan_.spec.target}: pass a higher --threshold"
        )
    return threshold, origin


def load_study(study_dir: Path) -> dict[str, Any]:
    """study.json of a study folder, with a clear error when it is not one."""
    path = study_dir / "study.json"
    if not path.is_file():
        raise OutputError(f"{study_dir} is not a study folder (no study.json): give runs/<study>")
    return read_json(path)

