"""Interval estimators for the seed counts a study runs (3-10), as pure functions over NumPy
arrays: the intervals and tests behind every metric of `rltransfer.report.metrics`.

A percentile bootstrap over seeds under-covers at these counts (74% at 3 seeds for a 95%
interval). The choices, with their actual coverage measured by ``benchmarks/calibration.py``:

- means over seeds: Student t interval (`mean_interval`);
- differences of means (the primary area difference, jumpstart, asymptote gain): Welch t
  interval and test (``scipy.stats.ttest_ind(equal_var=False)``), checked against its
  skewness-corrected version (`primary`);
- medians (time to threshold): the distribution-free order-statistic interval, whose exact
  level is reported (93.75% at 5 runs, 75% at 3), censored values as ``inf``
  (`median_interval`), and the speedup between two such medians (`speedup`);
- P(improve): Newcombe's (2006, method 5) score interval, which does not collapse at 0 or 1,
  with the Mann-Whitney p-value (`prob_improvement`);
- transfer ratio: Fieller's interval for a ratio of means, reported only when scratch's area
  is clearly (at the same level) above 0 (`fieller_ratio`);
- performance profiles with exact pointwise bands (`performance_profile`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


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

PROFILE_POINTS = 101
"""Scores at which a performance profile is evaluated (from min(0, lowest) to max(1, highest))."""


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


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
