"""Instance transfer (`replay`): the target's replay buffer is pre-filled before training.

The transitions come from the source policy acting on the *target* env (``replay:n=N``:
env steps of the run, so they count toward its budget), or from a local Minari dataset
recorded on the target (``replay:dataset=ID``: collected elsewhere, so they take none of
the run's steps). Off-policy algorithms only (DQN, SAC, TD3, TQC, QR-DQN, CrossQ): they learn
from a buffer.

The source policy is rebuilt from weights only (`rltransfer.strategies.teacher`). It acts as
SB3 makes a policy act while it trains (`OffPolicyAlgorithm._sample_action` after the
warm-up): SAC, TQC and CrossQ sample their squashed Gaussian, TD3 adds the run's action
noise (if its hyperparameters set one), DQN and QR-DQN are ε-greedy at the run's final ε
(``exploration_final_eps``).
SB3's own `_store_transition` writes each step, so terminal observations and time-outs are
stored as in any SB3 run.

The prefill is rounded up to whole rollouts (``train_freq`` x ``n_envs`` steps), so the run's
evaluations fall on the steps scratch's do; evaluations during the prefill measure the target
policy, which no update has changed yet. Schedules (learning rate, ε) run over the whole
budget, prefill included, so at every step they equal scratch's.

A Minari dataset is read with `minari.load_dataset` from the local Minari folder
(``MINARI_DATASETS_PATH``, else ``~/.minari/datasets``), never downloaded at run time;
Minari stores its spaces as JSON and no pickle.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import TrainFrequencyUnit

from ..errors import ConfigError, MissingDependencyError, TransferError
from . import registry
from .hooks import Context, Strategy
from .teacher import Misfit, rebuild

DEFAULT_SHARE = 10  # replay:n left out: a tenth of the budget


def rollout_steps(model: OffPolicyAlgorithm) -> int:
    """Env steps between two of SB3's rollout starts (where evaluations happen): train_freq x
    n_envs when train_freq counts steps; one vec step when it counts episodes."""
    freq = model.train_freq
    if freq.unit == TrainFrequencyUnit.STEP:  # type: ignore[union-attr]
        return int(freq.frequency) * model.n_envs  # type: ignore[union-attr]
    return model.n_envs


def prefill_steps(model: OffPolicyAlgorithm, choice: registry.Choice, timesteps: int) -> int:
    """The env steps the source's prefill takes: n (or a tenth of the budget) rounded up to
    whole rollouts."""
    asked = choice.get("n") or max(timesteps // DEFAULT_SHARE, 1)
    rollout = rollout_steps(model)
    return math.ceil(asked / rollout) * rollout


def capacity(model: OffPolicyAlgorithm) -> int:
    """Transitions the replay buffer holds before it overwrites the oldest."""
    buffer = model.replay_buffer
    assert buffer is not None
    return int(buffer.buffer_size) * int(buffer.n_envs)


def check(model: OffPolicyAlgorithm, condition: str | registry.Choice, timesteps: int,
          source_state: dict[str, torch.Tensor] | None, source_label: str, target: str) -> None:
    """Pre-flight for a replay condition (parsed or spelled; a no-op for others), on a
    freshly built target `model`: ConfigError/TransferError (one line) when the prefill cannot
    happen, before the study writes anything. `source_state`: the weights the study will use
    (None when they do not exist yet or the condition needs none)."""
    choice = registry.choice_of(condition)
    if choice.condition.takes != registry.TRANSITIONS:
        return
    condition = choice.label  # as errors name it
    dataset_id = choice.get("dataset")
    if dataset_id is not None:
        dataset = load_dataset(dataset_id)
        _check_spaces(model, dataset, dataset_id, target)
        _check_dataset_fill(model, choice, int(dataset.total_steps), condition)
        return
    steps = prefill_steps(model, choice, timesteps)
    if steps >= timesteps:
        raise ConfigError(
            f"condition {condition!r}: the prefill takes {steps:,} env steps (n rounded up to "
            f"whole rollouts of {rollout_steps(model)}), which leaves none of --timesteps "
            f"{timesteps:,} to learn: lower n or raise --timesteps")
    if steps > capacity(model):
        raise ConfigError(
            f"condition {condition!r}: {steps:,} transitions do not fit the replay buffer "
            f"(buffer_size {capacity(model):,}): lower n or raise --hparams buffer_size")
    if source_state is not None:
        teacher_policy(model, source_state, source_label, target)


def teacher_policy(model: OffPolicyAlgorithm, source_state: dict[str, torch.Tensor],
                   source_label: str, target: str) -> BasePolicy:
    """The source policy, able to act on the target env (`rltransfer.strategies.teacher`);
    TransferError (one line) when its weights do not fit the target's network."""
    try:
        return rebuild(model, source_state)
    except Misfit as misfit:
        raise TransferError(
            f"replay: {source_label or 'the source policy'} cannot act on {target} "
            f"({misfit.describe()}): replay needs a source with the target's observation and "
            f"action spaces and network; use replay:dataset=ID, or a weight condition such as "
            f"reinit-head") from None


