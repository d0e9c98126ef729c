"""Issue 18: failed runs are outcomes, time to threshold is sustained, the labels say what
the runs did (mixed, too few seeds, no test), Holm keeps the planned family, and
``--seeds auto`` is a group-sequential design that holds its level."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rltransfer.errors import ConfigError
from rltransfer.report import metrics, sequential, verdict
from rltransfer.report.runfiles import collect_runs
from rltransfer.report.summary import MetricsSummary

NORM = {"random_return": 0.0, "threshold": 100.0}
STEPS = np.arange(0, 500, 100)


def curve(scores):
    return STEPS[:len(scores)], np.array(scores, dtype=float) * 100.0


def test_a_diverged_run_counts_at_the_random_level_from_where_it_diverged():
    m = metrics.run_metrics(*curve([0.0, 0.5, 1.0, math.nan]), budget=400, **NORM)
    assert m["failed"] == 1.0
    assert m["asymptote"] == 0.0
    # trapezoid: 0-100: 0.25, 100-200: 0.75, 200-300: 0.5 (1.0 -> 0.0), then 0 held to 400
    assert m["auc"] == pytest.approx((25 + 75 + 50) / 400)
    assert m["time_to_threshold"] == math.inf  # reached 1.0 once, then diverged


def test_a_run_below_random_when_it_diverged_is_held_at_its_last_score():
    t, r = curve([0.0, -0.4, math.nan])
    m = metrics.run_metrics(t, r, budget=400, **NORM)
    assert m["asymptote"] == pytest.approx(-0.4)
    assert metrics.failure_floor(t, r, **NORM) == "its last finite evaluation"
    assert metrics.failure_floor(*curve([0.0, 0.4, math.nan]), **NORM) == (
        "the random policy's level")
    assert metrics.failure_floor(*curve([0.0, 0.4]), **NORM) is None


def test_a_nan_return_is_a_failed_run_not_an_aborted_summary():
    curves = {"scratch": [curve([0.0, 0.5, 1.0, 1.0, 1.0])] * 2 + [curve([0.1, 0.5, 1.1, 1.0,
                                                                          1.0])],
              "finetune": [curve([0.2, math.nan]), curve([0.3, 0.6, 1.0, 1.0, 1.0]),
                           curve([0.2, 0.6, 1.0, 1.0, 1.0])]}
    s = metrics.summarize(curves, budget=400, **NORM)
    assert s["conditions"]["finetune"]["failed_runs"] == 1
    assert s["conditions"]["finetune"]["n_runs"] == 3


def test_time_to_threshold_needs_the_score_to_stay_above_it():
    # one noisy evaluation at 1.0, then below: not a reach; from 300 it stays
    t = np.arange(0, 700, 100)
    m = metrics.run_metrics(t, np.array([0.2, 1.0, 0.9, 1.1, 1.2, 1.3, 1.1]) * 100,
                            budget=600, **NORM)
    assert m["time_to_threshold"] == 300
    m = metrics.run_metrics(t, np.array([0.2, 1.0, 0.9, 0.95, 1.0, 0.97, 0.9]) * 100,
                            budget=600, **NORM)
    assert m["time_to_threshold"] == math.inf


def _judged(curves, alpha=0.05, planned=None):
    s = MetricsSummary.from_dict(metrics.summarize(curves, budget=400, **NORM))
    (verdicts,) = verdict.judge([s], alpha, planned=planned)
    return s.with_verdicts(verdicts).to_dict()


def _flat(level, n, jitter=None):
    runs = [curve([level] * 5) for _ in range(n)]
    if jitter is not None:
        t, r = runs[0]
        runs[0] = (t, r + jitter * 100)
    return runs


@pytest.mark.parametrize("jitter", [0.0, 1e-7, 1e-9])
def test_constant_arms_get_the_exact_permutation_p_whatever_the_rounding_noise(jitter):
    """A deterministic env: every run of each arm scores the same (up to rounding noise, not
    data). The arms are completely separated, and the exact permutation test's p (2/252 at
    5 vs 5) decides, the same p at every jitter: no knife edge between no test and 1e-26."""
    s = _judged({"scratch": _flat(0.5, 5), "finetune": _flat(0.6, 5, jitter)})
    diff = s["conditions"]["finetune"]["auc_difference"]
    assert diff["p_value"] == pytest.approx(2 / 252) and diff["method"] == "exact permutation"
    assert diff["low"] is None and diff["high"] is None
    v = s["conditions"]["finetune"]["verdict"]
    assert v["label"] == verdict.POSITIVE and "no variability" in v["reason"]
    same = _judged({"scratch": _flat(0.5, 5), "finetune": _flat(0.5, 5, jitter)})
    assert same["conditions"]["finetune"]["auc_difference"]["p_value"] == 1.0
    assert same["conditions"]["finetune"]["verdict"]["label"] == verdict.NO_CLEAR


def test_too_few_seeds_is_its_own_label_not_a_tested_null():
    rng = np.random.default_rng(0)
    scratch = [curve(0.3 + rng.normal(0, 0.02, 5)) for _ in range(3)]
    finetune = [curve(1.3 + rng.normal(0, 0.02, 5)) for _ in range(3)]
    v = _judged({"scratch": scratch, "finetune": finetune})["conditions"]["finetune"]["verdict"]
    assert v["label"] == verdict.TOO_FEW == "too few seeds to test"
    assert v["label"] != verdict.NO_CLEAR


def test_starts_better_ends_lower_is_mixed_with_both_facts():
    rng = np.random.default_rng(1)
    scratch = [curve(np.array([0.0, 0.6, 1.1, 1.2, 1.2]) + rng.normal(0, 0.02, 5))
               for _ in range(6)]
    finetune = [curve(np.array([0.9, 0.9, 0.9, 0.9, 0.9]) + rng.normal(0, 0.02, 5))
                for _ in range(6)]
    v = _judged({"scratch": scratch, "finetune": finetune})["conditions"]["finetune"]["verdict"]
    assert v["label"] == verdict.MIXED
    assert "Area under the curve above scratch's" in v["reason"]
    assert "ends lower" in v["reason"] and "reaches the threshold in fewer runs (0/6" in v[
        "reason"]


def _good(rng, n, level=1.0):
    return [curve(np.array([0.0, 0.5, level, level, level]) + rng.normal(0, 0.1, 5))
            for _ in range(n)]


def test_diverged_runs_in_the_arm_whose_area_is_lower_are_not_no_clear_difference():
    """2 of 5 runs diverge and the condition's area is lower, but not significantly: the
    label says failed runs, with both counts, not a tested null."""
    rng = np.random.default_rng(3)
    diverged = [curve([0.0, 0.5, math.nan])] * 2
    s = _judged({"scratch": _good(rng, 5), "finetune": _good(rng, 3, 1.1) + diverged})
    entry = s["conditions"]["finetune"]
    v = entry["verdict"]
    assert entry["auc_difference"]["point"] < 0 and v["p_holm"] > 0.05
    assert v["label"] == verdict.FAILED_RUNS == "failed runs"
    assert verdict.FAILED_RUNS not in verdict.CLAIMS
    assert ("2/5 of the condition's runs failed vs 0/5 of scratch's, and they pull the "
            "condition's area down") in v["reason"]
    # the mirror: scratch's runs diverged and its area is the lower one
    s = _judged({"scratch": _good(rng, 3, 1.1) + diverged, "finetune": _good(rng, 5)})
    v = s["conditions"]["finetune"]["verdict"]
    assert v["label"] == verdict.FAILED_RUNS and "pull scratch's area down" in v["reason"]


def test_failed_runs_in_both_arms_alike_or_against_the_area_stay_no_clear_difference():
    rng = np.random.default_rng(4)
    diverged = [curve([0.0, 0.5, math.nan])]
    same = _judged({"scratch": _good(rng, 4) + diverged, "finetune": _good(rng, 4) + diverged})
    assert same["conditions"]["finetune"]["verdict"]["label"] == verdict.NO_CLEAR
    # the condition's runs failed but its area is the higher one: failures did not make it
    # worse, so the area test speaks
    s = _judged({"scratch": [curve(np.array([0.0, 0.2, 0.4, 0.4, 0.4]) + rng.normal(0, 0.3, 5))
                             for _ in range(5)],
                 "finetune": _good(rng, 4, 1.2) + [curve([0.0, 0.6, 0.9, 0.9, math.nan])]})
    entry = s["conditions"]["finetune"]
    assert entry["auc_difference"]["point"] > 0
    assert entry["verdict"]["label"] in (verdict.NO_CLEAR, verdict.POSITIVE, verdict.MIXED)
    assert entry["verdict"]["label"] != verdict.FAILED_RUNS


def test_holm_keeps_the_planned_family():
    rng = np.random.default_rng(2)
    scratch = [curve(0.5 + rng.normal(0, 0.05, 5)) for _ in range(6)]
    better = [curve(0.62 + rng.normal(0, 0.05, 5)) for _ in range(6)]
    s = _judged({"scratch": scratch, "finetune": better, "flat": _flat(0.5, 6)}, planned=4)
    assert s["conditions"]["finetune"]["verdict"]["m"] == 4
    p = s["conditions"]["finetune"]["auc_difference"]["p_value"]
    assert s["conditions"]["finetune"]["verdict"]["p_holm"] == pytest.approx(min(1, 4 * p))


def test_a_diverged_run_is_read_as_an_outcome(tmp_path):
    run = tmp_path / "finetune" / "seed_0"
    run.mkdir(parents=True)
    (run / "evaluations.csv").write_text(
        "timesteps,mean_return,std_return,n_episodes,wall_time\n0,10,1,5,0.1\n100,40,1,5,0.2\n")
    (run / "status.json").write_text(json.dumps(
        {"state": "failed", "error": "Diverged: NaN", "diverged": True, "diverged_at": 150}))
    other = tmp_path / "finetune" / "seed_1"
    other.mkdir()
    (other / "status.json").write_text(json.dumps({"state": "failed", "error": "OSError: x"}))
    curves, folders, not_used = collect_runs(tmp_path, ["finetune"])
    (steps, returns), = curves["finetune"]
    assert steps.tolist() == [0, 100, 150] and math.isnan(returns[-1])
    assert folders["finetune"] == ["seed_0"]
    assert not_used["finetune"]["diverged"] == ["seed_0"]
    assert [f["run"] for f in not_used["finetune"]["failed"]] == ["seed_1"]  # resume retries


# --------------------------------------------------------------------------- sequential


def test_auto_design_parses_and_refuses_bad_options():
    assert sequential.Design.parse("auto").looks == (5, 10, 15, 20)
    assert sequential.Design.parse("auto:max=12,first=4,step=4").looks == (4, 8, 12)
    assert sequential.Design.parse("auto:first=5,step=4,max=15").looks == (5, 9, 13, 15)
    with pytest.raises(ConfigError, match=r"unknown option 'maxx=3'; auto takes first=N"):
        sequential.Design.parse("auto:maxx=3")
    with pytest.raises(ConfigError, match="needs first >= 2"):
        sequential.Design.parse("auto:first=5,max=5")


def test_boundaries_spend_alpha_over_the_looks():
    design = sequential.Design()
    cs = sequential.boundaries(design.fractions, 0.05)
    assert cs[0] > cs[1] > cs[2] > cs[3] and cs[0] > 5.5 and cs[3] == pytest.approx(1.96,
                                                                                   abs=0.01)
    rng = np.random.default_rng(0)
    t = np.array(design.fractions)
    steps = rng.normal(size=(200_000, t.size)) * np.sqrt(np.diff(np.concatenate([[0], t])))
    z = np.cumsum(steps, axis=1) / np.sqrt(t)
    assert (np.abs(z) >= cs).any(axis=1).mean() == pytest.approx(0.05, abs=0.003)


def test_the_repeated_p_value_is_the_level_whose_boundary_is_crossed():
    fr = sequential.Design().fractions
    for look, z in ((3, 2.5), (2, 3.6), (1, 4.6)):
        level = sequential.level_crossed(z, look, fr)
        assert sequential.boundaries(fr, level)[look] == pytest.approx(z, rel=0.02)
    assert sequential.level_crossed(0.001, 3, fr) == 1.0


def test_next_counts_adds_seeds_for_undecided_conditions_and_scratch():
    design = sequential.Design()
    counts = {"scratch": 5, "finetune": 5, "freeze-features": 5}
    labels = {"finetune": verdict.POSITIVE, "freeze-features": verdict.UNDECIDED}
    assert sequential.next_counts(design, counts, labels, verdict.CLAIMS) == {
        "scratch": 10, "finetune": 5, "freeze-features": 10}
    assert sequential.next_counts(design, counts, {"finetune": verdict.MIXED},
                                  verdict.CLAIMS) is None
    assert sequential.next_counts(design, {"scratch": 20, "finetune": 20},
                                  {"finetune": verdict.UNDECIDED}, verdict.CLAIMS) is None


def test_an_interim_crossing_counts_only_when_outcomes_agree():
    design = sequential.Design(first=5, step=5, max=10)
    x = {"auc": np.array([1.0, 1.1, 1.2, 1.05, 1.15] * 2), "failed": np.zeros(10),
         "time_to_threshold": np.full(10, 100.0)}
    y = {"auc": np.array([0.1, 0.2, 0.15, 0.12, 0.18] * 2), "failed": np.zeros(10),
         "time_to_threshold": np.full(10, np.inf)}  # never reaching: no disagreement
    first = sequential.analyze(x, y, design)["looks"][0]
    assert first["counts"] and first["level"] < 0.01
    x["failed"] = np.array([1.0, 0, 0, 0, 0] * 2)  # a diverged run in one arm only
    first, last = sequential.analyze(x, y, design)["looks"]
    assert not first["counts"] and first["level"] == 1.0
    assert "failed runs in one arm only (1 of 5 vs scratch's 0 of 5)" in first["disagreement"]
    assert last["counts"]  # the last look always counts


def test_unequal_spread_disagrees_only_while_the_arms_overlap():
    """A transfer that balances the pole in every seed (SD 0) against scratch's spread
    (the TRPO InvertedPendulum study): the arms are completely apart, so their spreads say
    nothing against the difference; overlapping arms with an 8.5-fold spread still disagree."""
    never = {"failed": np.zeros(5), "time_to_threshold": np.full(5, np.inf)}
    solved = {"auc": np.full(5, 1.04), **never}
    scratch = {"auc": np.array([0.07, 0.075, 0.08, 0.071, 0.069]), **never}
    assert sequential.disagreement(solved, scratch) is None
    wide = {"auc": np.array([0.2, 0.6, 1.0, 1.4, 1.8]), **never}
    narrow = {"auc": np.array([0.9, 1.0, 1.1, 1.0, 0.95]), **never}
    assert sequential.disagreement(wide, narrow).startswith(
        "a 8.5-fold difference in the area's spread (SD 0.63 vs scratch's 0.074)")


def _hand_study(tmp_path, curves, write_run, **spec):
    from rltransfer.io_utils import atomic_write_json

    study = tmp_path / "s"
    atomic_write_json(study / "study.json", {
        "spec": {"source": {"id": "CartPole-v1", "params": {}},
                 "target": {"id": "CartPole-v1", "params": {"length": 1.0}}, "algo": "ppo",
                 "conditions": list(curves), "seeds": 5, "seed": 0, "timesteps": 400,
                 "source_timesteps": 1000, "out": str(tmp_path), **spec},
        "target_agent": {"hparams": {"n_steps": 32}}, "command": "python -m rltransfer run x y",
        "threshold": 100.0, "threshold_from": "--threshold", "target_random_return": 0.0})
    for condition, runs in curves.items():
        for seed, returns in enumerate(runs):
            write_run(study / condition / f"seed_{seed}", STEPS, returns, "done")
    return study


def test_a_study_whose_transfer_diverges_reports_it_as_negative(tmp_path, write_run):
    """5 of 10 finetune runs diverge: dropped, the rest would look like scratch; counted, the
    condition's area is worse, the warning says where each run was held."""
    rng = np.random.default_rng(8)
    scratch = [list(np.array([0, 60, 100, 110, 110]) + rng.normal(0, 3, 5)) for _ in range(10)]
    finetune = [list(np.array([0, 60, 100, 110, 110]) + rng.normal(0, 3, 5)) for _ in range(10)]
    study = _hand_study(tmp_path, {"scratch": scratch, "finetune": finetune}, write_run)
    for seed in (0, 2, 4, 6, 8):
        (study / "finetune" / f"seed_{seed}" / "status.json").write_text(json.dumps(
            {"state": "failed", "error": "Diverged: NaN", "diverged": True,
             "diverged_at": 150}))
    from rltransfer.report.build import summarize_study

    result = summarize_study(study).to_dict()
    finetune = result["metrics"]["conditions"]["finetune"]
    assert finetune["n_runs"] == 10 and finetune["failed_runs"] == 5
    assert finetune["verdict"]["label"] == verdict.NEGATIVE
    assert "5/10 runs failed vs scratch's 0/10" in finetune["verdict"]["reading"]
    assert result["runs"]["finetune"]["diverged"][0] == {
        "run": "seed_0", "at": 150, "held_at": "the random policy's level"}
    assert ("finetune: 5 of 10 runs diverged (seed_0 from step 150, held at the random "
            "policy's level;") in result["warnings"][0]
    assert "failed runs in one arm only (5 of 10 vs scratch's 0 of 10)" in result["seed_note"]
    assert "--seeds auto" in result["seed_note"]


