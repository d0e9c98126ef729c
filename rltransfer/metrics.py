"""Transfer metrics (Taylor & Stone 2009) on normalized scores, with bootstrap intervals.

Pure functions over NumPy arrays; no plotting and no file I/O (see `report.py` for those).

A *curve* is one run's evaluation history: ``timesteps`` (strictly increasing, first 0 =
evaluation before any training) and ``returns`` (mean episode return of the deterministic
policy at each evaluation). Every metric is computed on the normalized score

    score = (R - R_random) / (R_threshold - R_random)

so 0 is the random policy and 1 is the threshold. A run that never reaches the threshold is
*censored*: its time to threshold is ``math.inf`` here, and ``None`` plus a flag in the
JSON-ready summary, never a number that reads like success.

Intervals are 95% percentile-bootstrap intervals over seeds (``scipy.stats.bootstrap``) with a
fixed seed, so a report is reproducible. rliable would be the field's library for this, but it
does not import with pandas 3; `interval` plays the role of its bootstrap helper.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from rltransfer.errors import ConfigError

ASYMPTOTE_WINDOW = 3
"""Number of final evaluations averaged into the asymptote."""

Statistic = Callable[..., Any]


class MetricsError(ConfigError, ValueError):
    """Metrics cannot be computed from these inputs (bad normalization or malformed curve)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a bootstrap interval.

    ``low``/``high`` are None when unknown (fewer than 2 runs in a sample, or the statistic is
    undefined in some resamples). Values may be ``inf`` (censored time to threshold).
    """

    point: float
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready ``{"point", "low", "high"}``; non-finite values become None."""
        return {
            "point": _json_float(self.point),
            "low": _json_float(self.low),
            "high": _json_float(self.high),
        }


# --------------------------------------------------------------------------- per run


def normalize(returns: ArrayLike, random_return: float, threshold: float) -> np.ndarray:
    """Normalized score ``(R - R_random) / (R_threshold - R_random)``: 0 random, 1 threshold.

    Raises `MetricsError` (a ValueError) when ``threshold == random_return``.
    """
    if not (math.isfinite(random_return) and math.isfinite(threshold)):
        raise MetricsError(
            f"random_return={random_return} and threshold={threshold} must be finite numbers."
        )
    if threshold == random_return:
        raise MetricsError(
            f"threshold ({threshold}) equals random_return ({random_return}): scores cannot be "
            "normalized; set the threshold to the return that counts as solving the task."
        )
    return (np.asarray(returns, dtype=float) - random_return) / (threshold - random_return)


def run_metrics(
    timesteps: ArrayLike,
    returns: ArrayLike,
    *,
    random_return: float,
    threshold: float,
    budget: int,
) -> dict[str, float]:
    """Per-run metrics on the normalized curve.

    - ``initial``: score at t = 0 (before training).
    - ``asymptote``: mean score over the last 3 evaluations (all of them if fewer).
    - ``auc``: "total reward", the area under the score curve over [0, budget] divided by
      ``budget`` (trapezoid rule), i.e. the mean score over training. If the last evaluation
      is before ``budget`` its value is held flat to ``budget``; evaluations after ``budget``
      (a rollout overshooting the budget) are cut off by interpolating at ``budget``.
    - ``time_to_threshold``: first timestep with score >= 1 (raw return >= threshold when
      threshold > random_return); ``math.inf`` if never reached by ``budget`` (censored).
    """
    t, r = _check_curve(timesteps, returns, budget)
    score = normalize(r, random_return, threshold)
    hits = np.flatnonzero(score >= 1.0)
    reached = hits.size > 0 and t[hits[0]] <= budget
    return {
        "initial": float(score[0]),
        "asymptote": float(np.mean(score[-ASYMPTOTE_WINDOW:])),
        "auc": _auc(t, score, budget),
        "time_to_threshold": float(t[hits[0]]) if reached else math.inf,
    }


