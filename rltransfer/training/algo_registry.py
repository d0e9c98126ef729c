"""The algorithm registry as data: each algorithm's name, its class (as an import path), the
action spaces it acts in (by name) and a one-line description.

Torch-free, like the condition registry (`rltransfer.strategies.registry`), so the command
line lists the algorithms in ``--help`` without importing torch or SB3; `rltransfer.training
.algos` builds models from it (`algos.get_algorithm`, presets, hyperparameters).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm

CONTRIB = "sb3_contrib"
_ANY = ("Box", "Discrete", "MultiDiscrete", "MultiBinary")


@dataclass(frozen=True)
class Algorithm:
    """An SB3 or sb3-contrib algorithm and the action spaces it can act in."""

    name: str
    path: str  # "module:Class", imported on first use
    action_spaces: tuple[str, ...]  # names of gymnasium.spaces classes
    doc: str = ""  # one line: what it is, for the README and `--help`
    images: bool = True  # whether its policies take a features extractor (image observations)

    @property
    def cls(self) -> type[BaseAlgorithm]:
        """The algorithm's class (imports sb3-contrib for its algorithms)."""
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    @property
    def contrib(self) -> bool:
        """Whether it comes from sb3-contrib (the ``contrib`` extra)."""
        return self.path.startswith(CONTRIB)

    @property
    def space_types(self) -> tuple[type[Any], ...]:
        """The gymnasium space classes of its action spaces (imports gymnasium)."""
        from gymnasium import spaces

        return tuple(getattr(spaces, name) for name in self.action_spaces)

    @property
    def space_names(self) -> str:
        return " or ".join(self.action_spaces)


def _sb3(name: str, cls: str, action_spaces: tuple[str, ...], doc: str) -> Algorithm:
    return Algorithm(name, f"stable_baselines3:{cls}", action_spaces, doc)


def _contrib(name: str, cls: str, action_spaces: tuple[str, ...], doc: str,
             images: bool = True) -> Algorithm:
    return Algorithm(name, f"{CONTRIB}:{cls}", action_spaces, doc, images)


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    _sb3("ppo", "PPO", _ANY, "proximal policy optimization (on-policy actor-critic)"),
    _sb3("a2c", "A2C", _ANY, "advantage actor-critic (on-policy)"),
    _sb3("dqn", "DQN", ("Discrete",), "deep Q-network (off-policy, replay buffer)"),
    _sb3("sac", "SAC", ("Box",), "soft actor-critic (off-policy, replay buffer)"),
    _sb3("td3", "TD3", ("Box",), "twin delayed DDPG (off-policy, replay buffer)"),
    _contrib("tqc", "TQC", ("Box",),
             "truncated quantile critics: SAC with distributional critics (off-policy)"),
    _contrib("qrdqn", "QRDQN", ("Discrete",),
             "quantile-regression DQN: a distribution of returns per action (off-policy)"),
    _contrib("crossq", "CrossQ", ("Box",),
             "SAC without target networks, batch-renormalized critics (off-policy)"),
    _contrib("trpo", "TRPO", _ANY,
             "trust region policy optimization: natural-gradient steps in a KL trust region"),
    _contrib("ars", "ARS", ("Box", "Discrete"),
             "augmented random search: gradient-free search over the policy's weights",
             images=False),
    _contrib("recurrentppo", "RecurrentPPO", _ANY,
             "PPO with an LSTM policy, for partially observed tasks"),
    _contrib("maskableppo", "MaskablePPO", ("Discrete", "MultiDiscrete", "MultiBinary"),
             "PPO with invalid-action masking: the env provides action_masks()"),
)}
"""Every algorithm, in the order `--help` lists them."""

NAMES = tuple(ALGORITHMS)

# RL-Zoo's folder and Hub names for the algorithms rltransfer names otherwise.
ZOO_NAMES = {"ppo_lstm": "recurrentppo", "ppo_mask": "maskableppo"}
