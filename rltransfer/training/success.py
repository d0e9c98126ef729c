"""Success rates: which evaluation episodes succeeded, by one rule for every env that says.

Robot suites report success in their step infos, in two conventions:

* ``info["is_success"]`` (Gymnasium-Robotics' Fetch and hand tasks, SB3's HER, Monitor and
  ``rollout/success_rate``): the episode succeeded when its **last** step says so (where
  the object is when the episode ends);
* ``info["success"]`` (Meta-World, Gymnasium-Robotics' mazes): the episode succeeded when
  **any** step says so (Meta-World's own evaluation: the task was achieved at some point).

An episode whose infos hold ``is_success`` at any step is read by the first rule (its last
value), else one holding ``success`` by the second; an episode with neither reports no
success. An evaluation's success rate is the share of its episodes that succeeded; it exists
only when every one of its episodes reported success (an env that reports it for some
episodes only is not an env with a success rate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LAST_STEP_KEY = "is_success"  # the episode's last step decides (SB3 / HER convention)
ANY_STEP_KEY = "success"  # any step of the episode decides (Meta-World's convention)


class EpisodeSuccess:
    """An `evaluate_policy` callback that keeps whether each evaluation episode succeeded
    (see the module doc), then calls `then` (another such callback) with the same locals."""

    def __init__(self, n_envs: int,
                 then: Callable[[dict[str, Any], dict[str, Any]], None] | None = None) -> None:
        self.then = then
        self._last: list[bool | None] = [None] * n_envs  # this episode's last is_success
        self._any: list[bool | None] = [None] * n_envs  # any success in this episode
        self.episodes: list[bool | None] = []  # per finished episode; None: not reported

    def __call__(self, local: dict[str, Any], globals_: dict[str, Any]) -> None:
        i, info = local["i"], local["info"]
        if LAST_STEP_KEY in info:
            self._last[i] = bool(info[LAST_STEP_KEY])
        if ANY_STEP_KEY in info:
            self._any[i] = bool(self._any[i]) or bool(info[ANY_STEP_KEY])
        # evaluate_policy counts an episode where Monitor says one ended (not a lost life)
        if local["done"] and (not local["is_monitor_wrapped"] or "episode" in info):
            self.episodes.append(self._last[i] if self._last[i] is not None else self._any[i])
            self._last[i] = self._any[i] = None
        if self.then is not None:
            self.then(local, globals_)

    @property
    def rate(self) -> float | None:
        """The share of the episodes that succeeded; None unless every episode reported."""
        if not self.episodes or any(e is None for e in self.episodes):
            return None
        return sum(bool(e) for e in self.episodes) / len(self.episodes)
