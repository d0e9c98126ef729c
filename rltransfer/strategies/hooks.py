"""What a condition does to a run beyond SB3's defaults: the hooks its registry entry names.

A `Condition` in `rltransfer.strategies.registry` names its hooks as ``"module:OBJECT"``
(imported only when a run or the pre-flight check needs them, so the registry stays
torch-free). The object is a `Strategy`: each hook gets the run's parsed condition (a
`registry.Choice`: its entry, its options, ``choice.label`` its canonical spelling) and a
`Context`, and a study calls them in this order:

* ``configure_agent(agent, choice, context) -> agent``: the agent the condition trains, when
  the study is planned (the typed `AgentSpec` a run's status.json records), e.g. built with
  the study's pretrained image encoder (``context.encoder``);
* ``configure(hparams, choice) -> hparams``: the hyperparameters SB3 builds the agent with
  (its policy class, ``policy_kwargs``...), before it builds it;
* ``check(target, choice, context)``: the pre-flight check on a freshly built target model,
  once without the source (``context.source_state`` is None) and once with the weights the
  study will use; a one-line error before the study writes anything;
* ``initialize(model, choice, context) -> (TransferReport | None, record)``: how the built
  target starts (copied or frozen weights, a distillation loss attached, a guide) and what
  ``transfer.json`` records of it. Training calls it through ``start``, which also applies
  what a run inherits from the source besides tensors: before `initialize`, the source's
  VecNormalize statistics as the ``norm`` option says (conditions that take something from
  the source, `rltransfer.training.vecnorm`; across observation spaces mapped as the
  weights are, `rltransfer.training.transfer.normalization_features`); after it, DQN's and
  QR-DQN's ε schedule as ``eps`` says (`rltransfer.strategies.exploration`). Both are
  recorded in transfer.json ("normalization", null for a condition that takes nothing;
  "exploration"); a strategy that handles them otherwise overrides ``start``;
* ``callbacks(model, choice, context) -> [BaseCallback, ...]``: SB3 callbacks that join the
  run's own during ``learn`` (a curriculum, a loss's weight schedule);
* ``before_learning(model, choice, context, evaluation) -> dict | None``: work done on the
  run's budget before ``learn`` (a replay buffer's prefill, an offline phase); its record is
  added to ``transfer.json``.
* ``after_learning(model, choice, context) -> dict | None``: what ``transfer.json`` adds
  once ``learn`` has ended (a curriculum's stages reached); the run writes it again.

`Strategy`'s own hooks do nothing (but ``start``, above), so a strategy implements only the
ones it needs. A condition without hooks (scratch) starts as SB3 builds it. Adding a strategy
is its entry plus the module its hooks live in; the plan, the pre-flight check and training
only call these methods.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import registry

if TYPE_CHECKING:
    from pathlib import Path

    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.callbacks import BaseCallback

    from ..specs import AgentSpec, EncoderSpec, EnvSpec


OUTSIDE_BUDGET = "env_steps_outside_budget"
"""transfer.json's key for the env steps a run took besides its target budget, by env
(``{"source": 25000}``: darc's source steps, align's source observations; ``"target"``: target
steps it measured with but never trained on). A strategy's record sets it; the report states
them next to the budget (`rltransfer.report.runfiles.outside_budget`)."""


@dataclass(frozen=True)
class Context:
    """What hooks may use besides the model: the run's budget and target, and the source."""

    timesteps: int  # the run's --timesteps
    target: str  # the target env, as errors name it
    source_state: dict[str, Any] | None = None  # the source policy's weights (tensors)
    source_label: str = ""  # e.g. "cache:5c3e0dd4771b3558"
    source_spaces: tuple[Any, Any] | None = None  # the source model's (observation, action)
    # the source's VecNormalize statistics (`rltransfer.training.vecnorm.Stats`), if it has any
    source_stats: dict[str, Any] | None = None
    # the pretrained image encoder the study's options name (--encoder, --encoder-weights...)
    # for the target's images; None when the target observes vectors
    encoder: EncoderSpec | None = None
    # the study's source env (its observation options applied), for the conditions that act
    # on it while the target trains (darc's source transitions, align's source observations)
    source_env: EnvSpec | None = None
    # the run's target env (its observation options applied), as `target` names it
    target_env: EnvSpec | None = None
    # the run's folder, for what a condition stores with its run (align's source
    # observations); None in the pre-flight check, which writes nothing
    run_dir: Path | None = None


class Strategy:
    """A condition's hooks; each of these does nothing (see the module's docstring), except
    `start`, which applies ``norm`` and ``eps`` around `initialize`."""

    def configure_agent(self, agent: AgentSpec, choice: registry.Choice,
                        context: Context) -> AgentSpec:
        return agent

    def configure(self, hparams: dict[str, Any], choice: registry.Choice) -> dict[str, Any]:
        return hparams

    def check(self, target: BaseAlgorithm, choice: registry.Choice, context: Context) -> None:
        return None

    def initialize(self, model: BaseAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[Any, dict[str, Any]]:
        return None, {"condition": choice.label, "source": None}

    def start(self, model: BaseAlgorithm, choice: registry.Choice,
              context: Context) -> tuple[Any, dict[str, Any]]:
        """`initialize`, with the source's normalization statistics applied before it and
        the ε schedule after it (the module's docstring); what training calls."""
        from ..training import transfer, vecnorm
        from . import exploration

        normalization = None
        if choice.condition.needs_source:  # the source's statistics, after SB3's _build
            mode = choice.get("norm") or vecnorm.RESET
            # across observation spaces, the statistics follow the weights' map
            features = (transfer.normalization_features(model, choice, context)
                        if mode != vecnorm.RESET and vecnorm.find(model.get_env()) is not None
                        else None)
            normalization = vecnorm.apply(model.get_env(), context.source_stats, mode,
                                          context.source_label, features)
        report, record = self.initialize(model, choice, context)
        record["normalization"] = normalization  # None: none of the source's
        schedule = exploration.apply(model, choice)  # DQN's and QR-DQN's; None for others
        if schedule is not None:
            record["exploration"] = schedule
        return report, record

    def callbacks(self, model: BaseAlgorithm, choice: registry.Choice,
                  context: Context) -> list[BaseCallback]:
        return []

    def before_learning(self, model: BaseAlgorithm, choice: registry.Choice, context: Context,
                        evaluation: BaseCallback) -> dict[str, Any] | None:
        return None

    def after_learning(self, model: BaseAlgorithm, choice: registry.Choice,
                       context: Context) -> dict[str, Any] | None:
        return None


def of(condition: str | registry.Condition | registry.Choice) -> Strategy | None:
    """The hooks of a condition (spelled, its entry, or a parsed choice); None when it has
    none."""
    if isinstance(condition, registry.Choice):
        entry = condition.condition
    elif isinstance(condition, str):
        entry = registry.get(condition)
    else:
        entry = condition
    if not entry.hooks:
        return None
    module, _, name = entry.hooks.partition(":")
    return getattr(importlib.import_module(module), name)
