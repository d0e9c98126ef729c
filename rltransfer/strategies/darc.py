"""Off-dynamics RL with domain classifiers (`darc`; Eysenbach et al. 2021, "Off-Dynamics
Reinforcement Learning: Training for Transfer with Domain Classifiers"): the policy learns
from the *source* env's transitions, cheap, with its reward corrected by two classifiers that
tell source transitions from the target's, scarce. SAC, TD3 and TQC.

The run's budget, its x-axis and its evaluations stay the target's: the model's env is the
target, so SB3 counts target env steps and the run's evaluation callback evaluates on the
target at scratch's steps. During ``learn``:

* each target env step (SB3's own, with the algorithm's exploration) is stored in the
  model's replay buffer, which here is the *target* buffer: the classifiers' target data;
* after each target step the same policy takes ``source_ratio`` (R) steps of the source env
  (`hooks.Context.source_env`, with as many envs as the target), acting as SB3 makes it act
  while it trains (``_sample_action``: the warm-up's uniform actions while the target is
  under ``learning_starts``, SAC's and TQC's sampled actions, TD3's action noise, from its own
  copy of the noise process), stored by SB3's own ``_store_transition`` in a *source*
  buffer of the same size;
* SB3's updates sample the source buffer (the model's replay buffer is swapped for a router
  during ``learn``: ``add`` goes to the target buffer, ``sample`` to the source), R times as
  many gradient steps as SB3 would make: as many updates per source step as scratch makes
  per target step (with SB3's defaults one per source step, as in the paper);
* each update first scores its source batch and an equal batch of target transitions with
  the two classifiers, then trains them one Adam step on those batches (inputs with Gaussian
  noise, the authors' regularizer), and the policy's rewards become ``r + Δr`` once the
  target has taken ``warmup`` steps (before it, Δr = 0: the classifiers learn from the
  first update).

The two classifiers return the logit of "target" given (s, a, s') and given (s, a), built
as the authors' code builds them (`Classifiers`): the (s, a) one a
`rltransfer.training.domain.DomainClassifier`, the (s, a, s') one its logit plus a second
DomainClassifier's on (s, a, s'); both trained on the sum of their cross-entropies, with
Gaussian noise (std ``noise``, default 1) on their inputs, Adam at 3e-4. They read
observations as the env gives them and actions as SB3 stores them (scaled to [-1, 1]), as
the authors' code does. The correction is theirs::

    Δr(s, a, s') = log p(target | s, a, s') - log p(source | s, a, s')
                   - log p(target | s, a) + log p(source | s, a)
                 = logit_sas(s, a, s') - logit_sa(s, a)

scored without input noise. The two classifiers, their buffers and the source env live in
this module's objects, none in the model's ``__dict__`` once ``learn`` ends: ``model.zip``
holds what SB3 saves of any SAC (TD3, TQC) run, and ``SAC.load`` reads it.

TensorBoard gets ``darc/sas_loss``, ``darc/sa_loss``, ``darc/sas_accuracy``,
``darc/sa_accuracy`` (the classifiers' balanced accuracy on the update's batches, before the
update, without noise), ``darc/delta_r`` (the mean Δr of the source batch, also during the
warm-up, when it is not added), ``darc/corrected`` (1 once Δr is added), ``darc/source_steps``
and ``darc/source_return`` (finished source episodes). ``transfer.json`` records, under
``darc``, the options and constants, and after training the source steps taken, the updates
made, and the classifiers' means over the last `RECENT` updates.

Off-policy runs restart from the start when a study is resumed (no replay buffer in
checkpoints); a darc run does too, its source env, buffers and classifiers built afresh.
"""

from __future__ import annotations

import copy
import weakref
from collections import deque
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecEnv

from ..env_factory import make_env, make_vec
from ..errors import ConfigError
from ..training import vecnorm
from ..training.domain import DomainClassifier
from ..training.transfer import apply_transfer, check_options
from . import registry
from .hooks import OUTSIDE_BUDGET, Context, Strategy
from .teacher import describe

