"""Jump-start RL (`jsrl`; Uchendu et al. 2023, "Jump-Start Reinforcement Learning"): the
source policy, a *guide*, acts for the first h steps of each training episode and the learner
(trained from scratch) acts after it, so the learner starts its episodes from states the
guide reaches; h shrinks as the learner takes over. Off-policy algorithms only (DQN, SAC,
TD3, TQC, QR-DQN, CrossQ): every transition, the guide's too, goes into the learner's replay
buffer, and the learner learns from all of them.

The guide is rebuilt from weights only (`rltransfer.strategies.teacher`: the target's policy
class with the target's spaces and kwargs, the source's state dict loaded strictly) and acts
deterministically: DQN's and QR-DQN's greedy action, SAC's (TQC's, CrossQ's) mean, TD3's
actor without noise. Its actions go through SB3's own scaling (``scale_action`` into the
buffer, ``unscale_action`` to the env), as the learner's do. The learner acts as SB3 makes
it act (ε-greedy, sampling, action noise, the warm-up's uniform actions).

Before ``learn`` the guide plays alone on the run's training env to measure its mean
episode length (the starting horizon H, unless ``horizon`` gives it) and its mean return
(the curriculum's reference): until `GUIDE_EPISODES` episodes have ended, or a quarter of
--timesteps once one has, rounded up to whole rollouts (``train_freq`` x ``n_envs`` steps)
so evaluations fall on scratch's steps. Those are env steps of the run: they count toward
--timesteps and their transitions are stored, as replay's prefill is.

Each env of the vectorized env counts the steps of its own episode; the guide acts where
that count is below the episode's h. The switch rule picks h when an episode starts:

* ``curriculum``: h = H, ..., 0 in ``stages`` equal steps (``H x (1 - k / (stages - 1))``
  rounded, stage k = 0 .. stages - 1, as in the authors' implementation). A stage gives way to
  the next once the mean return of its last `WINDOW` training episodes (episodes that
  started in it, played by guide and learner with the learner's exploration) is at least the
  guide's measured mean return minus ``tolerance`` x its magnitude; the last stage (h = 0)
  is the learner alone. Episodes under way keep the h they started with.
* ``random`` (JSRL-Random): h is drawn uniformly from the integers 0 .. H for every episode,
  from a generator seeded by the run's seed.

The switch wraps the model's ``_sample_action`` on the instance during ``learn`` (removed
when it ends, so nothing of it is saved in ``model.zip``). Evaluations call ``predict``,
which it does not touch: they measure the learner alone, as scratch's do. TensorBoard gets
``jsrl/horizon`` (curriculum: the stage's h, with ``jsrl/stage``; random: the mean h of the
episodes being played) and ``jsrl/guide_fraction`` (the share of env steps the guide took
since the last write). ``transfer.json`` records, under ``jsrl``, the options, H and where it
came from, the stage schedule, the guide's measurement, and after training the stages
reached (the step each began), the last horizon and the guide's share of all steps.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy

from ..errors import ConfigError, TransferError
from . import registry, replay
from .hooks import Context, Strategy
from .teacher import Misfit, rebuild, spaces_differ

CURRICULUM, RANDOM = "curriculum", "random"
WINDOW = 5  # training episodes whose mean return decides a stage (the authors' rolling mean)
GUIDE_EPISODES = 5  # episodes the guide plays alone before learn() to measure itself
MEASURE_SHARE = 4  # ... or a quarter of the budget, once one episode has ended


def schedule(horizon: int, stages: int) -> list[int]:
    """The curriculum's horizons: `horizon` down to 0 in `stages` equal steps, rounded."""
    return [round(horizon * (1 - k / (stages - 1))) for k in range(stages)]


def measures(choice: registry.Choice) -> bool:
    """Whether the guide plays alone before training: for H (``horizon`` left out) or for
    the curriculum's reference return."""
    return choice.get("horizon") is None or choice.get("switch") == CURRICULUM


def time_limit(model: OffPolicyAlgorithm) -> int | None:
    """The training env's episode limit (its TimeLimit), None when it has none."""
    env = model.get_env()
    try:
        limit = env.get_attr("_max_episode_steps", [0])[0] if env is not None else None
    except AttributeError:
        return None
    return int(limit) if limit else None


