"""Tiny goal-conditioned environments for the tests: a point on a plane that must reach a
goal, observed as Gymnasium-Robotics observes its tasks (a Dict of ``observation``,
``achieved_goal``, ``desired_goal``) with the goal-env method ``compute_reward``, so HER can
relabel its transitions. Importing this module registers them:

* ``PointGoal-v0``: continuous actions (a Box(-1, 1, (2,)) step), for SAC / TD3 / TQC / PPO;
* ``PointGoalDiscrete-v0``: four moves (Discrete(4)), for DQN / QR-DQN;
* ``PointGoalImage-v0``: the Dict also holds a small image of the plane (uint8, channel
  last), so MultiInputPolicy puts a CNN on that key.

Use them as ``goal_envs:PointGoal-v0`` with ``tests/`` on sys.path (pytest puts it there;
a worker process needs it on PYTHONPATH). Each takes ``goal_range`` (how far goals are
drawn), ``sparse`` (reward -1 until within `distance_threshold`, as Fetch's; else the
negative distance) and ``horizon``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MOVES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1]], dtype=np.float32)


class PointGoal(gym.Env):
    """A point starting at the origin, moved by at most `step` per action, rewarded for
    being within `distance_threshold` of a goal drawn uniformly in [-goal_range, goal_range]^2."""

    metadata = {"render_modes": []}

    def __init__(self, goal_range: float = 0.5, sparse: bool = True, horizon: int = 20,
                 distance_threshold: float = 0.1, discrete: bool = False,
                 image: bool = False, render_mode: str | None = None) -> None:
        self.goal_range, self.sparse, self.horizon = goal_range, sparse, horizon
        self.distance_threshold, self.discrete, self.image = distance_threshold, discrete, image
        self.step_size = 0.1
        goal = spaces.Box(-1.0, 1.0, (2,), np.float32)
        keys: dict[str, spaces.Space] = {
            "observation": spaces.Box(-1.0, 1.0, (4,), np.float32),
            "achieved_goal": goal, "desired_goal": goal}
        if image:
            keys["pixels"] = spaces.Box(0, 255, (36, 36, 1), np.uint8)
        self.observation_space = spaces.Dict(keys)
        self.action_space = (spaces.Discrete(4) if discrete
                             else spaces.Box(-1.0, 1.0, (2,), np.float32))

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray,
                       info: Any) -> np.ndarray:
        """Vectorized over a batch of goals, as HerReplayBuffer calls it."""
        distance = np.linalg.norm(np.asarray(achieved_goal) - np.asarray(desired_goal), axis=-1)
        if self.sparse:
            return -(distance > self.distance_threshold).astype(np.float32)
        return -distance.astype(np.float32)

    def _observation(self) -> dict[str, np.ndarray]:
        obs = {"observation": np.concatenate([self.position, self.velocity]).astype(np.float32),
               "achieved_goal": self.position.copy(), "desired_goal": self.goal.copy()}
        if self.image:
            pixels = np.zeros((36, 36, 1), np.uint8)
            for point, value in ((self.goal, 128), (self.position, 255)):
                row, col = np.clip(((point + 1) * 18).astype(int), 0, 35)
                pixels[row, col, 0] = value
            obs["pixels"] = pixels
        return obs

    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        self.t = 0
        self.position = np.zeros(2, np.float32)
        self.velocity = np.zeros(2, np.float32)
        self.goal = self.np_random.uniform(-self.goal_range, self.goal_range, 2).astype(
            np.float32)
        return self._observation(), {}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        move = (MOVES[int(action)] if self.discrete
                else np.clip(np.asarray(action, np.float32), -1.0, 1.0))
        new = np.clip(self.position + self.step_size * move, -1.0, 1.0).astype(np.float32)
        self.velocity, self.position = new - self.position, new
        self.t += 1
        obs = self._observation()
        reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], None))
        success = bool(np.linalg.norm(self.position - self.goal) <= self.distance_threshold)
        # Fetch-like: no termination on success, the episode ends at the time limit
        return obs, reward, False, self.t >= self.horizon, {"is_success": success}


gym.register("PointGoal-v0", entry_point=PointGoal)
gym.register("PointGoalDiscrete-v0", entry_point=PointGoal, kwargs={"discrete": True})
gym.register("PointGoalImage-v0", entry_point=PointGoal, kwargs={"image": True})