# each network's hidden layers: DomainClassifier's default, between the authors' code (one
# of 32 units) and ODRL's (two of 256); learns within the few thousand updates of a small
# budget (the authors' 32 units barely moved in 800), at a fraction of ODRL's cost
HIDDEN = (64, 64)
LEARNING_RATE = 3e-4  # the classifiers' Adam (the authors' classifier_learning_rate)
WARMUP_SHARE = 10  # warmup left out: a tenth of --timesteps (the paper's 1e5 of 1e6 steps)
RECENT = 100  # updates whose classifier statistics transfer.json's summary averages
SOURCE_SEED_OFFSET = 200_000  # the source env's seeds: neither training's nor evaluation's


def warmup_steps(choice: registry.Choice, timesteps: int) -> int:
    """Target env steps before Δr joins the rewards: ``warmup``, else a tenth of the run's."""
    given = choice.get("warmup")
    return int(given) if given is not None else timesteps // WARMUP_SHARE


def _space_text(observation: spaces.Space, action: spaces.Space) -> str:
    return f"observes {describe(observation)} and acts in {describe(action)}"


def check_spaces(model: OffPolicyAlgorithm, choice: registry.Choice, context: Context) -> None:
    """ConfigError (one line) unless the source env has the target's observation and action
    spaces (bounds included: actions are stored scaled by them) and observes vectors."""
    if context.source_env is None:
        raise ValueError(f"condition {choice.label} needs the study's source env")
    env = make_env(context.source_env)
    try:
        source = (env.observation_space, env.action_space)
    finally:
        env.close()
    target = (model.observation_space, model.action_space)
    if source != target:
        same_text = _space_text(*source) == _space_text(*target)
        raise ConfigError(
            f"condition {choice.label!r}: the target's policy learns from "
            f"{context.source_env}'s transitions, but it {_space_text(*source)} while "
            f"{context.target} {_space_text(*target)}"
            + (" (their bounds differ)" if same_text else "")
            + ": give darc a SOURCE with the target's spaces (the same env with other "
              "parameters), or use finetune")
    if not (isinstance(target[0], spaces.Box) and len(target[0].shape) == 1):
        raise ConfigError(
            f"condition {choice.label!r}: its classifiers read vector observations, and "
            f"{context.target} observes {describe(target[0])}: use finetune, or an env that "
            f"observes a vector")


def settings(model: OffPolicyAlgorithm, choice: registry.Choice, context: Context
             ) -> dict[str, Any]:
    """What transfer.json records of a darc run before it trains."""
    ratio = int(choice.get("source_ratio"))
    gradient_steps = int(model.gradient_steps)
    per_rollout = (f"{ratio} x {gradient_steps} per rollout" if gradient_steps >= 0
                   else f"{ratio} x the rollout's env steps")
    per_rollout += (": as many updates per source step as scratch makes per target step"
                    f" (train_freq {model.train_freq.frequency} "  # type: ignore[union-attr]
                    f"{model.train_freq.unit.value}, {model.n_envs} envs)")  # type: ignore[union-attr]
    return {
        "source_env": str(context.source_env), "source_ratio": ratio,
        "init": str(choice.get("init")),
        "warmup": warmup_steps(choice, context.timesteps),
        "warmup_from": ("warmup=" + str(choice.get("warmup"))
                        if choice.get("warmup") is not None
                        else f"a tenth of --timesteps ({context.timesteps:,})"),
        "noise": float(choice.get("noise")),
        "classifiers": {"hidden": list(HIDDEN), "learning_rate": LEARNING_RATE,
                        "batch_size": int(model.batch_size),
                        "structure": "logit_sa = sa(s, a); logit_sas = logit_sa + "
                                     "residual(s, a, s') (the authors' code)",
                        "inputs": "(s, a, s') and (s, a): observations as the env gives "
                                  "them, actions as SB3 stores them (scaled to [-1, 1])"},
        "delta_r": "logit_sas(s, a, s') - logit_sa(s, a), without input noise",
        "gradient_steps": per_rollout,
        "policy_trains_on": "source transitions, reward r + delta_r (delta_r = 0 before warmup)",
        "classifiers_train_on": "each update's source batch and as many target transitions",
        "budget": "--timesteps counts target env steps; source steps are on top",
    }


