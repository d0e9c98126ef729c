"""Pre-flight checks: everything a study needs is built once (models, the transfer
from the source, an external checkpoint, the random policy's score and the threshold)
before the study folder gets its first file, so a bad input never leaves half a study.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from ..env_factory import make_env, make_vec, reward_threshold
from ..errors import CheckpointError, HyperparameterError, OutputError
from ..io_utils import file_sha256
from ..report.metrics import ASYMPTOTE_WINDOW
from ..specs import EnvSpec, RunSpec
from ..strategies import hooks as strategy
from ..strategies import registry
from ..training import checkpoints, vecnorm
from ..training.contrib import (
    evaluate_policy,  # SB3's, or MaskablePPO's with the env's action masks
)
from ..training.run import EVAL_SEED_OFFSET, MAX_EVAL_ENVS, build_model, frozen_features
from ..training.success import EpisodeSuccess
from ..training.transfer import apply_transfer, check_algorithm, load_checkpoint
from . import budgets
from .caches import Source, source_from_cache
from .plan import Plan
from .score_scale import RandomScore, ScoreScale, choose, human_scores, success_scale

RANDOM_EPISODES = 100  # the random policy's return anchors every normalized score
RANDOM_STEP_CAP = 50_000  # but long-episode games (Atari) should not take minutes


def random_return(env: EnvSpec, episodes: int, seed: int) -> RandomScore:
    """Mean and std of the uniformly random policy's returns on `env` (the 0 of the normalized
    score; the std sizes an evaluation's standard error), over `episodes` episodes, or fewer
    (at least 10) once RANDOM_STEP_CAP steps are spent."""
    instance = make_env(env)
    instance.action_space.seed(seed)
    totals: list[float] = []
    success = EpisodeSuccess(1)  # its success rate too, where the env reports success
    steps = 0
    try:
        for episode in range(episodes):
            if len(totals) >= 10 and steps >= RANDOM_STEP_CAP:
                break
            instance.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                _, reward, terminated, truncated, info = instance.step(
                    instance.action_space.sample())
                total += float(reward)
                steps += 1
                done = terminated or truncated
                success({"i": 0, "info": info, "done": done, "is_monitor_wrapped": False}, {})
            totals.append(total)
    finally:
        instance.close()
    return RandomScore(float(np.mean(totals)), float(np.std(totals, ddof=1)) if len(totals) > 1
                       else 0.0, len(totals), success.rate)


def check_writable(out: Path) -> None:
    """Raise OutputError unless files can be created in `out`, without creating it: a
    missing `out` is checked at the nearest folder above it that exists (the study creates
    it once every check has passed)."""
    folder = out
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write to --out {out}: {folder} is not a folder; choose a "
                          f"folder you can write")
    if folder != out:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write to --out {out}: {folder} is not writable; choose "
                              f"a folder you can write")
        return
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise OutputError(
            f"cannot write to --out {out}: {err.strerror or err}; choose a folder you can write"
        ) from None


def probe_model(run: RunSpec) -> BaseAlgorithm:
    """Build `run`'s model once, so a hyperparameter value SB3 rejects is a user error here,
    before the study folder exists, not a traceback mid-study."""
    env = make_vec(run.env, run.agent.n_envs, run.seed)
    try:
        env, _ = frozen_features(run, env)  # reads the encoder's weights file, as a run will
        return build_model(run, env)
    except _MODEL_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HyperparameterError(
            f"cannot build {run.agent.algo} for {run.env} with these hyperparameters "
            f"({type(err).__name__}: {reason}): fix --hparams"
        ) from None
    finally:
        env.close()


_MODEL_ERRORS = (TypeError, ValueError, AssertionError, KeyError, NotImplementedError,
                 IndexError, gym.error.Error)


def check_external(plan_: Plan) -> Source | None:
    """Load --source-model and make sure it fits the source and transfers to the target,
    before anything is written."""
    if plan_.spec.transfer.source_model is None:
        return None
    model = plan_.spec.transfer.source_model
    path = checkpoints.resolve_source_model(model)  # hf:// in the hub cache
    checkpoint = load_checkpoint(path)
    check_algorithm(checkpoint, plan_.spec.agent.algo)
    stats = vecnorm.source_stats(path)  # a refused vecnormalize.pkl stops the study here
    source_model = probe_model(plan_.source_run())
    fit = apply_transfer(source_model, checkpoint.state_dict, registry.FINETUNE, str(path))
    if fit.copied != len(fit.tensors):
        raise CheckpointError(
            f"{path} does not fit {plan_.spec.env.source} with this study's network "
            f"({fit.summary()})"
            f": give a checkpoint trained on SOURCE or set --hparams policy_kwargs to its network"
        )
    if plan_.spec.transfers:
        target = probe_model(plan_.policy_run())
        _probe_teachers(plan_, target, checkpoint.state_dict, source_model, str(path))
        apply_transfer(target, checkpoint.state_dict, registry.FINETUNE, str(path))
    # Its score on the source env: the threshold for targets that register none. It then
    # plays as many episodes as the last ASYMPTOTE_WINDOW evaluations of a trained source.
    window = ASYMPTOTE_WINDOW if derives_threshold(plan_) else 1
    episodes = plan_.spec.protocol.eval_episodes * window
    source_env = make_vec(plan_.spec.env.source, min(episodes, MAX_EVAL_ENVS),
                          plan_.spec.protocol.seed + EVAL_SEED_OFFSET)
    try:
        source_env.seed(plan_.spec.protocol.seed + EVAL_SEED_OFFSET)
        source_env = vecnorm.evaluation_env(source_env, stats[0] if stats else None,
                                            dict(plan_.source_agent.hparams))
        score, _ = evaluate_policy(source_model, source_env, n_eval_episodes=episodes)
    finally:
        source_env.close()
    record = {"kind": "external", "path": os.path.abspath(path), "sha256": file_sha256(path),
              "algo_in_checkpoint": checkpoint.algo, "trained_steps": 0,
              "final_return": float(score), "score": float(score),
              "score_from": f"source checkpoint's mean return over {episodes} episodes on "
                            f"{plan_.spec.env.source}",
              **checkpoints.source_record(plan_.spec.transfer.source_model, path, checkpoint)}
    return Source(checkpoint.state_dict, str(path), record)


def derives_threshold(plan_: Plan) -> bool:
    """Whether the threshold will be the source's own score (nothing else gives one)."""
    target = plan_.spec.env.target
    return (plan_.spec.protocol.threshold is None and human_scores(target) is None
            and reward_threshold(target) is None)


