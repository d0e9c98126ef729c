"""What a condition does to a run beyond building it: the hooks its registry entry names.

A `Condition` in `rltransfer.conditions` names its hooks as ``"module:OBJECT"`` (imported
only when a run or the pre-flight check needs them, so the registry stays torch-free). The
hooks object has three methods, each given the condition's spelling and a `Context`:

* ``check(target, condition, context)``: the pre-flight check on a freshly built target
  model, once without the source (``context.source_state`` is None) and once with the
  weights the study will use; a one-line error before the study writes anything;
* ``initialize(model, condition, context) -> (TransferReport | None, record)``: how the
  built target starts (copied or frozen weights, a distillation loss attached) and what
  ``transfer.json`` records of it;
* ``before_learning(model, condition, context, evaluation) -> dict | None``: work done on
  the run's budget before ``learn`` (a replay buffer's prefill); its record is added to
  ``transfer.json``.

A condition without hooks (scratch, pretrained-encoder) starts as SB3 builds it. Adding a
strategy is its entry plus the module its hooks live in; training and the pre-flight check
only call these methods.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from . import conditions as registry


@dataclass(frozen=True)
class Context:
    """What hooks may use besides the model: the run's budget and target, and the source."""

    timesteps: int  # the run's --timesteps
    target: str  # the target env, as errors name it
    source_state: dict[str, Any] | None = None  # the source policy's weights (tensors)
    source_label: str = ""  # e.g. "cache:5c3e0dd4771b3558"
    source_spaces: tuple[Any, Any] | None = None  # the source model's (observation, action)


class Hooks(Protocol):
    def check(self, target: Any, condition: str, context: Context) -> None: ...

    def initialize(self, model: Any, condition: str,
                   context: Context) -> tuple[Any, dict[str, Any]]: ...

    def before_learning(self, model: Any, condition: str, context: Context,
                        evaluation: Any) -> dict[str, Any] | None: ...


def of(condition: str | registry.Condition) -> Hooks | None:
    """The hooks of a condition (spelled, or its entry); None when it has none."""
    entry = registry.get(condition) if isinstance(condition, str) else condition
    if not entry.hooks:
        return None
    module, _, name = entry.hooks.partition(":")
    return getattr(importlib.import_module(module), name)