class Classifiers:
    """DARC's two domain classifiers and their optimizer, as the authors' code builds them:
    the (s, a) classifier ``sa``, and the (s, a, s') classifier's logit as ``sa``'s plus a
    ``residual`` network's on (s, a, s'), so Δr is the residual's logit."""

    def __init__(self, obs_dim: int, action_dim: int, noise: float, device: torch.device,
                 seed: int) -> None:
        with torch.random.fork_rng(devices=[]):  # the policy's random stream stays as built
            torch.manual_seed(seed)
            self.sa = DomainClassifier(obs_dim + action_dim, HIDDEN, noise).to(device)
            self.residual = DomainClassifier(2 * obs_dim + action_dim, HIDDEN,
                                             noise).to(device)
        self.optimizer = torch.optim.Adam([*self.sa.parameters(),
                                           *self.residual.parameters()], lr=LEARNING_RATE)

    @staticmethod
    def inputs(batch: ReplayBufferSamples) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, a, s') and (s, a) of a batch, as flat rows."""
        sa = torch.cat([batch.observations.flatten(1).float(),
                        batch.actions.flatten(1).float()], dim=1)
        return torch.cat([sa, batch.next_observations.flatten(1).float()], dim=1), sa

    def logits(self, sas: torch.Tensor, sa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit_sas, logit_sa): the logits of "target" given (s, a, s') and given (s, a)."""
        sa_logit = self.sa(sa)
        return sa_logit + self.residual(sas), sa_logit

    def _mode(self, training: bool) -> None:
        self.sa.train(training)  # input noise in training mode only
        self.residual.train(training)

    def delta_r(self, batch: ReplayBufferSamples) -> torch.Tensor:
        """Δr of each transition of `batch` (no input noise, no gradient)."""
        self._mode(False)
        with torch.no_grad():
            sas_logit, sa_logit = self.logits(*self.inputs(batch))
            return sas_logit - sa_logit

    def update(self, source: ReplayBufferSamples, target: ReplayBufferSamples
               ) -> tuple[torch.Tensor, dict[str, float]]:
        """Score both batches without noise (Δr of the source's, the accuracies), then one
        Adam step on the sum of both classifiers' losses with noisy inputs; (Δr of the
        source batch, the update's statistics)."""
        source_in, target_in = self.inputs(source), self.inputs(target)
        self._mode(False)
        with torch.no_grad():
            s_sas, s_sa = self.logits(*source_in)
            t_sas, t_sa = self.logits(*target_in)
        self._mode(True)
        source_sas, source_sa = self.logits(*source_in)
        target_sas, target_sa = self.logits(*target_in)
        sas_loss = DomainClassifier.loss(source_sas, target_sas)
        sa_loss = DomainClassifier.loss(source_sa, target_sa)
        self.optimizer.zero_grad()
        (sas_loss + sa_loss).backward()
        self.optimizer.step()
        delta_r = s_sas - s_sa
        return delta_r, {"sas_loss": sas_loss.item(), "sa_loss": sa_loss.item(),
                         "sas_accuracy": DomainClassifier.accuracy(s_sas, t_sas),
                         "sa_accuracy": DomainClassifier.accuracy(s_sa, t_sa),
                         "delta_r": float(delta_r.mean())}


class Router:
    """The model's replay buffer during ``learn``: SB3's ``add`` (target transitions) goes
    to the target buffer, its updates' ``sample`` to the source buffer, corrected; anything
    else is the target buffer's."""

    def __init__(self, darc: Darc) -> None:
        self._darc = darc

    def add(self, *args: Any, **kwargs: Any) -> None:
        self._darc.target.add(*args, **kwargs)

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        return self._darc.sample(batch_size, env)

    def __getattr__(self, name: str) -> Any:
        if name == "_darc":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self._darc.target, name)


