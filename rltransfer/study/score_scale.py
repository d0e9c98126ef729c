"""The score scale: which return is 0 and which is 1 of a study's normalized score.

    score = (R - R_random) / (R_threshold - R_random)

(Named apart from the VecNormalize statistics a run normalizes its observations with,
`rltransfer.training.vecnorm`: "normalization" in the code means those.) The pair is chosen
once per study, in this order:

1. ``--threshold`` (R_random: the random policy's return, measured on the target);
2. Atari targets (any ale-py id) of a game in the published table: the *human-normalized*
   score, R_random = the published random score, R_threshold = the published human score
   (`ATARI_SCORES`, shipped as ``rltransfer/data/atari_scores.json`` with its source);
3. the target's registered Gymnasium ``reward_threshold``;
4. else the source policy's own score on the source env, the mean of its last
   `metrics.ASYMPTOTE_WINDOW` evaluations (not one noisy final one), with a loud warning
   (a scratch-only study trains its source for it); without a source score, an error that
   asks for ``--threshold``.

A threshold is refused (`ConfigError`, before anything is written when it is known at
the start) when it is not above R_random, or when its gap above R_random is smaller than
`SE_GAP` standard errors of one evaluation of the random policy (std / sqrt(eval
episodes)): normalized scores would then be mostly evaluation noise. The published Atari
anchors are used as they are.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import gymnasium as gym
import numpy as np

from ..env_factory import resolve, reward_threshold
from ..errors import ConfigError
from ..report.metrics import ASYMPTOTE_WINDOW
from ..specs import EnvSpec

SE_GAP = 3.0  # a threshold must be >= SE_GAP evaluation standard errors above random
HUMAN_NORMALIZED = "human-normalized"
SUCCESS_NORMALIZED = "success-rate"  # --score success: 0 = random's success rate, 1 = 100%
THRESHOLD_NORMALIZED = "threshold"
ATARI_SCORES = "atari_scores.json"
ATARI_CITATION = "Badia et al. 2020 Atari-57 table"


@dataclass(frozen=True)
class RandomScore:
    """The uniformly random policy's episode returns on the target: mean, std, count."""

    mean: float
    std: float | None  # None: not recorded (a study started before it was)
    episodes: int
    success: float | None = None  # its success rate; None: the env reports no success

    def standard_error(self, eval_episodes: int) -> float | None:
        """Standard error of one evaluation of `eval_episodes` episodes of this policy."""
        if self.std is None:
            return None
        return self.std / math.sqrt(max(eval_episodes, 1))


@dataclass(frozen=True)
class ScoreScale:
    """The 0 and the 1 of a study's normalized score and where each came from; `kind` is
    study.json's ``normalization`` key (`THRESHOLD_NORMALIZED` or `HUMAN_NORMALIZED`)."""

    threshold: float
    threshold_from: str
    random_return: float
    random_return_from: str
    kind: str = THRESHOLD_NORMALIZED
    warning: str | None = None
    note: str | None = None

    def record(self) -> dict[str, Any]:
        """The study.json keys (see README, "The score scale and thresholds"); they keep the
        names they had, ``normalization`` and ``normalization_note`` included."""
        found: dict[str, Any] = {
            "threshold": self.threshold, "threshold_from": self.threshold_from,
            "normalization": self.kind, "target_random_return": self.random_return,
            "random_return_from": self.random_return_from,
        }
        if self.warning:
            found["threshold_warning"] = self.warning
        if self.note:
            found["normalization_note"] = self.note
        return found


@lru_cache(maxsize=1)
def atari_table() -> dict[str, Any]:
    """The published Atari random and human scores (package data), with their source."""
    text = resources.files("rltransfer").joinpath("data", ATARI_SCORES).read_text("utf-8")
    return json.loads(text)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


_ATARI_ID = re.compile(r"^(?:ALE/)?([A-Za-z0-9]+?)(?:-ram)?(?:NoFrameskip|Deterministic)?-v\d+$")


def atari_game(spec: EnvSpec) -> str | None:
    """ale-py's name of the game `spec` plays (``ALE/SpaceInvaders-v5`` -> ``space_invaders``),
    or None when `spec` is not an Atari env."""
    _, base_id, _ = resolve(spec)
    env_id = base_id.split(":")[-1]
    registered = gym.spec(env_id)
    if not str(registered.entry_point).startswith("ale_py"):
        return None
    game = registered.kwargs.get("game")
    if isinstance(game, str):
        return game
    match = _ATARI_ID.match(env_id)
    return _snake(match.group(1)) if match else None


def human_scores(spec: EnvSpec) -> tuple[float, float] | None:
    """(published random score, published human score) of `spec`'s Atari game, or None."""
    game = atari_game(spec)
    scores = atari_table()["games"].get(game) if game else None
    if scores is None:
        return None
    return float(scores["random"]), float(scores["human"])


def _non_default(spec: EnvSpec) -> dict[str, float]:
    """The parameters of `spec` that differ from its family's defaults."""
    family, _, params = resolve(spec)
    if family is None:
        return {}
    return {name: value for name, value in params.items()
            if (p := family.parameter(name)) is not None and value != p.default}