def _check_curve(timesteps: ArrayLike, returns: ArrayLike, budget: int) -> tuple[np.ndarray, ...]:
    t = np.asarray(timesteps, dtype=float)
    r = np.asarray(returns, dtype=float)
    if t.ndim != 1 or r.shape != t.shape or t.size == 0:
        raise MetricsError(
            f"A curve needs 1-D timesteps and returns of equal, non-zero length; got shapes "
            f"{t.shape} and {r.shape}."
        )
    if t[0] != 0 or np.any(np.diff(t) <= 0):
        raise MetricsError(
            "Curve timesteps must start at 0 (evaluation before training) and strictly "
            f"increase; got {t[:5].tolist()}..."
        )
    if not np.all(np.isfinite(r)):
        raise MetricsError("Curve returns must be finite numbers (found NaN or inf).")
    if not budget > 0:
        raise MetricsError(f"budget must be a positive number of steps; got {budget}.")
    return t, r


def _auc(t: np.ndarray, score: np.ndarray, budget: int) -> float:
    """Mean normalized score over [0, budget] by the trapezoid rule."""
    if t[-1] < budget:  # hold the last value flat to the budget
        t = np.append(t, budget)
        score = np.append(score, score[-1])
    else:  # cut at the budget
        end = np.interp(budget, t, score)
        keep = t < budget
        t = np.append(t[keep], budget)
        score = np.append(score[keep], end)
    return float(np.trapezoid(score, t) / budget)


# --------------------------------------------------------------------------- intervals