@contextmanager
def _acting(model: OffPolicyAlgorithm, teacher: BasePolicy) -> Iterator[None]:
    """`model` acts with `teacher`'s network (SB3's own behaviour policy: sampling, noise,
    scaling), and for DQN at its final ε; the target's policy and ε are back afterwards."""
    own, rate = model.policy, getattr(model, "exploration_rate", None)
    model.policy = teacher
    if rate is not None:
        model.exploration_rate = model.exploration_final_eps  # type: ignore[attr-defined]
    try:
        yield
    finally:
        model.policy = own
        if rate is not None:
            model.exploration_rate = rate  # type: ignore[attr-defined]


def prefill_from_source(model: OffPolicyAlgorithm, teacher: BasePolicy, steps: int,
                        total: int, at_rollout: Callable[[], None]) -> None:
    """Step `model`'s env `steps` times with `teacher` acting, storing every transition in
    `model`'s replay buffer; `model.num_timesteps` ends at `steps`, so `learn(total - steps,
    reset_num_timesteps=False)` spends the rest of the budget `total`. `at_rollout` runs where
    SB3 would start a rollout (the evaluation callback's `on_rollout_start`)."""
    model._setup_learn(total, None, reset_num_timesteps=True)  # env reset; schedules span total
    env, rollout = model.env, rollout_steps(model)
    assert env is not None and model.replay_buffer is not None
    if model.use_sde:
        teacher.actor.reset_noise(env.num_envs)  # type: ignore[union-attr,operator]
    while model.num_timesteps < steps:
        if model.num_timesteps % rollout == 0:
            at_rollout()
        with _acting(model, teacher):
            actions, buffer_actions = model._sample_action(0, model.action_noise, env.num_envs)
        dones, _ = take_step(model, actions, buffer_actions)
        for index, done in enumerate(dones):
            if done and model.action_noise is not None:
                model.action_noise.reset(**({"indices": [index]} if env.num_envs > 1 else {}))


def take_step(model: OffPolicyAlgorithm, actions: np.ndarray, buffer_actions: np.ndarray
              ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One env step outside ``learn``, as SB3's ``collect_rollouts`` takes it: the step
    counted, the transition stored (terminal observations and time-outs as SB3 stores them),
    DQN's target-network phase and ε advanced; (dones, infos)."""
    env = model.env
    assert env is not None and model.replay_buffer is not None
    new_obs, rewards, dones, infos = env.step(actions)
    model.num_timesteps += env.num_envs
    model._update_info_buffer(infos, dones)
    model._store_transition(model.replay_buffer, buffer_actions, new_obs, rewards,  # type: ignore[arg-type]
                            dones, infos)
    model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)
    model._on_step()  # DQN: target-network phase and ε, as in any run
    return dones, infos


def behaviour(model: OffPolicyAlgorithm) -> str:
    """How the source policy acts during the prefill, in words (for transfer.json)."""
    if hasattr(model, "exploration_final_eps"):
        return (f"greedy on the source Q-network, epsilon-greedy at the run's final epsilon "
                f"{model.exploration_final_eps:g}")  # type: ignore[attr-defined]
    noise = (f", plus the run's action noise ({type(model.action_noise).__name__})"
             if model.action_noise is not None else "")
    # SAC, TQC and CrossQ sample their squashed Gaussian (they all tune an entropy target)
    kind = "sampled from" if isinstance(model, SAC) or hasattr(model, "target_entropy") else "from"
    return f"actions {kind} the source actor{noise}, as SB3 acts while training"


