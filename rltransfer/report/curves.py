"""Learning curves across seeds: the mean over runs and a per-step t interval.

Pure numpy/scipy (no plotting): the figures, the TensorBoard aggregates and `compare` all
draw or log the same `AggregateCurve`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from . import metrics


class AggregateCurve(NamedTuple):
    """Across-seed mean of evaluation curves and a 95% t interval at each step."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def aggregate_curves(
    curves: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    confidence_level: float = 0.95,
) -> AggregateCurve:
    """Mean over runs of ``[(timesteps, returns), ...]`` with a per-step t interval.

    Runs of a study share their evaluation steps, and then those are the grid. If steps
    differ (e.g. rollout boundaries), the grid is the union of all steps inside the range
    every run covers, and each run is linearly interpolated onto it (never extrapolated).
    ``low``/``high`` are the Student t interval of the mean over runs at each step (the
    same method as the summary's means; a percentile bootstrap under-covers at 3-10 runs),
    NaN with fewer than 2 runs. Works on any values (raw returns or normalized scores).
    """
    steps, values = _on_common_grid(curves)
    mean = values.mean(axis=0)
    n = values.shape[0]
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return AggregateCurve(steps, mean, nan, nan.copy())
    half = stats.t.ppf(0.5 + confidence_level / 2, n - 1) * values.std(axis=0, ddof=1) / np.sqrt(n)
    return AggregateCurve(steps, mean, mean - half, mean + half)


def _on_common_grid(curves: Sequence[tuple[ArrayLike, ArrayLike]]) -> tuple[np.ndarray, ...]:
    """(grid, values of shape runs x steps): see `aggregate_curves`."""
    pairs = [(np.asarray(t, dtype=float), np.asarray(r, dtype=float)) for t, r in curves]
    if not pairs:
        raise metrics.MetricsError("aggregate_curves needs at least one curve.")
    for t, r in pairs:
        if t.ndim != 1 or t.shape != r.shape or t.size == 0 or np.any(np.diff(t) <= 0):
            raise metrics.MetricsError(
                "Each curve needs 1-D, strictly increasing timesteps and returns of the same "
                f"non-zero length; got shapes {t.shape} and {r.shape}.")
    first = pairs[0][0]
    if all(np.array_equal(t, first) for t, _ in pairs):
        return first, np.stack([r for _, r in pairs])
    start, end = max(t[0] for t, _ in pairs), min(t[-1] for t, _ in pairs)
    if start > end:
        raise metrics.MetricsError(f"The curves share no range of steps ({start} > {end}).")
    grid = np.unique(np.concatenate([t for t, _ in pairs]))
    grid = grid[(grid >= start) & (grid <= end)]
    return grid, np.stack([np.interp(grid, t, r) for t, r in pairs])
