"""pretrained-encoder: the target's image policy starts from a pretrained image encoder (the
study's --encoder, --encoder-weights, --freeze-encoder/--finetune-encoder,
--encoder-lr-scale) instead of a fresh NatureCNN; its heads are fresh, and nothing comes from
the source.

The encoder is part of the agent (`specs.EncoderSpec`, an `AgentSpec`'s ``encoder``), so this
condition's effect is its agent: `configure_agent` gives it the study's encoder when the
study is planned, and status.json records it with the run. Training builds any agent's
encoder alike (`rltransfer.training.run.build_model`: the weights applied after SB3's build,
a frozen encoder computed once per observation, a fine-tuned one at its learning-rate
factor) and describes it in transfer.json; this condition's `initialize` starts the target
as SB3 built it.
"""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from ..specs import AgentSpec
from . import registry
from .hooks import Context, Strategy


class PretrainedEncoder(Strategy):
    """pretrained-encoder's hooks (`rltransfer.strategies.hooks`)."""

    def configure_agent(self, agent: AgentSpec, choice: registry.Choice,
                        context: Context) -> AgentSpec:
        if context.encoder is None and str(agent.hparams.get("policy", "")).startswith(
                "MultiInput"):  # its CombinedExtractor has a CNN per image key, no encoder seam
            raise ConfigError(
                f"the {choice.condition.name} condition replaces the encoder of one image, but "
                f"{context.target} observes a Dict: use finetune or freeze-features (each image "
                f"key's CNN is copied from the source)")
        if context.encoder is None:
            raise ConfigError(f"the {choice.condition.name} condition needs image observations, "
                              f"but {context.target} observes vectors: add --pixels")
        return dataclasses.replace(agent, encoder=context.encoder)


HOOKS = PretrainedEncoder()
