"""Spearman's rank correlation across a matrix's pairs, with an interval calibrated for the
pair counts a matrix has (6 to a few dozen), as pure functions over NumPy arrays (vectorized
over leading axes, so `benchmarks/similarity_coverage.py` checks the coverage of this very
code).

The interval (`interval`): Fisher's z of r_s, ``atanh(r_s) +/- t(n-2) * se``, back through
``tanh``, with ``se`` the larger of

* Bonett & Wright's (2000) standard error of z(r_s), ``sqrt((1 + r_s^2 / 2) / (n - 3))``
  (derived for a normal copula), and
* the jackknife's standard error of z(r_s) (leave one pair out), which follows the data's own
  dependence (heavy-tailed copulas, a few pairs far from the rest) where Bonett & Wright's is
  too small.

A perfect ranking (r_s = +/-1, whose z is infinite) is taken halfway to the next value r_s can
take, ``1 - 6 / (n^3 - n)``. The larger of the two held at least 94.9% in every setting of
the benchmark from 6 to 30 independent pairs (98-100% below 10: conservative); Bonett &
Wright's alone fell to 93% at 12 pairs and 88% at 30 with heavy-tailed dependence, the
jackknife alone to 68-95% at 6 pairs (benchmarks/README.md, "similarity_coverage.py"). Below
`min_pairs` (6 pairs at 95%) even a perfect ranking would give an interval that includes 0:
no interval is given there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .intervals import stats

METHOD = ("Fisher z of Spearman's r_s with the larger of Bonett-Wright's and the jackknife's "
          "standard error, t(n-2) critical value")


def spearman(x: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Spearman's r_s of `x` and `y` along their last axis (ties get their average rank, as
    ``scipy.stats.spearmanr``); NaN where either does not vary."""
    rx = stats.rankdata(np.asarray(x, dtype=float), axis=-1)
    ry = stats.rankdata(np.asarray(y, dtype=float), axis=-1)
    rx = rx - rx.mean(axis=-1, keepdims=True)
    ry = ry - ry.mean(axis=-1, keepdims=True)
    scale = np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(axis=-1) / scale
    return np.where(scale > 0, np.clip(r, -1.0, 1.0), np.nan)


def _top(n: int) -> float:
    """Halfway between r_s = 1 and the next value r_s can take with `n` pairs."""
    return 1.0 - 6.0 / (n ** 3 - n)


def _z(r: np.ndarray, n: int) -> np.ndarray:
    top = _top(n)
    return np.arctanh(np.clip(r, -top, top))


STANDARD_ERRORS = ("larger", "bonett-wright", "jackknife")


def interval(x: ArrayLike, y: ArrayLike, confidence: float = 0.95,
             standard_error: str = "larger") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r_s, low, high) of `x` and `y` along their last axis (n pairs, n >= 4), vectorized
    over the leading axes; NaN where r_s is undefined (a sample that does not vary).
    `standard_error`: the larger of the two (the report's), or one of them alone (what the
    coverage benchmark compares it with)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = x.shape[-1]
    if n < 4:
        raise ValueError("a rank correlation interval needs at least 4 pairs")
    r = spearman(x, y)
    z = _z(r, n)
    r_top = np.tanh(z)
    bonett_wright = np.sqrt((1 + r_top ** 2 / 2) / (n - 3))
    leave_out = np.stack([_z(spearman(np.delete(x, i, axis=-1), np.delete(y, i, axis=-1)),
                             n - 1) for i in range(n)])
    # a pair whose removal leaves a sample without variation says nothing about r_s: 0
    leave_out = np.where(np.isnan(leave_out), 0.0, leave_out)
    jackknife = np.sqrt((n - 1) / n * ((leave_out - leave_out.mean(axis=0)) ** 2).sum(axis=0))
    se = {"larger": np.maximum(bonett_wright, jackknife), "bonett-wright": bonett_wright,
          "jackknife": jackknife}[standard_error]
    c = float(stats.t.ppf(0.5 + confidence / 2, n - 2))
    return r, np.tanh(z - c * se), np.tanh(z + c * se)


@lru_cache(maxsize=16)
def min_pairs(confidence: float = 0.95) -> int:
    """The fewest pairs at which a perfect ranking's interval excludes 0: below it, no
    ranking could say anything, and no interval is given (6 at 95%, 8 at 99%)."""
    for n in range(4, 1000):
        ranks = np.arange(n, dtype=float)
        _, low, _ = interval(ranks, ranks, confidence)
        if float(low) > 0:
            return n
    raise ValueError(f"no pair count below 1000 suffices at confidence {confidence}")


@dataclass(frozen=True)
class Correlation:
    """A rank correlation over `n` pairs: r_s with its interval (None when not given), and
    why not (`note`)."""

    n: int
    rho: float | None
    low: float | None
    high: float | None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "rho": self.rho, "low": self.low, "high": self.high,
                "note": self.note}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Correlation:
        return cls(int(data["n"]), data.get("rho"), data.get("low"), data.get("high"),
                   data.get("note"))

    def text(self) -> str:
        """``"+0.71 [0.12, 0.93] (n=8)"``, or r_s with why there is no interval."""
        if self.rho is None:
            return f"— ({self.note}; n={self.n})"
        if self.low is None or self.high is None:
            return f"{self.rho:+.2f} (n={self.n}: no interval)"
        return f"{self.rho:+.2f} [{self.low:.2f}, {self.high:.2f}] (n={self.n})"


def rank_correlation(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> Correlation:
    """Spearman's r_s of the pairs where both `x` and `y` are finite numbers, with its
    interval when there are at least `min_pairs` of them."""
    x = np.asarray([np.nan if v is None else v for v in np.ravel(x)], dtype=float)
    y = np.asarray([np.nan if v is None else v for v in np.ravel(y)], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 3:
        return Correlation(n, None, None, None, "fewer than 3 pairs")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        which = "the measure" if np.ptp(x) == 0 else "the area difference"
        return Correlation(n, None, None, None, f"{which} is the same for every pair")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rho = float(spearman(x, y))
        least = min_pairs(confidence)
        if n < least:
            return Correlation(n, rho, None, None, f"n too small: fewer than {least} pairs, "
                                                   "even a perfect ranking's interval would "
                                                   "include 0")
        _, low, high = interval(x, y, confidence)
    return Correlation(n, rho, _finite(float(low)), _finite(float(high)))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
