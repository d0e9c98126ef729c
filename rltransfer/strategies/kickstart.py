"""Kickstarting (Schmitt et al. 2018, "Kickstarting Deep Reinforcement Learning"; QDagger in
Agarwal et al. 2022): the target trains with an extra loss that pulls its action distribution
toward the source policy's, a teacher, with a weight that decays linearly to 0.

The loss is the cross-entropy from the teacher's action probabilities to the target's for
discrete actions, and KL(teacher || target) for Gaussian ones (both have the same gradient as
the forward KL), averaged over the update's batch of observations. At the update after t env
steps its weight is ``weight x max(0, 1 - t / steps)``; t is the model's step count, so a run
resumed from its checkpoint continues the decay where it stopped.

The teacher is rebuilt from weights only (`rltransfer.strategies.teacher`): the target's
policy class, built with the target's spaces and policy kwargs, into which the source state
dict is loaded strictly; in eval mode, without gradients, and no module of the target policy
(so neither ``policy.pth`` nor a checkpoint holds it). It reads the target's observations
as the target's env gives them; a normalizing target keeps the source's statistics frozen by
default (``norm=freeze``, `rltransfer.training.vecnorm`), so they are scaled as in the
teacher's own training.

SB3's PPO and A2C (and sb3-contrib's MaskablePPO) have no hook for an extra loss, so the loss
joins their update through two seams, without copying their ``train()``:

* the target policy's ``evaluate_actions`` (the one call ``train()`` makes with each batch) is
  wrapped on the instance to keep the batch's observations (and MaskablePPO's action masks,
  under which both the target and the teacher choose: a teacher's probability on an action
  the target env forbids is 0, so it pulls the target only among the allowed ones);
* a step pre-hook on the policy's optimizer computes the distillation loss on that batch with
  the current parameters, adds its gradients to SB3's, and clips the total to SB3's
  ``max_grad_norm`` again, before the step.

Both live on the policy and its optimizer, which SB3 saves as state dicts: nothing of this is
pickled into ``model.zip``, which SB3's own ``PPO.load`` reads. The optimizer's other step
pre-hook (`rltransfer.training.optim_groups`: each group's rate) is independent of this one.
The loss and its weight are logged as ``kickstart/loss`` and ``kickstart/weight`` with SB3's logger,
dumped with SB3's own dumps: the weight of the last update before the dump, and the mean loss
over the updates since the last dump whose weight was above 0 (the teacher is not queried once
the weight is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy

from ..errors import ConfigError
from ..training import contrib
from ..training.transfer import TransferReport, apply_transfer
from . import registry as conditions
from . import teacher
from .hooks import Context, Strategy
from .teacher import Misfit, rebuild

CROSS_ENTROPY, KL = "cross-entropy", "kl(teacher||target)"


@dataclass(frozen=True)
class Schedule:
    """The distillation loss's weight: `weight` at step 0, linearly to 0 at `steps`."""

    steps: int
    weight: float

    def at(self, step: int) -> float:
        """The weight at the update after `step` env steps."""
        return self.weight * max(0.0, 1.0 - step / self.steps)


