"""Transfer metrics: hand-computed curves, censoring, intervals and display."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from rltransfer.errors import RLTransferError
from rltransfer.report.metrics import (
    MetricsError,
    fieller_ratio,
    format_estimate,
    format_p,
    format_speedup,
    format_time_to_threshold,
    mean_interval,
    median_interval,
    normalize,
    performance_profile,
    prob_improvement,
    run_metrics,
    speedup,
    summarize,
    welch,
)

T = np.array([0, 100, 200, 300, 400])
NORM = {"random_return": 0.0, "threshold": 100.0}  # normalized score = return / 100


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
    # at the threshold only at the last evaluation: the run ended before it showed it stays
    assert m["time_to_threshold"] == math.inf


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


def test_time_to_threshold_is_first_step_from_which_the_score_stays_above_threshold():
    # 1.0 at 200 drops to 0.5 at 300: not a reach; from 400 it stays for 3 evaluations
    t = np.arange(0, 700, 100)
    m = run_metrics(*run([0.2, 0.9, 1.0, 0.5, 1.2, 1.0, 1.1], t), budget=600, **NORM)
    assert m["time_to_threshold"] == 400
    assert m["asymptote"] == pytest.approx((1.2 + 1.0 + 1.1) / 3)
    # above from 500 to the end is only 2 evaluations: censored, not a reach at 500
    m = run_metrics(*run([0.2, 0.9, 1.0, 0.5, 0.9, 1.0, 1.1], t), budget=600, **NORM)
    assert m["time_to_threshold"] == math.inf
    # a curve of fewer than SUSTAIN evaluations needs all of them from the step on
    assert run_metrics(*run([0.5, 1.0], np.array([0, 100])), budget=100, **NORM)[
        "time_to_threshold"] == 100


def test_run_never_reaching_threshold_is_censored():
    m = run_metrics(*run([0.0, 0.5, 0.9, 0.99, 0.999]), budget=400, **NORM)
    assert m["time_to_threshold"] == math.inf


@pytest.mark.parametrize(
    "timesteps, returns",
    [
        ([100, 200], [1.0, 2.0]),
        ([0, 200, 100], [1.0, 2.0, 3.0]),
        ([0, 100], [1.0]),
    ],
)
def test_malformed_curve_is_rejected(timesteps, returns):
    with pytest.raises(MetricsError):
        run_metrics(timesteps, returns, budget=400, **NORM)


# --------------------------------------------------------------------------- intervals


def test_mean_interval_is_the_student_t_interval():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    est = mean_interval(x)
    low, high = stats.t.interval(0.95, 4, loc=6.2, scale=np.std(x, ddof=1) / math.sqrt(5))
    assert est.point == pytest.approx(6.2)
    assert (est.low, est.high) == pytest.approx((low, high))
    assert mean_interval([0.3]).low is None
    constant = mean_interval(np.full(4, 0.3))
    assert constant.low == constant.high == pytest.approx(0.3)


def test_welch_matches_scipy_and_refuses_what_it_cannot_test():
    x, y = [0.9, 0.7, 0.8, 1.0, 0.6], [0.5, 0.2, 0.4, 0.3, 0.45]
    test = welch(x, y)
    ref = stats.ttest_ind(x, y, equal_var=False)
    assert test.p_value == pytest.approx(ref.pvalue) and test.df == pytest.approx(ref.df)
    ci = ref.confidence_interval(0.95)
    assert (test.estimate.low, test.estimate.high) == pytest.approx((ci.low, ci.high))
    assert test.estimate.point == pytest.approx(np.mean(x) - np.mean(y))
    assert welch(x, y, confidence=0.99).estimate.low < test.estimate.low
    one = welch([0.3], y)
    assert one.p_value is None and one.estimate.low is None and one.note == "fewer than 2 runs"
    flat = welch([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])  # complete separation, no interval
    assert flat.p_value == pytest.approx(0.1) and "no variability" in flat.note
    assert flat.estimate.low is None and flat.method == "exact permutation"
    # rounding noise is not variability: no p = 1e-60 from a 1e-15 wobble
    assert welch([0.5] * 5, [0.3] * 4 + [0.3 + 1e-15]).p_value == pytest.approx(2 / 252)
    assert welch([1.0, 1.0, 1.0], [0.0, 0.1, 0.2]).p_value < 0.05  # one constant sample is fine


@pytest.mark.parametrize(("n", "ranks", "level"), [
    (3, (1, 3), 0.75), (5, (1, 5), 0.9375), (6, (1, 6), 0.96875), (10, (2, 9), 0.978515625),
])
def test_median_interval_is_the_order_statistic_interval_with_its_exact_level(n, ranks, level):
    x = np.arange(1.0, n + 1)[::-1]  # order does not matter
    est, achieved = median_interval(x)
    assert est.point == np.median(x)
    assert (est.low, est.high) == (float(ranks[0]), float(ranks[1]))
    assert achieved == pytest.approx(level)


def test_prob_improvement_does_not_collapse_under_complete_separation():
    better, worse = [5.0, 6.0, 7.0, 8.0, 9.0], [0.0, 1.0, 2.0, 3.0, 4.0]
    p = prob_improvement(better, worse)
    assert p["point"] == 1.0 and p["high"] == 1.0
    assert 0.5 < p["low"] < 0.9  # never [1.00, 1.00]
    # the low end solves Newcombe's method-5 equation |theta_hat - t| = z se(t)
    t, n, z = p["low"], 5, stats.norm.ppf(0.975)
    var = t * (1 - t) / (n * n) * (1 + (n - 1) * ((1 - t) / (2 - t) + t / (1 + t)))
    assert 1.0 - t == pytest.approx(z * math.sqrt(var), rel=1e-6)
    assert p["p_value"] == pytest.approx(2 / math.comb(10, 5))  # the exact Mann-Whitney p
    mirror = prob_improvement(worse, better)
    assert mirror["point"] == 0.0 and mirror["low"] == 0.0
    assert mirror["high"] == pytest.approx(1 - p["low"])
    same = prob_improvement([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same["point"] == 0.5 and same["low"] < 0.5 < same["high"]


def test_fieller_interval_solves_its_equation_and_needs_scratch_clearly_above_zero():
    x, y = np.array([0.9, 0.7, 0.8, 1.0, 0.6]), np.array([0.5, 0.4, 0.45, 0.55, 0.35])
    r = fieller_ratio(x, y)
    assert r["point"] == pytest.approx(x.mean() / y.mean() - 1)
    vx, vy = np.var(x, ddof=1) / 5, np.var(y, ddof=1) / 5
    rho = x.mean() / y.mean()
    df = (vx + rho**2 * vy) ** 2 / (vx**2 / 4 + (rho**2 * vy) ** 2 / 4)
    t = stats.t.ppf(0.975, df)
    for end in (r["low"], r["high"]):
        ratio = end + 1
        assert (x.mean() - ratio * y.mean()) ** 2 == pytest.approx(t * t * (vx + ratio**2 * vy))
    assert r["low"] < r["point"] < r["high"]
    noisy = fieller_ratio(x, np.array([0.3, -0.2, 0.1, 0.5, -0.1]))
    assert noisy["point"] is None and "not clearly above 0" in noisy["note"]
    assert format_estimate(noisy).startswith("n/a (not reported: scratch's mean area")


def test_speedup_bounds_for_censored_times():
    inf = math.inf
    faster = speedup([100, 100, 200, 200, 300], [inf] * 5, budget=400)
    assert faster["point"] == pytest.approx(2.0) and faster["point_bound"] == ">"  # 400/200
    assert format_speedup(faster).startswith(">2.00x [>")
    slower = speedup([inf] * 5, [100, 100, 200, 200, 300], budget=400)
    assert slower["point"] == pytest.approx(0.5) and slower["point_bound"] == "<"
    assert format_speedup(slower).startswith("<0.50x")
    assert "0.00x" not in format_speedup(slower)  # never a placeholder number
    both = speedup([inf] * 3, [inf] * 3, budget=400)
    assert both["point"] is None and format_speedup(both) == "n/a (neither reaches the threshold)"
    exact = speedup([100, 100, 100], [200, 200, 200], budget=400)
    assert (exact["point"], exact["low"], exact["high"]) == (2.0, 2.0, 2.0)
    assert exact["level"] == pytest.approx(0.75 ** 2)  # both [min, max] at 3 runs
    assert format_speedup(exact) == "2.00x [2.00x, 2.00x] (56.2% interval)"
    at_zero = speedup([0, 0, 0], [100, 200, 300], budget=400)
    assert at_zero["point"] is None and "t=0" in at_zero["note"]
    scratch_at_zero = speedup([inf] * 3, [0, 0, 0], budget=400)
    assert (scratch_at_zero["point"], scratch_at_zero["point_bound"]) == (0.0, "=")


def test_a_median_whose_upper_middle_run_is_censored_is_a_lower_bound():
    """With [1000, 2000, never, never] the median is only known to exceed (2000 + budget)/2:
    never "not reached" (half the runs did reach it), and the speedup is a bound."""
    inf = math.inf
    est, _ = median_interval([1000, 2000, inf, inf], budget=20_000)
    assert est.point == 11_000
    s = summarize({"scratch": [reach_at(100), reach_at(200), reach_at(None), reach_at(None)]},
                  budget=400, **NORM)
    ttt = s["conditions"]["scratch"]["time_to_threshold"]
    assert ttt["point"] == 300 and ttt["point_lower_bound"] and not ttt["point_censored"]
    assert format_time_to_threshold(ttt).startswith(">300 [100, >400]")
    slower = speedup([1000, 2000, inf, inf], [3000, 4000, 5000, 6000], 20_000)
    assert slower["point_bound"] == "<" and slower["point"] == pytest.approx(4500 / 11_000)
    faster = speedup([3000, 4000, 5000, 6000], [1000, 2000, inf, inf], 20_000)
    assert faster["point_bound"] == ">" and faster["point"] == pytest.approx(11_000 / 4500)
    assert speedup([1000, inf, inf, inf], [1000, 2000, inf, inf], 20_000)["point"] is None


def test_performance_profile_counts_runs_above_each_score_with_exact_bands():
    profile = performance_profile({"a": [0.1, 0.5, 0.9, 1.2, 0.3]})
    taus = np.asarray(profile["taus"])
    assert taus[0] == 0.0 and taus[-1] == pytest.approx(1.2)
    a = profile["conditions"]["a"]
    i = int(np.searchsorted(taus, 0.4))
    assert a["fraction"][i] == pytest.approx(3 / 5)  # 0.5, 0.9, 1.2 exceed 0.4
    ci = stats.binomtest(3, 5).proportion_ci(0.95, method="exact")
    assert (a["low"][i], a["high"][i]) == pytest.approx((ci.low, ci.high))
    assert a["fraction"][-1] == 0.0 and a["high"][-1] < 1.0 and a["low"][-1] == 0.0


# --------------------------------------------------------------------------- summary


def test_summary_means_and_identical_data_intervals():
    curves = {"scratch": [run([0.0, 0.25, 0.5, 0.75, 1.0])] * 3}
    s = summarize(curves, budget=400, **NORM)
    c = s["conditions"]["scratch"]
    assert c["n_runs"] == 3
    assert c["initial"] == {"point": 0.0, "low": 0.0, "high": 0.0}
    for key, value in [("asymptote", 0.75), ("auc", 0.5)]:
        assert c[key]["point"] == pytest.approx(value)
        assert c[key]["low"] == c[key]["high"] == c[key]["point"]
    assert c["iqm"]["point"] == pytest.approx(0.75) and c["iqm"]["low"] is None
    # the threshold only at the last evaluation of every run: no run reached it
    assert c["time_to_threshold"]["point"] is None and c["time_to_threshold"]["reached"] == 0
    assert "jumpstart" not in c  # the reference is not compared with itself
    assert s["alpha"] == 0.05 and set(s["profile"]["conditions"]) == {"scratch"}


def test_condition_with_3_of_5_censored_runs_reports_not_reached():
    curves = {
        "scratch": [reach_at(100), reach_at(200), reach_at(None), reach_at(None), reach_at(None)]
    }
    s = summarize(curves, random_return=0.0, threshold=100.0, budget=50_000)
    ttt = s["conditions"]["scratch"]["time_to_threshold"]
    assert ttt["point"] is None and ttt["point_censored"]
    assert (ttt["reached"], ttt["n"], ttt["censored_at"]) == (2, 5, 50_000)
    cell = format_time_to_threshold(ttt)
    assert cell == "not reached (>50,000 steps) (2/5 reached)"
    # no bare step count anywhere: only the censoring bound and the reached count
    assert not re.search(r"\d", re.sub(r">50,000|2/5", "", cell))


def test_condition_with_2_of_5_censored_runs_has_censored_high_bound():
    curves = {
        "scratch": [reach_at(0), reach_at(100), reach_at(200), reach_at(300), reach_at(None)]
    }  # reach_at(300) is above at 300 and 400 only: censored like reach_at(None)
    ttt = summarize(curves, budget=400, **NORM)["conditions"]["scratch"]["time_to_threshold"]
    assert ttt["point"] == 200 and not ttt["point_censored"]
    assert ttt["high"] is None and ttt["high_censored"]
    assert ttt["low"] == 0 and not ttt["low_censored"]
    assert ttt["level"] == pytest.approx(0.9375)
    assert format_time_to_threshold(ttt) == "200 [0, >400] (93.8% interval) (3/5 reached)"


def test_summary_compares_every_condition_with_scratch():
    rng = np.random.default_rng(0)
    scratch = [run([s, 0.5, 0.6, 0.7, 0.8]) for s in rng.normal(0.0, 0.05, 5)]
    finetune = [run([s, 0.8, 0.9, 1.0, 1.0]) for s in rng.normal(0.6, 0.05, 5)]
    c = summarize({"scratch": scratch, "finetune": finetune}, budget=400, **NORM)["conditions"][
        "finetune"]
    assert c["jumpstart"]["low"] > 0 and c["jumpstart"]["method"] == "Welch t, skew-checked"
    assert c["auc_difference"]["p_value"] < 0.01 and c["auc_difference"]["low"] > 0
    assert c["prob_improvement"]["point"] == 1.0 and c["prob_improvement"]["low"] < 1.0
    assert c["transfer_ratio"]["low"] > 0
    auc = [run_metrics(*r, budget=400, **NORM)["auc"] for r in finetune]
    auc_ref = [run_metrics(*r, budget=400, **NORM)["auc"] for r in scratch]
    assert c["auc_difference"]["point"] == pytest.approx(np.mean(auc) - np.mean(auc_ref))


def test_single_run_conditions_give_unknown_bounds_without_crashing():
    curves = {"scratch": [reach_at(200)], "finetune": [run([0.5, 1.0, 1.0, 1.0, 1.0])]}
    c = summarize(curves, budget=400, **NORM)["conditions"]["finetune"]
    for key in ("initial", "asymptote", "auc", "iqm", "jumpstart", "prob_improvement",
                "auc_difference"):
        assert c[key]["point"] is not None
        assert c[key]["low"] is None and c[key]["high"] is None
    assert c["speedup"]["point"] == pytest.approx(2.0)
    assert format_estimate(c["initial"]) == "0.50"
    assert format_time_to_threshold(c["time_to_threshold"]) == "100 (1/1 reached)"
    assert format_speedup(c["speedup"]) == "2.00x"


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
    first = summarize(curves, budget=400, **NORM)
    text = json.dumps(first, allow_nan=False)
    assert json.loads(text) == first
    assert summarize(curves, budget=400, **NORM) == first


def test_missing_reference_skips_comparisons_with_a_warning():
    curves = {"finetune": [reach_at(100)] * 2}
    with pytest.warns(UserWarning, match="'scratch' is not in the study"):
        s = summarize(curves, budget=400, **NORM)
    assert s["reference"] is None
    assert "speedup" not in s["conditions"]["finetune"]
    assert summarize(curves, budget=400, reference=None, **NORM)["reference"] is None


def test_alpha_outside_0_1_is_refused():
    with pytest.raises(MetricsError, match="alpha must be between 0 and 1"):
        summarize({"scratch": [reach_at(100)]}, budget=400, alpha=1.5, **NORM)


# --------------------------------------------------------------------------- display


def test_format_estimate():
    assert format_estimate({"point": 0.4201, "low": 0.31, "high": 0.549}) == "0.42 [0.31, 0.55]"
    assert format_estimate({"point": 0.42, "low": None, "high": None}) == "0.42"
    assert format_estimate({"point": 0.4251, "low": 0.3, "high": 0.5}, digits=3) == (
        "0.425 [0.300, 0.500]"
    )
    assert format_estimate({"point": 0.42, "low": -0.1, "high": 0.9}, signed=True) == (
        "+0.42 [-0.10, +0.90]")


def test_format_time_to_threshold_reached_and_censored_bound():
    ttt = {"point": 12000.0, "low": 8000.0, "high": 20000.0, "reached": 5, "n": 10,
           "censored_at": 50000, "point_censored": False, "low_censored": False,
           "high_censored": False, "level": 0.978}
    assert format_time_to_threshold(ttt) == "12,000 [8,000, 20,000] (5/10 reached)"
    ttt.update(high=None, high_censored=True, reached=3, level=0.75)
    assert format_time_to_threshold(ttt) == "12,000 [8,000, >50,000] (75% interval) (3/10 reached)"


def test_format_speedup_and_p():
    assert format_speedup({"point": 2.1, "low": 1.5, "high": 3.0, "point_bound": "=",
                           "low_bound": "=", "high_bound": "="}) == "2.10x [1.50x, 3.00x]"
    assert format_speedup({"point": 4.0, "low": None, "high": None, "point_bound": ">"}) == (
        ">4.00x")
    assert format_speedup({"point": 4.0, "low": 2.0, "high": None, "point_bound": ">",
                           "low_bound": ">", "high_bound": None}) == ">4.00x [>2.00x, ?]"
    assert format_speedup({"point": None, "note": "neither reaches the threshold"}) == (
        "n/a (neither reaches the threshold)")
    assert format_p(0.0004) == "p < 0.001" and format_p(0.0123) == "p = 0.012"
    assert format_p(0.5) == "p = 0.50" and format_p(None) == "p n/a"