class Darc:
    """One run's source env, buffers and classifiers (see the module's docstring)."""

    def __init__(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                 context: Context) -> None:
        if context.source_env is None:
            raise ValueError(f"condition {choice.label} needs the study's source env")
        assert model.replay_buffer is not None
        self.model, self.choice = model, choice
        self.ratio = int(choice.get("source_ratio"))
        self.warmup = warmup_steps(choice, context.timesteps)
        self.record = settings(model, choice, context)
        seed = int(model.seed or 0)
        self.env: VecEnv = make_vec(context.source_env, model.n_envs,
                                    seed=seed + SOURCE_SEED_OFFSET)
        self.target = model.replay_buffer  # SB3's, built for the target: the target buffer
        self.source = ReplayBuffer(model.buffer_size, model.observation_space,
                                   model.action_space, device=model.device,
                                   n_envs=model.n_envs,
                                   optimize_memory_usage=model.optimize_memory_usage,
                                   **model.replay_buffer_kwargs)
        obs_dim = int(np.prod(model.observation_space.shape))
        action_dim = int(np.prod(model.action_space.shape))
        self.classifiers = Classifiers(obs_dim, action_dim, float(choice.get("noise")),
                                       model.device, seed + SOURCE_SEED_OFFSET)
        self.obs: Any = None
        self.noise: Any = None
        self.source_steps = self.updates = self.corrected = self.episodes = 0
        self.recent: deque[dict[str, float]] = deque(maxlen=RECENT)

    # --- during learn() -----------------------------------------------------------------

    def start(self) -> None:
        """The source env reset, the router and the scaled updates in place (on the model
        instance, for this ``learn`` only)."""
        model = self.model
        self.obs = self.env.reset()
        self.noise = copy.deepcopy(model.action_noise)  # its own noise process
        model.replay_buffer = Router(self)  # type: ignore[assignment]
        own, ratio = model.train, self.ratio

        def train(gradient_steps: int, batch_size: int = 256) -> None:
            own(gradient_steps=gradient_steps * ratio, batch_size=batch_size)

        model.train = train  # type: ignore[method-assign]

    def stop(self) -> None:
        """The model as SB3 built it again: its own buffer (the target's) and ``train``."""
        model = self.model
        model.__dict__.pop("train", None)
        model.replay_buffer = self.target
        self.env.close()

    def step_source(self) -> None:
        """`ratio` steps of the source env with the model's behaviour policy, stored in the
        source buffer; the model's own last observation is left as it was."""
        model, env = self.model, self.env
        own = (model._last_obs, model._last_original_obs)
        try:
            for _ in range(self.ratio):
                model._last_obs = self.obs
                actions, buffer_actions = model._sample_action(
                    model.learning_starts, self.noise, env.num_envs)
                new_obs, rewards, dones, infos = env.step(actions)
                model._store_transition(self.source, buffer_actions, new_obs, rewards,  # type: ignore[arg-type]
                                        dones, infos)
                self.obs = model._last_obs
                self.source_steps += env.num_envs
                for index in np.flatnonzero(dones):
                    self.episodes += 1
                    if self.noise is not None:
                        self.noise.reset(**({"indices": [index]} if env.num_envs > 1 else {}))
                    episode = infos[index].get("episode")
                    if episode is not None:  # Monitor's: the raw return
                        model.logger.record_mean("darc/source_return", float(episode["r"]))
        finally:
            model._last_obs, model._last_original_obs = own
        model.logger.record("darc/source_steps", self.source_steps)

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        """A batch of source transitions for an update, its rewards corrected by Δr once
        the warm-up is over; the classifiers train one step on it and on target data."""
        batch = self.source.sample(batch_size, env=env)
        self.updates += 1
        if self.target.size() == 0:  # SB3 updates after a target step: never empty
            return batch
        delta_r, stats = self.classifiers.update(batch, self.target.sample(batch_size, env))
        self.recent.append(stats)
        logger = self.model.logger
        for key, value in stats.items():
            logger.record_mean(f"darc/{key}", value)
        corrected = self.model.num_timesteps >= self.warmup
        logger.record("darc/corrected", int(corrected))
        if not corrected:
            return batch
        self.corrected += 1
        return batch._replace(rewards=batch.rewards + delta_r.reshape(batch.rewards.shape))

    def outcome(self) -> dict[str, Any]:
        """transfer.json's record after training: the settings, the steps and updates taken,
        the classifiers' last statistics."""
        summary = ({key: float(np.mean([s[key] for s in self.recent]))
                    for key in self.recent[0]} if self.recent else {})
        return {**self.record, "source_steps": self.source_steps,
                "target_steps": int(self.model.num_timesteps),
                "source_episodes": self.episodes, "updates": self.updates,
                "corrected_updates": self.corrected,
                "last_updates": {"n": len(self.recent), **summary}}