def probe_encoder(plan_: Plan) -> None:
    """Build the model of the condition that trains with the study's pretrained encoder (its
    weights file read as a run will), first: an unusable file is then an error at once,
    before the random policy is measured."""
    agent = plan_.encoder_agent
    if agent is not None:
        probe_model(next(r for r in plan_.target_runs() if r.agent == agent))


def probe(plan_: Plan, train_source: bool) -> dict[str, budgets.Fit]:
    """Build every model the study will train; dry-run the transfer from a fresh source (or
    from the cached one the study will reuse). Returns how the budgets fit the models'
    rollouts ("target", and "source" when the study trains it); a budget below one rollout
    is an error here (`budgets.check`)."""
    target = probe_model(plan_.policy_run())
    fits = {"target": _fit(plan_, target, "--timesteps")}
    for choice in plan_.conditions:  # each entry's own check, no source yet:
        hooks = strategy.of(choice)  # e.g. layers=k fits; replay's prefill fits the budget
        if hooks is not None:
            hooks.check(_target_of(plan_, choice, target), choice, _context(plan_))
    if train_source:
        cached = source_from_cache(plan_)
        if cached is not None:
            # Trained from this very run spec, so its model builds; the weights the study
            # will transfer dry-run the transfer.
            if plan_.spec.transfers:
                state = load_checkpoint(cached / "model.zip").state_dict
                label = f"the cached {plan_.spec.env.source} policy"
                source = probe_model(plan_.source_run()) if _acts(plan_) else None
                _probe_teachers(plan_, target, state, source, label)  # e.g. progressive's
                apply_transfer(target, state, registry.FINETUNE, label)
            return fits
        source = probe_model(plan_.source_run())
        fits["source"] = _fit(plan_, source, "--source-timesteps")
        if plan_.spec.transfers:
            label = f"the {plan_.spec.env.source} policy"
            _probe_teachers(plan_, target, source.policy.state_dict(), source, label)
            apply_transfer(target, source.policy.state_dict(), registry.FINETUNE, label)
    return fits


def _fit(plan_: Plan, model: BaseAlgorithm, option: str) -> budgets.Fit:
    """How `option`'s budget fits `model`'s rollouts; ConfigError below one rollout."""
    run = plan_.source_run() if option == "--source-timesteps" else plan_.policy_run()
    fit = budgets.fit_of(model, option, plan_.spec.agent.algo, run.timesteps, run.eval_freq)
    budgets.check(fit)
    return fit


