"""Train one run: build the model, initialize it (scratch or from the source), evaluate on a
separate env at step 0 and every `eval_freq` steps, and write the run's files.

Files of a run folder: evaluations.csv, TensorBoard events, model.zip, status.json and, for
transferred runs, transfer.json. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure
from stable_baselines3.common.vec_env import VecEnv

from . import algos
from .env_factory import make_vec
from .io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text
from .progress import StudyProgress
from .specs import SOURCE_CONDITIONS, RunSpec
from .transfer import SyncFrozenTargets, TransferReport, apply_transfer

EVAL_COLUMNS = ("timesteps", "mean_return", "std_return", "n_episodes", "wall_time")
EVAL_SEED_OFFSET = 100_000  # evaluation envs never share seeds with training envs
MAX_EVAL_ENVS = 32


def read_evaluations(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, mean_return) from an evaluations.csv."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = np.array([int(r["timesteps"]) for r in rows], dtype=np.int64)
    returns = np.array([float(r["mean_return"]) for r in rows], dtype=np.float64)
    return steps, returns


class EvaluationCallback(BaseCallback):
    """Evaluates the deterministic policy at step 0 (before any update), then once
    `eval_freq` env steps have passed, and at the end (after the last update); logs
    `eval/mean_reward` against env steps and writes the CSV.

    Evaluations happen at the start of a rollout, where the policy has just been updated, so
    each row measures the latest policy. The eval env is re-seeded before every evaluation,
    so every evaluation of every run of a study starts from the same episodes.
    """

    def __init__(self, eval_env: VecEnv, eval_freq: int, n_episodes: int, csv_path: Path,
                 eval_seed: int) -> None:
        super().__init__()
        self.eval_env, self.eval_freq, self.n_episodes = eval_env, eval_freq, n_episodes
        self.csv_path, self.eval_seed = csv_path, eval_seed
        self.rows: list[dict[str, Any]] = []
        self._next = 0
        self._start = 0.0

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()
        self._evaluate()

    def _on_rollout_start(self) -> None:
        if self.num_timesteps >= self._next:
            self._evaluate()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self.rows[-1]["timesteps"] < self.num_timesteps:
            self._evaluate()

    def _evaluate(self) -> None:
        self.eval_env.seed(self.eval_seed)
        returns, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes,
                                     deterministic=True, return_episode_rewards=True)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise FloatingPointError(f"evaluation return is not finite ({mean}) — diverged?")
        step = int(self.num_timesteps)
        self.rows.append({"timesteps": step, "mean_return": mean, "std_return": std,
                          "n_episodes": len(returns),
                          "wall_time": round(time.perf_counter() - self._start, 3)})
        self.logger.record("eval/mean_reward", mean)
        self.logger.record("eval/std_reward", std)
        self.logger.dump(step)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EVAL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv_path, buffer.getvalue())
        self._next = (step // self.eval_freq + 1) * self.eval_freq


class ProgressCallback(BaseCallback):
    """Feeds env steps to the study's progress display."""

    def __init__(self, progress: StudyProgress) -> None:
        super().__init__()
        self.progress = progress
        self._reported = 0

    def _on_step(self) -> bool:
        if self.num_timesteps - self._reported >= 512:
            self._flush()
        return True

    def _on_training_end(self) -> None:
        self._flush()

    def _flush(self) -> None:
        self.progress.advance(self.num_timesteps - self._reported)
        self._reported = self.num_timesteps


