"""Transfer metrics (Taylor & Stone 2009) on normalized scores, with calibrated intervals.

Pure functions over NumPy arrays; no plotting and no file I/O.

A *curve* is one run's evaluation history: ``timesteps`` (strictly increasing, first 0 =
evaluation before any training) and ``returns`` (mean episode return of the deterministic
policy at each evaluation). Every metric is computed on the normalized score

    score = (R - R_random) / (R_threshold - R_random)

so 0 is the random policy and 1 is the threshold. A run that never reaches the threshold is
*censored*: its time to threshold is ``math.inf`` here, and ``None`` plus a flag in the
JSON-ready summary, never a number that reads like success.

Intervals are chosen for the seed counts a study runs (3-10), where a percentile bootstrap
over seeds under-covers (74% at 3 seeds for a 95% interval). The choices, with their actual
coverage measured by ``benchmarks/calibration.py``:

- means over seeds: Student t interval;
- differences of means (the primary area difference, jumpstart, asymptote gain): Welch t
  interval and test (``scipy.stats.ttest_ind(equal_var=False)``);
- medians (time to threshold): the distribution-free order-statistic interval, whose exact
  level is reported (93.75% at 5 runs, 75% at 3), censored bounds flagged;
- P(improve): Newcombe's (2006, method 5) score interval, which does not collapse at 0 or 1,
  with the Mann-Whitney p-value;
- transfer ratio: Fieller's interval for a ratio of means, reported only when scratch's area
  is clearly (at the same level) above 0.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rltransfer.errors import ConfigError


class _Lazy:
    """A SciPy submodule imported at its first use: the study process prints the terminal
    table from a report computed elsewhere (`execution.summarize_elsewhere`) and so never
    pays SciPy's import (about 0.6 s)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


stats, optimize = _Lazy("scipy.stats"), _Lazy("scipy.optimize")

ASYMPTOTE_WINDOW = 3
"""Number of final evaluations averaged into the asymptote."""

DEFAULT_ALPHA = 0.05
PROFILE_POINTS = 101
"""Scores at which a performance profile is evaluated (from min(0, lowest) to max(1, highest))."""


class MetricsError(ConfigError, ValueError):
    """Metrics cannot be computed from these inputs (bad normalization or malformed curve)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with an interval; ``low``/``high`` are None when unknown (fewer than
    2 runs, or no variability to test). Values may be ``inf`` (censored time to threshold)."""

    point: float
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready ``{"point", "low", "high"}``; non-finite values become None."""
        return {"point": _json_float(self.point), "low": _json_float(self.low),
                "high": _json_float(self.high)}


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
    - ``time_to_threshold``: the first evaluation step (at most ``budget``) from which the
      score *stays* at or above 1: that evaluation and the next ``SUSTAIN - 1``, so one
      noisy evaluation is not a reach, nor are the last ``SUSTAIN - 1`` evaluations of a
      run alone (the run ended before it could show it stays); ``math.inf`` if never
      (censored).
    - ``failed``: 1.0 when the run failed (a NaN or infinite return: it diverged), else 0.0.

    A failed run is an outcome, not a gap: its curve ends at its first non-finite return,
    where the score drops to the worst it allows, ``min(0, last finite score)`` (the random
    policy's level, or its last finite evaluation if that was lower; `failure_floor` says
    which), held to ``budget``; its asymptote is that level.
    """
    t, r = _check_curve(timesteps, returns, budget)
    score = normalize(r, random_return, threshold)
    bad = np.flatnonzero(~np.isfinite(score))
    failed = bad.size > 0
    if failed:
        cut = int(bad[0])
        worst = min(0.0, float(score[cut - 1])) if cut else 0.0
        t, score = t[:cut + 1], np.append(score[:cut], worst)
    return {
        "initial": float(score[0]),
        "asymptote": float(score[-1]) if failed else float(np.mean(score[-ASYMPTOTE_WINDOW:])),
        "auc": _auc(t, score, budget),
        "time_to_threshold": sustained_time(t, score, budget),
        "failed": float(failed),
    }


