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
