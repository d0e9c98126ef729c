"""Optimizer parameter groups that SB3's learning-rate schedule and SB3's own `load()` respect.

SB3 builds one param group per optimizer (``policy.optimizer``; ``actor.optimizer`` and
``critic.optimizer`` for SAC/TD3) and, before every update, sets every group's lr to the
schedule's value (`BaseAlgorithm._update_learning_rate`). Transfer needs more groups:
``finetune:lr_scale=S`` trains the copied parameters at S x that rate, a fine-tuned image
encoder trains at ``--encoder-lr-scale`` x it (`encoders.scale_encoder_lr`), and
freeze-features takes frozen parameters out of the optimizer. All are done here, with three
hooks on the optimizer instance (torch's own seams: no subclass, nothing patched in SB3,
nothing added to the model that `model.save()` would pickle):

* Each group carries its factor as ``group["lr_scale"]``. Group 0 always has factor 1 (it may
  hold no parameter) and so carries the schedule's rate as SB3 set it; a **step pre-hook**
  sets every other group's lr to that rate x its factor, after SB3's update and before every
  optimizer step.
* A **state_dict post-hook** writes the state in the layout SB3 builds: one group holding every
  parameter in SB3's order, the real groups described under ``"rltransfer_groups"``
  (parameter positions and factors). So model.zip loads with plain ``PPO.load(path)`` (any
  SB3 algorithm): SB3 trains the loaded model with one group at the schedule's rate, every
  parameter included; the description stays in the group, and `attach` restores the groups.
* A **load_state_dict pre-hook** reads that layout back into the groups (checkpoint.pt), and
  SB3's own single group of every parameter too (a checkpoint written before the groups).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

GROUPS_KEY = "rltransfer_groups"
"""Where a saved optimizer state describes its groups: [{"params": [i, ...], "lr_scale": s}]."""


class _Managed:
    """An optimizer whose groups rltransfer arranged, and its parameters as SB3 built them."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        groups = optimizer.param_groups
        assert len(groups) == 1, "SB3 builds one param group per optimizer"
        self.built: list[nn.Parameter] = list(groups[0]["params"])
        self.position = {id(p): i for i, p in enumerate(self.built)}
        self.handles = (optimizer.register_step_pre_hook(_set_rates),
                        optimizer.register_state_dict_post_hook(_to_sb3_layout),
                        optimizer.register_load_state_dict_pre_hook(_from_sb3_layout))


_MANAGED: weakref.WeakKeyDictionary[torch.optim.Optimizer, _Managed] = (
    weakref.WeakKeyDictionary())


def optimizers(policy: nn.Module) -> list[torch.optim.Optimizer]:
    """Every optimizer of an SB3 policy (``module.optimizer`` of any of its modules), once."""
    found: list[torch.optim.Optimizer] = []
    for module in policy.modules():
        optimizer = getattr(module, "optimizer", None)
        if isinstance(optimizer, torch.optim.Optimizer) and all(optimizer is not o for o in found):
            found.append(optimizer)
    return found


def scale(policy: nn.Module, params: Iterable[nn.Parameter], factor: float) -> None:
    """Train `params` at `factor` x the schedule's learning rate: in every optimizer of
    `policy` that holds some of them, they move to a group of their own."""
    chosen = {id(p) for p in params}
    for optimizer in optimizers(policy):
        scales = lr_factors(optimizer)
        if chosen & scales.keys():
            _regroup(optimizer, {k: factor if k in chosen else v for k, v in scales.items()})


def remove(policy: nn.Module, params: Iterable[nn.Parameter]) -> None:
    """Take `params` out of every optimizer of `policy`, with their optimizer state."""
    chosen = {id(p) for p in params}
    for optimizer in optimizers(policy):
        scales = lr_factors(optimizer)
        if chosen & scales.keys():
            _regroup(optimizer, {k: v for k, v in scales.items() if k not in chosen})


