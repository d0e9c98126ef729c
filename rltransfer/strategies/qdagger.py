"""QDagger (Agarwal et al. 2022, "Reincarnating Reinforcement Learning"): a value-based student
(DQN or QR-DQN) learns from the source's Q-network, a teacher, in two phases.

* **Offline.** The teacher collects ``n`` transitions on the target (replay's machinery,
  `replay.prefill_from_source`: env steps of the run that count toward ``--timesteps``,
  rounded up to whole rollouts, the teacher ε-greedy at the run's final ε). The student then
  makes ``updates`` gradient steps on them with DQN's own TD loss plus the distillation loss
  at full ``weight``. SB3 updates DQN's target network every ``target_update_interval`` env
  steps, which the offline phase does not take; it updates it (SB3's ``polyak_update`` with
  the run's ``tau``) every P gradient steps instead, P being the gradient steps that span
  ``target_update_interval`` env steps online: ``round(target_update_interval x
  gradient_steps / (train_freq x n_envs))``, at least 1.
* **Online.** SB3's ``learn()`` on the rest of the budget with the distillation loss added,
  its weight decaying to 0. ``decay=performance`` (the paper's, as its code computes it):
  after each of the run's evaluations the weight is ``weight x min(1, (G_T - G_S) /
  (G_T - G_0))``, 0 once the student's return G_S reaches the teacher's G_T, and it stays 0
  from then on. G_T is the teacher's mean return on the run's own evaluation episodes
  (greedy, measured once before the offline phase, no env step of the budget), G_0 the target's
  at step 0 (the row at step 0 of evaluations.csv), G_S the latest evaluation's; until the
  first evaluation after the offline phase the weight is ``weight``. ``steps=N`` also sets
  the weight to 0 after N online env steps (the paper's code's ``distill_decay_period``).
  ``decay=linear``: ``weight x max(0, 1 - t / N)`` after t online env steps (N: ``steps``,
  by default half of the online phase).

The distillation loss is KL(softmax(Q_T / τ) || softmax(Q_S / τ)) on the update's batch of
observations, averaged over the batch: the cross-entropy from the teacher's softmax to the
student's less the teacher's entropy, so it has the cross-entropy's gradient and is 0 when
the two agree. QR-DQN's Q-values are the mean over its quantiles.

The teacher is the source's Q-network rebuilt from weights only
(`rltransfer.strategies.teacher`: the target's policy class, spaces and policy kwargs, the
source's state dict loaded strictly), in eval mode, without gradients, and no module of the
target policy. The loss
joins SB3's update as kickstart's does, without copying ``train()``: the replay buffer's
``sample`` is wrapped on the instance to keep the batch, and a step pre-hook on the policy's
optimizer adds the loss's gradients to SB3's and clips the total to ``max_grad_norm`` again.
Neither is saved by ``model.save`` (the buffer is excluded, the optimizer is a state dict),
so SB3's own ``DQN.load`` reads ``model.zip``.

ε after the offline phase: the pre-trained student acts from the start, so its schedule
starts at the final ε (as for a copied Q-network, `exploration`); ``eps=E`` starts the online
phase at E, decaying linearly to the final ε over ``exploration_fraction`` of the online
phase (staying at E if E is below it).

TensorBoard (SB3's logger, dumped with SB3's own dumps and once at the end of the offline
phase): ``qdagger/weight``, and while it is above 0 ``qdagger/td_loss`` (SB3's TD loss on
the batch; afterwards SB3's ``train/loss`` is the whole loss) and ``qdagger/distill_loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import LinearSchedule, polyak_update

from ..errors import ConfigError
from ..training import vecnorm
from . import registry, replay
from .hooks import Context, Strategy
from .teacher import Misfit, check_distillation_spaces, rebuild

PERFORMANCE, LINEAR = "performance", "linear"
LOSS = "KL(softmax(teacher Q / temperature) || softmax(student Q / temperature)), batch mean"


# --- the schedule ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """The distillation loss's weight: `weight` offline, then decaying to 0 online."""

    weight: float
    decay: str  # PERFORMANCE or LINEAR
    steps: int | None  # online env steps: linear's length, performance's cutoff (None: none)