def interval(
    samples: tuple[np.ndarray, ...],
    statistic: Statistic,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Point estimate and percentile-bootstrap interval of ``statistic(*samples, axis=-1)``.

    Wraps ``scipy.stats.bootstrap`` (independent resampling of each sample, fixed ``seed``).
    ``statistic`` must be vectorized: it takes the samples and an ``axis`` keyword.
    With fewer than 2 values in any sample the bounds are None (unknown); when every sample
    is constant they equal the point. Infinite statistics (censored medians) are allowed: a
    bound next to ``inf`` is the limit of the linear interpolation (see `_quantile`). If the
    statistic is NaN in any resample (undefined there) both bounds are None.
    """
    arrays = tuple(np.asarray(s, dtype=float) for s in samples)
    with _quiet():
        point = float(statistic(*arrays, axis=-1))
    if min(a.size for a in arrays) < 2:
        return Estimate(point, None, None)
    if all(np.all(a == a[0]) for a in arrays):
        return Estimate(point, point, point)
    with _quiet():
        result = stats.bootstrap(
            arrays,
            statistic,
            n_resamples=n_resamples,
            vectorized=True,
            confidence_level=confidence_level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    dist = np.asarray(result.bootstrap_distribution, dtype=float)
    if np.isnan(dist).any():
        return Estimate(point, None, None)
    if np.isinf(dist).any():
        # scipy interpolates inf - inf to NaN; take the limit of the interpolation instead.
        alpha = (1 - confidence_level) / 2
        return Estimate(point, _quantile(dist, alpha), _quantile(dist, 1 - alpha))
    ci = result.confidence_interval
    return Estimate(point, float(ci.low), float(ci.high))


def _quantile(values: np.ndarray, q: float) -> float | None:
    """Linear-interpolation quantile (NumPy's default) that tolerates infinite values.

    Between a finite value and ``+inf`` the interpolation is ``+inf`` (and ``-inf`` below);
    exactly on an order statistic it is that value.
    """
    s = np.sort(values)
    h = (s.size - 1) * q
    i = math.floor(h)
    g = h - i
    lo = float(s[i])
    if g == 0 or i + 1 >= s.size:
        return lo
    hi = float(s[i + 1])
    if lo == hi:
        return lo
    if math.isinf(lo) and math.isinf(hi):
        return None
    if math.isinf(hi):
        return hi
    if math.isinf(lo):
        return lo
    return lo + g * (hi - lo)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence degenerate-distribution and inf-arithmetic warnings (handled explicitly)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# Vectorized statistics: each takes samples and an ``axis`` keyword (for bootstrap speed).


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _median(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis)


def _iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, 0.25, axis=axis)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _transfer_ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    ref = np.mean(y, axis=axis)
    return np.where(ref > 0, (np.mean(x, axis=axis) - ref) / ref, np.nan)


def _prob_improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    u1 = stats.mannwhitneyu(x, y, axis=axis, method="asymptotic").statistic
    return u1 / (x.shape[axis] * y.shape[axis])


def _speedup(x: np.ndarray, y: np.ndarray, axis: int = -1, *, budget: float) -> np.ndarray:
    # A censored reference median counts as `budget` (the ratio becomes a lower bound); a
    # censored condition median gives 0. Both only ever lower the ratio: see `_compare_ttt`.
    ref = np.minimum(np.median(y, axis=axis), budget)
    return ref / np.median(x, axis=axis)


# --------------------------------------------------------------------------- summary


def summarize(
    curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    *,
    random_return: float,
    threshold: float,
    budget: int,
    reference: str | None = "scratch",
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """JSON-serializable summary of a study: ``{condition: [(timesteps, returns), ...]}``.

    Per condition (95% bootstrap CIs over runs): ``initial``, ``asymptote`` and ``auc`` as
    means; ``iqm``, the interquartile mean (25% trimmed) of the asymptote; and
    ``time_to_threshold``, the MEDIAN over runs with censored runs as +inf (so it is itself
    censored when half or more of the runs are), plus ``reached`` out of ``n``.

    Versus ``reference`` (skipped when None or absent), for every other condition:
    ``jumpstart`` and ``asymptote_gain`` (difference of means), ``transfer_ratio``
    ``(mean auc - mean auc_ref) / mean auc_ref`` (None when mean auc_ref <= 0), ``speedup``
    ``median TTT_ref / median TTT`` (a lower bound ``budget / median TTT`` when the reference
    never reaches the threshold) and ``prob_improvement`` P(auc > auc_ref) = U1 / (n m).
    No value is NaN or inf: unknown or censored values are None with a flag or a note.
    """
    runs = {
        condition: [
            run_metrics(t, r, random_return=random_return, threshold=threshold, budget=budget)
            for t, r in pairs
        ]
        for condition, pairs in curves.items()
    }
    for condition, metrics in runs.items():
        if not metrics:
            raise MetricsError(f"Condition {condition!r} has no runs to summarize.")
    if reference is not None and reference not in runs:
        warnings.warn(
            f"Reference condition {reference!r} is not in the study "
            f"({', '.join(runs) or 'no conditions'}); transfer comparisons are skipped.",
            stacklevel=2,
        )
        reference = None
    boot = functools.partial(interval, n_resamples=n_resamples, seed=seed)
    columns = {condition: _columns(metrics) for condition, metrics in runs.items()}
    conditions: dict[str, Any] = {}
    for condition, cols in columns.items():
        entry = _condition_summary(cols, budget, boot)
        if reference is not None and condition != reference:
            entry.update(_compare(cols, columns[reference], budget, boot))
        conditions[condition] = entry
    return {
        "normalization": {
            "random_return": float(random_return),
            "threshold": float(threshold),
            "budget": int(budget),
        },
        "reference": reference,
        "conditions": conditions,
    }


def _columns(metrics: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {key: np.array([m[key] for m in metrics], dtype=float) for key in metrics[0]}


def _condition_summary(
    cols: dict[str, np.ndarray], budget: int, boot: Callable[..., Estimate]
) -> dict[str, Any]:
    ttt = cols["time_to_threshold"]
    est = boot((ttt,), _median)
    return {
        "n_runs": int(ttt.size),
        "initial": boot((cols["initial"],), _mean).to_dict(),
        "asymptote": boot((cols["asymptote"],), _mean).to_dict(),
        "auc": boot((cols["auc"],), _mean).to_dict(),
        "iqm": boot((cols["asymptote"],), _iqm).to_dict(),
        "time_to_threshold": {
            **est.to_dict(),
            "reached": int(np.isfinite(ttt).sum()),
            "n": int(ttt.size),
            "censored_at": int(budget),
            "point_censored": math.isinf(est.point),
            "low_censored": est.low is not None and math.isinf(est.low),
            "high_censored": est.high is not None and math.isinf(est.high),
        },
    }


def _compare(
    cols: dict[str, np.ndarray],
    ref: dict[str, np.ndarray],
    budget: int,
    boot: Callable[..., Estimate],
) -> dict[str, Any]:
    return {
        "jumpstart": boot((cols["initial"], ref["initial"]), _mean_difference).to_dict(),
        "asymptote_gain": boot((cols["asymptote"], ref["asymptote"]), _mean_difference).to_dict(),
        "transfer_ratio": _compare_auc(cols["auc"], ref["auc"], boot),
        "speedup": _compare_ttt(cols["time_to_threshold"], ref["time_to_threshold"], budget, boot),
        "prob_improvement": boot((cols["auc"], ref["auc"]), _prob_improvement).to_dict(),
    }


def _compare_auc(
    auc: np.ndarray, auc_ref: np.ndarray, boot: Callable[..., Estimate]
) -> dict[str, Any]:
    """Transfer ratio; undefined when the reference does no better than random on average."""
    if np.mean(auc_ref) <= 0:
        note = (
            f"undefined: reference mean AUC is {np.mean(auc_ref):.3g} <= 0 (no better than the "
            "random policy), so the ratio has no meaningful denominator"
        )
        return {"point": None, "low": None, "high": None, "note": note}
    est = boot((auc, auc_ref), _transfer_ratio)
    note = None
    if est.low is None and min(auc.size, auc_ref.size) >= 2:
        note = "CI unavailable: the reference mean AUC is <= 0 in some bootstrap resamples"
    return {**est.to_dict(), "note": note}


def _compare_ttt(
    ttt: np.ndarray, ttt_ref: np.ndarray, budget: int, boot: Callable[..., Estimate]
) -> dict[str, Any]:
    """Speedup in time to threshold, with censoring.

    In each resample a censored reference median counts as ``budget`` and a censored
    condition median as never (ratio 0): both can only lower the ratio, so ``low`` stays a
    valid (conservative) bound, and ``high`` is itself only a lower bound
    (``high_lower_bound``) when any reference run is censored.
    """
    med, med_ref = float(np.median(ttt)), float(np.median(ttt_ref))
    out: dict[str, Any] = {
        "point": None,
        "low": None,
        "high": None,
        "lower_bound": False,
        "high_lower_bound": False,
        "note": None,
    }
    if math.isinf(med):
        out["note"] = "not reached by either condition" if math.isinf(med_ref) else "not reached"
        return out
    if med == 0:
        out["note"] = "reached at t=0 (before training): speedup unbounded"
        return out
    est = boot((ttt, ttt_ref), functools.partial(_speedup, budget=budget))
    out.update(est.to_dict())
    out["lower_bound"] = math.isinf(med_ref)
    out["high_lower_bound"] = out["high"] is not None and bool(np.isinf(ttt_ref).any())
    if out["lower_bound"]:
        out["note"] = "reference not reached: speedup is at least budget / median time"
    return out


# --------------------------------------------------------------------------- display


def format_estimate(est: Mapping[str, Any], digits: int = 2) -> str:
    """``"0.42 [0.31, 0.55]"``; just ``"0.42"`` when a bound is unknown; ``"n/a"`` (with the
    note, if any) when the point is undefined."""
    if est.get("point") is None:
        note = est.get("note")
        return f"n/a ({note})" if note else "n/a"
    text = f"{est['point']:.{digits}f}"
    if est.get("low") is not None and est.get("high") is not None:
        text += f" [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"
    return text


def format_time_to_threshold(ttt: Mapping[str, Any]) -> str:
    """``"12,000 [8,000, 20,000] (5/5 reached)"``, or ``"not reached (>50,000 steps) (2/5
    reached)"`` when the median is censored; a censored bound prints as ``">50,000"``."""
    reached = f"({ttt['reached']}/{ttt['n']} reached)"
    censored = f">{ttt['censored_at']:,}"
    if ttt["point_censored"] or ttt["point"] is None:
        return f"not reached ({censored} steps) {reached}"

    def bound(value: float | None, is_censored: bool) -> str | None:
        if is_censored:
            return censored
        return None if value is None else f"{value:,.0f}"

    low = bound(ttt["low"], ttt["low_censored"])
    high = bound(ttt["high"], ttt["high_censored"])
    text = f"{ttt['point']:,.0f}"
    if low is not None and high is not None:
        text += f" [{low}, {high}]"
    return f"{text} {reached}"


def format_speedup(sp: Mapping[str, Any]) -> str:
    """``"2.10x [1.50x, 3.00x]"``; ``">4.00x"`` for a lower bound; ``"n/a (not reached)"``
    when undefined."""
    if sp.get("point") is None:
        return f"n/a ({sp['note']})" if sp.get("note") else "n/a"
    text = f"{'>' if sp.get('lower_bound') else ''}{sp['point']:.2f}x"
    if sp.get("low") is not None and sp.get("high") is not None:
        high = f"{'>' if sp.get('high_lower_bound') else ''}{sp['high']:.2f}x"
        text += f" [{sp['low']:.2f}x, {high}]"
    return text


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