def _acts(plan_: Plan) -> bool:
    """Whether a condition queries the source policy on the target (a teacher, a guide,
    replay's prefill), so its check needs the source model's spaces: a cached source's model
    is then built once more to read them."""
    return any(c.condition.takes in (registry.POLICY, registry.TRANSITIONS)
               for c in plan_.conditions)


def _probe_teachers(plan_: Plan, target: BaseAlgorithm, state: dict[str, torch.Tensor],
                    source: BaseAlgorithm | None, label: str) -> None:
    """Each condition's own check with the weights the study will use (`strategy`): e.g.
    kickstart's teacher must fit the target's policy (spaces, network, algorithm), replay's
    source must be able to act on the target, progressive's column must fit the source's
    layers. `source`: the source's model, for its spaces (None: they are not needed)."""
    spaces = None if source is None else (source.observation_space, source.action_space)
    for choice in plan_.conditions:
        hooks = strategy.of(choice)
        if hooks is not None and choice.needs_source:
            hooks.check(_target_of(plan_, choice, target), choice, _context(
                plan_, state, label, spaces))


def _target_of(plan_: Plan, choice: registry.Choice, target: BaseAlgorithm) -> BaseAlgorithm:
    """`target`, or the condition's own probe model when its hooks configure SB3's
    hyperparameters differently (e.g. progressive's policy class)."""
    hooks = strategy.of(choice)
    hparams = dict(plan_.target_agent.hparams)
    if hooks is None or hooks.configure(dict(hparams), choice) == hparams:
        return target
    run = dataclasses.replace(plan_.policy_run(), condition=choice)
    return probe_model(run)


def _context(plan_: Plan, state: dict[str, torch.Tensor] | None = None, label: str = "",
             spaces: tuple[Any, Any] | None = None) -> strategy.Context:
    return strategy.Context(plan_.spec.timesteps, str(plan_.spec.env.target), state, label,
                            spaces, source_env=plan_.spec.env.source,
                            target_env=plan_.spec.env.target)


def needs_source(plan_: Plan, known: ScoreScale | None, external: Source | None) -> bool:
    return external is None and (plan_.spec.transfers or known is None)


def score_scale(plan_: Plan, random: RandomScore, source: Source | None,
                required: bool = False) -> ScoreScale | None:
    """The study's score scale (`score_scale.choose`): --threshold, else Atari's
    human-normalized score, else the target's reward_threshold, else the source policy's mean
    score over its last evaluations; None while that score is not known yet."""
    spec = plan_.spec
    if spec.protocol.score == "success":
        return success_scale(spec.env.target, random, spec.protocol.eval_episodes)
    return choose(spec.env.target, spec.env.source, spec.protocol.threshold, random,
                  spec.protocol.eval_episodes, source.record if source is not None else None,
                  required=required)


def check_success_score(plans: list[Plan]) -> None:
    """``--score success`` for a matrix: each target's random rollout and success scale
    (`score_scale.success_scale`), checked before the matrix writes anything; each study
    measures it again, with the same seed, when it starts."""
    checked: set[str] = set()
    for plan_ in plans:
        spec = plan_.spec
        if spec.protocol.score != "success" or str(spec.env.target) in checked:
            continue
        checked.add(str(spec.env.target))
        random = random_return(spec.env.target, max(spec.protocol.eval_episodes,
                                                    RANDOM_EPISODES),
                               spec.protocol.seed + EVAL_SEED_OFFSET)
        success_scale(spec.env.target, random, spec.protocol.eval_episodes)


def check_new_study(plan_: Plan) -> tuple[RandomScore, ScoreScale | None, Source | None,
                                          dict[str, budgets.Fit]]:
    """Check everything a new study needs before its first file. Returns the random policy's
    score on the target, the score scale when it is known already (None: the source's
    score sets it), the --source-model checkpoint (None without one) and how the budgets fit
    the rollouts (`probe`)."""
    probe_encoder(plan_)
    external = check_external(plan_)
    spec = plan_.spec
    random = random_return(spec.env.target, max(spec.protocol.eval_episodes, RANDOM_EPISODES),
                           spec.protocol.seed + EVAL_SEED_OFFSET)
    known = score_scale(plan_, random, external)  # None: wait for the source's score
    fits = probe(plan_, needs_source(plan_, known, external))
    return random, known, external, fits
