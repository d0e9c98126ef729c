"""Transfer metrics: hand-computed curves, censoring, intervals and display."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from rltransfer.errors import RLTransferError
from rltransfer.metrics import (
    MetricsError,
    format_estimate,
    format_speedup,
    format_time_to_threshold,
    interval,
    normalize,
    run_metrics,
    summarize,
)

T = np.array([0, 100, 200, 300, 400])
NORM = {"random_return": 0.0, "threshold": 100.0}  # normalized score = return / 100
FAST = {"n_resamples": 200}


def run(scores: list[float], timesteps: np.ndarray = T) -> tuple[np.ndarray, np.ndarray]:
    """A curve whose normalized scores are `scores` under NORM."""
    return np.asarray(timesteps), 100.0 * np.asarray(scores, dtype=float)


def reach_at(step: int | None) -> tuple[np.ndarray, np.ndarray]:
    """A curve that first reaches the threshold at `step` (never if None)."""
    scores = [0.0 if step is None or t < step else 1.0 for t in T]
    return run(scores)


# --------------------------------------------------------------------------- normalization


def test_normalize_maps_random_to_0_and_threshold_to_1():
    got = normalize([-100.0, 0.0, 100.0, 300.0], random_return=-100.0, threshold=100.0)
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 2.0])


def test_normalize_rejects_threshold_equal_to_random_return():
    with pytest.raises(ValueError, match=re.escape("threshold (5.0) equals random_return")):
        normalize([1.0], random_return=5.0, threshold=5.0)
    # the same error is a user-facing RLTransferError for the CLI
    with pytest.raises(RLTransferError):
        normalize([1.0], random_return=5.0, threshold=5.0)


# --------------------------------------------------------------------------- per run


def test_run_metrics_hand_computed():
    m = run_metrics(*run([0.0, 0.25, 0.5, 0.75, 1.0]), budget=400, **NORM)
    assert m["initial"] == 0.0
    assert m["asymptote"] == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    # trapezoids of width 100: 12.5 + 37.5 + 62.5 + 87.5 = 200 over a budget of 400
    assert m["auc"] == pytest.approx(0.5)
    assert m["time_to_threshold"] == 400


def test_auc_holds_last_value_flat_to_budget():
    m = run_metrics(*run([0.0, 0.25, 0.5, 0.75, 1.0]), budget=800, **NORM)
    # 200 under the curve to t=400, then 1.0 * 400 held flat: 600 / 800
    assert m["auc"] == pytest.approx(0.75)


def test_auc_cuts_evaluations_after_budget():
    m = run_metrics(*run([0.0, 0.25, 0.5, 0.75, 1.0]), budget=250, **NORM)
    # 12.5 + 37.5 to t=200, then (0.5 + 0.625) / 2 * 50 to the interpolated value at 250
    assert m["auc"] == pytest.approx((50 + 28.125) / 250)
    # reached only at t=400, after the budget: censored
    assert m["time_to_threshold"] == math.inf


def test_run_metrics_with_fewer_evaluations_than_the_asymptote_window():
    m = run_metrics(*run([0.1, 0.3], timesteps=np.array([0, 100])), budget=100, **NORM)
    assert m["initial"] == pytest.approx(0.1)
    assert m["asymptote"] == pytest.approx(0.2)
    assert m["auc"] == pytest.approx(0.2)
    assert m["time_to_threshold"] == math.inf


def test_time_to_threshold_is_first_step_at_or_above_threshold():
    m = run_metrics(*run([0.2, 0.9, 1.0, 0.5, 1.2]), budget=400, **NORM)
    assert m["time_to_threshold"] == 200
    assert m["asymptote"] == pytest.approx((1.0 + 0.5 + 1.2) / 3)


def test_run_never_reaching_threshold_is_censored():
    m = run_metrics(*run([0.0, 0.5, 0.9, 0.99, 0.999]), budget=400, **NORM)
    assert m["time_to_threshold"] == math.inf


@pytest.mark.parametrize(
    "timesteps, returns",
    [
        ([100, 200], [1.0, 2.0]),
        ([0, 200, 100], [1.0, 2.0, 3.0]),
        ([0, 100], [1.0]),
        ([0, 100], [1.0, float("nan")]),
    ],
)
def test_malformed_curve_is_rejected(timesteps, returns):
    with pytest.raises(MetricsError):
        run_metrics(timesteps, returns, budget=400, **NORM)


# --------------------------------------------------------------------------- intervals


def test_interval_matches_scipy_percentile_bootstrap():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    est = interval((x,), lambda a, axis: np.mean(a, axis=axis), n_resamples=500, seed=3)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(3)
    ).confidence_interval
    assert est.point == pytest.approx(6.2)
    assert (est.low, est.high) == pytest.approx((ref.low, ref.high))


def test_interval_identical_data_gives_point_bounds():
    est = interval((np.full(4, 0.3),), lambda a, axis: np.mean(a, axis=axis))
    assert est.low == est.high == est.point == pytest.approx(0.3)


def test_interval_single_run_has_unknown_bounds():
    est = interval(
        (np.array([0.3]), np.array([0.1, 0.2])),
        lambda a, b, axis: np.mean(a, axis=axis) - np.mean(b, axis=axis),
    )
    assert est.point == pytest.approx(0.15)
    assert est.low is None and est.high is None


def test_interval_handles_infinite_medians_without_nan():
    ttt = np.array([100.0, 200.0, math.inf, math.inf, 300.0, math.inf, math.inf, math.inf])
    # with 201 resamples scipy's own interpolation gives high = inf - inf = NaN here
    est = interval((ttt,), lambda a, axis: np.median(a, axis=axis), n_resamples=201)
    assert est.point == math.inf
    assert est.low is not None and math.isfinite(est.low)
    assert est.high == math.inf


# --------------------------------------------------------------------------- summary


def test_summary_means_and_identical_data_intervals():
    curves = {"scratch": [run([0.0, 0.25, 0.5, 0.75, 1.0])] * 3}
    s = summarize(curves, budget=400, **NORM, **FAST)
    c = s["conditions"]["scratch"]
    assert c["n_runs"] == 3
    assert c["initial"] == {"point": 0.0, "low": 0.0, "high": 0.0}
    for key, value in [("asymptote", 0.75), ("iqm", 0.75), ("auc", 0.5)]:
        assert c[key]["point"] == pytest.approx(value)
        assert c[key]["low"] == c[key]["high"] == c[key]["point"]
    assert c["time_to_threshold"]["point"] == 400
    assert "jumpstart" not in c  # the reference is not compared with itself


def test_condition_with_3_of_5_censored_runs_reports_not_reached():
    curves = {
        "scratch": [reach_at(100), reach_at(200), reach_at(None), reach_at(None), reach_at(None)]
    }
    s = summarize(curves, random_return=0.0, threshold=100.0, budget=50_000, **FAST)
    ttt = s["conditions"]["scratch"]["time_to_threshold"]
    assert ttt["point"] is None and ttt["point_censored"]
    assert (ttt["reached"], ttt["n"], ttt["censored_at"]) == (2, 5, 50_000)
    cell = format_time_to_threshold(ttt)
    assert cell == "not reached (>50,000 steps) (2/5 reached)"
    # no bare step count anywhere: only the censoring bound and the reached count
    assert not re.search(r"\d", re.sub(r">50,000|2/5", "", cell))


def test_condition_with_2_of_5_censored_runs_has_censored_high_bound():
    curves = {
        "scratch": [reach_at(100), reach_at(200), reach_at(300), reach_at(None), reach_at(None)]
    }
    ttt = summarize(curves, budget=400, **NORM)["conditions"]["scratch"]["time_to_threshold"]
    assert ttt["point"] == 300 and not ttt["point_censored"]
    assert ttt["high"] is None and ttt["high_censored"]
    assert ttt["low"] == 100 and not ttt["low_censored"]
    assert format_time_to_threshold(ttt) == "300 [100, >400] (3/5 reached)"


def test_speedup_is_a_lower_bound_when_reference_never_reaches():
    curves = {
        "scratch": [reach_at(None)] * 3,
        "finetune": [reach_at(100), reach_at(100), reach_at(200)],
    }
    sp = summarize(curves, budget=400, **NORM, **FAST)["conditions"]["finetune"]["speedup"]
    assert sp["point"] == pytest.approx(4.0)  # budget 400 / median 100
    assert sp["lower_bound"] is True
    assert format_speedup(sp).startswith(">4.00x")


def test_speedup_ratio_of_medians_and_not_reached_cases():
    curves = {
        "scratch": [reach_at(200)] * 3,
        "finetune": [reach_at(100)] * 3,
        "reinit-head": [reach_at(None)] * 3,
    }
    conds = summarize(curves, budget=400, **NORM, **FAST)["conditions"]
    sp = conds["finetune"]["speedup"]
    assert (sp["point"], sp["low"], sp["high"], sp["lower_bound"]) == (2.0, 2.0, 2.0, False)
    assert format_speedup(sp) == "2.00x [2.00x, 2.00x]"
    assert conds["reinit-head"]["speedup"]["point"] is None
    assert format_speedup(conds["reinit-head"]["speedup"]) == "n/a (not reached)"

    both = summarize(
        {"scratch": [reach_at(None)] * 2, "finetune": [reach_at(None)] * 2},
        budget=400,
        **NORM,
        **FAST,
    )["conditions"]["finetune"]["speedup"]
    assert both["point"] is None and "not reached" in both["note"]


def test_transfer_ratio_hand_computed():
    curves = {
        "scratch": [run([0.0, 0.25, 0.5, 0.75, 1.0])] * 3,  # auc 0.5
        "finetune": [run([0.5, 0.625, 0.75, 0.875, 1.0])] * 3,
    }  # auc 0.75
    tr = summarize(curves, budget=400, **NORM, **FAST)["conditions"]["finetune"]["transfer_ratio"]
    assert tr["point"] == pytest.approx(0.5)  # (0.75 - 0.5) / 0.5
    assert tr["low"] == tr["high"] == tr["point"]
    assert tr["note"] is None


def test_transfer_ratio_undefined_when_reference_auc_not_positive():
    curves = {
        "scratch": [run([0.0, 0.0, -0.1, 0.0, 0.0])] * 2,
        "finetune": [run([0.5, 0.6, 0.7, 0.8, 0.9])] * 2,
    }
    tr = summarize(curves, budget=400, **NORM, **FAST)["conditions"]["finetune"]["transfer_ratio"]
    assert tr["point"] is None and tr["low"] is None and tr["high"] is None
    assert "<= 0" in tr["note"]
    assert format_estimate(tr).startswith("n/a (undefined")


def test_probability_of_improvement():
    scratch = [run([0, s, s, s, s]) for s in (0.1, 0.2, 0.3)]
    better = [run([0, s, s, s, s]) for s in (0.5, 0.6, 0.7, 0.8)]
    conds = summarize(
        {"scratch": scratch, "finetune": better, "same": list(scratch)}, budget=400, **NORM, **FAST
    )["conditions"]
    assert conds["finetune"]["prob_improvement"] == {"point": 1.0, "low": 1.0, "high": 1.0}
    assert conds["same"]["prob_improvement"]["point"] == pytest.approx(0.5)


def test_clear_jumpstart_has_interval_excluding_zero():
    rng = np.random.default_rng(0)
    scratch = [run([s, 0.5, 0.6, 0.7, 0.8]) for s in rng.normal(0.0, 0.05, 5)]
    finetune = [run([s, 0.8, 0.9, 1.0, 1.0]) for s in rng.normal(0.6, 0.05, 5)]
    js = summarize({"scratch": scratch, "finetune": finetune}, budget=400, **NORM)["conditions"][
        "finetune"
    ]["jumpstart"]
    assert js["low"] > 0
    assert js["low"] <= js["point"] <= js["high"]


def test_single_run_conditions_give_unknown_bounds_without_crashing():
    curves = {"scratch": [reach_at(300)], "finetune": [run([0.5, 1.0, 1.0, 1.0, 1.0])]}
    c = summarize(curves, budget=400, **NORM)["conditions"]["finetune"]
    for key in ("initial", "asymptote", "auc", "iqm", "jumpstart", "prob_improvement"):
        assert c[key]["point"] is not None
        assert c[key]["low"] is None and c[key]["high"] is None
    assert c["speedup"]["point"] == pytest.approx(3.0)
    assert format_estimate(c["initial"]) == "0.50"
    assert format_time_to_threshold(c["time_to_threshold"]) == "100 (1/1 reached)"
    assert format_speedup(c["speedup"]) == "3.00x"


def test_summary_is_strict_json_and_deterministic():
    rng = np.random.default_rng(1)
    curves = {
        "scratch": [run(np.clip(rng.normal([0, 0.3, 0.6, 0.8, 0.9], 0.1), 0, 2)) for _ in range(4)]
        + [reach_at(None)],
        "finetune": [
            run(np.clip(rng.normal([0.4, 0.8, 1.0, 1.1, 1.1], 0.1), 0, 2)) for _ in range(5)
        ],
        "reinit-head": [reach_at(None)],
    }
    first = summarize(curves, budget=400, **NORM, **FAST)
    text = json.dumps(first, allow_nan=False)
    assert json.loads(text) == first
    assert summarize(curves, budget=400, **NORM, **FAST) == first


def test_missing_reference_skips_comparisons_with_a_warning():
    curves = {"finetune": [reach_at(100)] * 2}
    with pytest.warns(UserWarning, match="'scratch' is not in the study"):
        s = summarize(curves, budget=400, **NORM, **FAST)
    assert s["reference"] is None
    assert "speedup" not in s["conditions"]["finetune"]
    assert summarize(curves, budget=400, reference=None, **NORM, **FAST)["reference"] is None


# --------------------------------------------------------------------------- display


def test_format_estimate():
    assert format_estimate({"point": 0.4201, "low": 0.31, "high": 0.549}) == "0.42 [0.31, 0.55]"
    assert format_estimate({"point": 0.42, "low": None, "high": None}) == "0.42"
    assert format_estimate({"point": 0.4251, "low": 0.3, "high": 0.5}, digits=3) == (
        "0.425 [0.300, 0.500]"
    )


def test_format_time_to_threshold_reached_and_censored_bound():
    ttt = {
        "point": 12000.0,
        "low": 8000.0,
        "high": 20000.0,
        "reached": 5,
        "n": 5,
        "censored_at": 50000,
        "point_censored": False,
        "low_censored": False,
        "high_censored": False,
    }
    assert format_time_to_threshold(ttt) == "12,000 [8,000, 20,000] (5/5 reached)"
    ttt.update(high=None, high_censored=True, reached=3)
    assert format_time_to_threshold(ttt) == "12,000 [8,000, >50,000] (3/5 reached)"


def test_format_speedup_cases():
    assert (
        format_speedup({"point": 2.1, "low": 1.5, "high": 3.0, "lower_bound": False, "note": None})
        == "2.10x [1.50x, 3.00x]"
    )
    assert (
        format_speedup(
            {
                "point": 4.0,
                "low": None,
                "high": None,
                "lower_bound": True,
                "note": "reference not reached",
            }
        )
        == ">4.00x"
    )
    assert (
        format_speedup(
            {
                "point": 4.0,
                "low": 2.0,
                "high": 4.0,
                "lower_bound": True,
                "high_lower_bound": True,
                "note": None,
            }
        )
        == ">4.00x [2.00x, >4.00x]"
    )
    assert (
        format_speedup(
            {"point": None, "low": None, "high": None, "lower_bound": False, "note": "not reached"}
        )
        == "n/a (not reached)"
    )
