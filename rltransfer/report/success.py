"""Success-rate metrics of a study whose runs recorded success (evaluations.csv's
``success_rate``, `rltransfer.training.success`), whatever its score: the final success rate
per condition, and Continual World's forward transfer against scratch (Wołczyk et al. 2021):

    FT = (AUC - AUC_ref) / (1 - AUC_ref)

AUC is the area under the success-rate curve over the budget divided by the budget (so in
[0, 1]; the mean of the runs' areas, which is the area of their mean curve), AUC_ref
scratch's. FT is 1 when the condition succeeds from the first step, 0 when it learns as
scratch does, negative when it learns slower.

The interval: FT = 1 - F / F_ref with F = 1 - AUC, the *failure area*, so it is a ratio of
two independent means, and its interval is Fieller's for that ratio (Welch-Satterthwaite
degrees of freedom; `intervals.fieller_ratio`), not a percentile bootstrap, which
undercovers at 3-10 seeds (benchmarks/success_calibration.py measures both). It is
reported only when scratch's failure area is clearly above 0 (scratch does not succeed
almost from the start): otherwise the ratio is unbounded. A secondary, descriptive metric:
the verdict stays the primary claim's.

Pure functions; the report (`build`) merges their records into each condition's summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .intervals import fieller_ratio, mean_interval
from .metrics import run_metrics

METHOD = "Fieller (ratio of failure areas)"


def success_columns(curves: Sequence[tuple[np.ndarray, np.ndarray]],
                    budget: int) -> dict[str, np.ndarray]:
    """Per run: ``auc`` (the success-rate area over [0, budget] / budget, in [0, 1]) and
    ``final`` (the mean success rate of the last `metrics.ASYMPTOTE_WINDOW` evaluations),
    by `metrics.run_metrics` on the raw rate (0 and 1 as its scale's ends), so a diverged
    run counts at 0 success from the step it diverged, as its score does."""
    runs = [run_metrics(steps, rates, random_return=0.0, threshold=1.0, budget=budget)
            for steps, rates in curves]
    return {"auc": np.array([r["auc"] for r in runs]),
            "final": np.array([r["asymptote"] for r in runs])}


def forward_transfer(auc: np.ndarray, ref_auc: np.ndarray,
                     confidence: float = 0.95) -> dict[str, Any]:
    """FT of runs' success areas `auc` against the reference's, with Fieller's interval for
    1 - FT = mean failure area / the reference's (see the module doc)."""
    ratio = fieller_ratio(1.0 - np.asarray(auc, float), 1.0 - np.asarray(ref_auc, float),
                          confidence)  # F / F_ref - 1 = -FT
    out: dict[str, Any] = {"point": None, "low": None, "high": None, "note": None,
                           "method": METHOD}
    if ratio["point"] is None:
        mean = float(np.mean(ref_auc))
        out["note"] = ("fewer than 2 runs" if ratio["note"] == "fewer than 2 runs" else
                       f"not reported: scratch's success area {mean:.3g} is not clearly "
                       "below 1 (the ratio's interval would be unbounded)")
        return out
    # FT <= 1 (a failure area is >= 0): the interval's end above 1 is cut there
    out.update(point=-ratio["point"], low=-ratio["high"], high=min(-ratio["low"], 1.0))
    return out


def success_summary(curves: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], budget: int,
                    reference: str | None, confidence: float) -> dict[str, dict[str, Any]]:
    """Per condition: ``success`` (the final success rate's mean over runs, t interval cut to
    [0, 1]) and, against `reference`, ``forward_transfer``: summary.json's records."""
    columns = {condition: success_columns(runs, budget) for condition, runs in curves.items()
               if runs}
    out: dict[str, dict[str, Any]] = {}
    for condition, cols in columns.items():
        final = mean_interval(cols["final"], confidence).to_dict()
        for end in ("low", "high"):
            if final[end] is not None:
                final[end] = min(max(final[end], 0.0), 1.0)  # a rate: the truth is in [0, 1]
        out[condition] = {"success": final}
        if reference in columns and condition != reference:
            out[condition]["forward_transfer"] = forward_transfer(
                cols["auc"], columns[reference]["auc"], confidence)
    return out
