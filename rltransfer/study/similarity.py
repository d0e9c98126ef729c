"""How similar are source and target? Three cheap measures of a source -> target pair, taken
once per study, as soon as the source policy is ready (trained, cached or loaded) and before
it is used on the target, and written to the study's similarity.json (atomically, once; a
resumed study reuses it):

* **zero-shot**: the source policy's mean return on the target, deterministic, over the
  study's evaluation episodes on the seeds the first seed's evaluations use (so it is
  finetune's evaluation at step 0, before any update); the report normalizes it on the
  study's score scale, (R - R_random) / (R_threshold - R_random).
* **transition classifier accuracy**: the source policy acts on the source env and on the
  target env, `COLLECT_ENVS` episodes side by side, `--similarity N` transitions per side,
  with its own stochastic action (as it acts while it trains: SB3's
  ``predict(deterministic=False)``; DQN and QR-DQN epsilon-greedy at their final epsilon),
  so the transitions cover the neighbourhood of its behaviour, not one deterministic path. A
  fresh `domain.DomainClassifier` (the kind DARC uses) learns to tell the (s, a, s') rows
  apart and is scored on transitions of episodes it did not train on (`HELD_OUT_ENVS` of the
  streams: a random split of rows would score it on the neighbours of its training rows):
  its balanced accuracy, 0.5 when the transitions cannot be told apart, 1 when always. It
  sees whatever differs in the transitions the policy meets, the states it reaches as much as
  the dynamics. Image (or dict) observations enter as the source policy's features of s and
  s' (`domain.policy_features`), not as pixels; vector observations as they are (after the
  source's VecNormalize statistics, if it has any).
* **feature distance**: `domain.domain_distance` (squared MMD, Gaussian kernels at multiples
  of the median distance) between the source policy's features (`domain.policy_features`)
  of the observations s it met on the source and of those it met on the target: the measure
  the `align` condition reports.

Both sides use the same seeds (episode resets, action sampling): common random numbers, so
the two samples differ only where the envs do (the same env gives the same transitions:
accuracy 0.5 and distance 0).

A study without a source policy (scratch only, with --threshold), one whose source cannot
act on the target (other observation or action spaces), and ``--similarity 0`` record why
nothing was measured.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io_utils import atomic_write_json, read_json

if TYPE_CHECKING:
    import torch
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

    from .plan import Plan

FILE = "similarity.json"
FORMAT = 1
DEFAULT_TRANSITIONS = 512
"""Transitions per side by default (``--similarity``): on CartPole the three measures then
take well under a second."""
COLLECT_ENVS = 8  # episodes side by side while the transitions are collected
HELD_OUT_ENVS = 2  # of them, those whose transitions score the classifier
SEED_OFFSET = 200_000  # the collection's seeds: apart from training's and evaluation's
CLASSIFIER_STEPS = 300  # full-batch Adam steps of the classifier (`domain` default)


def skipped(reason: str, transitions: int) -> dict[str, Any]:
    """similarity.json of a study that measures nothing, and why."""
    return {"format": FORMAT, "transitions": transitions, "skipped": reason,
            "zero_shot": None, "classifier": None, "feature_distance": None, "notes": []}


def read(study_dir: Path) -> dict[str, Any] | None:
    """The study's similarity.json, or None when it has none yet."""
    path = Path(study_dir) / FILE
    return read_json(path) if path.is_file() else None


def ensure(plan_: Plan, study_dir: Path, model_zip: str | None,
           say: Callable[[str], None], threads: int = 1) -> dict[str, Any] | None:
    """The study's measures: read from its similarity.json when it has one, else measured
    (with the source policy in `model_zip`; None: the study has none; on `threads` torch
    threads) and written once. `say` gets one line on what was measured. None when
    measuring failed (said, not written: a resume tries again)."""
    try:
        found = read(study_dir)
    except ValueError:  # cut short or damaged: measured again, and rewritten
        found = None
    if found is not None:
        return found
    transitions = plan_.spec.protocol.similarity
    if transitions == 0:
        record = skipped("--similarity 0: not measured", 0)
    elif model_zip is None:
        record = skipped("no source policy: the study trains scratch only, with --threshold",
                         transitions)
    else:
        try:
            record = measure(plan_, Path(model_zip), transitions, threads)
        except Exception as err:  # noqa: BLE001 - a measure never stops the study
            say(f"warning: source/target similarity not measured ({type(err).__name__}: "
                f"{' '.join(str(err).split())})")
            return None
    atomic_write_json(Path(study_dir) / FILE, record)
    say(describe(record))
    return record


