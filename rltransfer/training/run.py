"""Train one run: build the model, initialize it (scratch or from the source), evaluate on a
separate env at step 0 and every `eval_freq` steps, and write the run's files.

Files of a run folder: evaluations.csv, TensorBoard events, model.zip, status.json, for
transferred runs transfer.json, for runs that normalize (`vecnorm`) vecnormalize.npz, and for
runs on a randomized env contexts.json (`rltransfer.training.contexts`: the contexts its
evaluation and training episodes played).
Every file is written atomically. While an on-policy run (PPO, A2C, TRPO, RecurrentPPO,
MaskablePPO) trains, checkpoint.pt holds its weights, optimizer state and normalization
statistics as of its last evaluation, so an interrupted run continues from there
(`train_run(..., resume=True)`).
Off-policy runs (DQN, SAC, TD3, TQC, QR-DQN, CrossQ) would also need their replay buffer, and
ARS its weight vector and search state, so they restart.
"""

from __future__ import annotations

import csv
import io
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import TensorBoardOutputFormat, configure
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecCheckNan, VecEnv

from ..env_factory import make_vec
from ..errors import AlgorithmError, EncoderError
from ..io_utils import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    disk_fault,
    file_sha256,
    read_json,
    remove_stale_temporaries,
)
from ..report.board import quiet_writer_threads
from ..report.runfiles import EVAL_COLUMNS, SUCCESS_COLUMN, DamagedFile, read_evaluations  # noqa: F401  (the reader lives there)
from ..report.runfiles import read_rows as _read_rows
from ..specs import EncoderSpec, EnvSpec, RunSpec
from ..strategies import hooks as strategy
from ..strategies import registry
from . import algos, contrib, vecnorm
from .contexts import FILE as CONTEXTS
from .contexts import ContextLog, EvaluationContexts, TrainingContexts, randomized
from .features import caches_features, mlp_hparams
from .success import EpisodeSuccess
from .transfer import SyncFrozenTargets, TransferReport

EVAL_SEED_OFFSET = 100_000  # evaluation envs never share seeds with training envs
MAX_EVAL_ENVS = 32
CHECKPOINT = "checkpoint.pt"

# notify(kind, value): "start" with {"total", "resumed_from", "note"}, then "advance" with
# env steps; how a run reports to the study's progress display, in any process.
Notify = Callable[[str, Any], None]