def build_model(run: RunSpec, env: VecEnv, tensorboard_dir: Path | None = None) -> BaseAlgorithm:
    """The SB3 model for `run`, freshly initialized, logging to `tensorboard_dir`."""
    algo = algos.get_algorithm(run.agent.algo)
    policy = str(run.agent.hparams.get("policy", "MlpPolicy"))
    device = algos.resolve_device(run.agent.device, policy)
    kwargs = algos.model_kwargs(dict(run.agent.hparams), env.action_space)
    model = algo.cls(policy, env, seed=run.seed, device=device, verbose=0, **kwargs)
    encoder = algos.encoder_config(dict(run.agent.hparams))
    if encoder and not encoder.get("freeze") and encoder.get("lr_scale", 1.0) != 1.0:
        from .encoders import scale_encoder_lr

        scale_encoder_lr(model, float(encoder["lr_scale"]))
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

    @property
    def steps_per_second(self) -> float:
        return self.timesteps / self.seconds if self.seconds > 0 else 0.0


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """`model.save`, but atomic."""
    buffer = io.BytesIO()
    model.save(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def train_run(run: RunSpec, run_dir: Path, *,
              source_state: dict[str, torch.Tensor] | None = None, source_label: str = "",
              progress: StudyProgress | None = None) -> RunResult:
    """Train `run` into `run_dir` and return its result; status.json tracks the state."""
    run_dir.mkdir(parents=True, exist_ok=True)
    status_path = run_dir / "status.json"
    started = time.time()
    atomic_write_json(status_path, {"state": "running", "started": started,
                                    "run": run.to_dict()})
    try:
        result = _train(run, run_dir, source_state, source_label, progress)
    except BaseException as err:
        state = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        atomic_write_json(status_path, {"state": state, "error": f"{type(err).__name__}: {err}",
                                        "started": started, "ended": time.time(),
                                        "run": run.to_dict()})
        raise
    atomic_write_json(status_path, {
        "state": "done", "started": started, "ended": time.time(), "run": run.to_dict(),
        "timesteps": result.timesteps, "seconds": round(result.seconds, 3),
        "steps_per_second": round(result.steps_per_second, 1),
        "final_return": result.final_return,
    })
    return result


def _train(run: RunSpec, run_dir: Path, source_state: dict[str, torch.Tensor] | None,
           source_label: str, progress: StudyProgress | None) -> RunResult:
    env = make_vec(run.env, run.agent.n_envs, seed=run.seed)
    # One env per evaluation episode (SB3's evaluate_policy spreads episodes over them), so
    # the policy runs batched: evaluation would otherwise cost more than training.
    eval_env = make_vec(run.env, min(run.eval_episodes, MAX_EVAL_ENVS),
                        seed=run.seed + EVAL_SEED_OFFSET)
    try:
        model = build_model(run, env, tensorboard_dir=run_dir)
        report = None
        encoder = algos.encoder_config(dict(run.agent.hparams))
        if run.condition in SOURCE_CONDITIONS:
            if source_state is None:
                raise ValueError(f"condition {run.condition} needs source weights")
            report = apply_transfer(model, source_state, run.condition, source_label)
            record = report.to_dict()
        else:
            record = {"condition": run.condition, "source": None}
        if encoder is not None:
            from .encoders import describe

            record["encoder"] = describe({k: v for k, v in encoder.items() if k != "lr_scale"},
                                         model.observation_space)
            if not encoder.get("freeze") and "lr_scale" in encoder:
                record["encoder"]["lr_scale"] = encoder["lr_scale"]
        if report is not None or run.condition == "pretrained-encoder":
            atomic_write_json(run_dir / "transfer.json", record)
        evaluation = EvaluationCallback(eval_env, run.eval_freq, run.eval_episodes,
                                        run_dir / "evaluations.csv",
                                        eval_seed=run.seed + EVAL_SEED_OFFSET)
        callbacks: list[BaseCallback] = [evaluation]
        if report is not None and report.frozen_targets:
            callbacks.insert(0, SyncFrozenTargets(report.frozen_targets))
        if progress is not None:
            callbacks.append(ProgressCallback(progress))
        start = time.perf_counter()
        model.learn(total_timesteps=run.timesteps, callback=CallbackList(callbacks),
                    progress_bar=False)
        seconds = time.perf_counter() - start
        save_model(model, run_dir / "model.zip")
        model.logger.close()
    finally:
        env.close()
        eval_env.close()
    return RunResult(run_dir, int(model.num_timesteps), seconds,
                     evaluation.rows[-1]["mean_return"], report)
