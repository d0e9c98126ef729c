"""``--seeds auto``: a group-sequential design over seeds.

A study starts with a first batch of seeds per condition and adds batches (scratch's too)
until every condition's verdict is decided or the maximum is reached. Each comparison
(condition vs scratch) is looked at after every batch with the fixed study's primary test on
the normalized area (`metrics.skew_checked_p`: Welch's t, checked against its skewness-
corrected version) turned into a standard normal z through its two-sided p-value, against
boundaries from an α-spending function (Lan & DeMets 1983):

    α(t) = α · t^ρ,   t = seeds so far / maximum seeds

With ρ large, almost nothing is spent at the early looks: a lucky 5-seed sample (one that
happens to hold none of the seeds that fail to learn) rarely decides, and the study goes on.
The boundaries come from the joint normal law of the z statistics at the looks
(correlation √(t_j / t_k)), integrated numerically (Armitage, McPherson & Rowe 1969).

Each comparison's evidence is its *repeated p-value*: the smallest level α' at which its
boundaries were crossed at some look so far. It is a valid p-value whatever the stopping
time (a crossing at level α' happens with probability at most α' under the null), so the
p-values of all comparisons of a study are Holm-adjusted together exactly as in a fixed
study. At an interim look a crossing counts only when the two arms' outcomes agree (no failed
runs in one arm only, no strongly unequal spread): when they disagree the study goes on.
The last look always counts. Counting fewer crossings can only lower the error rate.
`benchmarks/calibration.py` measures false verdicts, power and seeds used.

Pure functions; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..strategies.registry import REFERENCE
from . import metrics
from .metrics import stats

RHO = 12.0
"""Exponent of the spending function: α(t) = α t^ρ (see the module docstring)."""
SPREAD_RATIO = 3.0
"""Area SDs that differ by more than this factor make the outcomes 'disagree'."""
GRID = 241  # points of the numerical integration
_ALPHAS = np.geomspace(1e-9, 0.99, 90)  # levels of the boundary table (repeated p-values)


@dataclass(frozen=True)
class Design:
    """Seeds per look: ``first``, then ``step`` more per look, up to ``max``."""

    first: int = 5
    step: int = 5
    max: int = 20

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per arm at each look, e.g. (5, 10, 15, 20)."""
        looks = list(range(self.first, self.max + 1, self.step))
        if looks[-1] != self.max:
            looks.append(self.max)
        return tuple(looks)

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(n / self.max for n in self.looks)

    def text(self) -> str:
        return f"auto:first={self.first},step={self.step},max={self.max}"

    def to_dict(self) -> dict[str, int]:
        return {"first": self.first, "step": self.step, "max": self.max}

    @classmethod
    def parse(cls, text: str) -> Design:
        """``auto`` or ``auto:max=20,first=5,step=5`` (any subset, any order)."""
        head, _, options = text.partition(":")
        if head.strip() != "auto":
            raise ConfigError(f"--seeds {text!r}: give a number of seeds (e.g. 10) or auto, "
                              "auto:max=20, auto:first=5,step=5,max=20")
        values: dict[str, int] = {}
        for item in filter(None, (o.strip() for o in options.split(","))):
            key, eq, value = item.partition("=")
            if key not in ("first", "step", "max") or not eq:
                raise ConfigError(f"--seeds {text!r}: unknown option {item!r}; auto takes "
                                  "first=N, step=N and max=N (e.g. auto:max=20)")
            try:
                values[key] = int(value)
            except ValueError:
                raise ConfigError(f"--seeds {text!r}: {key} must be a whole number, got "
                                  f"{value!r}") from None
        design = cls(**values)
        design.validate(text)
        return design

    def validate(self, text: str = "auto") -> None:
        if self.first < 2 or self.step < 1 or self.max <= self.first:
            raise ConfigError(f"--seeds {text!r}: needs first >= 2, step >= 1 and max > first "
                              f"(got first={self.first}, step={self.step}, max={self.max})")
        if len(self.looks) > 12:
            raise ConfigError(f"--seeds {text!r}: {len(self.looks)} looks; at most 12 "
                              "(raise step)")