def source_score(steps: np.ndarray, returns: np.ndarray) -> tuple[float, int]:
    """(score, evaluations used): the mean return of the last `ASYMPTOTE_WINDOW` evaluations
    of a source's evaluations.csv, the untrained one at step 0 left out when later ones exist."""
    trained = returns[steps > 0] if (steps > 0).any() else returns
    last = trained[-ASYMPTOTE_WINDOW:]
    return float(np.mean(last)), int(len(last))


def derived_warning(target: EnvSpec, source: EnvSpec) -> str:
    return (f"{target} registers no reward_threshold, so the threshold (normalized score 1) is "
            f"the source policy's own score on {source}, the mean of its last "
            f"{ASYMPTOTE_WINDOW} evaluations: pass --threshold R to pin it")


def choose(study_target: EnvSpec, study_source: EnvSpec, given: float | None,
           random: RandomScore, eval_episodes: int, source: dict[str, Any] | None,
           required: bool = False) -> ScoreScale | None:
    """The study's score scale (see the module doc); None while it waits for the source's
    score (`source` is the source record: its "score" and "score_from", or an older
    record's "final_return"). Raises ConfigError for a threshold too close to random."""
    measured = (random.mean, f"measured: the uniformly random policy over {random.episodes} "
                             f"episodes on the target")
    if given is not None:
        found = ScoreScale(float(given), "--threshold", *measured)
    elif (published := human_scores(study_target)) is not None:
        changed = _non_default(study_target)
        note = None
        if changed:
            settings = ", ".join(f"{k}={v:g}" for k, v in changed.items())
            note = (f"the published Atari scores are for the game's default mode and "
                    f"difficulty; this target plays {settings}")
        return ScoreScale(published[1], f"human score (Atari human-normalized; "
                                           f"{ATARI_CITATION})", published[0],
                             f"published random score ({ATARI_CITATION})", HUMAN_NORMALIZED,
                             note=note)
    elif (registered := reward_threshold(study_target)) is not None:
        found = ScoreScale(float(registered), "target reward_threshold", *measured)
    elif source is not None and ("score" in source or "final_return" in source):
        score = source.get("score", source.get("final_return"))
        origin = source.get("score_from", "source final score")
        found = ScoreScale(float(score), origin, *measured,
                              warning=derived_warning(study_target, study_source))
    elif not required:
        return None
    else:
        raise ConfigError(f"{study_target} registers no reward_threshold and there is no source "
                          f"score: pass --threshold")
    check_gap(found, random, eval_episodes, study_target)
    return found


def check_gap(found: ScoreScale, random: RandomScore, eval_episodes: int,
              target: EnvSpec) -> None:
    """Refuse a threshold that is not above random, or fewer than SE_GAP evaluation standard
    errors above it."""
    gap = found.threshold - found.random_return
    if gap <= 0:
        raise ConfigError(
            f"threshold {found.threshold:g} ({found.threshold_from}) is not above the random "
            f"policy's return {found.random_return:.4g} on {target}: pass a higher --threshold")
    se = random.standard_error(eval_episodes)
    if se is not None and random.std is not None and gap < SE_GAP * se:
        needed = math.ceil((SE_GAP * random.std / gap) ** 2)  # episodes that make SE small enough
        raise ConfigError(
            f"threshold {found.threshold:g} ({found.threshold_from}) is only {gap:.4g} above "
            f"the random policy's return {found.random_return:.4g} on {target}, less than "
            f"{SE_GAP:g} standard errors of an evaluation ({SE_GAP:g} x {se:.4g}, from the "
            f"random returns' std {random.std:.4g} over {eval_episodes} episodes): scores "
            f"would be noise; pass a higher --threshold, or --eval-episodes {needed} or more")


def success_scale(target: EnvSpec, random: RandomScore, eval_episodes: int) -> ScoreScale:
    """``--score success``'s scale: 0 = the random policy's success rate on the target, 1 =
    100% success. Refused (`ConfigError`, before anything is written) for a target that
    reports no success, and, as `check_gap` refuses a threshold, where 100% is fewer than
    `SE_GAP` standard errors of one evaluation (a binomial's, sqrt(p (1 - p) / episodes))
    above the random policy's rate: it already succeeds (almost) always."""
    if random.success is None:
        raise ConfigError(
            f"--score success: {target} reports no success (no 'is_success' or 'success' in "
            f"its step infos, in {random.episodes} random episodes): use --score return")
    rate = random.success
    gap = 1.0 - rate
    se = math.sqrt(rate * (1.0 - rate) / max(eval_episodes, 1))
    if gap <= 0 or gap < SE_GAP * se:
        raise ConfigError(
            f"--score success: the random policy already succeeds in {rate:.0%} of "
            f"{random.episodes} episodes on {target}, so 100% success is less than "
            f"{SE_GAP:g} standard errors of an evaluation above it: success rates cannot "
            f"tell transfer from chance; use --score return, or a harder target")
    return ScoreScale(1.0, "100% success (--score success)", rate,
                      f"measured: the uniformly random policy's success rate over "
                      f"{random.episodes} episodes on the target", SUCCESS_NORMALIZED)