def test_an_auto_study_report_judges_on_the_repeated_p_value(tmp_path, write_run):
    rng = np.random.default_rng(9)
    scratch = [list(np.array([0, 40, 80, 115, 120]) + rng.normal(0, 4, 5)) for _ in range(10)]
    better = [list(np.array([60, 110, 120, 122, 122]) + rng.normal(0, 4, 5)) for _ in range(10)]
    study = _hand_study(tmp_path, {"scratch": scratch, "finetune": better}, write_run,
                        sequential="auto:first=5,step=5,max=20")
    from rltransfer.report.build import summarize_study

    result = summarize_study(study).to_dict()
    finetune = result["metrics"]["conditions"]["finetune"]
    looks = finetune["sequential"]["looks"]
    assert [look["n"] for look in looks] == [5, 10]
    assert finetune["sequential"]["p_value"] == min(look["level"] for look in looks)
    assert finetune["verdict"]["p_holm"] == finetune["sequential"]["p_value"]
    assert finetune["verdict"]["label"] == verdict.POSITIVE
    assert "over 2 looks" in finetune["verdict"]["reason"]
    assert result["sequential"]["done"] is False and result["seed_note"] is None


def test_an_auto_study_report_shows_its_looks_and_what_ran(tmp_path, write_run):
    rng = np.random.default_rng(10)
    scratch = [list(np.array([0, 40, 80, 115, 120]) + rng.normal(0, 4, 5)) for _ in range(10)]
    same = [list(np.array([0, 40, 80, 115, 120]) + rng.normal(0, 4, 5)) for _ in range(10)]
    study = _hand_study(tmp_path, {"scratch": scratch, "finetune": same}, write_run,
                        sequential="auto:first=5,step=5,max=20")
    from rltransfer.report.build import summarize_study

    summarize_study(study)
    markdown = (study / "report.md").read_text()
    assert ("**seeds**: --seeds auto (first 5, step 5, at most 20 per condition): looks at 5, "
            "10 seeds; runs per condition: scratch 10, finetune 10; more looks are planned "
            "(resume the study)") in markdown
    assert "**Looks of --seeds auto**" in markdown
    assert "| finetune | 5 |" in markdown and "| finetune | 10 |" in markdown
    assert "**finetune: undecided**" in markdown
    assert "Looks of --seeds auto" in (study / "report.html").read_text()