def check_guide(model: OffPolicyAlgorithm, source_state: dict[str, torch.Tensor],
                source_spaces: tuple[spaces.Space, spaces.Space] | None, label: str,
                source_label: str, target: str) -> None:
    """ConfigError (one line) unless the source policy can act on `model`'s env as its guide:
    the target's observation and action spaces and network."""
    differ = spaces_differ(model, source_spaces)
    if differ is not None:
        raise ConfigError(
            f"condition {label!r}: the guide is the source policy acting on {target}, but it "
            f"observes {differ[0]} and acts in {differ[1]} while {target} observes "
            f"{differ[2]} and acts in {differ[3]}: use finetune or reinit-head, or a SOURCE "
            f"with the target's spaces")
    try:
        rebuild(model, source_state)
    except Misfit as misfit:
        raise ConfigError(
            f"condition {label!r}: {source_label or 'the source policy'} does not fit the "
            f"target's network ({misfit.first()}): give source and target the same --algo "
            f"and --hparams policy_kwargs") from None


class Jump:
    """One run's guide and switch: who acts at each step of each env's episode."""

    def __init__(self, model: OffPolicyAlgorithm, guide: BasePolicy,
                 choice: registry.Choice) -> None:
        self.model, self.guide, self.choice = model, guide, choice
        self.switch = str(choice.get("switch"))
        n = model.n_envs
        self.t = np.zeros(n, dtype=np.int64)  # steps of each env's episode so far
        self.h = np.zeros(n, dtype=np.int64)  # each episode's horizon
        self.started = np.zeros(n, dtype=np.int64)  # the stage each episode started in
        self.rng = np.random.default_rng(model.seed)  # the learner's streams stay scratch's
        self.horizons: list[int] = []
        self.stage, self.threshold = 0, -math.inf
        self.window: deque[float] = deque(maxlen=WINDOW)
        self.guide_steps = self.steps = 0  # during learn()
        self.measured = 0  # env steps of the guide's measurement, before learn()
        self.reached: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}  # transfer.json's "jsrl", completed after learn
        self._guided = np.ones(n, dtype=bool)
        self._own = model._sample_action  # the class's, bound

    # --- acting -------------------------------------------------------------------------

    def guide_actions(self) -> tuple[np.ndarray, np.ndarray]:
        """(env actions, buffer actions) of the guide on the model's last observations."""
        unscaled, _ = self.guide.predict(self.model._last_obs, deterministic=True)  # type: ignore[arg-type]
        if isinstance(self.model.action_space, spaces.Box):
            scaled = self.guide.scale_action(unscaled)  # the buffer holds [-1, 1] actions
            return self.guide.unscale_action(scaled), scaled
        return unscaled, unscaled

    def sample_action(self, learning_starts: int, action_noise: Any = None,
                      n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """SB3's ``_sample_action`` with the guide's actions where an episode is within its
        horizon."""
        self._guided = self.t < self.h
        if self._guided.all():
            return self.guide_actions()
        action, buffer_action = self._own(learning_starts, action_noise, n_envs)
        if self._guided.any():
            guide_action, guide_buffer = self.guide_actions()
            action, buffer_action = action.copy(), buffer_action.copy()
            action[self._guided] = guide_action[self._guided]
            buffer_action[self._guided] = guide_buffer[self._guided]
        return action, buffer_action

    # --- the switch ---------------------------------------------------------------------

    def start(self, horizon: int, reference: float | None) -> None:
        """Set H and the reference return; the episodes under way (the measurement's) get
        the first horizon."""
        self.horizon = horizon
        if self.switch == CURRICULUM:
            assert reference is not None
            self.horizons = schedule(horizon, int(self.choice.get("stages")))
            self.threshold = reference - float(self.choice.get("tolerance")) * abs(reference)
            self.reached.append({"stage": 0, "horizon": self.horizons[0],
                                 "step": int(self.model.num_timesteps)})
        for index in range(self.model.n_envs):
            self.h[index] = self._next_horizon()

    def _next_horizon(self) -> int:
        if self.switch == RANDOM:
            return int(self.rng.integers(0, self.horizon + 1))
        return self.horizons[self.stage]

    def after_step(self, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Count the step each env took; an ended episode's return may end its stage, and
        the env's next episode gets its horizon."""
        self.steps += len(dones)
        self.guide_steps += int(self._guided.sum())
        self.t += 1
        for index in np.flatnonzero(dones):
            episode = infos[index].get("episode")  # Monitor's: the raw return
            if (self.switch == CURRICULUM and episode is not None
                    and self.started[index] == self.stage):
                self.window.append(float(episode["r"]))
                self._advance()
            self.t[index], self.started[index] = 0, self.stage
            self.h[index] = self._next_horizon()
        logger = self.model.logger
        logger.record_mean("jsrl/guide_fraction", float(self._guided.mean()))
        if self.switch == CURRICULUM:
            logger.record("jsrl/horizon", self.horizons[self.stage])
            logger.record("jsrl/stage", self.stage)
        else:
            logger.record_mean("jsrl/horizon", float(self.h.mean()))

    def _advance(self) -> None:
        last = len(self.horizons) - 1
        if self.stage == last or len(self.window) < WINDOW:
            return
        mean = float(np.mean(self.window))
        if mean >= self.threshold:
            self.stage += 1
            self.window.clear()
            self.reached.append({"stage": self.stage, "horizon": self.horizons[self.stage],
                                 "step": int(self.model.num_timesteps),
                                 "previous_mean_return": mean})

    def outcome(self) -> dict[str, Any]:
        """What transfer.json adds after training: the guide's steps of the whole run (its
        measurement's included) and the stages reached."""
        steps = self.measured + self.steps
        guided = self.measured + self.guide_steps
        done: dict[str, Any] = {"env_steps": steps, "guide_steps": guided,
                                "guide_fraction": guided / steps if steps else None}
        if self.switch == CURRICULUM:
            done.update(stages_reached=self.reached, final_stage=self.stage,
                        final_horizon=self.horizons[self.stage])
        return done


def measure(jump: Jump, timesteps: int, evaluation: BaseCallback, target: str) -> dict[str, Any]:
    """The guide plays alone on the training env (steps of the run, stored in the buffer)
    until `GUIDE_EPISODES` episodes have ended, or a quarter of `timesteps` once one has, up
    to a whole rollout; `evaluation` evaluates where SB3 would start rollouts."""
    model = jump.model
    model._setup_learn(timesteps, None, reset_num_timesteps=True)  # env reset; schedules span all
    env, rollout = model.env, replay.rollout_steps(model)
    assert env is not None and model.replay_buffer is not None
    evaluation.init_callback(model)
    evaluation.on_training_start({}, {})  # its clock starts, and it evaluates step 0
    lengths: list[int] = []
    returns: list[float] = []
    cap = timesteps // MEASURE_SHARE
    while model.num_timesteps < timesteps:
        if model.num_timesteps % rollout == 0:
            if len(lengths) >= GUIDE_EPISODES or (lengths and model.num_timesteps >= cap):
                break
            evaluation.num_timesteps = model.num_timesteps  # as SB3 sets it
            evaluation.on_rollout_start()
        dones, infos = replay.take_step(model, *jump.guide_actions())
        model.logger.record_mean("jsrl/guide_fraction", 1.0)
        jump.t += 1
        for index in np.flatnonzero(dones):
            lengths.append(int(jump.t[index]))
            jump.t[index] = 0
            if "episode" in infos[index]:  # Monitor's: the raw return
                returns.append(float(infos[index]["episode"]["r"]))
    if not lengths:
        raise TransferError(
            f"jsrl: the guide played {model.num_timesteps:,} env steps of {target} without "
            f"ending an episode, so its episode length and return are unknown: raise "
            f"--timesteps, or give jsrl:horizon=H,switch=random")
    if jump.switch == CURRICULUM and not returns:
        raise TransferError(
            f"jsrl: no return of the guide's {len(lengths)} episodes of {target} was recorded "
            f"(the curriculum reads SB3's Monitor): wrap the env in Monitor, or give "
            f"jsrl:horizon=H,switch=random")
    jump.measured = int(model.num_timesteps)
    return {"episodes": len(lengths), "mean_length": float(np.mean(lengths)),
            "mean_return": float(np.mean(returns)) if returns else None,
            "env_steps": int(model.num_timesteps), "counts_toward_budget": True,
            "rollout_steps": rollout}


def _behaviour(model: OffPolicyAlgorithm) -> str:
    if hasattr(model, "exploration_final_eps"):
        return "greedy on the source Q-network (no epsilon)"
    return "the source actor's deterministic action (the mean; no noise)"


_RUNS: weakref.WeakKeyDictionary[OffPolicyAlgorithm, Jump] = weakref.WeakKeyDictionary()


class Switch(BaseCallback):
    """Puts the switch in place for ``learn`` and takes it away after; counts each step."""

    def __init__(self, jump: Jump) -> None:
        super().__init__()
        self.jump = jump

    def _on_training_start(self) -> None:
        if not self.jump.record:
            raise ValueError("jsrl: before_learning sets the guide's horizon before learn()")
        # On the instance, for this learn() only: SB3 would pickle it into model.zip
        self.jump.model._sample_action = self.jump.sample_action  # type: ignore[method-assign]

    def _on_step(self) -> bool:
        self.jump.after_step(self.locals["dones"], self.locals["infos"])
        return True

    def _on_training_end(self) -> None:
        model = self.jump.model
        model.__dict__.pop("_sample_action", None)
        self.jump.record.update(self.jump.outcome())  # transfer.json's, after learn()


def _jump(model: OffPolicyAlgorithm, choice: registry.Choice, context: Context) -> Jump:
    """The run's `Jump`, built once (its guide from the source's weights)."""
    if model not in _RUNS:
        if context.source_state is None:
            raise ValueError(f"condition {choice.label} needs the source policy's weights")
        # checked before the study (`check_guide`); built under a forked random stream, so
        # the learner's stays scratch's
        _RUNS[model] = Jump(model, rebuild(model, context.source_state), choice)
    return _RUNS[model]


class Hooks(Strategy):
    """jsrl's hooks (`rltransfer.strategies.hooks`): the guide and the budget checked before
    the study, the guide measured before ``learn``, the switch during it."""

    def check(self, target: OffPolicyAlgorithm, choice: registry.Choice,
              context: Context) -> None:
        label = choice.label
        if choice.get("switch") == RANDOM:
            for key in ("stages", "tolerance"):
                if key in choice.options:
                    raise ConfigError(f"condition {label!r}: {key} applies to "
                                      f"switch=curriculum only: drop {key}")
        limit = time_limit(target)
        if measures(choice) and limit is not None \
                and 2 * limit * target.n_envs > context.timesteps:
            raise ConfigError(
                f"condition {label!r}: before training, the guide plays whole episodes of "
                f"{context.target} to measure its length and return, and one may last "
                f"{limit:,} steps (its time limit) on each of {target.n_envs} envs: raise "
                f"--timesteps to at least {2 * limit * target.n_envs:,}, or give "
                f"jsrl:horizon=H,switch=random")
        if context.source_state is not None:
            check_guide(target, context.source_state, context.source_spaces, label,
                        context.source_label, context.target)

    def initialize(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[None, dict[str, Any]]:
        return None, {"condition": choice.label, "options": dict(choice.options),
                      "source": context.source_label}

    def callbacks(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                  context: Context) -> list[BaseCallback]:
        return [Switch(_jump(model, choice, context))]

    def before_learning(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                        context: Context, evaluation: BaseCallback) -> dict[str, Any]:
        jump = _jump(model, choice, context)
        guide = (measure(jump, context.timesteps, evaluation, context.target)
                 if measures(choice) else None)
        given = choice.get("horizon")
        horizon = int(given) if given is not None else max(1, round(guide["mean_length"]))
        jump.start(horizon, guide["mean_return"] if guide is not None else None)
        jump.record.update({
            "guide": context.source_label, "switch": jump.switch, "horizon": horizon,
            "horizon_from": ("horizon=" + str(given) if given is not None
                             else "the guide's mean episode length on the target"),
            "guide_acts": _behaviour(model), "measurement": guide,
        })
        if jump.switch == CURRICULUM:
            jump.record.update({
                "stages": int(choice.get("stages")), "schedule": jump.horizons,
                "tolerance": float(choice.get("tolerance")), "window": WINDOW,
                "threshold": jump.threshold,
                "rule": f"the next stage once the mean return of a stage's last {WINDOW} "
                        f"training episodes >= the guide's mean return - tolerance x "
                        f"|the guide's mean return|"})
        else:
            jump.record["rule"] = "h uniform in 0..H for every episode"
        return {"jsrl": jump.record}

    def after_learning(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                       context: Context) -> dict[str, Any] | None:
        jump = _RUNS.pop(model, None)  # its outcome: the stages reached, the guide's share
        return {"jsrl": jump.record} if jump is not None and jump.record else None


HOOKS = Hooks()