# --- Minari datasets ----------------------------------------------------------------------

def datasets_folder() -> str:
    """The folder Minari reads local datasets from."""
    return os.environ.get("MINARI_DATASETS_PATH") or os.path.join(
        os.path.expanduser("~"), ".minari", "datasets")


def load_dataset(dataset_id: str) -> Any:
    """The local Minari dataset `dataset_id` (never downloaded); ConfigError (one line) naming
    the folder searched and how to get it when it is not there."""
    try:
        import minari
    except ImportError:
        raise MissingDependencyError("replay:dataset needs Minari: pip install "
                                     "'rltransfer[minari]'") from None
    try:
        return minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError:
        raise ConfigError(
            f"replay:dataset={dataset_id}: no Minari dataset {dataset_id!r} in "
            f"{datasets_folder()} (MINARI_DATASETS_PATH, else ~/.minari/datasets): get it with "
            f"`minari download {dataset_id}`, or set MINARI_DATASETS_PATH to the folder that "
            f"holds it") from None
    except (ValueError, OSError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"replay:dataset={dataset_id}: Minari cannot read it ({reason}): "
                          f"download it again with `minari download {dataset_id}`") from None


def _describe(space: spaces.Space) -> str:
    if isinstance(space, spaces.Discrete):
        return f"Discrete({space.n})"
    if isinstance(space, spaces.Box):
        return f"Box shape {space.shape}"
    return type(space).__name__


def _fits(dataset_space: spaces.Space, space: spaces.Space, bounds: bool) -> bool:
    if isinstance(space, spaces.Discrete):
        return isinstance(dataset_space, spaces.Discrete) and dataset_space.n == space.n \
            and dataset_space.start == space.start
    if isinstance(space, spaces.Box):
        return isinstance(dataset_space, spaces.Box) and dataset_space.shape == space.shape and (
            not bounds or (np.array_equal(dataset_space.low, space.low)
                           and np.array_equal(dataset_space.high, space.high)))
    return False


def _check_spaces(model: OffPolicyAlgorithm, dataset: Any, dataset_id: str, target: str) -> None:
    """The dataset's spaces are the target's (actions with their bounds: SB3 stores actions
    scaled by them); Dict observations are not supported."""
    for what, ours, theirs, bounds in (
            ("observation", model.observation_space, dataset.observation_space, False),
            ("action", model.action_space, dataset.action_space, True)):
        if not _fits(theirs, ours, bounds):
            raise ConfigError(
                f"replay:dataset={dataset_id}: its {what} space {_describe(theirs)} does not "
                f"match {target}'s {_describe(ours)}"
                + (" (or its bounds differ)" if bounds and isinstance(ours, spaces.Box) else "")
                + f": use a dataset recorded on {target}")


def _check_dataset_fill(model: OffPolicyAlgorithm, choice: registry.Choice, total: int,
                        condition: str) -> None:
    asked = choice.get("n")
    if asked is not None and asked > total:
        raise ConfigError(f"condition {condition!r}: the dataset holds {total:,} transitions, "
                          f"fewer than n={asked:,}: lower n or leave it out (all of them)")
    wanted = asked if asked is not None else total
    if wanted > capacity(model):
        raise ConfigError(
            f"condition {condition!r}: {wanted:,} transitions do not fit the replay buffer "
            f"(buffer_size {capacity(model):,}): lower n or raise --hparams buffer_size")
    sequential = model.optimize_memory_usage or getattr(model, "n_steps", 1) > 1
    if model.n_envs > 1 and sequential:
        raise ConfigError(
            f"condition {condition!r}: with --n-envs {model.n_envs}, a dataset's transitions "
            f"cannot be stored as the consecutive steps that optimize_memory_usage and n-step "
            f"returns read: use --n-envs 1, or drop those --hparams")


