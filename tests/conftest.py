"""Shared fixtures: tiny budgets so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import pytest

from rltransfer import algos
from rltransfer.specs import AgentSpec

# PPO small enough that a few hundred steps take well under a second.
TINY_PPO = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}


@pytest.fixture
def tiny_agent() -> AgentSpec:
    hparams = {**algos.preset("ppo", ["CartPole-v1"]), **TINY_PPO}
    return AgentSpec("ppo", hparams, n_envs=2, device="cpu")


@pytest.fixture
def training_calls(monkeypatch) -> list:
    """Every (run spec, run folder) that a study trains, recorded as the study runs
    (in this process: give the study --workers 1)."""
    import rltransfer.training as training

    calls: list = []
    real = training.train_run

    def counting(run, run_dir, **kwargs):
        calls.append((run, run_dir))
        return real(run, run_dir, **kwargs)

    monkeypatch.setattr(training, "train_run", counting)
    return calls


def _write_run(run_dir, steps, returns, state: str = "done") -> None:
    """A run folder as a study writes it: evaluations.csv and status.json."""
    import csv

    from rltransfer.io_utils import atomic_write_json
    from rltransfer.training import EVAL_COLUMNS

    run_dir.mkdir(parents=True)
    with open(run_dir / "evaluations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EVAL_COLUMNS)
        writer.writerows([s, r, 0, 5, 0] for s, r in zip(steps, returns, strict=True))
    atomic_write_json(run_dir / "status.json", {"state": state})


@pytest.fixture(scope="session")
def write_run():
    """Write a hand-made run folder (for report tests that need no training)."""
    return _write_run