SUSTAIN = 3
"""Evaluations in a row at or above the threshold that count as reaching it."""


def sustained_time(t: np.ndarray, score: np.ndarray, budget: float) -> float:
    """The first step (at most `budget`) from which the score stays >= 1 for `SUSTAIN`
    evaluations in a row; inf if never. A reach in the last `SUSTAIN - 1` evaluations is
    censored: the run ended before it showed the score stays (a curve with fewer than
    `SUSTAIN` evaluations needs all of them from that step on). A failed run's curve ends at
    its worst level (below 1), so it never stays there."""
    above = score >= 1.0
    n = above.size
    window = min(SUSTAIN, n)
    for i in np.flatnonzero(above):
        if t[i] > budget:
            break
        if i + window > n and n >= SUSTAIN:
            break
        if above[i:i + window].all():
            return float(t[i])
    return math.inf


def failure_floor(timesteps: ArrayLike, returns: ArrayLike, *, random_return: float,
                  threshold: float) -> str | None:
    """How a failed run's curve is completed: "the random policy's level" or "its last
    finite evaluation" (when that was below random); None when the run did not fail."""
    score = normalize(returns, random_return, threshold)
    bad = np.flatnonzero(~np.isfinite(score))
    if bad.size == 0:
        return None
    cut = int(bad[0])
    if cut and score[cut - 1] < 0:
        return "its last finite evaluation"
    return "the random policy's level"


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


def mean_interval(x: ArrayLike, confidence: float = 0.95) -> Estimate:
    """Mean with its Student t interval; bounds None with fewer than 2 values."""
    x = np.asarray(x, dtype=float)
    point = float(np.mean(x))
    if x.size < 2:
        return Estimate(point, None, None)
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * _sem(x)
    return Estimate(point, point - half, point + half)


@dataclass(frozen=True)
class Test:
    """A difference of means (x - y) with its Welch t interval and two-sided p-value."""

    estimate: Estimate
    p_value: float | None
    df: float | None
    note: str | None = None
    method: str = "Welch t"

    def to_dict(self) -> dict[str, Any]:
        return {**self.estimate.to_dict(), "p_value": self.p_value, "df": self.df,
                "method": self.method, "note": self.note}


SCORE_RESOLUTION = 1e-6
"""Normalized-score differences below this (a millionth of the random-to-threshold range)
are rounding, not data: a sample whose values all lie within it does not vary."""


