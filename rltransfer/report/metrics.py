"""Transfer metrics (Taylor & Stone 2009) on normalized scores: what each metric is, in one
place: its computation per run and over seeds, its record in the summary and its column in
the tables (the registry, `REGISTRY`).

Pure functions over NumPy arrays; no plotting and no file I/O.

A *curve* is one run's evaluation history: ``timesteps`` (strictly increasing, first 0 =
evaluation before any training) and ``returns`` (mean episode return of the deterministic
policy at each evaluation). Every metric is computed on the normalized score

    score = (R - R_random) / (R_threshold - R_random)

so 0 is the random policy and 1 is the threshold. A run that never reaches the threshold is
*censored*: its time to threshold is ``math.inf`` here, and ``None`` plus a flag in the
JSON-ready summary, never a number that reads like success.

Each metric is a per-run value (`run_metrics`) summarized over seeds with an interval chosen
for 3-10 seeds (`rltransfer.report.intervals`: t, Welch, order-statistic, Newcombe and
Fieller intervals, with their coverage measured by ``benchmarks/calibration.py``), in
`summarize`, whose JSON-ready output is what summary.json holds. The metric's typed record
(`Interval`, `Difference`, `TimeToThreshold`, `Speedup`, `ProbImprovement`,
`TransferRatio`) reads it back, and its `Metric` entry names its record, its formatter and
its column. Adding a metric: compute it in `_condition_summary` (per condition) or
`compare` (against the reference), give it a `Metric` entry, and a column in `COLUMNS` if
the tables show it. The success-rate metrics (final success rate, forward transfer) are
computed from the success curves, not the score, by `rltransfer.report.success`; their
entries are here, and the tables add their columns only where runs recorded success
(`shown_metrics`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError
from ..strategies.registry import REFERENCE
from .intervals import (  # noqa: F401 (re-exported: `metrics.welch` and the like)
    ABOVE,
    BELOW,
    EXACT,
    PROFILE_POINTS,
    SCORE_RESOLUTION,
    Estimate,
    Test,
    fieller_ratio,
    half_censored,
    mean_interval,
    median_interval,
    optimize,
    order_statistic_level,
    performance_profile,
    primary,
    prob_improvement,
    skew_checked_p,
    smallest_permutation_p,
    speedup,
    stats,
    testable,
    welch,
)

ASYMPTOTE_WINDOW = 3
"""Number of final evaluations averaged into the asymptote."""

DEFAULT_ALPHA = 0.05


class MetricsError(ConfigError, ValueError):
    """Metrics cannot be computed from these inputs (a bad score scale or a malformed curve)."""


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


# --------------------------------------------------------------------------- summary


def summarize(
    curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    *,
    random_return: float,
    threshold: float,
    budget: int,
    reference: str | None = REFERENCE,
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
    if not verdict_only:  # the score scale, under summary.json's key for it
        summary = {"normalization": {"random_return": float(random_return),
                                     "threshold": float(threshold), "budget": int(budget)},
                   **summary}
    return summary


def summarize_columns(columns: Mapping[str, Mapping[str, np.ndarray]], *, budget: int,
                      reference: str | None = REFERENCE, alpha: float = DEFAULT_ALPHA,
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


# --------------------------------------------------------------------------- records

_R = TypeVar("_R", bound="Record")


@dataclass(frozen=True)
class Record:
    """A metric of one condition as the summary holds it: the point estimate, its interval
    (``low``/``high``; None when unknown or censored) and the metric's own facts. Each
    subclass's fields are its summary.json keys, in their order."""

    point: float | None
    low: float | None
    high: float | None

    OPTIONAL: ClassVar[frozenset[str]] = frozenset()
    """Keys written only when they have a value."""

    def to_dict(self) -> dict[str, Any]:
        """The record as summary.json holds it."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in self.OPTIONAL or getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        """The record of summary.json's (or `summarize`'s) `data`."""
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Interval(Record):
    """A mean over runs with its t interval (initial, asymptote, auc), or a point only with
    a `note` saying so (iqm)."""

    note: str | None = None

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"note"})


@dataclass(frozen=True)
class Difference(Record):
    """A difference of means against the reference with its skew-checked Welch interval and
    test (`intervals.Test`): auc_difference (the primary claim), jumpstart, asymptote_gain."""

    p_value: float | None
    df: float | None
    method: str
    note: str | None


@dataclass(frozen=True)
class TimeToThreshold(Record):
    """The median time to threshold with its order-statistic interval (exact `level`);
    censored values are None with their ``*_censored`` flag set."""

    level: float
    nominal: float
    point_lower_bound: bool
    reached: int
    n: int
    censored_at: int
    point_censored: bool
    low_censored: bool
    high_censored: bool


@dataclass(frozen=True)
class Speedup(Record):
    """The reference's median time / the condition's (`intervals.speedup`); each number's
    ``*_bound`` says whether it is exact (``EXACT``) or only a bound (``ABOVE``/``BELOW``)."""

    point_bound: str | None
    low_bound: str | None
    high_bound: str | None
    note: str | None
    level: float | None
    nominal: float


@dataclass(frozen=True)
class ProbImprovement(Record):
    """P(area > the reference's area), Newcombe's interval, the Mann-Whitney p-value."""

    p_value: float | None
    method: str


@dataclass(frozen=True)
class ForwardTransfer(Record):
    """Continual World's forward transfer on success rates (`forward_transfer`) with its
    Fieller interval; point None (with the `note`) when scratch's success area is not
    clearly below 1."""

    note: str | None
    method: str


@dataclass(frozen=True)
class TransferRatio(Record):
    """(area - the reference's) / the reference's area with Fieller's interval; point None
    (with the `note`) when the reference's area is not clearly above 0."""

    note: str | None
    method: str


def fields_of(record: Record | Mapping[str, Any]) -> Mapping[str, Any]:
    """A metric's record as summary.json holds it, from its typed record or from that form."""
    return record.to_dict() if isinstance(record, Record) else record


# --------------------------------------------------------------------------- display


def format_estimate(est: Record | Mapping[str, Any], digits: int = 2,
                    signed: bool = False) -> str:
    """``"0.42 [0.31, 0.55]"``; just ``"0.42"`` when a bound is unknown; ``"n/a"`` (with the
    note, if any) when the point is undefined."""
    est = fields_of(est)
    if est.get("point") is None:
        note = est.get("note")
        return f"n/a ({note})" if note else "n/a"
    sign = "+" if signed else ""
    text = f"{est['point']:{sign}.{digits}f}"
    if est.get("low") is not None and est.get("high") is not None:
        text += f" [{est['low']:{sign}.{digits}f}, {est['high']:{sign}.{digits}f}]"
    return text


def format_time_to_threshold(ttt: TimeToThreshold | Mapping[str, Any]) -> str:
    """``"12,000 [8,000, 20,000] (5/5 reached)"``, or ``"not reached (>50,000 steps) (2/5
    reached)"`` when the median is censored; a censored bound prints as ``">50,000"``; an
    interval below the nominal level states its exact level; a median that is only a lower
    bound (its upper middle run censored) prints as ``">x"``."""
    ttt = fields_of(ttt)
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


def format_speedup(sp: Speedup | Mapping[str, Any]) -> str:
    """``"2.10x [1.50x, 3.00x]"``; bounds as ``">4.00x"`` / ``"<0.50x"``; ``"?"`` for an
    interval end that cannot be bounded; ``"n/a (...)"`` when undefined."""
    sp = fields_of(sp)
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


def format_claim(diff: Difference | Mapping[str, Any]) -> str:
    """The primary claim's cell: "+0.42 [+0.18, +0.66], p = 0.004"."""
    diff = fields_of(diff)
    if diff.get("point") is None:
        return "n/a"
    return f"{format_estimate(diff, signed=True)}, {format_p(diff.get('p_value'))}"


def format_signed(est: Record | Mapping[str, Any]) -> str:
    return format_estimate(est, signed=True)


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Metric:
    """One entry of the metric registry: its summary key, its record type, the formatter of
    its table cell (and of its summary.csv display), its column title, and whether it is
    the primary claim (every other metric is descriptive)."""

    key: str
    record: type[Record]
    formatter: Callable[[Any], str] = format_estimate
    title: str = ""  # its column's title ("": no table shows it; summary.csv does)
    primary: bool = False
    against_reference: bool = False  # computed against the reference (`compare`)


REGISTRY: dict[str, Metric] = {metric.key: metric for metric in (
    Metric("initial", Interval),
    Metric("asymptote", Interval, title="asymptote"),
    Metric("auc", Interval),
    Metric("iqm", Interval),
    Metric("time_to_threshold", TimeToThreshold, format_time_to_threshold,
           "time to threshold (steps)"),
    Metric("auc_difference", Difference, format_claim, "area vs scratch (primary; Welch)",
           primary=True, against_reference=True),
    Metric("jumpstart", Difference, format_signed, "jumpstart", against_reference=True),
    Metric("asymptote_gain", Difference, against_reference=True),
    Metric("speedup", Speedup, format_speedup, "speedup vs scratch", against_reference=True),
    Metric("prob_improvement", ProbImprovement, title="P(improve)", against_reference=True),
    Metric("transfer_ratio", TransferRatio, format_signed, "transfer ratio (area)",
           against_reference=True),
    Metric("success", Interval, title="final success rate"),
    Metric("forward_transfer", ForwardTransfer, format_signed, "forward transfer (success)",
           against_reference=True),
)}
"""Every metric of a condition's summary, by its key (summary.json's order)."""

COLUMNS = ("auc_difference", "jumpstart", "time_to_threshold", "speedup", "asymptote",
           "prob_improvement", "transfer_ratio")
METRICS = tuple(REGISTRY[key] for key in COLUMNS)
"""The metrics every table shows, in order (terminal, summary.csv, report.md/html, compare):
the primary claim first."""
SUCCESS_METRICS = (REGISTRY["success"], REGISTRY["forward_transfer"])
"""The columns the tables add for a study whose runs recorded success rates."""


def shown_metrics(conditions: Mapping[str, Any]) -> tuple[Metric, ...]:
    """The tables' metrics for these conditions (`ConditionSummary` by name): `METRICS`, and
    `SUCCESS_METRICS` when the runs recorded success rates (so a study of envs without
    success shows the table it always did)."""
    recorded = any("success" in data.estimates for data in conditions.values())
    return METRICS + SUCCESS_METRICS if recorded else METRICS

MATRIX_METRICS = (("auc_difference", "area vs scratch (primary)"),
                  ("jumpstart", "jumpstart (step 0 vs scratch)"))
"""(summary key, title) of what the transfer matrix shows per cell (matrix.md, matrix.png)."""
