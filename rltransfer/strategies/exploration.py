"""DQN's (and QR-DQN's) ε schedule after a transfer.

SB3's DQN explores ε-greedily with ε decaying linearly from ``exploration_initial_eps`` (1)
to ``exploration_final_eps`` over the first ``exploration_fraction`` of training. A copied
Q-network already acts well, and ε = 1 would replace its actions with random ones for that
whole stretch, so a run whose Q-network head is copied (finetune, freeze-features, and
replay/kickstart with init=one of them) starts at the schedule's final ε; a run whose head is
fresh (reinit-head, init=scratch) keeps the target's schedule, since its greedy actions mean
nothing yet. ``eps=E`` on any of these conditions starts the schedule at E instead (it decays
to the final ε, or stays at E if E is below it).

The schedule is set after SB3 has built the model (its `_setup_model` makes it).
"""

from __future__ import annotations

from typing import Any

from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule

from . import registry


def apply(model: BaseAlgorithm, choice: registry.Choice) -> dict[str, Any] | None:
    """Set a DQN or QR-DQN `model`'s ε schedule for the run's condition; return what transfer.json
    records of it (None for other algorithms)."""
    if not isinstance(model, DQN) and type(model).__name__.lower() not in registry.EPSILON_GREEDY:
        return None  # QR-DQN keeps its schedule as DQN does, under the same names
    eps, weights = choice.get("eps"), choice.weights
    start, final = model.exploration_initial_eps, model.exploration_final_eps
    if eps is not None:
        start, why = eps, f"eps={eps:g}"
    elif weights is not None and weights.condition.copies == registry.ALL:
        start, why = final, "the copied Q-network acts from the start: the schedule's final epsilon"
    else:
        why = "the target's schedule (its Q-network head is fresh)"
    end = min(start, final)
    if (start, end) != (model.exploration_initial_eps, model.exploration_final_eps):
        model.exploration_initial_eps, model.exploration_final_eps = start, end
        model.exploration_schedule = LinearSchedule(start, end, model.exploration_fraction)
        model.exploration_rate = start  # SB3 sets it after the first step; this is that step's
    return {"initial_eps": start, "final_eps": end, "fraction": model.exploration_fraction,
            "why": why}