def welch(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> Test:
    """Welch's t interval and test for ``mean(x) - mean(y)`` (unequal variances).

    Undefined (None) with fewer than 2 values in a sample. When neither sample varies by
    more than `SCORE_RESOLUTION` the t statistic would rest on rounding noise (0/0, or a
    knife edge between "no test" and p = 1e-26): the samples are then either equal (p = 1)
    or completely separated, and the p-value is the exact permutation test's,
    `smallest_permutation_p` (0.0079 at 5 vs 5), with no interval.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    point = float(np.mean(x) - np.mean(y))
    if min(x.size, y.size) < 2:
        return Test(Estimate(point, None, None), None, None, "fewer than 2 runs")
    if not testable(x, y):  # e.g. a deterministic env: the exact permutation test
        p = smallest_permutation_p(x.size, y.size) if abs(point) > SCORE_RESOLUTION else 1.0
        return Test(Estimate(point, None, None), p, None,
                    f"no variability in either sample (every run within {SCORE_RESOLUTION:g} "
                    "of its condition's others): exact permutation p", "exact permutation")
    with warnings.catch_warnings():  # one constant sample is fine: its variance is 0
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        result = stats.ttest_ind(x, y, equal_var=False)
        ci = result.confidence_interval(confidence)
    return Test(Estimate(point, float(ci.low), float(ci.high)), float(result.pvalue),
                float(result.df))


def primary(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> Test:
    """The primary claim's test of ``mean(x) - mean(y)``: Welch's t checked against its
    skewness-corrected version (Hall 1992, as in Luh & Guo 1999), a claim needing both. The
    p-value is the larger of the two (`skew_checked_p`) and the interval is the union of the
    two intervals, the values neither test rejects, so the interval excludes 0 exactly when
    p <= 1 - confidence. Without variability: the exact permutation p (see `welch`)."""
    test = welch(x, y, confidence)
    if test.df is None:  # no t test: fewer than 2 runs, or no variability
        return test
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    d, se, gamma, df = _skew_parts(x, y)
    c = float(stats.t.ppf(0.5 + confidence / 2, df))
    low, high = d - se * _hall_inverse(c, gamma), d - se * _hall_inverse(-c, gamma)
    assert test.estimate.low is not None and test.estimate.high is not None
    return dataclasses.replace(
        test, estimate=Estimate(d, min(test.estimate.low, low), max(test.estimate.high, high)),
        p_value=skew_checked_p(x, y), method="Welch t, skew-checked")


def _skew_parts(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """(difference of means, its standard error, γ the estimated skewness of the difference
    of means, Welch's df)."""
    n, m = x.size, y.size
    vx, vy = float(np.var(x, ddof=1)) / n, float(np.var(y, ddof=1)) / m
    se = math.sqrt(vx + vy)

    def third(a: np.ndarray) -> float:  # unbiased third central moment
        k = a.size
        return 0.0 if k < 3 else k / ((k - 1) * (k - 2)) * float(np.sum((a - a.mean()) ** 3))

    gamma = (third(x) / n ** 2 - third(y) / m ** 2) / se ** 3
    df = (vx + vy) ** 2 / ((vx ** 2 / (n - 1) if vx else 0.0) + (vy ** 2 / (m - 1) if vy else 0.0))
    return float(np.mean(x) - np.mean(y)), se, gamma, df


def _hall(t: float, gamma: float) -> float:
    """Hall's transformation T + γT²/3 + γ²T³/27 + γ/6 (increasing in T)."""
    return t + gamma * t * t / 3 + gamma * gamma * t ** 3 / 27 + gamma / 6


def _hall_inverse(h: float, gamma: float) -> float:
    """The T with `_hall`(T) = h: (1 + γT/3)³ = 1 + γ(h - γ/6)."""
    if gamma == 0:
        return h
    return 3 * (float(np.cbrt(1 + gamma * (h - gamma / 6))) - 1) / gamma


def skew_checked_p(x: np.ndarray, y: np.ndarray) -> float:
    """The larger two-sided p-value of Welch's t and of Welch's t with Hall's (1992)
    skewness correction, both on Welch's df. Seeds that fail to learn make a sample skewed,
    and Welch's t alone then claims too often; the correction alone claims too often under
    heavy symmetric tails; a claim needs both (`benchmarks/calibration.py`). Samples must
    be testable (`testable`)."""
    d, se, gamma, df = _skew_parts(x, y)
    t = d / se
    h = _hall(t, gamma)
    if t * h < 0:  # the two point in opposite directions: no claim either way
        return 1.0
    return float(min(1.0, 2 * stats.t.sf(min(abs(t), abs(h)), df)))


def smallest_permutation_p(n: int, m: int) -> float:
    """The smallest two-sided p-value an exact permutation test can reach with n vs m runs:
    that of complete separation."""
    return min(1.0, 2 / math.comb(n + m, n))


def testable(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether two samples can be tested: at least 2 values each, and one of them varies by
    more than `SCORE_RESOLUTION`."""
    return min(x.size, y.size) >= 2 and (np.ptp(x) > SCORE_RESOLUTION
                                         or np.ptp(y) > SCORE_RESOLUTION)


def median_interval(x: ArrayLike, confidence: float = 0.95,
                    budget: float | None = None) -> tuple[Estimate, float]:
    """Median and its distribution-free order-statistic interval ``[x_(k), x_(n-k+1)]``.

    ``k`` is the largest rank whose exact binomial level ``1 - 2 P(B <= k - 1)``,
    B ~ Binomial(n, 1/2), is at least `confidence`; with too few values for that (n < 6 at
    95%) it is ``[min, max]`` and the level is lower. Returns (estimate, exact level).
    Works with censored (``inf``: beyond `budget`) values: a bound at ``inf`` is censored,
    and when only the upper of two middle values is censored the point is the lower bound
    ``(lower middle + budget) / 2`` (see `half_censored`), or inf without a budget.
    """
    s = np.sort(np.asarray(x, dtype=float))
    n = s.size
    point = float(np.median(s)) if not np.isinf(s).any() else _censored_median(s, budget)
    if n < 2:
        return Estimate(point, None, None), 0.0
    k, level = 1, order_statistic_level(n, 1)
    while k + 1 <= n // 2 and order_statistic_level(n, k + 1) >= confidence:
        k += 1
        level = order_statistic_level(n, k)
    return Estimate(point, float(s[k - 1]), float(s[n - k])), level


def order_statistic_level(n: int, k: int) -> float:
    """Exact coverage of ``[x_(k), x_(n-k+1)]`` for the median of a continuous distribution."""
    return float(1 - 2 * stats.binom.cdf(k - 1, n, 0.5))


def _censored_median(s: np.ndarray, budget: float | None) -> float:
    """The median of sorted `s` when some values are +inf (censored beyond `budget`)."""
    lo, hi = s[(s.size - 1) // 2], s[s.size // 2]
    if lo == hi or not math.isinf(hi):
        return float(lo if lo == hi else (lo + hi) / 2)
    return math.inf if budget is None or math.isinf(lo) else float((lo + budget) / 2)


def half_censored(x: ArrayLike) -> bool:
    """Whether the median of `x` is only a lower bound: an even count whose upper middle
    value is censored (inf) and lower middle value is not."""
    s = np.sort(np.asarray(x, dtype=float))
    if s.size % 2 or s.size == 0:
        return False
    return bool(np.isfinite(s[s.size // 2 - 1]) and np.isinf(s[s.size // 2]))


def prob_improvement(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> dict[str, Any]:
    """P(X > Y) + P(X = Y)/2 = U / (n m), Newcombe's (2006) method-5 score interval and the
    two-sided Mann-Whitney p-value (scipy's "auto": exact for small samples without ties,
    else the normal approximation)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n, m = x.size, y.size
    test = stats.mannwhitneyu(x, y, method="auto") if n and m else None
    theta = float(test.statistic / (n * m)) if test is not None else 0.5
    out: dict[str, Any] = {"point": theta, "low": None, "high": None, "p_value": None,
                           "method": "Newcombe (2006) method 5; Mann-Whitney U"}
    if min(n, m) < 2:
        return out
    z = stats.norm.ppf(0.5 + confidence / 2)
    half_n = (n + m) / 2

    def excess(t: float) -> float:  # |theta - t| - z * se(t): the interval is where <= 0
        var = t * (1 - t) / (n * m) * (1 + (half_n - 1) * ((1 - t) / (2 - t) + t / (1 + t)))
        return abs(theta - t) - z * math.sqrt(max(var, 0.0))

    eps = 1e-9  # the score's variance vanishes at 0 and 1: search strictly inside
    inside = min(max(theta, eps), 1 - eps)
    out["low"] = 0.0 if excess(eps) <= 0 else optimize.brentq(excess, eps, inside)
    out["high"] = 1.0 if excess(1 - eps) <= 0 else optimize.brentq(excess, inside, 1 - eps)
    out["p_value"] = float(test.pvalue) if test is not None else None
    return out


def fieller_ratio(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> dict[str, Any]:
    """Transfer ratio ``(mean x - mean y) / mean y`` with Fieller's interval (independent
    samples, unequal variances, Welch-Satterthwaite degrees of freedom at the estimate).

    The interval is bounded only when mean y is clearly above 0 (its t statistic exceeds the
    critical value of the same Welch degrees of freedom); otherwise the ratio is not
    reported (point None, with the reason).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    out: dict[str, Any] = {"point": None, "low": None, "high": None, "note": None,
                           "method": "Fieller"}
    mx, my = float(np.mean(x)), float(np.mean(y))
    if min(x.size, y.size) < 2:
        out["note"] = "fewer than 2 runs"
        return out
    vx, vy = _sem(x) ** 2, _sem(y) ** 2
    rho = mx / my if my else math.nan
    df = _welch_df(vx, rho ** 2 * vy, x.size, y.size) if math.isfinite(rho) else y.size - 1
    t = float(stats.t.ppf(0.5 + confidence / 2, df))
    if my <= 0 or (vy > 0 and my / math.sqrt(vy) <= t):
        out["note"] = (f"not reported: scratch's mean area {my:.3g} is not clearly above 0 "
                       "(the ratio's interval would be unbounded)")
        return out
    a = my * my - t * t * vy
    if a <= 0:  # underflow of a tiny positive mean: as unbounded
        out["note"] = f"not reported: scratch's mean area {my:.3g} is not clearly above 0"
        return out
    b = -2 * mx * my
    c = mx * mx - t * t * vx
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    low, high = (-b - root) / (2 * a), (-b + root) / (2 * a)
    out.update(point=rho - 1, low=low - 1, high=high - 1)
    return out


def _welch_df(vx: float, vy: float, nx: int, ny: int) -> float:
    total = vx + vy
    if total == 0:
        return float(nx + ny - 2)
    return total ** 2 / (vx ** 2 / (nx - 1) + vy ** 2 / (ny - 1))


def _sem(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / math.sqrt(x.size))


# --------------------------------------------------------------------------- speedup

# How a bound relates to the true value: "=" it is the value, ">" the truth is above it
# (a lower bound: printed ">x"), "<" the truth is below it (printed "<x").
EXACT, ABOVE, BELOW = "=", ">", "<"


def speedup(ttt: ArrayLike, ttt_ref: ArrayLike, budget: int,
            confidence: float = 0.95) -> dict[str, Any]:
    """Speedup ``median TTT_ref / median TTT`` with an interval from the two medians'
    order-statistic intervals, ``[ref_low / high, ref_high / low]``.

    A censored time is only known to exceed ``budget`` (and a median whose upper middle
    value is censored only to exceed its lower bound), so a ratio that involves one is a
    bound: ``point_bound``/``low_bound``/``high_bound`` say how each number relates to the
    truth (``"="``, ``">"`` above it, ``"<"`` below it), and a value that cannot be bounded
    is None. The interval covers whenever both medians' intervals do: ``level`` is the
    product of their levels (``benchmarks/calibration.py`` measures the actual coverage).
    """
    med_est, level = median_interval(ttt, confidence, budget)
    ref_est, ref_level = median_interval(ttt_ref, confidence, budget)
    bounded = med_est.low is not None and ref_est.low is not None
    out: dict[str, Any] = {"point": None, "low": None, "high": None, "point_bound": None,
                           "low_bound": None, "high_bound": None, "note": None,
                           "level": level * ref_level if bounded else None,
                           "nominal": confidence}
    point = _ratio(_time(ref_est.point, half_censored(ttt_ref), budget),
                   _time(med_est.point, half_censored(ttt), budget))
    if point is None:
        both = math.isinf(med_est.point) and math.isinf(ref_est.point)
        out["note"] = ("neither reaches the threshold" if both else
                       "reached at t=0 (before training): speedup unbounded"
                       if med_est.point == 0 else "not bounded: both medians are censored")
        return out
    out["point"], out["point_bound"] = point
    if bounded:
        low = _ratio(_time(ref_est.low, False, budget), _time(med_est.high, False, budget))
        high = _ratio(_time(ref_est.high, False, budget), _time(med_est.low, False, budget))
        if low is not None:
            out["low"], out["low_bound"] = low
        if high is not None:
            out["high"], out["high_bound"] = high
    if out["point_bound"] == ABOVE:
        out["note"] = "at least this: scratch's median time is censored (only a lower bound)"
    elif out["point_bound"] == BELOW:
        out["note"] = "at most this: the condition's median time is censored (a lower bound)"
    return out


def _time(value: float, lower_bound: bool, budget: int) -> tuple[float, bool]:
    """A time as (value, whether it is only a lower bound); inf is censored at `budget`."""
    return (float(budget), True) if math.isinf(value) else (value, lower_bound)


def _ratio(num: tuple[float, bool], den: tuple[float, bool]) -> tuple[float, str] | None:
    """num / den of two times given as (value, is only a lower bound): (value, bound kind),
    or None when it cannot be bounded."""
    (a, a_low), (b, b_low) = num, den
    if a == 0 and not a_low:
        return (0.0, EXACT) if b > 0 or b_low else None
    if b == 0 and not b_low or a_low and b_low:
        return None
    if a_low:
        return a / b, ABOVE
    if b_low:
        return a / b, BELOW
    return a / b, EXACT


# --------------------------------------------------------------------------- profiles


def performance_profile(scores: Mapping[str, ArrayLike], confidence: float = 0.95,
                        points: int = PROFILE_POINTS) -> dict[str, Any]:
    """rliable's score distribution: for each score tau, the fraction of runs whose score
    exceeds tau, per condition, with an exact (Clopper-Pearson) pointwise band (the same as
    ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``)."""
    values = [np.asarray(v, dtype=float) for v in scores.values()]
    every = np.concatenate(values) if values else np.zeros(1)
    taus = np.linspace(min(0.0, float(every.min())), max(1.0, float(every.max())), points)
    out: dict[str, Any] = {"taus": taus.tolist(), "conditions": {}}
    for name, v in zip(scores, values, strict=True):
        n = v.size
        k = (v[None, :] > taus[:, None]).sum(axis=1)
        tail = (1 - confidence) / 2  # Clopper-Pearson through the beta quantiles
        low = np.where(k > 0, stats.beta.ppf(tail, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - tail, k + 1, n - k), 1.0)
        out["conditions"][name] = {"fraction": (k / n).tolist(), "low": low.tolist(),
                                   "high": high.tolist(), "n": int(n)}
    return out


# --------------------------------------------------------------------------- summary


def summarize(
    curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    *,
    random_return: float,
    threshold: float,
    budget: int,
    reference: str | None = "scratch",
    alpha: float = DEFAULT_ALPHA,
    verdict_only: bool = False,
    runs: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> dict[str, Any]:
    """JSON-serializable summary of a study: ``{condition: [(timesteps, returns), ...]}``.

    Per condition, with ``1 - alpha`` intervals over runs: ``initial``, ``asymptote`` and
    ``auc`` as means (t intervals); ``iqm``, the interquartile mean of the asymptote (point
    only: no interval is calibrated at these seed counts); ``time_to_threshold``, the median
    over runs with censored runs as +inf (order-statistic interval, exact level in
    ``level``), plus ``reached`` out of ``n``.

    Versus ``reference`` for every other condition: the primary claim ``auc_difference``
    (mean auc - mean auc_ref, Welch t interval and p-value) and the descriptive effects
    ``jumpstart`` and ``asymptote_gain`` (Welch), ``speedup`` (see `speedup`),
    ``prob_improvement`` P(auc > auc_ref) (Newcombe) and ``transfer_ratio`` (Fieller).
    ``profile`` is the performance profile of the runs' asymptotes. No value is NaN or inf:
    unknown or censored values are None with a flag or a note.

    `verdict_only`: only what `verdict.judge` reads (the area, initial and asymptote
    intervals, the reach counts), without the other descriptive effects and the profile; the
    calibration benchmark simulates many thousand studies this way. `runs`: the curves'
    `run_metrics`, when the caller has computed them already (the report keeps them per run).
    """
    if runs is None:
        runs = {condition: [run_metrics(t, r, random_return=random_return,
                                        threshold=threshold, budget=budget) for t, r in pairs]
                for condition, pairs in curves.items()}
    for condition, values in runs.items():
        if not values:
            raise MetricsError(f"Condition {condition!r} has no runs to summarize.")
    columns = {condition: table(values) for condition, values in runs.items()}
    summary = summarize_columns(columns, budget=budget, reference=reference, alpha=alpha,
                                verdict_only=verdict_only)
    if not verdict_only:
        summary = {"normalization": {"random_return": float(random_return),
                                     "threshold": float(threshold), "budget": int(budget)},
                   **summary}
    return summary


def summarize_columns(columns: Mapping[str, Mapping[str, np.ndarray]], *, budget: int,
                      reference: str | None = "scratch", alpha: float = DEFAULT_ALPHA,
                      verdict_only: bool = False) -> dict[str, Any]:
    """`summarize` from per-run metrics (`run_metrics` keys, one array per key and
    condition): what `summarize` does after computing them."""
    if not 0 < alpha < 1:
        raise MetricsError(f"alpha must be between 0 and 1 (e.g. 0.05); got {alpha}.")
    confidence = 1 - alpha
    runs = columns
    if reference is not None and reference not in runs:
        warnings.warn(
            f"Reference condition {reference!r} is not in the study "
            f"({', '.join(runs) or 'no conditions'}); transfer comparisons are skipped.",
            stacklevel=2,
        )
        reference = None
    conditions: dict[str, Any] = {}
    for condition, cols in columns.items():
        entry = _condition_summary(cols, budget, confidence)
        if reference is not None and condition != reference:
            entry.update(compare(cols, columns[reference], budget, confidence, verdict_only))
        conditions[condition] = entry
    if verdict_only:
        return {"reference": reference, "alpha": alpha, "conditions": conditions}
    return {
        "reference": reference,
        "alpha": alpha,
        "conditions": conditions,
        "profile": performance_profile({c: cols["asymptote"] for c, cols in columns.items()},
                                       confidence),
    }


def table(values: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
    """Per-run metrics (`run_metrics` results) as one array per metric, in run order."""
    return {key: np.array([m[key] for m in values], dtype=float) for key in values[0]}


def _condition_summary(cols: dict[str, np.ndarray], budget: int,
                       confidence: float) -> dict[str, Any]:
    ttt = cols["time_to_threshold"]
    est, level = median_interval(ttt, confidence, budget)
    return {
        "n_runs": int(ttt.size),
        "failed_runs": int(cols["failed"].sum()),
        "initial": mean_interval(cols["initial"], confidence).to_dict(),
        "asymptote": mean_interval(cols["asymptote"], confidence).to_dict(),
        "auc": mean_interval(cols["auc"], confidence).to_dict(),
        "iqm": {"point": float(stats.trim_mean(cols["asymptote"], 0.25)), "low": None,
                "high": None, "note": "point only"},
        "time_to_threshold": {
            **est.to_dict(),
            "level": level,
            "nominal": confidence,
            "point_lower_bound": half_censored(ttt),
            "reached": int(np.isfinite(ttt).sum()),
            "n": int(ttt.size),
            "censored_at": int(budget),
            "point_censored": math.isinf(est.point),
            "low_censored": est.low is not None and math.isinf(est.low),
            "high_censored": est.high is not None and math.isinf(est.high),
        },
    }


def compare(cols: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], budget: int,
            confidence: float = 0.95, verdict_only: bool = False) -> dict[str, Any]:
    """One condition's per-run columns against the reference's: the primary claim and the
    descriptive effects (see `summarize`)."""
    differences = {  # every difference of means skew-checked, as the primary claim is
        key: primary(cols[column], ref[column], confidence).to_dict()
        for key, column in (("auc_difference", "auc"), ("jumpstart", "initial"),
                            ("asymptote_gain", "asymptote"))}
    if verdict_only:
        return differences
    return {
        **differences,
        "speedup": speedup(cols["time_to_threshold"], ref["time_to_threshold"], budget,
                           confidence),
        "prob_improvement": prob_improvement(cols["auc"], ref["auc"], confidence),
        "transfer_ratio": fieller_ratio(cols["auc"], ref["auc"], confidence),
    }


# --------------------------------------------------------------------------- display


def format_estimate(est: Mapping[str, Any], digits: int = 2, signed: bool = False) -> str:
    """``"0.42 [0.31, 0.55]"``; just ``"0.42"`` when a bound is unknown; ``"n/a"`` (with the
    note, if any) when the point is undefined."""
    if est.get("point") is None:
        note = est.get("note")
        return f"n/a ({note})" if note else "n/a"
    sign = "+" if signed else ""
    text = f"{est['point']:{sign}.{digits}f}"
    if est.get("low") is not None and est.get("high") is not None:
        text += f" [{est['low']:{sign}.{digits}f}, {est['high']:{sign}.{digits}f}]"
    return text


def format_time_to_threshold(ttt: Mapping[str, Any]) -> str:
    """``"12,000 [8,000, 20,000] (5/5 reached)"``, or ``"not reached (>50,000 steps) (2/5
    reached)"`` when the median is censored; a censored bound prints as ``">50,000"``; an
    interval below the nominal level states its exact level; a median that is only a lower
    bound (its upper middle run censored) prints as ``">x"``."""
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
    text = f"{'>' if ttt.get('point_lower_bound') else ''}{ttt['point']:,.0f}"
    if low is not None and high is not None:
        text += f" [{low}, {high}]"
        text += level_note(ttt.get("level"), ttt.get("nominal", 0.95))
    return f"{text} {reached}"


def level_note(level: float | None, nominal: float) -> str:
    """`` (75% interval)`` when an interval's exact level is below the nominal one."""
    if level is None or level >= nominal - 0.005:
        return ""
    return f" ({percent(level)} interval)"


def percent(level: float) -> str:
    """0.95 -> "95%", 0.975 -> "97.5%", 0.9375 -> "94%"."""
    text = f"{level * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%" if len(text) <= 4 else f"{level:.0%}"


def format_speedup(sp: Mapping[str, Any]) -> str:
    """``"2.10x [1.50x, 3.00x]"``; bounds as ``">4.00x"`` / ``"<0.50x"``; ``"?"`` for an
    interval end that cannot be bounded; ``"n/a (...)"`` when undefined."""
    if sp.get("point") is None:
        return f"n/a ({sp['note']})" if sp.get("note") else "n/a"

    def value(number: float | None, kind: str | None) -> str:
        if number is None:
            return "?"
        return f"{'' if kind in (None, EXACT) else kind}{number:.2f}x"

    text = value(sp["point"], sp.get("point_bound"))
    if sp.get("low") is not None or sp.get("high") is not None:
        text += (f" [{value(sp.get('low'), sp.get('low_bound'))}, "
                 f"{value(sp.get('high'), sp.get('high_bound'))}]")
        text += level_note(sp.get("level"), sp.get("nominal", 0.95))
    return text


def format_p(p: float | None) -> str:
    """``"p = 0.004"``, ``"p < 0.001"``; ``"p n/a"`` when there is no test."""
    if p is None:
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