def lr_factors(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    """id(parameter) -> the factor on the schedule's rate it trains at, for each parameter
    `optimizer` holds."""
    return {id(p): float(group.get("lr_scale", 1.0))
            for group in optimizer.param_groups for p in group["params"]}


def policy_lr_factors(policy: nn.Module) -> dict[int, float]:
    """`lr_factors` over every optimizer of `policy`."""
    found: dict[int, float] = {}
    for optimizer in optimizers(policy):
        found.update(lr_factors(optimizer))
    return found


def attach(policy: nn.Module) -> bool:
    """Restore the groups a loaded optimizer state describes (after SB3's ``load()``):
    each group's learning-rate factor, and frozen parameters out of the optimizer. Whether
    any optimizer had groups to restore.

    Only the optimizer is restored: a frozen parameter left out of it no longer moves, but
    SB3 built it with ``requires_grad=True`` (`rltransfer.training.transfer.freeze` does the
    rest, with the names transfer.json lists as frozen)."""
    restored = False
    for optimizer in optimizers(policy):
        groups = optimizer.param_groups
        if optimizer in _MANAGED or len(groups) != 1 or GROUPS_KEY not in groups[0]:
            continue
        described = groups[0].pop(GROUPS_KEY)
        built = groups[0]["params"]
        _regroup(optimizer, {id(built[i]): float(group["lr_scale"])
                             for group in described for i in group["params"]})
        restored = True
    return restored


def _regroup(optimizer: torch.optim.Optimizer, factors: dict[int, float]) -> None:
    """Rebuild `optimizer`'s groups: each parameter (by id) in `factors` in the group of its
    factor, the others out; group 0 at factor 1, the others by decreasing factor, each in
    SB3's order."""
    managed = _MANAGED.get(optimizer)
    if managed is None:
        managed = _MANAGED[optimizer] = _Managed(optimizer)
    first = optimizer.param_groups[0]
    assert float(first.get("lr_scale", 1.0)) == 1.0
    rate = first["lr"]
    hyper = {k: v for k, v in first.items() if k not in ("params", "lr", "lr_scale", GROUPS_KEY)}
    for group in optimizer.param_groups:
        for param in group["params"]:
            if id(param) not in factors:
                optimizer.state.pop(param, None)
    optimizer.param_groups.clear()
    for factor in [1.0, *sorted(set(factors.values()) - {1.0}, reverse=True)]:
        params = [p for p in managed.built if factors.get(id(p)) == factor]
        optimizer.add_param_group({**hyper, "params": params, "lr": rate * factor,
                                   "lr_scale": factor})


def _set_rates(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    groups = optimizer.param_groups
    for group in groups[1:]:
        group["lr"] = groups[0]["lr"] * group["lr_scale"]


def _to_sb3_layout(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """The packed state of the live groups, as the one group SB3 builds."""
    managed = _MANAGED[optimizer]
    live = [p for group in optimizer.param_groups for p in group["params"]]  # packed ids
    described = [{"params": [managed.position[id(p)] for p in group["params"]],
                  "lr_scale": float(group["lr_scale"])} for group in optimizer.param_groups]
    group = {k: v for k, v in state["param_groups"][0].items() if k not in ("params", "lr_scale")}
    group["params"] = list(range(len(managed.built)))
    group[GROUPS_KEY] = described
    return {"state": {managed.position[id(live[k])]: v for k, v in state["state"].items()},
            "param_groups": [group]}


def _from_sb3_layout(optimizer: torch.optim.Optimizer,
                     state: dict[str, Any]) -> dict[str, Any] | None:
    """`_to_sb3_layout` undone, onto this optimizer's groups (which must be the ones
    described: the run was rebuilt and transferred the same way)."""
    saved = state["param_groups"]
    managed = _MANAGED[optimizer]
    live = [[managed.position[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    if len(saved) != 1:
        return None  # another layout: torch checks it
    if GROUPS_KEY in saved[0]:
        described = saved[0][GROUPS_KEY]
    elif len(optimizer.param_groups) > 1 and len(saved[0]["params"]) == len(managed.built):
        # SB3's own single group of every parameter (e.g. a checkpoint of an encoder trained
        # at a scaled rate, written before that scale was a group): onto this model's groups
        described = [{"params": positions, "lr_scale": group["lr_scale"]}
                     for positions, group in zip(live, optimizer.param_groups, strict=True)]
    else:
        return None  # e.g. the same single group: torch checks it
    if [group["params"] for group in described] != live:
        raise ValueError("the saved optimizer state has other parameter groups than this "
                         "model's (another condition or lr_scale?)")
    packed = {position: k for k, position in enumerate(i for group in live for i in group)}
    hyper = {k: v for k, v in saved[0].items() if k not in ("params", GROUPS_KEY)}
    return {"state": {packed[i]: v for i, v in state["state"].items() if i in packed},
            "param_groups": [{**hyper, "params": [packed[i] for i in group["params"]],
                              "lr": hyper["lr"] * group["lr_scale"],
                              "lr_scale": group["lr_scale"]} for group in described]}