def schedule(choice: registry.Choice, online_steps: int) -> Schedule:
    """The schedule `choice` gives an online phase of `online_steps` env steps."""
    steps, decay = choice.get("steps"), str(choice.get("decay"))
    if steps is None and decay == LINEAR:
        steps = max(online_steps // 2, 1)
    return Schedule(float(choice.get("weight")), decay, steps)


def performance_factor(student: float, teacher: float, start: float) -> float:
    """How much of the weight is left when the student returns `student`, the teacher
    `teacher` and the target at step 0 `start`: 0 once the student reaches the teacher,
    else the share of the way from `start` to the teacher it has still to go (at most 1)."""
    if student >= teacher:
        return 0.0
    if teacher <= start:  # the teacher does no better than an untrained target
        return 1.0
    return min(1.0, (teacher - student) / (teacher - start))


# --- Q-values and losses ---------------------------------------------------------------------

def _quantiles(policy: BasePolicy) -> bool:
    return hasattr(policy, "quantile_net")


def network_output(policy: BasePolicy, obs: Any) -> torch.Tensor:
    """The online network's output: DQN's Q-values (batch, actions), QR-DQN's quantiles
    (batch, quantiles, actions)."""
    return policy.quantile_net(obs) if _quantiles(policy) else policy.q_net(obs)  # type: ignore[operator]


def q_values(policy: BasePolicy, output: torch.Tensor) -> torch.Tensor:
    """Q-values from `network_output`: QR-DQN's are the mean over its quantiles."""
    return output.mean(dim=1) if _quantiles(policy) else output


def distillation_loss(student_q: torch.Tensor, teacher_q: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """KL(softmax(teacher_q / τ) || softmax(student_q / τ)), averaged over the batch."""
    teacher = F.log_softmax(teacher_q / temperature, dim=-1)
    student = F.log_softmax(student_q / temperature, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1).mean()


def td_loss(model: OffPolicyAlgorithm, batch: Any, output: torch.Tensor) -> torch.Tensor:
    """SB3's TD loss of DQN (Huber) or QR-DQN (quantile Huber) on `batch`, given the online
    network's `output` on its observations (as their ``train()`` computes it)."""
    discounts = batch.discounts if getattr(batch, "discounts", None) is not None else model.gamma
    with torch.no_grad():
        if _quantiles(model.policy):
            from sb3_contrib.common.utils import quantile_huber_loss

            size, n = output.shape[0], output.shape[1]
            following = model.quantile_net_target(batch.next_observations)  # type: ignore[attr-defined]
            greedy = following.mean(dim=1, keepdim=True).argmax(dim=2, keepdim=True)
            following = following.gather(2, greedy.expand(size, n, 1)).squeeze(2)
            target = batch.rewards + (1 - batch.dones) * discounts * following
            actions = batch.actions[..., None].long().expand(size, n, 1)
            return quantile_huber_loss(output.gather(2, actions).squeeze(2), target,
                                       sum_over_quantiles=True)
        following = model.q_net_target(batch.next_observations).max(dim=1).values  # type: ignore[attr-defined]
        target = batch.rewards + (1 - batch.dones) * discounts * following.reshape(-1, 1)
        return F.smooth_l1_loss(output.gather(1, batch.actions.long()), target)


def update_target(model: OffPolicyAlgorithm) -> None:
    """DQN's (QR-DQN's) target-network update, as its ``_on_step`` makes it."""
    policy = model.policy
    online, target = ((policy.quantile_net, policy.quantile_net_target) if _quantiles(policy)  # type: ignore[attr-defined]
                      else (policy.q_net, policy.q_net_target))  # type: ignore[attr-defined]
    polyak_update(online.parameters(), target.parameters(), model.tau)  # type: ignore[attr-defined]
    polyak_update(model.batch_norm_stats, model.batch_norm_stats_target, 1.0)  # type: ignore[attr-defined]


# --- the loss on a model's updates ----------------------------------------------------------

class QDagger:
    """The distillation loss on one DQN/QR-DQN model's updates (see the module's docstring)."""

    def __init__(self, model: OffPolicyAlgorithm, teacher: BasePolicy, weights: Schedule,
                 temperature: float, evaluation: BaseCallback | None = None) -> None:
        self.model, self.teacher, self.schedule = model, teacher, weights
        self.temperature, self.evaluation = temperature, evaluation
        self.offline = True  # until `go_online`
        self.online_from = 0  # the env step the online phase starts at
        self.teacher_return: float | None = None  # G_T (performance decay)
        self.factor = 1.0  # performance decay: the share of the weight left; 0 stays 0
        self._seen = 0  # evaluation rows already read
        self.offline_losses: list[tuple[float, float]] = []  # (td, distill) per offline step
        self._batch: Any = None
        buffer = model.replay_buffer
        assert buffer is not None
        sample = buffer.sample  # the class's, bound

        def sample_and_keep(*args: Any, **kwargs: Any) -> Any:
            self._batch = sample(*args, **kwargs)
            return self._batch

        # On the instances: neither the buffer nor the optimizer's hooks are saved by SB3.
        buffer.sample = sample_and_keep  # type: ignore[method-assign]
        model.policy.optimizer.register_step_pre_hook(self._before_step)

    def go_online(self) -> None:
        """The offline phase is over: the weight decays from here, evaluations after now
        measure the pre-trained student."""
        self.offline, self.online_from = False, int(self.model.num_timesteps)
        self._seen = len(self.evaluation.rows) if self.evaluation is not None else 0  # type: ignore[attr-defined]

    def weight(self) -> float:
        """The loss's weight at the coming update."""
        weights = self.schedule
        if self.offline:
            return weights.weight
        t = int(self.model.num_timesteps) - self.online_from
        if weights.decay == LINEAR:
            assert weights.steps is not None
            return weights.weight * max(0.0, 1.0 - t / weights.steps)
        if weights.steps is not None and t >= weights.steps:
            self.factor = 0.0
        rows = getattr(self.evaluation, "rows", [])
        if self.factor > 0 and len(rows) > self._seen and self.teacher_return is not None:
            self._seen = len(rows)
            self.factor = performance_factor(rows[-1]["mean_return"], self.teacher_return,
                                             rows[0]["mean_return"])
        return weights.weight * self.factor

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        model = self.model
        weight = self.weight()
        model.logger.record("qdagger/weight", weight)
        if weight == 0:
            return
        output = network_output(model.policy, batch.observations)
        td = td_loss(model, batch, output.detach())
        with torch.no_grad():
            teacher = q_values(self.teacher, network_output(self.teacher, batch.observations))
        loss = distillation_loss(q_values(model.policy, output), teacher, self.temperature)
        (weight * loss).backward()  # onto the gradients of SB3's TD loss
        if model.max_grad_norm is not None:  # type: ignore[attr-defined]
            torch.nn.utils.clip_grad_norm_(model.policy.parameters(), model.max_grad_norm)  # type: ignore[attr-defined]
        model.logger.record_mean("qdagger/td_loss", td.item())
        model.logger.record_mean("qdagger/distill_loss", loss.item())
        if self.offline:
            self.offline_losses.append((td.item(), loss.item()))

    def train_offline(self, updates: int) -> dict[str, Any]:
        """`updates` gradient steps of SB3's ``train()`` on the buffer, the loss at full
        weight, the target network updated every `target_period` steps; what transfer.json
        records of them."""
        model, period = self.model, target_period(self.model)
        done = targets = 0
        while done < updates:
            chunk = min(period - done % period, updates - done)
            model.train(gradient_steps=chunk, batch_size=model.batch_size)
            done += chunk
            if done % period == 0:
                update_target(model)
                targets += 1
        model.logger.dump(int(model.num_timesteps))
        tenth = max(len(self.offline_losses) // 10, 1)
        first, last = self.offline_losses[:tenth], self.offline_losses[-tenth:]
        return {"gradient_steps": done, "batch_size": int(model.batch_size),
                "target_update_period": period, "target_updates": targets,
                "td_loss": {"first_tenth": _mean(first, 0), "last_tenth": _mean(last, 0)},
                "distill_loss": {"first_tenth": _mean(first, 1), "last_tenth": _mean(last, 1)}}


def _mean(pairs: list[tuple[float, float]], index: int) -> float | None:
    return float(np.mean([pair[index] for pair in pairs])) if pairs else None


def _gradient_steps(model: OffPolicyAlgorithm) -> int:
    """Gradient steps per rollout (SB3's -1: as many as the rollout's env steps)."""
    steps = int(model.gradient_steps)
    return steps if steps >= 0 else replay.rollout_steps(model)


def target_period(model: OffPolicyAlgorithm) -> int:
    """Offline gradient steps between target-network updates: those that online span
    ``target_update_interval`` env steps."""
    ratio = _gradient_steps(model) / replay.rollout_steps(model)
    return max(1, round(model.target_update_interval * ratio))  # type: ignore[attr-defined]


def offline_updates(model: OffPolicyAlgorithm, choice: registry.Choice, steps: int) -> int:
    """``updates``, or by default as many gradient steps as SB3 makes over `steps` online env
    steps (at least 1)."""
    asked = choice.get("updates")
    if asked is not None:
        return int(asked)
    return max(1, math.ceil(steps / replay.rollout_steps(model)) * _gradient_steps(model))


# --- the teacher ------------------------------------------------------------------------------

def check_teacher(model: OffPolicyAlgorithm, source_state: dict[str, torch.Tensor],
                  source_spaces: tuple[Any, Any] | None, condition: str,
                  source_label: str = "") -> None:
    """ConfigError (one line) unless the source's Q-network can teach `model`: the same
    observation and action spaces and the same network."""
    check_distillation_spaces(model, source_spaces, condition)
    build_teacher(model, source_state, condition, source_label)


def build_teacher(model: OffPolicyAlgorithm, source_state: dict[str, torch.Tensor],
                  condition: str, source_label: str = "") -> BasePolicy:
    """The source's Q-network as `model`'s teacher (`rltransfer.strategies.teacher`);
    ConfigError (one line) when it does not fit the target's network."""
    try:
        return rebuild(model, source_state)
    except Misfit as misfit:
        raise ConfigError(
            f"condition {condition!r}: {source_label or 'the source policy'} does not fit the "
            f"target's Q-network ({misfit.describe()}): give source and target the same "
            f"--algo and --hparams policy_kwargs") from None


def teacher_return(model: OffPolicyAlgorithm, teacher: BasePolicy,
                   evaluation: BaseCallback) -> tuple[float, int]:
    """The teacher's mean return on the run's evaluation episodes (greedy, as the run's
    evaluations measure the target), and how many episodes it played."""
    env = evaluation.eval_env  # type: ignore[attr-defined]
    vecnorm.sync(model.get_env(), env)
    env.seed(evaluation.eval_seed)  # type: ignore[attr-defined]
    returns, _ = evaluate_policy(teacher, env, n_eval_episodes=evaluation.n_episodes,  # type: ignore[attr-defined]
                                 deterministic=True, return_episode_rewards=True)
    return float(np.mean(returns)), len(returns)


def explore(model: OffPolicyAlgorithm, choice: registry.Choice) -> dict[str, Any]:
    """The student's ε schedule from the online phase on (see the module's docstring); what
    transfer.json records of it. It stays SB3's own `LinearSchedule` (model.zip pickles the
    schedule): the line through E at the online phase's first step and the final ε
    ``exploration_fraction`` of the online phase later."""
    eps, final = choice.get("eps"), model.exploration_final_eps  # type: ignore[attr-defined]
    fraction = float(model.exploration_fraction)  # type: ignore[attr-defined]
    if eps is None:
        start, why = final, ("the student pre-trained offline acts from the start: the "
                             "schedule's final epsilon")
    else:
        start, why = float(eps), f"eps={eps:g} at the online phase's first step"
    end = min(start, final)
    spent = 1.0 - model._current_progress_remaining  # the budget's share the collection took
    span = fraction * (1.0 - spent)  # the decay's share of the budget
    if span > 0 and start != end:
        slope = (end - start) / span
        line = LinearSchedule(start - slope * spent, end, spent + span)
    else:
        line = LinearSchedule(end, end, 1.0)
    model.exploration_initial_eps, model.exploration_final_eps = start, end  # type: ignore[attr-defined]
    model.exploration_schedule = line  # type: ignore[attr-defined]
    model.exploration_rate = line(model._current_progress_remaining)  # type: ignore[attr-defined]
    return {"initial_eps": start, "final_eps": end, "fraction": fraction,
            "decays_over_env_steps": round(span * model._total_timesteps), "why": why}


def run_offline(model: OffPolicyAlgorithm, choice: registry.Choice, context: Context,
                evaluation: BaseCallback) -> tuple[QDagger, dict[str, Any]]:
    """The offline phase of a qdagger run (before ``learn``), the loss attached for the
    online one; (the loss, what transfer.json records)."""
    if context.source_state is None:
        raise ValueError(f"condition {choice.label} needs the source policy's weights")
    teacher = build_teacher(model, context.source_state, choice.label, context.source_label)
    steps = replay.prefill_steps(model, choice, context.timesteps)
    weights = schedule(choice, context.timesteps - steps)
    qdagger = QDagger(model, teacher, weights, float(choice.get("temperature")), evaluation)
    evaluation.init_callback(model)
    evaluation.on_training_start({}, {})  # its clock starts, and it evaluates step 0
    if weights.decay == PERFORMANCE:
        qdagger.teacher_return, episodes = teacher_return(model, teacher, evaluation)

    def at_rollout() -> None:  # as SB3 calls it: the callback's step count from the last step
        evaluation.num_timesteps = model.num_timesteps
        evaluation.on_rollout_start()

    replay.prefill_from_source(model, teacher, steps, context.timesteps, at_rollout)
    offline = {"transitions": steps, "env_steps": int(model.num_timesteps),
               "counts_toward_budget": True, "rollout_steps": replay.rollout_steps(model),
               "behaviour": replay.behaviour(model),
               **qdagger.train_offline(offline_updates(model, choice, steps))}
    qdagger.go_online()
    record: dict[str, Any] = {
        "teacher": context.source_label, "offline": offline,
        "temperature": qdagger.temperature, "initial_weight": weights.weight,
        "loss": LOSS, "decay": weights.decay, "steps": weights.steps,
        "q_values": ("mean over the quantiles" if _quantiles(model.policy)
                     else "the Q-network's outputs")}
    if weights.decay == PERFORMANCE:
        record.update(
            teacher_return=qdagger.teacher_return, teacher_episodes=episodes,
            start_return=evaluation.rows[0]["mean_return"],  # type: ignore[attr-defined]
            schedule=("after each evaluation: weight x min(1, (G_T - G_S) / (G_T - G_0)), 0 "
                      "once G_S >= G_T and from then on (G_S: the evaluation's return, G_T: "
                      "teacher_return, G_0: start_return)"
                      + (f"; 0 after {weights.steps} online env steps" if weights.steps
                         else "")))
    else:
        record["schedule"] = "weight x max(0, 1 - t / steps) after t online env steps"
    return qdagger, record


class Hooks(Strategy):
    """qdagger's hooks (`rltransfer.strategies.hooks`): the teacher and the offline phase
    checked before the study; the offline phase and the loss before ``learn``."""

    def check(self, target: OffPolicyAlgorithm, choice: registry.Choice,
              context: Context) -> None:
        if not hasattr(target.policy, "q_net") and not _quantiles(target.policy):
            raise ConfigError(f"condition {choice.label!r} distils a Q-network: use --algo "
                              f"dqn or qrdqn")
        steps = replay.prefill_steps(target, choice, context.timesteps)
        if steps >= context.timesteps:
            raise ConfigError(
                f"condition {choice.label!r}: the teacher's {steps:,} transitions (n rounded "
                f"up to whole rollouts of {replay.rollout_steps(target)}) take all of "
                f"--timesteps {context.timesteps:,}, which leaves no online phase: lower n or "
                f"raise --timesteps")
        if steps > replay.capacity(target):
            raise ConfigError(
                f"condition {choice.label!r}: {steps:,} transitions do not fit the replay "
                f"buffer (buffer_size {replay.capacity(target):,}): lower n or raise "
                f"--hparams buffer_size")
        if context.source_state is not None:
            check_teacher(target, context.source_state, context.source_spaces, choice.label,
                          context.source_label)

    def initialize(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[None, dict[str, Any]]:
        return None, {"condition": choice.label, "source": context.source_label,
                      "options": dict(choice.options)}

    def before_learning(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                        context: Context, evaluation: BaseCallback) -> dict[str, Any]:
        _, record = run_offline(model, choice, context, evaluation)
        return {"qdagger": record, "exploration": explore(model, choice)}


HOOKS = Hooks()