# --------------------------------------------------------------------------- boundaries


def spent(t: float, alpha: float) -> float:
    """α spent by information fraction t."""
    return alpha * t ** RHO


def boundaries(fractions: tuple[float, ...], alpha: float) -> list[float]:
    """Two-sided z boundaries c_k: under the null, P(|Z_k| >= c_k at some look k, and not
    before) = α(t_k) - α(t_{k-1})."""
    from scipy.optimize import brentq

    cs: list[float] = []
    z = dens = None  # the density of Z at the last look, on the continuation region
    previous = 0.0
    for t in fractions:
        target = spent(t, alpha) - spent(previous, alpha)
        cross = _crossing(z, dens, previous, t)
        if target <= 0:
            c = math.inf
        elif cross(0.0) <= target:
            c = 0.0
        else:
            c = float(brentq(lambda c, f=cross, a=target: f(c) - a, 0.0, 40.0, xtol=1e-10))
        cs.append(c)
        grid = np.linspace(-c, c, GRID) if 1e-6 < c < 40 else np.linspace(-40, 40, GRID)
        if dens is None:
            dens = stats.norm.pdf(grid)
        else:
            sd = math.sqrt((t - previous) / t)
            kernel = stats.norm.pdf((grid[:, None] - z[None, :] * math.sqrt(previous / t))
                                    / sd) / sd
            dens = kernel @ (_weights(z) * dens)
        z, previous = grid, t
    return cs


def _crossing(z: np.ndarray | None, dens: np.ndarray | None, previous: float,
              t: float) -> Any:
    """c -> P(|Z_t| >= c and no crossing before), from the density at the last look."""
    if z is None or dens is None:
        return lambda c: float(2 * stats.norm.sf(c))
    w = _weights(z) * dens
    mu, sd = z * math.sqrt(previous / t), math.sqrt((t - previous) / t)
    return lambda c: float(np.sum(w * (stats.norm.sf((c - mu) / sd)
                                       + stats.norm.cdf((-c - mu) / sd))))


def _weights(z: np.ndarray) -> np.ndarray:
    h = z[1] - z[0]
    w = np.full(z.size, h)
    w[0] = w[-1] = h / 2
    return w


@lru_cache(maxsize=16)
def _table(fractions: tuple[float, ...]) -> np.ndarray:
    """Boundaries at every level of `_ALPHAS`: shape (levels, looks)."""
    return np.array([boundaries(fractions, float(a)) for a in _ALPHAS])


def level_crossed(z: float, look: int, fractions: tuple[float, ...]) -> float:
    """The smallest level α' whose boundary at `look` (0-based) |z| reaches (1 if none)."""
    column = _table(fractions)[:, look]  # decreasing in α'
    if not math.isfinite(z) or abs(z) < column[-1]:
        return 1.0
    if abs(z) >= column[0]:
        return float(_ALPHAS[0])
    logs = np.log(_ALPHAS)
    return float(math.exp(np.interp(-abs(z), -column, logs)))


def z_of(p: float | None, sign: float) -> float:
    """The standard normal z with two-sided p-value `p`, signed (0 when there is no test)."""
    if p is None or sign == 0:
        return 0.0
    return math.copysign(float(stats.norm.isf(max(p, 1e-300) / 2)), sign)


# --------------------------------------------------------------------------- looks

Columns = dict[str, np.ndarray]
"""Per-run metrics of one arm in seed order (`metrics.run_metrics` keys: auc, failed,
time_to_threshold, ...)."""


