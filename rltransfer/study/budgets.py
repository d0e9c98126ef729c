"""Budgets that are what they say: how many env steps a run really trains, and where its
evaluations really fall, known from the built model before anything is written.

SB3 trains in whole rollouts: ``learn(T)`` collects rollouts until at least T env steps are
done, so a run trains T rounded up to whole rollouts. An on-policy rollout (PPO, A2C, TRPO,
RecurrentPPO, MaskablePPO) is ``n_steps x n_envs`` steps; an off-policy one ``train_freq x
n_envs`` (train_freq counted in steps). ARS (and train_freq counted in episodes) trains in
whole episodes, whose lengths are known only as they are played. Evaluations happen at the
start of a rollout (`training.EvaluationCallback`): at step 0, at the first rollout start at
or past each multiple of ``eval_freq``, and at the end.

A budget below one rollout is refused (`check`): the run would train a whole rollout anyway,
and its only evaluations would be at 0 and at its end. Larger budgets are rounded up; the
terminal and study.json (``budgets``) say so, and the report measures over the steps every
run really trained (`report`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # the report reads grids without importing SB3 or torch
    from stable_baselines3.common.base_class import BaseAlgorithm

MIN_EVALUATIONS = 5
"""Evaluations per run below which the area under the curve is called coarse."""

_LISTED = 6  # a grid of at most this many points is listed in full


@dataclass(frozen=True)
class Fit:
    """How one run's budget fits its algorithm's unit of training."""

    option: str  # the option that sets the budget: --timesteps or --source-timesteps
    algo: str
    requested: int
    eval_freq: int
    rollout: int | None  # env steps per rollout; None: whole episodes of unknown length
    rollout_from: str  # e.g. "n_steps 2,048 × n_envs 4", or "... = 8 episodes"
    n_envs: int = 1
    n_steps: int | None = None  # an on-policy algorithm's: a shorter rollout sets it
    episodes: int | None = None  # per update, when it trains in whole episodes (ARS)
    episode_limit: int | None = None  # the env's max_episode_steps, when it has one

    @property
    def steps(self) -> int | None:
        """The env steps a run trains: the budget rounded up to whole rollouts."""
        if self.rollout is None:
            return None
        return math.ceil(self.requested / self.rollout) * self.rollout

    def grid(self) -> list[int] | None:
        """The steps at which a run is evaluated (None: they depend on episode lengths)."""
        if self.rollout is None or self.steps is None:
            return None
        return evaluation_steps(self.requested, self.eval_freq, self.rollout)

    def record(self) -> dict[str, Any]:
        """study.json's ``budgets`` entry for this run."""
        found: dict[str, Any] = {"requested": self.requested, "steps": self.steps,
                                 "rollout": self.rollout, "rollout_from": self.rollout_from,
                                 "eval_freq": self.eval_freq}
        grid = self.grid()
        if grid is not None:
            found["evaluations"] = len(grid)
            found["evaluation_spacing"] = spacing(grid)
        return found

    def note(self) -> str | None:
        """One line on what differs from what was asked (None: nothing does)."""
        label = "target runs" if self.option == "--timesteps" else "source run"
        if self.rollout is None:
            limit = (f", up to {self.episode_limit * self.episodes:,} steps at its "
                     f"{self.episode_limit:,}-step episode limit"
                     if self.episode_limit and self.episodes else "")
            return (f"{label}: {self.algo} trains in whole updates of {self.rollout_from}"
                    f"{limit}: a run ends past {self.option} {self.requested:,} by up to one "
                    f"update; the report states the steps it really trained")
        grid = self.grid() or []
        parts = []
        if self.steps != self.requested:
            each = " each" if self.option == "--timesteps" else ""
            parts.append(f"{self.steps:,} env steps{each} ({self.option} {self.requested:,} "
                         f"rounded up to whole rollouts of {self.rollout:,}: "
                         f"{self.rollout_from})")
        if self.option == "--timesteps" and grid != _nominal(self.eval_freq, grid[-1]):
            parts.append(f"evaluated {len(grid)} times, {describe_grid(grid)} (every "
                         f"--eval-freq {self.eval_freq:,} steps, at the next rollout's start)")
        return f"{label}: {'; '.join(parts)}" if parts else None

    def coarse(self) -> str | None:
        """A warning when a target run will have fewer than MIN_EVALUATIONS evaluations."""
        if self.option != "--timesteps":
            return None
        grid = self.grid()
        if grid is not None and len(grid) < MIN_EVALUATIONS:
            return (f"each target run is evaluated only {len(grid)} times "
                    f"({describe_grid(grid)}), so the area under its curve is coarse: give a "
                    f"longer --timesteps or a shorter rollout{self._shorter()}")
        if grid is None and self.episode_limit and self.episodes:
            update = self.episode_limit * self.episodes
            if self.requested < MIN_EVALUATIONS * update:
                return (f"{self.option} {self.requested:,} holds fewer than "
                        f"{MIN_EVALUATIONS} {self.algo} updates of up to {update:,} steps "
                        f"({self.rollout_from} at the {self.episode_limit:,}-step episode "
                        f"limit): its evaluations may be too few for the area under the "
                        f"curve; give a longer {self.option}")
        return None

    def _shorter(self) -> str:
        n_steps = suggested_n_steps(self)
        return f" (e.g. --hparams n_steps={n_steps})" if n_steps else ""