def schedule(condition: str | conditions.Choice, timesteps: int) -> Schedule:
    """The schedule `condition` (``kickstart:steps=N,weight=W``, parsed or spelled) gives a
    run of `timesteps` env steps: N defaults to half of them."""
    choice = conditions.choice_of(condition)
    steps = choice.get("steps")
    return Schedule(int(steps) if steps is not None else max(timesteps // 2, 1),
                    float(choice.get("weight")))


describe = teacher.describe  # what distillation needs of a space, as text


def check_teacher(model: BaseAlgorithm, source_state: dict[str, torch.Tensor],
                  source_spaces: tuple[spaces.Space, spaces.Space], condition: str,
                  source_label: str = "") -> None:
    """ConfigError (one line) unless the source policy can teach `model`'s: an actor-critic
    (PPO, A2C, MaskablePPO), discrete or Gaussian actions, the same observation and action
    spaces, and the same network. The runner calls it before a study writes anything."""
    teacher.check_distillation_spaces(model, source_spaces, condition)
    build_teacher(model, source_state, condition, source_label)


def build_teacher(model: BaseAlgorithm, source_state: dict[str, torch.Tensor], condition: str,
                  source_label: str = "") -> ActorCriticPolicy:
    """The source policy as `model`'s teacher (`rltransfer.strategies.teacher`): an
    actor-critic's, with actions whose distributions distillation compares; ConfigError (one
    line) otherwise, or when the source does not fit the target's network."""
    policy = model.policy
    masked = contrib.needs_masks(contrib.name_of(model))
    if not (isinstance(policy, ActorCriticPolicy) or masked):
        raise ConfigError(f"condition {condition!r} distils an actor-critic's actions: use "
                          f"--algo ppo, a2c or maskableppo (not {contrib.name_of(model)})")
    if not isinstance(policy.action_dist, _distributions(masked)):
        raise ConfigError(f"condition {condition!r} distils Discrete or Box actions; the "
                          f"target acts in {describe(model.action_space)}: use finetune")
    try:
        return rebuild(model, source_state)  # type: ignore[return-value]
    except Misfit as misfit:
        raise ConfigError(
            f"condition {condition!r}: {source_label or 'the source policy'} does not fit the "
            f"target's network ({misfit.first()}): give source and target the same --algo "
            f"and --hparams policy_kwargs") from None


def _distributions(masked: bool) -> tuple[type[Distribution], ...]:
    """The action distributions distillation compares."""
    if masked:  # MaskablePPO: Discrete actions only (its MultiDiscrete masks are per dimension)
        from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution

        return (MaskableCategoricalDistribution,)
    return (CategoricalDistribution, DiagGaussianDistribution, StateDependentNoiseDistribution)


def _categorical(distribution: Distribution) -> bool:
    return isinstance(distribution, CategoricalDistribution) or type(
        distribution).__name__ == "MaskableCategoricalDistribution"


def distillation_loss(student: Distribution, teacher: Distribution) -> torch.Tensor:
    """The batch mean of the cross-entropy H(teacher, student) for categorical distributions
    (masked ones too: a forbidden action has probability 0 under the teacher), of
    KL(teacher || student) summed over action dimensions for Gaussian ones."""
    if _categorical(student):
        probs = teacher.distribution.probs  # type: ignore[union-attr]
        return -(probs * student.distribution.logits).sum(-1).mean()  # type: ignore[union-attr]
    kl = torch.distributions.kl_divergence(teacher.distribution, student.distribution)
    return kl.sum(-1).mean()


class Kickstart:
    """The distillation loss on one model's updates (see the module's docstring)."""

    def __init__(self, model: BaseAlgorithm, teacher: ActorCriticPolicy,
                 weights: Schedule) -> None:
        self.model, self.teacher, self.schedule = model, teacher, weights
        # observations of the batch the coming step trains on, and what else the policy
        # reads with them (MaskablePPO's action masks)
        self._batch: Any = None
        policy = model.policy
        evaluate = policy.evaluate_actions  # the class's, bound

        def evaluate_actions(obs: Any, actions: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():  # a training batch, not an evaluation
                masks = kwargs.get("action_masks", args[0] if args else None)
                self._batch = (obs, {} if masks is None else {"action_masks": masks})
            return evaluate(obs, actions, *args, **kwargs)

        # On the instance: SB3 saves the policy as a state dict, so this is never pickled.
        policy.evaluate_actions = evaluate_actions  # type: ignore[method-assign]
        policy.optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        obs, extra = batch
        model = self.model
        weight = self.schedule.at(int(model.num_timesteps))
        model.logger.record("kickstart/weight", weight)
        if weight == 0:
            return
        student = model.policy.get_distribution(obs, **extra)
        with torch.no_grad():
            teacher = self.teacher.get_distribution(obs, **extra)
        loss = distillation_loss(student, teacher)
        (weight * loss).backward()  # onto the gradients of SB3's loss
        torch.nn.utils.clip_grad_norm_(model.policy.parameters(), model.max_grad_norm)
        model.logger.record_mean("kickstart/loss", loss.item())


def kickstart(model: BaseAlgorithm, source_state: dict[str, torch.Tensor],
              condition: str | conditions.Choice, timesteps: int, source_label: str = ""
              ) -> tuple[Kickstart, TransferReport | None, dict[str, Any]]:
    """Initialize `model` as `condition` (parsed or spelled) says (``init``), attach the
    distillation loss toward the source policy in `source_state`, for a run of `timesteps`
    env steps; (the loss, the transfer report of an init from the source's weights or None,
    the transfer.json record)."""
    choice = conditions.choice_of(condition)
    teacher = build_teacher(model, source_state, choice.label, source_label)
    report = None
    if choice.weights is not None:  # init=finetune: copied as finetune copies
        report = apply_transfer(model, source_state, choice, source_label)
        record = report.to_dict()
    else:
        record = {"condition": choice.label, "source": source_label,
                  "options": dict(choice.options)}
    weights = schedule(choice, timesteps)
    loss = CROSS_ENTROPY if _categorical(model.policy.action_dist) else KL
    record["kickstart"] = {
        "teacher": source_label, "init": str(choice.get("init")), "steps": weights.steps,
        "initial_weight": weights.weight, "loss": loss,
        "schedule": "weight x max(0, 1 - t / steps) at the update after t env steps",
    }
    if contrib.needs_masks(contrib.name_of(model)):
        record["kickstart"]["action_masks"] = ("the training batch's, for the target and the "
                                               "teacher alike")
    return Kickstart(model, teacher, weights), report, record


class Hooks(Strategy):
    """kickstart's hooks (`rltransfer.strategies.hooks`): the teacher checked before the
    study, the loss attached after the target is built (and initialized as ``init`` says)."""

    def check(self, target: BaseAlgorithm, choice: conditions.Choice, context: Context) -> None:
        if context.source_state is not None:
            assert context.source_spaces is not None
            check_teacher(target, context.source_state, context.source_spaces, choice.label,
                          context.source_label)

    def initialize(self, model: BaseAlgorithm, choice: conditions.Choice,
                   context: Context) -> tuple[TransferReport | None, dict[str, Any]]:
        if context.source_state is None:
            raise ValueError(f"condition {choice.label} needs the source policy's weights")
        _, report, record = kickstart(model, context.source_state, choice, context.timesteps,
                                      context.source_label)
        return report, record


HOOKS = Hooks()