def disagreement(x: Columns, y: Columns) -> str | None:
    """Why the outcomes of a condition (`x`) and scratch (`y`) disagree, or None: failed
    runs in one arm only, or area SDs more than `SPREAD_RATIO` apart while the arms' areas
    overlap. (Runs that never reach the threshold in one arm only are not a sign: that is
    what a transfer that works does.)"""
    n, m = x["auc"].size, y["auc"].size
    failed, failed_ref = int(x["failed"].sum()), int(y["failed"].sum())
    if (failed > 0) != (failed_ref > 0):
        return f"failed runs in one arm only ({failed} of {n} vs scratch's {failed_ref} of {m})"
    sd = float(np.std(x["auc"], ddof=1)) if n > 1 else 0.0
    sd_ref = float(np.std(y["auc"], ddof=1)) if m > 1 else 0.0
    low, high = sorted((sd, sd_ref))
    apart = x["auc"].min() > y["auc"].max() or x["auc"].max() < y["auc"].min()
    # arms completely apart (every run of one above every run of the other: an exact
    # permutation p of 2/C(n+m, n)) disagree in nothing a spread could explain
    if high > SPREAD_RATIO * low and high > 1e-6 and not apart:
        ratio = "an unbounded" if low == 0 else f"a {high / low:.1f}-fold"
        return f"{ratio} difference in the area's spread (SD {sd:.2g} vs scratch's {sd_ref:.2g})"
    return None


def design_of(spec: Mapping[str, Any]) -> Design | None:
    """The design of a study spec (flat, as study.json reads), or None for fixed seeds."""
    text = spec.get("sequential")
    return Design.parse(text) if text else None


def look(x: Columns, y: Columns, index: int, design: Design) -> dict[str, Any]:
    """The look `index` (0-based) at one comparison, on the first ``design.looks[index]``
    runs of each arm: Welch's p, its z, the level it crosses, and whether the crossing
    counts (the outcomes agree, or it is the last look)."""
    n = design.looks[index]
    xs, ys = ({key: value[:n] for key, value in cols.items()} for cols in (x, y))
    difference = float(np.mean(xs["auc"]) - np.mean(ys["auc"]))
    if metrics.testable(xs["auc"], ys["auc"]):
        p: float | None = metrics.skew_checked_p(xs["auc"], ys["auc"])
    else:  # fewer than 2 runs, or no variability (exact permutation p)
        p = metrics.welch(xs["auc"], ys["auc"]).p_value
    z = z_of(p, difference)
    why = disagreement(xs, ys)
    counts = index == len(design.looks) - 1 or why is None
    return {"n": n, "difference": difference, "p_value": p, "z": z,
            "level": level_crossed(z, index, design.fractions) if counts else 1.0,
            "disagreement": why, "counts": counts}


def analyze(x: Columns, y: Columns, design: Design) -> dict[str, Any]:
    """Every look both arms have runs for, and the repeated p-value over them:
    ``{"looks": [...], "p_value", "max", "last_look"}`` (``last_look``: the design's last
    look has been taken)."""
    have = min(x["auc"].size, y["auc"].size)
    looks = [look(x, y, i, design) for i, n in enumerate(design.looks) if n <= have]
    return {"looks": looks, "p_value": min((lk["level"] for lk in looks), default=1.0),
            "max": design.max, "last_look": bool(looks) and looks[-1]["n"] == design.max}


def next_counts(design: Design, counts: Mapping[str, int],
                labels: Mapping[str, str], claims: tuple[str, ...],
                reference: str = REFERENCE) -> dict[str, int] | None:
    """The seeds per condition for the next batch after a look, or None when the study
    stops: every compared condition's label is a claim (`claims`), or the last look is
    taken. Undecided conditions and the `reference` go on to the next look's count;
    decided ones keep theirs."""
    n = max(counts.values())
    undecided = [c for c, label in labels.items() if label not in claims]
    later = [k for k in design.looks if k > n]
    if not undecided or not later:
        return None
    return {**counts, **{c: later[0] for c in [*undecided, reference]}}