def prefill_from_dataset(model: OffPolicyAlgorithm, dataset: Any, n: int | None) -> int:
    """Add the dataset's first `n` transitions (all when None) to `model`'s replay buffer, in
    rows of n_envs; return how many were added (a last partial row is left out)."""
    buffer = model.replay_buffer
    assert buffer is not None
    box = isinstance(model.action_space, spaces.Box)
    rows: list[tuple[Any, ...]] = []
    added = 0
    limit = n if n is not None else int(dataset.total_steps)
    for episode in dataset.iterate_episodes():
        for t in range(len(episode)):
            if added + len(rows) >= limit:
                break
            terminated, truncated = bool(episode.terminations[t]), bool(episode.truncations[t])
            action = np.asarray(episode.actions[t])
            if box:  # SB3 stores actions scaled to [-1, 1]
                action = model.policy.scale_action(np.clip(action, model.action_space.low,
                                                           model.action_space.high))
            rows.append((episode.observations[t], episode.observations[t + 1], action,
                         float(episode.rewards[t]), terminated or truncated,
                         {"TimeLimit.truncated": truncated and not terminated}))
            if len(rows) == model.n_envs:
                obs, next_obs, actions, rewards, dones, infos = zip(*rows, strict=True)
                buffer.add(np.stack(obs), np.stack(next_obs), np.stack(actions),
                           np.array(rewards, dtype=np.float32), np.array(dones), list(infos))
                added += len(rows)
                rows = []
        if added + len(rows) >= limit:
            break
    return added


def prefill(model: OffPolicyAlgorithm, choice: registry.Choice, timesteps: int,
            source_state: dict[str, torch.Tensor] | None, source_label: str, target: str,
            evaluation: BaseCallback) -> dict[str, Any]:
    """Fill `model`'s replay buffer for a replay run (before `learn`) and return what
    transfer.json records of it. From the source, `evaluation` (the run's evaluation
    callback) evaluates the target policy where SB3 would start rollouts during the prefill,
    so the run's evaluations fall on scratch's steps."""
    dataset_id = choice.get("dataset")
    n = choice.get("n")
    if dataset_id is not None:
        dataset = load_dataset(dataset_id)
        _check_spaces(model, dataset, dataset_id, target)
        added = prefill_from_dataset(model, dataset, n)
        return {"from": "minari dataset", "dataset": dataset_id,
                "dataset_transitions": int(dataset.total_steps), "n": n,
                "transitions": added, "env_steps": 0,
                "counts_toward_budget": False}
    if source_state is None:
        raise ValueError(f"condition {choice.label} needs the source policy's weights")
    teacher = teacher_policy(model, source_state, source_label, target)
    steps = prefill_steps(model, choice, timesteps)
    evaluation.init_callback(model)
    evaluation.on_training_start({}, {})  # its clock starts, and it evaluates step 0

    def at_rollout() -> None:  # as SB3 calls it: the callback's step count from the last step
        evaluation.num_timesteps = model.num_timesteps
        evaluation.on_rollout_start()

    prefill_from_source(model, teacher, steps, timesteps, at_rollout)
    return {"from": "source policy", "source": source_label, "n": n,
            "transitions": steps, "env_steps": int(model.num_timesteps),
            "counts_toward_budget": True, "rollout_steps": rollout_steps(model),
            "behaviour": behaviour(model)}


class Hooks(Strategy):
    """replay's hooks (`rltransfer.strategies.hooks`): the prefill checked before the study,
    weights copied first with ``init``, the buffer filled before ``learn``."""

    def check(self, target: OffPolicyAlgorithm, choice: registry.Choice,
              context: Context) -> None:
        check(target, choice, context.timesteps, context.source_state,
              context.source_label, context.target)
        from ..training.transfer import check_spaces

        check_spaces(target, choice, context)  # init=...'s obs_map against the spaces

    def initialize(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[Any, dict[str, Any]]:
        if choice.weights is None:
            return None, {"condition": choice.label, "options": dict(choice.options),
                          "source": context.source_label if choice.needs_source else None}
        if context.source_state is None:
            raise ValueError(f"condition {choice.label} needs source weights")
        from ..training.transfer import apply_transfer

        report = apply_transfer(model, context.source_state, choice, context.source_label,
                                context)
        return report, report.to_dict()

    def before_learning(self, model: OffPolicyAlgorithm, choice: registry.Choice,
                        context: Context, evaluation: BaseCallback) -> dict[str, Any]:
        return {"replay": prefill(model, choice, context.timesteps, context.source_state,
                                  context.source_label, context.target, evaluation)}


HOOKS = Hooks()