def describe(record: dict[str, Any]) -> str:
    """One line for the terminal."""
    if record.get("skipped"):
        return f"similarity: {record['skipped']}"
    parts = []
    if record["zero_shot"] is not None:
        parts.append(f"zero-shot return on the target {record['zero_shot']['mean_return']:.4g}")
    if record["classifier"] is not None:
        parts.append(f"transition classifier accuracy {record['classifier']['accuracy']:.2f}")
    if record["feature_distance"] is not None:
        parts.append(f"feature distance {record['feature_distance']['value']:.3g}")
    text = ", ".join(parts) or "nothing measured"
    notes = "; ".join(record.get("notes") or [])
    return (f"similarity of source and target ({record['seconds']:.1f} s): {text}"
            + (f" ({notes})" if notes else ""))


# --------------------------------------------------------------------------- measuring


@dataclass
class _Side:
    """One side's transitions: observations as the policy reads them (row-major batches),
    actions as rows, and the stream (env index) each transition came from."""

    obs: Any
    actions: np.ndarray
    next_obs: Any
    streams: np.ndarray


def measure(plan_: Plan, model_zip: Path, transitions: int,
            threads: int = 1) -> dict[str, Any]:
    """Take the three measures with the source policy in `model_zip` (the module doc), on
    `threads` torch threads (a small network on more threads than the process has cores
    to itself runs many times slower)."""
    import torch

    from ..env_factory import make_vec
    from ..strategies.teacher import describe as space_text
    from ..training import vecnorm
    from ..training.run import build_model, frozen_features
    from ..training.transfer import load_checkpoint

    start = time.perf_counter()
    spec = plan_.spec
    seed = spec.protocol.seed + SEED_OFFSET
    source_run = plan_.source_run()
    stats = vecnorm.source_stats(model_zip)
    hparams = dict(plan_.source_agent.hparams)
    envs = COLLECT_ENVS
    notes: list[str] = []
    opened: list[VecEnv] = []

    def env(which: str, n_envs: int, env_seed: int) -> VecEnv:
        venv = make_vec(spec.env.source if which == "source" else spec.env.target, n_envs,
                        env_seed)
        venv, _ = frozen_features(source_run, venv)
        venv = vecnorm.evaluation_env(venv, stats[0] if stats else None, hparams)
        opened.append(venv)
        return venv

    saved = random.getstate(), np.random.get_state(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # SB3 seeds the global generators
            source_env = env("source", envs, seed)
            model = build_model(source_run, source_env)
            model.policy.load_state_dict(load_checkpoint(model_zip).state_dict, strict=True)
            model.policy.set_training_mode(False)
            if hasattr(model, "exploration_final_eps"):  # DQN, QR-DQN: acting as trained
                model.exploration_rate = float(model.exploration_final_eps)
            target_env = env("target", envs, seed)
            spaces = [space_text(s) for s in (source_env.observation_space,
                                              source_env.action_space,
                                              target_env.observation_space,
                                              target_env.action_space)]
            if spaces[:2] != spaces[2:]:
                return {**skipped(
                    f"the source policy observes {spaces[0]} and acts in {spaces[1]}, the "
                    f"target observes {spaces[2]} and acts in {spaces[3]}: it cannot act on "
                    f"the target", transitions), "seconds": time.perf_counter() - start}
            zero_shot = _zero_shot(model, env, spec.protocol.seed, spec.protocol.eval_episodes)
            sides = [_collect(model, venv, transitions, seed) for venv in (source_env,
                                                                           target_env)]
            classifier, distance = _compare(model, sides, notes)
    finally:
        for venv in opened:
            venv.close()
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_num_threads(saved[2])
    return {"format": FORMAT, "transitions": transitions, "skipped": None,
            "zero_shot": zero_shot, "classifier": classifier, "feature_distance": distance,
            "notes": notes, "seed": seed, "collect_envs": envs,
            "seconds": round(time.perf_counter() - start, 3)}


def _zero_shot(model: BaseAlgorithm, env: Callable[[str, int, int], VecEnv], first_seed: int,
               episodes: int) -> dict[str, Any]:
    """The source policy's deterministic return on the target over `episodes` episodes, on
    the evaluation seeds of the study's first seed (`EvaluationCallback`)."""
    from ..training import contrib
    from ..training.run import EVAL_SEED_OFFSET, MAX_EVAL_ENVS

    eval_seed = first_seed + EVAL_SEED_OFFSET
    venv = env("target", min(episodes, MAX_EVAL_ENVS), eval_seed)
    venv.seed(eval_seed)
    returns, _ = contrib.evaluate_policy(model, venv, n_eval_episodes=episodes,
                                         deterministic=True, return_episode_rewards=True)
    return {"mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)),
            "episodes": len(returns), "deterministic": True, "eval_seed": eval_seed}


def _collect(model: BaseAlgorithm, venv: VecEnv, transitions: int, seed: int) -> _Side:
    """`transitions` (s, a, s') of the policy's own stochastic action on `venv`, its envs
    side by side, with the same seeds (resets, action sampling) on either side."""
    import torch

    from ..training import contrib

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    model.action_space.seed(seed)  # DQN's epsilon-greedy draws from it
    venv.seed(seed)
    obs = venv.reset()
    n_envs = venv.num_envs
    state, starts = None, np.ones(n_envs, dtype=bool)
    steps = math.ceil(transitions / n_envs)
    before, actions, after = [], [], []
    masks = contrib.needs_masks(contrib.name_of(model))
    for _ in range(steps):
        kwargs = ({"action_masks": np.stack(venv.env_method(contrib.MASKS))} if masks else {})
        action, state = model.predict(obs, state=state, episode_start=starts,
                                      deterministic=False, **kwargs)
        next_obs, _, dones, infos = venv.step(action)
        reached = _copy(next_obs)
        for i in np.flatnonzero(dones):  # the true s' of an episode's last step
            _put(reached, i, infos[i]["terminal_observation"])
        before.append(obs)
        actions.append(np.asarray(action))
        after.append(reached)
        obs, starts = next_obs, dones
    return _Side(_stack(before), _action_rows(np.concatenate(actions), model.action_space),
                 _stack(after), np.tile(np.arange(n_envs), steps))


def _compare(model: BaseAlgorithm, sides: list[_Side],
             notes: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The classifier's held-out accuracy and the feature distance of the two sides."""
    from ..training import domain

    features = [_features(model, side.obs) for side in sides]
    distance = None
    if features[0] is None or features[1] is None:
        notes.append(f"no features known for {type(model.policy).__name__}: no feature "
                     "distance, and the classifier reads the observations as they are")
    else:
        distance = {"value": domain.domain_distance(features[0], features[1]),
                    "features": features[0].shape[1], "samples": len(features[0])}
    vector = _is_vector(sides[0].obs)
    if vector:
        rows = [np.concatenate([_flat(side.obs), side.actions, _flat(side.next_obs)], axis=1)
                for side in sides]
        what = "(s, a, s'), observations as the policy reads them"
    elif features[0] is not None and features[1] is not None:
        reached = [_features(model, side.next_obs) for side in sides]
        rows = [np.concatenate([f, side.actions, r], axis=1)  # type: ignore[list-item]
                for f, side, r in zip(features, sides, reached, strict=True)]
        what = "(features(s), a, features(s')): the source policy's features of the images"
    else:
        return None, distance
    held_out = sides[0].streams >= sides[0].streams.max() + 1 - HELD_OUT_ENVS
    fit = domain.held_out_accuracy(rows[0][~held_out], rows[1][~held_out],
                                   rows[0][held_out], rows[1][held_out],
                                   steps=CLASSIFIER_STEPS, seed=0)
    classifier = {"accuracy": fit.accuracy, "loss": fit.loss, "n_train": fit.n_train,
                  "n_test": fit.n_test, "rows": what, "dims": int(rows[0].shape[1])}
    return classifier, distance


# --------------------------------------------------------------------------- batches


def _copy(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {key: np.array(value) for key, value in obs.items()}
    return np.array(obs)


def _put(batch: Any, i: int, one: Any) -> None:
    if isinstance(batch, dict):
        for key in batch:
            batch[key][i] = one[key]
    else:
        batch[i] = one


def _stack(batches: list[Any]) -> Any:
    if isinstance(batches[0], dict):
        return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}
    return np.concatenate(batches)


def _is_vector(obs: Any) -> bool:
    """Observations the classifier reads as they are: one flat vector of numbers each (an
    image or a dict is read through the policy's features)."""
    return not isinstance(obs, dict) and np.asarray(obs).ndim == 2


def _flat(obs: np.ndarray) -> np.ndarray:
    return np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)


def _action_rows(actions: np.ndarray, space: Any) -> np.ndarray:
    """Actions as classifier inputs: one-hot for discrete choices, numbers otherwise."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return np.eye(int(space.n), dtype=np.float32)[actions.reshape(-1) - int(space.start)]
    if isinstance(space, spaces.MultiDiscrete):
        nvec = space.nvec.reshape(-1)
        flat = actions.reshape(len(actions), -1)
        return np.concatenate([np.eye(int(k), dtype=np.float32)[flat[:, j]]
                               for j, k in enumerate(nvec)], axis=1)
    return np.asarray(actions, dtype=np.float32).reshape(len(actions), -1)


def _features(model: BaseAlgorithm, obs: Any, batch: int = 256) -> np.ndarray | None:
    """`domain.policy_features` of the source policy for observations `obs` (as the env
    gives them: the policy transposes images as it does when it acts); None when no features
    are known for its policy."""
    import torch

    from ..training import domain

    policy = model.policy
    if hasattr(policy, "lstm_actor"):  # RecurrentPPO: its head reads the LSTM's state
        return None
    n = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
    out: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for begin in range(0, n, batch):
                part = ({k: v[begin:begin + batch] for k, v in obs.items()}
                        if isinstance(obs, dict) else obs[begin:begin + batch])
                tensor, _ = policy.obs_to_tensor(part)
                out.append(domain.policy_features(policy, tensor).flatten(1).float().cpu())
    except TypeError:  # `policy_features` knows no features for this policy
        return None
    return torch.cat(out).numpy()