def fit_of(model: BaseAlgorithm, option: str, algo: str, requested: int,
           eval_freq: int) -> Fit:
    """How `requested` env steps fit `model`'s rollouts."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
    from stable_baselines3.common.type_aliases import TrainFrequencyUnit

    n_envs = int(model.n_envs)
    envs = "" if n_envs == 1 else f" × n_envs {n_envs}"
    if isinstance(model, OnPolicyAlgorithm):
        n_steps = int(model.n_steps)
        return Fit(option, algo, requested, eval_freq, n_steps * n_envs,
                   f"n_steps {n_steps:,}{envs}", n_envs, n_steps)
    if isinstance(model, OffPolicyAlgorithm):
        freq = model.train_freq
        if freq.unit == TrainFrequencyUnit.STEP:  # type: ignore[union-attr]
            every = int(freq.frequency)  # type: ignore[union-attr]
            return Fit(option, algo, requested, eval_freq, every * n_envs,
                       f"train_freq {every:,}{envs}", n_envs)
        episodes = int(freq.frequency) * n_envs  # type: ignore[union-attr]
        return Fit(option, algo, requested, eval_freq, None,
                   f"train_freq {episodes} episode(s)", n_envs, None, episodes,
                   _episode_limit(model))
    pop = getattr(model, "pop_size", None)
    if pop is not None:  # ARS: 2 x n_delta candidates, each played n_eval_episodes times
        episodes = int(pop) * int(getattr(model, "n_eval_episodes", 1))
        return Fit(option, algo, requested, eval_freq, None,
                   f"2 × n_delta × n_eval_episodes = {episodes} episodes", n_envs, None,
                   episodes, _episode_limit(model))
    return Fit(option, algo, requested, eval_freq, None, "whole episodes", n_envs)


def _episode_limit(model: BaseAlgorithm) -> int | None:
    try:
        spec = model.get_env().get_attr("spec")[0]  # type: ignore[union-attr]
    except (AttributeError, IndexError):
        return None
    limit = getattr(spec, "max_episode_steps", None)
    return int(limit) if limit else None


def check(fit: Fit) -> None:
    """ConfigError (one line, both numbers) when the budget is below one rollout."""
    if fit.rollout is None or fit.requested >= fit.rollout:
        return
    n_steps = suggested_n_steps(fit)
    shorter = (f", or a shorter rollout, e.g. --hparams n_steps={n_steps}" if n_steps
               else "")
    raise ConfigError(
        f"{fit.option} {fit.requested:,} is less than one {fit.algo} rollout of "
        f"{fit.rollout:,} env steps ({fit.rollout_from}), so every run would train "
        f"{fit.rollout:,} steps, evaluated only at 0 and at its end: give {fit.option} "
        f"{fit.rollout} or more{shorter}")


def suggested_n_steps(fit: Fit) -> int | None:
    """An on-policy n_steps (a power of 2) whose rollout fits the evaluation grid and the
    budget, or None when there is none (or the algorithm has no n_steps)."""
    if fit.n_steps is None:
        return None
    room = min(fit.eval_freq, fit.requested // MIN_EVALUATIONS) // fit.n_envs
    if room < 2:
        return None
    return 2 ** int(math.log2(room))


def evaluation_steps(budget: int, eval_freq: int, rollout: int) -> list[int]:
    """The steps at which `training.EvaluationCallback` evaluates a run of `budget` steps
    trained in rollouts of `rollout` steps: 0, the first rollout start at or past each next
    multiple of `eval_freq`, and the end."""
    end = math.ceil(budget / rollout) * rollout
    steps, due = [0], eval_freq
    while (start := math.ceil(due / rollout) * rollout) < end:  # the first start past `due`
        steps.append(start)
        due = (start // eval_freq + 1) * eval_freq
    if steps[-1] < end:
        steps.append(end)
    return steps


def _nominal(eval_freq: int, end: int) -> list[int]:
    """The grid --eval-freq asks for: every multiple of it up to the end."""
    steps = list(range(0, end, eval_freq))
    return steps + [end] if steps[-1] != end else steps


def spacing(grid: list[int]) -> list[int]:
    """[smallest, largest] gap between consecutive evaluations ([] for a single one)."""
    gaps = [b - a for a, b in zip(grid, grid[1:], strict=False)]
    return [min(gaps), max(gaps)] if gaps else []


def describe_grid(grid: list[int]) -> str:
    """``"at 0, 8,192 and 16,384"``, or ``"every 1,500 steps"`` / ``"1,280 to 1,536 steps
    apart"`` for longer grids."""
    if len(grid) <= _LISTED:
        listed = [f"{s:,}" for s in grid]
        return "at " + (", ".join(listed[:-1]) + " and " + listed[-1] if len(listed) > 1
                        else listed[0])
    low, high = spacing(grid)
    return f"every {low:,} steps" if low == high else f"{low:,} to {high:,} steps apart"