_RUNS: weakref.WeakKeyDictionary[OffPolicyAlgorithm, Darc] = weakref.WeakKeyDictionary()


def _darc(model: OffPolicyAlgorithm, choice: registry.Choice, context: Context) -> Darc:
    if model not in _RUNS:
        _RUNS[model] = Darc(model, choice, context)
    return _RUNS[model]


class SourceSteps(BaseCallback):
    """Puts the router in place for ``learn`` and takes it away after; steps the source env
    after each target step."""

    def __init__(self, darc: Darc) -> None:
        super().__init__()
        self.darc = darc

    def _on_training_start(self) -> None:
        self.darc.start()

    def _on_step(self) -> bool:
        self.darc.step_source()
        return True

    def _on_training_end(self) -> None:
        self.darc.stop()


class Hooks(Strategy):
    """darc's hooks (`rltransfer.strategies.hooks`): spaces and options checked before the
    study, weights copied with ``init``, the source env and the classifiers during ``learn``."""

    def configure(self, hparams: dict[str, Any], choice: registry.Choice) -> dict[str, Any]:
        if vecnorm.config(hparams) is not None:
            raise ConfigError(
                f"condition {choice.label!r} does not work with --hparams normalize: the "
                f"source env's transitions would be scaled by statistics of the target's "
                f"observations and rewards: drop normalize (or set normalize=false)")
        return hparams

    def check(self, target: OffPolicyAlgorithm, choice: registry.Choice,
              context: Context) -> None:
        label = choice.label
        check_spaces(target, choice, context)
        if type(target.replay_buffer) is not ReplayBuffer:
            raise ConfigError(
                f"condition {label!r} corrects one-step rewards sampled from SB3's "
                f"ReplayBuffer, not a {type(target.replay_buffer).__name__}: drop n_steps "
                f"and replay_buffer_class from --hparams")
        warmup = warmup_steps(choice, context.timesteps)
        if warmup >= context.timesteps:
            raise ConfigError(
                f"condition {label!r}: warmup={warmup:,} leaves none of --timesteps "
                f"{context.timesteps:,} with the reward correction: lower warmup or raise "
                f"--timesteps")
        if choice.weights is not None:
            check_options(target.policy, choice.weights)

    def initialize(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[Any, dict[str, Any]]:
        report = None
        if choice.weights is None:
            record: dict[str, Any] = {"condition": choice.label,
                                      "options": dict(choice.options), "source": None}
        else:  # init=finetune...: copied as that condition copies
            if context.source_state is None:
                raise ValueError(f"condition {choice.label} needs source weights")
            report = apply_transfer(model, context.source_state, choice, context.source_label)
            record = report.to_dict()
        record["darc"] = settings(model, choice, context)
        return report, record

    def start(self, model: OffPolicyAlgorithm, choice: registry.Choice,
              context: Context) -> tuple[Any, dict[str, Any]]:
        report, record = self.initialize(model, choice, context)
        record["normalization"] = None  # darc refuses normalizing runs (`configure`)
        return report, record

    def callbacks(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                  context: Context) -> list[BaseCallback]:
        return [SourceSteps(_darc(model, choice, context))]

    def after_learning(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                       context: Context) -> dict[str, Any] | None:
        darc = _RUNS.pop(model, None)
        if darc is None:
            return None
        outcome = darc.outcome()
        return {"darc": outcome,
                OUTSIDE_BUDGET: {"source": outcome["source_steps"]}}


HOOKS = Hooks()
