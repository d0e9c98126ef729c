"""A researcher's own environment, as rltransfer sees one: a corridor of `length` cells.

The agent starts at cell 0 and moves left or right; it is rewarded for reaching the last
cell quickly. With probability `slip` a move goes the other way. Importing this module
registers ``Corridor-v0`` with Gymnasium, as a user's own package would.

    python -m rltransfer run corridor_env:Corridor-v0:length=8 corridor_env:Corridor-v0:length=12

passes ``length`` (and ``slip``) to the constructor: any registered env works that way,
with no family declared (`corridor_family` declares one, for ranges, randomization and
named variants).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """Observation: the position as a fraction of the corridor. Actions: 0 left, 1 right.
    Reward: +1 at the last cell (the episode ends), -0.01 per step before."""

    metadata = {"render_modes": []}

    def __init__(self, length: int = 8, slip: float = 0.0, render_mode: str | None = None):
        if isinstance(length, bool) or not isinstance(length, int) or length < 2:
            raise ValueError(f"length must be a whole number of cells >= 2, not {length!r}")
        if not 0.0 <= slip < 1.0:
            raise ValueError(f"slip must be a probability in [0, 1), not {slip!r}")
        self.length, self.slip = length, float(slip)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.position = 0

    def _observation(self) -> np.ndarray:
        return np.array([self.position / self.length], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = 0
        return self._observation(), {}

    def step(self, action: int):
        move = 1 if int(action) == 1 else -1
        if self.np_random.random() < self.slip:
            move = -move
        self.position = min(max(self.position + move, 0), self.length)
        arrived = self.position == self.length
        reward = 1.0 if arrived else -0.01
        return self._observation(), reward, arrived, False, {}


if "Corridor-v0" not in gym.registry:
    gym.register("Corridor-v0", entry_point="corridor_env:Corridor", max_episode_steps=100)
