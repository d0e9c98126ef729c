"""One run's files: evaluations.csv from step 0, TensorBoard tags, status, transfer.json."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rltransfer.io_utils import read_json
from rltransfer.specs import EnvSpec, RunSpec
from rltransfer.training.run import EVAL_COLUMNS, train_run
from rltransfer.training.transfer import load_checkpoint


def test_scratch_run_writes_its_files(tmp_path, tiny_agent):
    run = RunSpec(EnvSpec("CartPole-v1"), tiny_agent, "scratch", 3, 512, 128, 2)
    result = train_run(run, tmp_path / "run")
    with open(tmp_path / "run" / "evaluations.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == EVAL_COLUMNS
    assert [int(r["timesteps"]) for r in rows] == [0, 128, 256, 384, 512]
    assert all(int(r["n_episodes"]) == 2 for r in rows)
    status = read_json(tmp_path / "run" / "status.json")
    assert status["state"] == "done" and status["timesteps"] == result.timesteps == 512
    assert not (tmp_path / "run" / "transfer.json").exists()
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert "eval/mean_reward" in events.Tags()["scalars"]
    assert "train/value_loss" in events.Tags()["scalars"]  # SB3's own scalars too
    scalars = events.Scalars("eval/mean_reward")
    assert [s.step for s in scalars] == [0, 128, 256, 384, 512]
    assert [s.value for s in scalars] == [float(r["mean_return"]) for r in rows]


def test_runs_with_the_same_seed_give_the_same_curve(tmp_path, tiny_agent):
    run = RunSpec(EnvSpec("CartPole-v1"), tiny_agent, "scratch", 0, 256, 128, 2)
    train_run(run, tmp_path / "a")
    train_run(run, tmp_path / "b")
    curves = []
    for folder in "ab":
        with open(tmp_path / folder / "evaluations.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert tuple(rows[0]) == EVAL_COLUMNS
        assert [int(r["timesteps"]) for r in rows] == [0, 128, 256]
        curves.append([{k: v for k, v in r.items() if k != "wall_time"} for r in rows])
    assert curves[0] == curves[1]  # every column but the wall time, digit for digit


def test_transferred_run_writes_transfer_json(tmp_path, tiny_agent):
    source = RunSpec(EnvSpec("CartPole-v1"), tiny_agent, "scratch", 0, 256, 128, 2)
    train_run(source, tmp_path / "source")
    weights = load_checkpoint(tmp_path / "source" / "model.zip").state_dict
    target = RunSpec(EnvSpec.parse("Acrobot-v1"), tiny_agent, "freeze-features", 0, 256, 128, 2)
    result = train_run(target, tmp_path / "target", source_state=weights, source_label="src")
    data = read_json(tmp_path / "target" / "transfer.json")
    assert data["condition"] == "freeze-features" and data["source"] == "src"
    assert data["summary"] == result.transfer.summary()
    assert any(t["frozen"] for t in data["tensors"])


def test_last_evaluation_scores_the_saved_model(tmp_path, tiny_agent):
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    from rltransfer.env_factory import make_vec
    from rltransfer.training.run import EVAL_SEED_OFFSET

    run = RunSpec(EnvSpec("CartPole-v1"), tiny_agent, "scratch", 0, 256, 128, 4)
    result = train_run(run, tmp_path / "run")
    model = PPO.load(tmp_path / "run" / "model.zip", device="cpu")  # our own file
    env = make_vec(run.env, 4, seed=run.seed + EVAL_SEED_OFFSET)
    env.seed(run.seed + EVAL_SEED_OFFSET)
    score, _ = evaluate_policy(model, env, n_eval_episodes=4, deterministic=True)
    assert score == result.final_return


def test_a_run_whose_policy_diverges_is_recorded_as_an_outcome(tiny_agent, tmp_path,
                                                                 monkeypatch):
    """The policy's weights become NaN after the first update (patched in, as a too-high
    learning rate would make them): status.json says diverged and from which step, the
    evaluations before it are kept, and the report stage reads the run as an outcome."""
    import json

    import torch

    from rltransfer.report.runfiles import collect_runs
    from rltransfer.training import run as training

    real = training._diverged

    def poisoned(model):
        if model.num_timesteps > 0:
            with torch.no_grad():
                next(model.policy.parameters()).fill_(float("nan"))
        return real(model)

    monkeypatch.setattr(training, "_diverged", poisoned)
    run = RunSpec(EnvSpec("CartPole-v1"), tiny_agent, "scratch", 0, 512, 128, 2)
    run_dir = tmp_path / "scratch" / "seed_0"
    with pytest.raises(training.Diverged, match="is not finite after an update"):
        train_run(run, run_dir)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and status["diverged"] is True
    assert status["diverged_at"] > 0
    curves, _, not_used = collect_runs(tmp_path, ["scratch"])
    (steps, returns), = curves["scratch"]
    assert steps[0] == 0 and steps[-1] == max(status["diverged_at"], steps[-2] + 1)
    assert np.isnan(returns[-1]) and np.isfinite(returns[:-1]).all()
    assert not_used["scratch"] == {"failed": [], "diverged": ["seed_0"], "left_out": []}
