"""finetune, freeze-features and reinit-head: the target starts from the source's weights,
copied (and frozen) as their registry entry says (`rltransfer.training.transfer` does the
copying, checked by name and shape, and mapped across observation and action spaces,
`rltransfer.training.cross_space`)."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from ..training.transfer import TransferReport, apply_transfer, check_options, check_spaces
from . import registry
from .hooks import Context, Strategy


class CopyWeights(Strategy):
    """The hooks of the conditions that copy the source's weights."""

    def check(self, target: BaseAlgorithm, choice: registry.Choice, context: Context) -> None:
        check_options(target.policy, choice)  # e.g. layers=k against the network's depth
        check_spaces(target, choice, context)  # obs_map against the two spaces

    def initialize(self, model: BaseAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[TransferReport, dict[str, Any]]:
        if context.source_state is None:
            raise ValueError(f"condition {choice.label} needs source weights")
        report = apply_transfer(model, context.source_state, choice, context.source_label,
                                context)
        return report, report.to_dict()


COPY_WEIGHTS = CopyWeights()
