"""The verdict: one primary claim (area difference, Welch), Holm across the study."""

from __future__ import annotations

import numpy as np
import pytest

from rltransfer.report import metrics, verdict
from rltransfer.report.summary import MetricsSummary
from rltransfer.report.verdict import NEGATIVE, NO_CLEAR, POSITIVE, holm, judge

STEPS = np.arange(0, 2001, 100, dtype=float)
NORM = {"random_return": 0.0, "threshold": 1.0, "budget": 2000}


def _curve(start: float, end: float, tau: float) -> tuple[np.ndarray, np.ndarray]:
    return STEPS, start + (end - start) * (1 - np.exp(-STEPS / tau))


def test_holm_adjusts_step_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_smallest_exact_permutation_p():
    assert verdict.smallest_permutation_p(3, 3) == pytest.approx(0.1)
    assert verdict.smallest_permutation_p(5, 5) == pytest.approx(2 / 252)


def _summary(curves: dict) -> dict:
    summary = MetricsSummary.from_dict(metrics.summarize(curves, **NORM))
    (verdicts,) = judge([summary], 0.05)
    return summary.with_verdicts(verdicts).to_dict()["conditions"]


def test_starts_worse_but_learns_is_not_negative_transfer():
    """The audit's case: slightly worse start, reaches the threshold in 4/5 seeds while
    scratch reaches it in none; the old rule said "negative transfer"."""
    scratch = [_curve(0.05 + 0.01 * k, 0.08 + 0.01 * k, 800.0) for k in range(5)]
    learns = [_curve(0.0, 1.3 + 0.02 * k, 300.0 + 40 * k) for k in range(4)]
    learns.append(_curve(0.0, 0.6, 500.0))
    c = _summary({"scratch": scratch, "finetune": learns})["finetune"]
    assert c["jumpstart"]["high"] < 0  # it does start worse
    assert c["verdict"]["label"] == POSITIVE
    # one run never reaches it either, so the speedup's lower end cannot be bounded
    assert c["speedup"]["low"] is None
    assert c["verdict"]["reading"].startswith("starts worse, reaches it in 4/5 runs vs "
                                              "scratch's 0/5, ends higher; area +")


def test_a_better_start_that_never_reaches_the_threshold_is_not_positive_transfer():
    """The audit's other case: starts better, never reaches the threshold, which scratch
    reaches in 5/5 seeds; the old rule said "positive transfer" from the jumpstart."""
    scratch = [_curve(0.0, 1.5 + 0.05 * k, 300.0 + 30 * k) for k in range(5)]
    stuck = [_curve(0.3 + 0.01 * k, 0.5 + 0.02 * k, 200.0) for k in range(5)]
    c = _summary({"scratch": scratch, "frozen": stuck})["frozen"]
    assert c["jumpstart"]["low"] > 0
    assert c["speedup"]["point_bound"] == "<"
    assert c["verdict"]["label"] == NEGATIVE
    assert c["verdict"]["reading"].startswith("starts better, reaches the threshold later, "
                                              "reaches it in 0/5 runs vs scratch's 5/5, "
                                              "ends lower; area -")


def test_holm_is_applied_across_every_summary_given():
    rng = np.random.default_rng(3)
    def study(effect: float) -> MetricsSummary:
        curves = {"scratch": [_curve(0, 1 + e, 500) for e in rng.normal(0, 0.1, 5)],
                  "finetune": [_curve(0, 1 + effect + e, 500) for e in rng.normal(0, 0.1, 5)]}
        return MetricsSummary.from_dict(metrics.summarize(curves, **NORM))
    cells = [study(0.3), study(0.0), study(0.05)]
    judged = judge(cells, 0.05)
    raw = [cell.conditions["finetune"].auc_difference.p_value for cell in cells]
    adjusted = [verdicts["finetune"].p_holm for verdicts in judged]
    assert adjusted == pytest.approx(holm(raw))
    assert {verdicts["finetune"].m for verdicts in judged} == {3}
    assert judged[1]["finetune"].label == NO_CLEAR
    assert judged[0]["scratch"].label == verdict.REFERENCE
    assert all(cell.conditions["finetune"].verdict is None for cell in cells)  # not changed


def test_a_clear_difference_at_0_05_can_be_unclear_at_a_stricter_alpha():
    rng = np.random.default_rng(5)
    curves = {"scratch": [_curve(0, 1 + e, 500) for e in rng.normal(0, 0.2, 5)],
              "finetune": [_curve(0, 1.35 + e, 500) for e in rng.normal(0, 0.2, 5)]}
    summary = MetricsSummary.from_dict(metrics.summarize(curves, **NORM))
    p = summary.conditions["finetune"].auc_difference.p_value
    assert 0.001 < p < 0.05
    assert judge([summary], 0.05)[0]["finetune"].label == POSITIVE
    assert judge([summary], 0.001)[0]["finetune"].label == NO_CLEAR
    assert "α = 0.001" in verdict.rule(0.001)


def test_four_vs_four_runs_make_no_claim_without_contradicting_themselves():
    reason = verdict.too_few_runs_reason(4, 4, 0.05)
    assert reason.startswith("Only 4 vs 4 runs: no claim is made: with 4 vs 4 runs a t test's")
    assert "0.029" in reason and "no claim is possible" not in reason
    assert verdict.too_few_runs_reason(3, 3, 0.05).startswith(
        "Only 3 vs 3 runs: no claim is possible at the 0.05 level (with 3 vs 3 runs the "
        "smallest exact two-sided permutation p is 0.1,")


def test_the_reading_names_no_speedup_below_five_runs():
    """Two [min, max] intervals of 3 runs miss each other under the null in 10% of studies:
    too often to say "sooner" or "later" from them."""
    scratch = [_curve(0.0, 1.5, 900.0 + 10 * k) for k in range(3)]
    faster = [_curve(0.0, 1.5, 200.0 + 10 * k) for k in range(3)]
    c = _summary({"scratch": scratch, "finetune": faster})["finetune"]
    assert c["speedup"]["low"] > 1
    assert "sooner" not in c["verdict"]["reading"]


def test_planned_but_missing_comparisons_count_in_the_holm_family():
    rng = np.random.default_rng(4)
    curves = {"scratch": [_curve(0, 1 + e, 500) for e in rng.normal(0, 0.1, 5)],
              "finetune": [_curve(0, 1.3 + e, 500) for e in rng.normal(0, 0.1, 5)]}
    summary = MetricsSummary.from_dict(metrics.summarize(curves, **NORM))
    v = judge([summary], 0.05, planned=4)[0]["finetune"]
    p = summary.conditions["finetune"].auc_difference.p_value
    assert v.m == 4 and v.p_holm == pytest.approx(min(1.0, 4 * p))
