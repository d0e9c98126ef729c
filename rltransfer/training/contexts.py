"""contexts.json: what a run on a randomized env (`rltransfer.envs.randomization`) saw.

Beside evaluations.csv, for runs whose env has a parameter given as a distribution:

    {"randomized": {"length": "uniform(0.25,1)"},
     "evaluation": [{"length": 0.61}, ...],      # one per evaluation episode
     "evaluations": [0, 128, 256],               # the evaluations (their steps) that used them
     "training": {"episodes": 41, "length": {"mean": 0.63, "min": 0.26, "max": 0.99}}}

``evaluation`` lists the contexts of the evaluation episodes, ordered by evaluation env, then
episode: the eval env is re-seeded before every evaluation, so every evaluation plays the same
contexts, and each evaluation checks that it did. ``training`` summarizes the contexts of the
training episodes that ended during ``learn`` (count, then per parameter mean, min and max;
bounded, however long the run), continued across a resumed run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from ..io_utils import atomic_write_json, read_json
from ..specs import EnvSpec, is_distribution

FILE = "contexts.json"


def randomized(env: EnvSpec) -> dict[str, str]:
    """The env's randomized parameters and their distributions' text ({} for none)."""
    return {name: value for name, value in sorted(env.params.items())
            if is_distribution(value)}


class ContextLog:
    """Collects the contexts of a run's evaluation and training episodes; writes FILE."""

    def __init__(self, env: EnvSpec, path: Path, resume_at: int | None = None) -> None:
        self.path = path
        self.randomized = randomized(env)
        self.evaluation: list[dict[str, float]] | None = None
        self.evaluations: list[int] = []
        self.episodes = 0
        self.stats: dict[str, dict[str, float]] = {}  # name -> sum, min, max
        if resume_at is not None and path.is_file():  # a run continued from its checkpoint
            self._load(read_json(path), resume_at)

    def _load(self, data: Mapping[str, Any], step: int) -> None:
        self.evaluation = data.get("evaluation") or None
        self.evaluations = [s for s in data.get("evaluations", []) if s <= step]
        training = data.get("training", {})
        self.episodes = int(training.get("episodes", 0))
        for name in self.randomized:
            if name in training:
                item = training[name]
                self.stats[name] = {"sum": item["mean"] * self.episodes,
                                    "min": item["min"], "max": item["max"]}

    def add_training(self, context: Mapping[str, float]) -> None:
        self.episodes += 1
        for name, value in context.items():
            item = self.stats.setdefault(name, {"sum": 0.0, "min": value, "max": value})
            item["sum"] += value
            item["min"] = min(item["min"], value)
            item["max"] = max(item["max"], value)

    def add_evaluation(self, step: int, contexts: list[dict[str, float]]) -> None:
        """Record one evaluation's contexts; they must be those of every earlier one."""
        if self.evaluation is None:
            self.evaluation = contexts
        elif contexts != self.evaluation:
            raise RuntimeError(f"the evaluation at step {step} played other contexts than the "
                               f"first one: the eval env's seeding is broken")
        self.evaluations.append(step)
        self.write()

    def write(self) -> None:
        training: dict[str, Any] = {"episodes": self.episodes}
        for name, item in sorted(self.stats.items()):
            training[name] = {"mean": item["sum"] / self.episodes, "min": item["min"],
                              "max": item["max"]}
        atomic_write_json(self.path, {"randomized": self.randomized,
                                      "evaluation": self.evaluation or [],
                                      "evaluations": self.evaluations, "training": training})


class EvaluationContexts:
    """An `evaluate_policy` callback that keeps each evaluation episode's context."""

    def __init__(self, n_envs: int) -> None:
        self.per_env: list[list[dict[str, float]]] = [[] for _ in range(n_envs)]

    def __call__(self, local: dict[str, Any], _: dict[str, Any]) -> None:
        # evaluate_policy counts an episode where Monitor says one ended, as here.
        info = local["info"]
        if local["done"] and (not local["is_monitor_wrapped"] or "episode" in info):
            self.per_env[local["i"]].append(dict(info["context"]))

    @property
    def contexts(self) -> list[dict[str, float]]:
        """By eval env, then episode: the same order whatever the episodes' lengths."""
        return [context for episodes in self.per_env for context in episodes]


class TrainingContexts(BaseCallback):
    """Adds the context of every training episode that ends to a `ContextLog`."""

    def __init__(self, log: ContextLog) -> None:
        super().__init__()
        self.log = log

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and "context" in info and "episode" in info:  # Monitor: a real end
                self.log.add_training(info["context"])
        return True