def test_a_fixed_study_report_says_what_its_seed_count_risks(tmp_path, write_run):
    rng = np.random.default_rng(11)
    runs = [list(np.array([0, 40, 80, 115, 120]) + rng.normal(0, 4, 5)) for _ in range(5)]
    study = _hand_study(tmp_path, {"scratch": runs, "finetune": runs}, write_run)
    from rltransfer.report.build import summarize_study

    summarize_study(study)
    assert ("**seeds**: 5 per condition (seeds 0–4), fixed: a fixed count cannot hold the "
            "verdict's level when seeds fail to learn in one arm and not the other") in (
        study / "report.md").read_text()


def test_the_primary_interval_excludes_zero_exactly_when_the_test_claims():
    """Welch's interval joined with the skew-corrected one: what neither test rejects."""
    rng = np.random.default_rng(12)
    for _ in range(300):
        x = rng.normal(0.3, 0.2, 6)
        x[rng.random(6) < 0.3] -= 0.8  # seeds that fail: a skewed sample
        y = rng.normal(0.0, 0.1, 6)
        test = metrics.primary(x, y)
        welch = metrics.welch(x, y)
        assert (test.estimate.low > 0 or test.estimate.high < 0) == (test.p_value <= 0.05)
        assert test.estimate.low <= welch.estimate.low and test.estimate.high >= welch.estimate.high
        assert test.p_value >= welch.p_value - 1e-12