class EvaluationCallback(BaseCallback):
    """Evaluates the deterministic policy at step 0 (before any update), then once
    `eval_freq` env steps have passed, and at the end (after the last update); logs
    `eval/mean_reward` against env steps and writes the CSV. Where the env reports success
    (`success.EpisodeSuccess`), each row also holds the evaluation's success rate and
    `eval/success_rate` is logged beside the return.

    Evaluations happen at the start of a rollout, where the policy has just been updated, so
    each row measures the latest policy. The eval env is re-seeded before every evaluation,
    so every evaluation of every run of a study starts from the same episodes.
    """

    def __init__(self, eval_env: VecEnv, eval_freq: int, n_episodes: int, csv_path: Path,
                 eval_seed: int, rows: list[dict[str, Any]] | None = None,
                 checkpoint: Callable[[], None] | None = None,
                 contexts: ContextLog | None = None) -> None:
        super().__init__()
        self.contexts = contexts  # a randomized env's: each evaluation's contexts go there
        self.eval_env, self.eval_freq, self.n_episodes = eval_env, eval_freq, n_episodes
        self.csv_path, self.eval_seed = csv_path, eval_seed
        self.rows: list[dict[str, Any]] = list(rows or [])  # kept from before a resume
        self.checkpoint = checkpoint
        self._next = (self.rows[-1]["timesteps"] // eval_freq + 1) * eval_freq if self.rows else 0
        self._start = 0.0

    def _on_training_start(self) -> None:
        self._start = time.perf_counter() - (self.rows[-1]["wall_time"] if self.rows else 0.0)
        if not self.rows:
            self._evaluate()

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self._next:
            self._evaluate()
            if self.checkpoint is not None:
                self.checkpoint()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.rows[-1]["timesteps"] < self.num_timesteps:
            self._evaluate()

    def _evaluate(self) -> None:
        vecnorm.sync(self.training_env, self.eval_env)  # the statistics training has now
        self.eval_env.seed(self.eval_seed)
        played = EvaluationContexts(self.eval_env.num_envs) if self.contexts else None
        success = EpisodeSuccess(self.eval_env.num_envs, then=played)
        # MaskablePPO's with the env's action masks; RecurrentPPO's with its LSTM states
        returns, _ = contrib.evaluate_policy(self.model, self.eval_env,
                                             n_eval_episodes=self.n_episodes, deterministic=True,
                                             return_episode_rewards=True, callback=success)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise Diverged(f"evaluation return is not finite ({mean}) — diverged?",
                           int(self.num_timesteps))
        step = int(self.num_timesteps)
        self.rows.append({"timesteps": step, "mean_return": mean, "std_return": std,
                          "n_episodes": len(returns),
                          "wall_time": round(time.perf_counter() - self._start, 3),
                          SUCCESS_COLUMN: success.rate})
        self.logger.record("eval/mean_reward", mean)
        self.logger.record("eval/std_reward", std)
        if success.rate is not None:  # an env that reports success (training.success)
            self.logger.record("eval/success_rate", success.rate)
        self.logger.dump(step)
        buffer = io.StringIO()
        # the success column only where the env reports success: others' files are unchanged
        columns = EVAL_COLUMNS + ((SUCCESS_COLUMN,) if any(
            row.get(SUCCESS_COLUMN) is not None for row in self.rows) else ())
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv_path, buffer.getvalue())
        if self.contexts is not None and played is not None:
            self.contexts.add_evaluation(step, played.contexts)
        self._next = (step // self.eval_freq + 1) * self.eval_freq


class ProgressCallback(BaseCallback):
    """Reports env steps to the study's progress display, at most twice a second."""

    def __init__(self, notify: Notify) -> None:
        super().__init__()
        self.notify = notify
        self._reported = 0
        self._last = 0.0

    def _on_training_start(self) -> None:
        self._reported = self.num_timesteps  # a resumed run starts from its checkpoint
        self._last = time.perf_counter()

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if now - self._last >= 0.5:
            self._last = now
            self._flush()
        return True

    def _on_training_end(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self.num_timesteps > self._reported:
            self.notify("advance", self.num_timesteps - self._reported)
            self._reported = self.num_timesteps


def _diverged(model: BaseAlgorithm) -> str | None:
    """The first policy parameter that is NaN or infinite, if any."""
    for name, param in model.policy.named_parameters():
        if not bool(torch.isfinite(param).all()):
            return name
    return None


class Diverged(FloatingPointError):
    """Training itself diverged (NaN/inf policy parameters or evaluation returns) at
    `timesteps`: the run is an outcome of the condition (status.json says ``diverged``), not
    a failure outside training that `resume` retries."""

    def __init__(self, message: str, timesteps: int) -> None:
        super().__init__(message)
        self.timesteps = timesteps


def _divergence_error(model: BaseAlgorithm, name: str) -> Diverged:
    return Diverged(
        f"policy parameter {name} is not finite after an update before step "
        f"{model.num_timesteps}: the loss diverged (NaN); lower the learning rate",
        int(model.num_timesteps))


class DivergenceCallback(BaseCallback):
    """Stops a run whose update made the policy's parameters NaN or infinite (a NaN loss),
    with an error that says so, instead of training on garbage. NaN observations, rewards and
    actions are caught by SB3's VecCheckNan around the training env."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        name = _diverged(self.model)
        if name is not None:
            raise _divergence_error(self.model, name)


def run_device(run: RunSpec) -> str:
    """The device `run` trains on (`auto`: CUDA for image policies when there is one)."""
    return algos.resolve_device(run.agent.device, str(run.agent.hparams.get("policy", "MlpPolicy")))


def frozen_features(run: RunSpec, venv: VecEnv) -> tuple[VecEnv, Any]:
    """`venv` for `run`, and the frozen encoder whose features replace its images, computed
    once per observation (`features.FrozenFeatures`); ``(venv, None)`` when the run's encoder
    is trained or augmented, or it has none."""
    encoder = run.agent.encoder
    if encoder is None or not caches_features(encoder):
        return venv, None
    from .features import FrozenFeatures, frozen_encoder

    built = frozen_encoder(venv, encoder, run_device(run))
    return FrozenFeatures(venv, built), built


def build_model(run: RunSpec, env: VecEnv, tensorboard_dir: Path | None = None) -> BaseAlgorithm:
    """The SB3 model for `run`, freshly initialized, logging to `tensorboard_dir`.

    An image policy's encoder (`run.agent.encoder`) is its features extractor; pretrained
    weights are applied after SB3 has built the policy (its `_build()` and ortho_init
    re-initialize the features extractor), and a trained one learns at its learning-rate
    factor. A run whose encoder is frozen and not augmented gets an MLP policy on the
    encoder's features: give it the env from `frozen_features`."""
    algo = algos.get_algorithm(run.agent.algo)
    hooks = strategy.of(run.condition)
    hparams = dict(run.agent.hparams)
    if hooks is not None:  # e.g. progressive's policy class, built by SB3 like any other
        hparams = hooks.configure(hparams, run.condition)
    encoder = run.agent.encoder
    device = run_device(run)
    cached = caches_features(encoder)
    if cached:
        hparams = mlp_hparams(hparams)
    policy = str(hparams.get("policy", "MlpPolicy"))
    contrib.check_env(algo.name, env, str(run.env))  # e.g. MaskablePPO's action masks
    if encoder and not algo.images:
        raise AlgorithmError(
            f"--algo {algo.name} has no image policy (its policies map a vector observation "
            f"to actions, without a features extractor), but {run.env} observes images: use "
            f"another --algo (ppo, sac, ...), or drop --pixels")
    kwargs = algos.model_kwargs(hparams, env.action_space, None if cached else encoder)
    with warnings.catch_warnings():
        if cached:  # an MLP on the GPU is the point: the encoder is there
            warnings.filterwarnings("ignore", "You are trying to run .* on the GPU")
        model = algo.cls(policy, env, seed=run.seed, device=device, verbose=0, **kwargs)
    if encoder and not cached:
        from .encoders import apply_pretrained

        apply_pretrained(model.policy)
    if encoder and not encoder.freeze and encoder.lr_scale != 1.0:
        from .encoders import scale_encoder_lr

        scale_encoder_lr(model, float(encoder.lr_scale))
    if tensorboard_dir is not None:
        model.set_logger(configure(str(tensorboard_dir), ["tensorboard"]))
    return model


@dataclass
class RunResult:
    """What a finished run reports back to the runner."""

    run_dir: Path
    timesteps: int
    seconds: float
    final_return: float
    transfer: TransferReport | None
    resumed_from: int | None = None  # the checkpoint's step, when it continued from one
    normalization: dict[str, Any] | None = None  # what the source's statistics did (vecnorm)

    @property
    def steps_per_second(self) -> float:
        """Steps trained in this attempt per second."""
        trained = self.timesteps - (self.resumed_from or 0)
        return trained / self.seconds if self.seconds > 0 else 0.0


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """`model.save`, but atomic."""
    buffer = io.BytesIO()
    model.save(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _ignore(kind: str, value: Any) -> None:
    pass


def one_line(err: BaseException) -> str:
    """'Type: first line of the message', for status.json and the terminal."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def train_run(run: RunSpec, run_dir: Path, *,
              source_state: dict[str, torch.Tensor] | None = None, source_label: str = "",
              notify: Notify | None = None, resume: bool = False,
              source_stats: vecnorm.Stats | None = None,
              source_env: EnvSpec | None = None) -> RunResult:
    """Train `run` into `run_dir` and return its result; status.json tracks the state
    (running, then done, failed with its error, or interrupted).

    With `resume`, an on-policy run continues from its checkpoint when it has one; otherwise
    (and always without `resume`) the files of an earlier attempt are replaced.
    `source_stats`: the source's normalization statistics (`vecnorm`), if it has any;
    `source_env`: the study's source env, for conditions that act on it while the target
    trains (`strategy.Context.source_env`)."""
    quiet_writer_threads()  # a full disk fails the run in one line, not also in a thread's
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(run_dir)  # an earlier attempt killed mid-write
    status_path = run_dir / "status.json"
    previous = read_json(status_path) if status_path.is_file() else {}
    base = {"run": run.to_dict(), "started": time.time(),
            "attempt": int(previous.get("attempt", 0)) + 1,
            "host": socket.gethostname(), "pid": os.getpid()}
    atomic_write_json(status_path, {"state": "running", **base})
    try:
        result = _train(run, run_dir, source_state, source_label, notify or _ignore, resume,
                        source_stats, source_env)
    except BaseException as err:
        state = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        diverged = ({"diverged": True, "diverged_at": err.timesteps}
                    if isinstance(err, Diverged) else {})
        try:
            atomic_write_json(status_path, {"state": state, "error": one_line(err), **base,
                                            **diverged, "ended": time.time()})
        except OSError as unwritten:  # its disk failed (full, read-only); resume runs a run
            # left "running" again. The run fails with the disk's error, its own if it was one
            # (an interruption stays one)
            if isinstance(err, KeyboardInterrupt) or disk_fault(err) is not None:
                raise err  # noqa: B904 - err keeps its own cause
            raise unwritten from err
        raise
    (run_dir / CHECKPOINT).unlink(missing_ok=True)  # model.zip now holds the final policy
    atomic_write_json(status_path, {
        "state": "done", **base, "ended": time.time(), "resumed_from": result.resumed_from,
        "timesteps": result.timesteps, "seconds": round(result.seconds, 3),
        "steps_per_second": round(result.steps_per_second, 1),
        "final_return": result.final_return,
    })
    return result


def can_checkpoint(algo: str) -> bool:
    """Whether runs of `algo` continue from checkpoints: on-policy ones carry no replay
    buffer, so their weights and optimizer state are the whole training state."""
    return issubclass(algos.get_algorithm(algo).cls, OnPolicyAlgorithm)


def _restart_point(run: RunSpec, run_dir: Path,
                   resume: bool) -> tuple[dict[str, Any] | None, list[dict[str, Any]], str]:
    """(checkpoint, evaluation rows up to it, how the run starts). Without a usable
    checkpoint, the files of an earlier attempt are removed, so no row or event is doubled."""
    path = run_dir / CHECKPOINT
    damaged = ""
    if resume and path.is_file() and can_checkpoint(run.agent.algo):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            step = int(state["num_timesteps"])
            rows = [r for r in _read_rows(run_dir / "evaluations.csv") if r["timesteps"] <= step]
        except Exception as err:  # noqa: BLE001 - damaged (torch says: weights_only=False)
            name = "evaluations.csv" if isinstance(err, DamagedFile) else CHECKPOINT
            damaged = f"its {name} was damaged ({_first_line(err)}), so it was discarded"
        else:
            if rows and rows[-1]["timesteps"] == step:
                return state, rows, f"continues from its checkpoint at step {step:,}"
    stale = [run_dir / name for name in ("evaluations.csv", "model.zip", CHECKPOINT,
                                         "transfer.json", vecnorm.NPZ, CONTEXTS)]
    stale = [p for p in stale if p.exists()] + list(run_dir.glob("events.out.tfevents.*"))
    if damaged:  # never again: a damaged checkpoint failed its run on every resume
        how = f"restarts from the start: {damaged}"
    elif not (resume and stale):
        how = ""  # a first attempt
    elif not can_checkpoint(run.agent.algo):
        state = "its replay buffer" if run.agent.algo in registry.OFF_POLICY else "its search state"
        how = (f"restarts from the start ({run.agent.algo} would also need {state}, which "
               f"checkpoints do not hold)")
    else:
        how = "restarts from the start (no checkpoint yet)"
    for old in stale:
        old.unlink(missing_ok=True)
    return None, [], how


def _first_line(err: BaseException) -> str:
    """The first line of `err`'s message, or its type (torch's are paragraphs of advice)."""
    lines = str(err).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else type(err).__name__


def _checkpointer(model: BaseAlgorithm, path: Path, frozen: Any = None) -> Callable[[], None]:
    trunks = _trunk_checksums(model, frozen) if frozen is not None else {}

    def save() -> None:
        buffer = io.BytesIO()
        state = {"num_timesteps": int(model.num_timesteps), "trunk_sha256": trunks,
                 "n_updates": int(getattr(model, "_n_updates", 0)),
                 "policy": model.policy.state_dict(),
                 "optimizer": model.policy.optimizer.state_dict()}
        normalizer = vecnorm.find(model.get_env())
        if normalizer is not None:  # plain tensors: checkpoint.pt is read with weights_only
            state["vecnormalize"] = {k: torch.from_numpy(v)
                                     for k, v in vecnorm.arrays(normalizer).items()}
        torch.save(state, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return save


def _check_trunks(state: dict[str, Any], model: BaseAlgorithm, frozen: Any) -> None:
    """A cached run's checkpoint holds only the policy on features: it continues only if its
    encoder, re-read from the weights file, is the trunk it started with."""
    if frozen is None or "trunk_sha256" not in state:
        return
    if state["trunk_sha256"] != _trunk_checksums(model, frozen):
        raise EncoderError(
            f"the encoder weights file {frozen.weights} changed since this run started, so its "
            f"checkpoint does not fit it: put the original file back, or start a new study")


def _restore(model: BaseAlgorithm, state: dict[str, Any], seed: int) -> int:
    """Load a checkpoint into a freshly built (and transferred) model; return its step."""
    step = int(state["num_timesteps"])
    model.policy.load_state_dict(state["policy"])
    model.policy.optimizer.load_state_dict(state["optimizer"])
    model.num_timesteps = step
    model._n_updates = int(state["n_updates"])  # type: ignore[attr-defined]
    normalizer = vecnorm.find(model.get_env())
    if normalizer is not None and "vecnormalize" in state:
        vecnorm.load_into(normalizer, {k: v.numpy() for k, v in state["vecnormalize"].items()})
    model.set_random_seed(seed + step)  # a fresh random stream for the rest of the run
    # TensorBoard drops what the interrupted attempt logged after the checkpoint (as
    # SummaryWriter's purge_step does), so no step appears twice.
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    for output in model.logger.output_formats:
        if isinstance(output, TensorBoardOutputFormat):
            output.writer.file_writer.add_event(
                Event(step=step + 1, session_log=SessionLog(status=SessionLog.START)))
    return step


FROZEN_FEATURES = "frozen_features"  # the name of a cached encoder in trunk checksums


def _trunk_checksums(model: BaseAlgorithm, frozen: Any) -> dict[str, str]:
    from .encoders import trunk_checksum, trunk_checksums

    if frozen is not None:
        return {FROZEN_FEATURES: trunk_checksum(frozen.trunk)}
    return trunk_checksums(model.policy)


def _encoder_record(encoder: EncoderSpec, model: BaseAlgorithm, frozen: Any) -> dict[str, Any]:
    """What transfer.json says about the image encoder: its configuration, the weights file
    and its SHA-256, how its features are computed, and each trunk copy's checksum as loaded."""
    from .encoders import PixelEncoder, describe, weights_file

    built = frozen or next(m for m in model.policy.modules() if isinstance(m, PixelEncoder))
    record = describe(built)
    path = weights_file(built.weights, built.encoder_name)
    record["weights_file"] = str(path.resolve()) if path is not None else None
    record["weights_sha256"] = file_sha256(path) if path is not None and path.is_file() else None
    record["features"] = ("computed once per observation (frozen, cached)" if frozen is not None
                          else "computed in every update")
    if not encoder.freeze:
        record["lr_scale"] = encoder.lr_scale
    record["trunk_sha256_loaded"] = _trunk_checksums(model, frozen)
    return record


def _record_transfer(run: RunSpec, run_dir: Path, model: BaseAlgorithm,
                     context: strategy.Context, frozen: Any = None,
                     ) -> tuple[TransferReport | None, dict[str, Any] | None]:
    """Start `model` as the run's condition says (its hooks' `start`) and write
    transfer.json, with the image encoder the run built; (the transfer report, the record
    written). A condition without hooks (scratch) starts as SB3 built it: (None, None)."""
    hooks = strategy.of(run.condition)
    if hooks is None:
        return None, None
    report, record = hooks.start(model, run.condition, context)
    if run.agent.encoder is not None:
        record["encoder"] = _encoder_record(run.agent.encoder, model, frozen)
    atomic_write_json(run_dir / "transfer.json", record)
    return report, record


def _callbacks(evaluation: EvaluationCallback, notify: Notify, contexts: ContextLog | None,
               report: TransferReport | None) -> list[BaseCallback]:
    """The run's own callbacks, in the order they run at each step."""
    callbacks: list[BaseCallback] = [DivergenceCallback(), evaluation, ProgressCallback(notify)]
    if contexts is not None:
        callbacks.insert(1, TrainingContexts(contexts))
    if report is not None and report.frozen_targets:
        callbacks.insert(0, SyncFrozenTargets(report.frozen_targets))
    return callbacks


def _train(run: RunSpec, run_dir: Path, source_state: dict[str, torch.Tensor] | None,
           source_label: str, notify: Notify, resume: bool,
           source_stats: vecnorm.Stats | None = None,
           source_env: EnvSpec | None = None) -> RunResult:
    checkpoint, rows, how = _restart_point(run, run_dir, resume)
    offset = int(checkpoint["num_timesteps"]) if checkpoint else 0
    normalize = vecnorm.config(dict(run.agent.hparams))  # None: the run does not normalize
    env = vecnorm.wrap(make_vec(run.env, run.agent.n_envs, seed=run.seed + offset), normalize)
    # One env per evaluation episode (SB3's evaluate_policy spreads episodes over them), so
    # the policy runs batched: evaluation would otherwise cost more than training.
    eval_env = vecnorm.wrap(make_vec(run.env, min(run.eval_episodes, MAX_EVAL_ENVS),
                                     seed=run.seed + EVAL_SEED_OFFSET), normalize, evaluation=True)
    try:
        env, frozen = frozen_features(run, env)
        if frozen is not None:
            from .features import FrozenFeatures

            eval_env = FrozenFeatures(eval_env, frozen)  # the same encoder: one copy in memory
        # NaN/inf observations, rewards or actions stop the run with SB3's own message.
        env = VecCheckNan(env, raise_exception=True)
        model = build_model(run, env, tensorboard_dir=run_dir)
        if checkpoint is not None:
            _check_trunks(checkpoint, model, frozen)  # before transfer.json is rewritten
        context = strategy.Context(run.timesteps, str(run.env), source_state, source_label,
                                   source_stats=source_stats, source_env=source_env,
                                   target_env=run.env, run_dir=run_dir)
        report, record = _record_transfer(run, run_dir, model, context, frozen)
        normalization = record.get("normalization") if record is not None else None
        if checkpoint is not None:
            _restore(model, checkpoint, run.seed)
        notify("start", {"total": run.timesteps, "resumed_from": offset, "note": how})
        contexts = (ContextLog(run.env, run_dir / CONTEXTS, offset if checkpoint else None)
                    if randomized(run.env) else None)
        evaluation = EvaluationCallback(
            eval_env, run.eval_freq, run.eval_episodes, run_dir / "evaluations.csv",
            eval_seed=run.seed + EVAL_SEED_OFFSET, rows=rows,
            checkpoint=(_checkpointer(model, run_dir / CHECKPOINT, frozen)
                        if can_checkpoint(run.agent.algo) else None), contexts=contexts)
        hooks, choice = strategy.of(run.condition), run.condition
        callbacks = _callbacks(evaluation, notify, contexts, report)
        if hooks is not None:  # e.g. a curriculum's, after the run's own
            callbacks.extend(hooks.callbacks(model, choice, context))
        start = time.perf_counter()
        added = (hooks.before_learning(model, choice, context, evaluation)
                 if hooks is not None and checkpoint is None else None)
        if added:  # e.g. replay's buffer, filled before any update
            assert record is not None  # a condition with hooks always has a record
            record.update(added)
            atomic_write_json(run_dir / "transfer.json", record)
            notify("advance", model.num_timesteps)  # env steps it took, of the budget
        prefilled = int(model.num_timesteps) if checkpoint is None else 0
        try:
            model.learn(total_timesteps=run.timesteps - offset - prefilled,
                        callback=CallbackList(callbacks), progress_bar=False,
                        reset_num_timesteps=checkpoint is None and not prefilled)
        except (ValueError, RuntimeError) as err:  # e.g. torch's check of NaN logits
            name = _diverged(model)
            if name is None:
                raise
            raise _divergence_error(model, name) from err
        seconds = time.perf_counter() - start
        if contexts is not None:
            contexts.write()  # the training episodes' contexts up to the end
        save_model(model, run_dir / "model.zip")
        vecnorm.save_npz(run_dir / vecnorm.NPZ, env)  # beside model.zip, as plain arrays
        ended = hooks.after_learning(model, choice, context) if hooks is not None else None
        if record is not None and "encoder" in record:  # the trunk as saved, beside as loaded
            record["encoder"]["trunk_sha256_saved"] = _trunk_checksums(model, frozen)
        if record is not None and (ended or "encoder" in record):
            record.update(ended or {})  # e.g. jsrl's stages reached
            atomic_write_json(run_dir / "transfer.json", record)
        model.logger.close()
    finally:
        env.close()
        eval_env.close()
    return RunResult(run_dir, int(model.num_timesteps), seconds,
                     evaluation.rows[-1]["mean_return"], report,
                     offset if checkpoint is not None else None, normalization)
