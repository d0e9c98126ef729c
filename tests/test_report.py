"""The report reads only files: a hand-made study folder gives hand-computed numbers."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import rltransfer
from rltransfer.errors import OutputError
from rltransfer.io_utils import atomic_write_json
from rltransfer.report import metrics
from rltransfer.report.build import (
    NEGATIVE,
    NO_CLEAR,
    POSITIVE,
    aggregate_curves,
    env_differences,
    summarize_study,
    terminal_table,
)

STEPS = [0, 100, 200, 300, 400]


def _study(tmp_path, curves: dict[str, list[list[float]]], states=None, *, write_run,
           errors=None):
    """A hand-made study; `states` sets a run's state, `errors` marks a run failed with that
    error (as training writes it), both keyed by (condition, seed)."""
    study = tmp_path / "s"
    atomic_write_json(study / "study.json", {
        "spec": {"source": {"id": "CartPole-v1", "params": {}},
                 "target": {"id": "CartPole-v1", "params": {"length": 1.0}}, "algo": "ppo",
                 "conditions": list(curves), "seeds": 3, "seed": 0, "timesteps": 400,
                 "source_timesteps": 1000, "out": str(tmp_path)},
        "target_agent": {"hparams": {"n_steps": 32}}, "command": "python -m rltransfer run x y",
        "threshold": 100.0, "threshold_from": "--threshold", "target_random_return": 0.0})
    for condition, runs in curves.items():
        for seed, returns in enumerate(runs):
            write_run(study / condition / f"seed_{seed}", STEPS, returns,
                      (states or {}).get((condition, seed), "done"))
    for (condition, seed), error in (errors or {}).items():
        atomic_write_json(study / condition / f"seed_{seed}" / "status.json",
                          {"state": "failed", "error": error})
    return study


def _table_text(result) -> str:
    console = Console(record=True, width=250)
    console.print(terminal_table(result))
    return console.export_text()


def test_summary_numbers_are_computed_from_the_curves(tmp_path, write_run):
    study = _study(tmp_path, {
        "scratch": [[0, 20, 40, 60, 80]] * 3,  # never reaches 100: censored
        "finetune": [[50, 100, 100, 100, 100]] * 3,
    }, write_run=write_run)
    summary = summarize_study(study)
    result = summary.to_dict()
    finetune = result["metrics"]["conditions"]["finetune"]
    # identical seeds: no variability, so no Welch interval (never a fake one); the arms are
    # completely separated: the exact permutation p, 0.1 at 3 vs 3, too few for a claim
    assert finetune["jumpstart"]["point"] == 0.5
    assert finetune["jumpstart"]["low"] is None
    assert finetune["jumpstart"]["p_value"] == pytest.approx(0.1)
    assert finetune["auc_difference"]["point"] == pytest.approx(0.9375 - 0.4)
    assert "no variability" in finetune["auc_difference"]["note"]
    assert finetune["verdict"]["label"] == "too few seeds to test"
    assert finetune["time_to_threshold"]["point"] == 100
    scratch = result["metrics"]["conditions"]["scratch"]
    assert scratch["time_to_threshold"]["point"] is None
    assert scratch["time_to_threshold"]["point_censored"] is True
    # scratch area: mean of 0, .2, .4, .6, .8 by the trapezoid rule = 0.4
    assert scratch["auc"]["point"] == pytest.approx(0.4)
    # finetune area = (0.75*100 + 3*100)/400 = 0.9375; ratio (0.9375-0.4)/0.4
    assert finetune["transfer_ratio"]["point"] == pytest.approx((0.9375 - 0.4) / 0.4)
    assert finetune["speedup"]["point_bound"] == ">"  # scratch censored: a lower bound
    assert finetune["speedup"]["point"] == pytest.approx(400 / 100)
    assert result["per_run"]["finetune"]["seed_0"]["time_to_threshold"] == 100
    assert result["per_run"]["scratch"]["seed_0"]["time_to_threshold"] is None

    on_disk = json.loads((study / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert result["runs"]["scratch"] == {"finished": 3, "failed": [], "diverged": [],
                                         "left_out": []}
    assert result["warnings"] == []
    markdown = (study / "report.md").read_text()
    assert "Warnings" not in markdown and "Warnings" not in (study / "report.html").read_text()
    scratch_row = next(line for line in markdown.splitlines() if line.startswith("| scratch"))
    assert "not reached (>400 steps)" in scratch_row
    finetune_row = next(line for line in markdown.splitlines() if line.startswith("| finetune"))
    assert metrics.format_estimate(finetune["jumpstart"]) in finetune_row
    assert metrics.format_speedup(finetune["speedup"]) in finetune_row
    assert "python -m rltransfer run x y" in markdown
    rows = list(csv.DictReader((study / "summary.csv").open()))
    jumpstart = next(r for r in rows if r["condition"] == "finetune" and r["metric"] ==
                     "jumpstart")
    assert float(jumpstart["point"]) == 0.5
    ttt = next(r for r in rows if r["condition"] == "scratch" and r["metric"] ==
               "time_to_threshold")
    assert ttt["point"] == "" and "point censored (>400)" in ttt["flags"]
    verdict_row = next(r for r in rows if r["metric"] == "verdict")
    assert verdict_row["condition"] == "finetune"
    assert verdict_row["display"] == "too few seeds to test"


WIN = [[50, 100, 100, 100, 100], [40, 90, 100, 100, 100], [60, 100, 100, 100, 100],
       [45, 95, 100, 100, 100], [55, 100, 100, 100, 100]]
SCRATCH5 = [[0, 20, 40, 60, 80], [0, 30, 50, 70, 90], [0, 10, 30, 50, 70],
            [0, 25, 45, 65, 85], [0, 15, 35, 55, 75]]


def test_report_has_verdicts_figures_and_the_comparison(tmp_path, write_run):
    study = _study(tmp_path, {"scratch": SCRATCH5, "finetune": WIN}, write_run=write_run)
    summary = summarize_study(study)
    result = summary.to_dict()
    conditions = result["metrics"]["conditions"]
    verdict = conditions["finetune"]["verdict"]
    assert verdict["label"] == POSITIVE
    assert conditions["scratch"]["verdict"]["label"] == "reference"
    assert json.loads((study / "summary.json").read_text())["metrics"]["conditions"][
        "finetune"]["verdict"] == verdict
    diff = conditions["finetune"]["auc_difference"]
    assert verdict["p_holm"] == diff["p_value"] and verdict["m"] == 1  # one comparison
    assert verdict["reading"].startswith("starts better, reaches the threshold sooner, "
                                         "reaches it in 5/5 runs vs scratch's 0/5, ends higher; "
                                         f"area {metrics.format_estimate(diff, signed=True)}")
    # the arms' spread differs more than 3-fold, but every finetune run is above every
    # scratch run: nothing a spread could explain, so no warning about 5 fixed seeds
    assert result["seed_note"] is None and result["alpha"] == 0.05
    rows = list(csv.DictReader((study / "summary.csv").open()))
    row = next(r for r in rows if r["condition"] == "finetune" and r["metric"] == "verdict")
    assert float(row["point"]) == verdict["p_holm"] and row["display"] == POSITIVE
    claim = next(r for r in rows if r["condition"] == "finetune"
                 and r["metric"] == "auc_difference")
    assert f"p={diff['p_value']:.6g}" in claim["flags"]
    markdown = (study / "report.md").read_text()
    finetune_row = next(line for line in markdown.splitlines() if line.startswith("| finetune"))
    assert finetune_row.endswith("| positive transfer |")
    assert "- **finetune: positive transfer**: Starts better, reaches the threshold sooner" in (
        markdown)
    assert f"How verdicts are decided: {result['verdict_rule']}" in markdown
    assert "Holm" in result["verdict_rule"] and "α = 0.05" in result["verdict_rule"]
    assert "`length`: 0.5 → 1 m (half the pole's length)" in markdown
    assert "](curves.png)" in markdown and "](profiles.png)" in markdown
    assert "](metrics.png)" in markdown
    assert (study / "profiles.png").stat().st_size > 10_000
    assert "`policy=MlpPolicy" not in markdown and "`n_steps=32`" in markdown
    page = (study / "report.html").read_text()
    assert f"How verdicts are decided: {result['verdict_rule']}" in page
    console = Console(record=True, width=250)
    console.print(terminal_table(summary))
    text = console.export_text()
    assert "verdict" in text and "positive transfer" in text and "(reference)" in text
    assert "95% intervals" in text


def test_fewer_than_five_runs_make_no_claim_and_say_why(tmp_path, write_run):
    study = _study(tmp_path, {"scratch": SCRATCH5[:3], "finetune": WIN[:3]},
                   write_run=write_run)
    summary = summarize_study(study)
    result = summary.to_dict()
    verdict = result["metrics"]["conditions"]["finetune"]["verdict"]
    assert verdict["label"] == "too few seeds to test"
    assert verdict["reason"].startswith("Only 3 vs 3 runs: no claim is possible at the 0.05 "
                                        "level (with 3 vs 3 runs the smallest exact two-sided "
                                        "permutation p is 0.1")
    assert "run 10 seeds for claims" in verdict["reason"]
    assert result["seed_note"].startswith("No claim is possible for finetune. Only 3 vs 3")
    assert f"**Seeds:** {result['seed_note']}" in (study / "report.md").read_text()


@pytest.mark.parametrize(("runs", "label"), [
    (WIN, POSITIVE),
    ([[0, 0, 10, 10, 20], [0, 5, 5, 10, 10], [0, 0, 0, 5, 10], [0, 5, 10, 15, 20],
      [0, 0, 5, 5, 5]], NEGATIVE),
    ([[0, 40, 50, 60, 70], [0, 10, 20, 40, 60], [0, 20, 40, 70, 100], [0, 30, 40, 50, 60],
      [0, 15, 30, 45, 90]], NO_CLEAR),
], ids=["clear-win", "clear-loss", "overlap"])
def test_verdict_of_hand_made_studies(tmp_path, write_run, runs, label):
    result = summarize_study(_study(tmp_path, {"scratch": SCRATCH5, "transfer": runs},
                                           write_run=write_run)).to_dict()
    entry = result["metrics"]["conditions"]["transfer"]
    assert entry["verdict"]["label"] == label
    diff = entry["auc_difference"]
    assert (diff["p_value"] <= 0.05) == (label != NO_CLEAR)
    assert (diff["low"] > 0) == (label == POSITIVE)
    assert (diff["high"] < 0) == (label == NEGATIVE)
    assert metrics.format_estimate(diff, signed=True) in entry["verdict"]["reading"]


def test_the_verdict_is_holm_corrected_across_conditions(tmp_path, write_run):
    marginal = [[0, 30, 50, 70, 90], [0, 35, 55, 75, 95], [0, 20, 40, 60, 80],
                [0, 30, 50, 75, 95], [0, 25, 45, 65, 90]]
    study = _study(tmp_path, {"scratch": SCRATCH5, "a": WIN, "b": marginal},
                   write_run=write_run)
    conditions = summarize_study(study).to_dict()["metrics"]["conditions"]
    p = sorted((conditions[c]["auc_difference"]["p_value"], c) for c in ("a", "b"))
    (p1, first), (p2, second) = p
    assert conditions[first]["verdict"]["p_holm"] == pytest.approx(min(1, 2 * p1))
    assert conditions[second]["verdict"]["p_holm"] == pytest.approx(max(2 * p1, p2))
    assert conditions[second]["verdict"]["m"] == 2


def test_aggregate_curves_is_the_mean_over_seeds_with_a_t_band():
    steps = np.array([0, 100, 200])
    runs = [(steps, np.array([1.0, 2.0, 5.0])), (steps, np.array([3.0, 2.0, 7.0])),
            (steps, np.array([5.0, 2.0, 0.0]))]
    curve = aggregate_curves(runs)
    np.testing.assert_array_equal(curve.steps, steps)
    np.testing.assert_allclose(curve.mean, [3.0, 2.0, 4.0])
    assert curve.low[1] == curve.high[1] == 2.0  # every seed equal: a degenerate interval
    assert np.all(curve.low <= curve.mean) and np.all(curve.mean <= curve.high)
    # step 0: values 1, 3, 5: mean 3, sd 2, t(0.975, 2) = 4.3027
    half = 4.302652729911275 * 2 / math.sqrt(3)
    assert curve.low[0] == pytest.approx(3 - half) and curve.high[0] == pytest.approx(3 + half)


def test_aggregate_curves_interpolates_onto_the_common_range():
    runs = [([0, 100, 200, 310], [0.0, 10.0, 20.0, 31.0]), ([0, 110, 205], [0.0, 22.0, 41.0])]
    steps, mean, low, high = aggregate_curves(runs)
    # the union of steps inside [0, 205]; the first run interpolated at 110 and 205
    np.testing.assert_array_equal(steps, [0, 100, 110, 200, 205])
    first = np.interp(steps, [0, 100, 200, 310], [0, 10, 20, 31])
    second = np.interp(steps, [0, 110, 205], [0, 22, 41])
    np.testing.assert_allclose(mean, (first + second) / 2)
    one = aggregate_curves(runs[:1])
    assert all(math.isnan(v) for v in one.low) and all(math.isnan(v) for v in one.high)
    with pytest.raises(metrics.MetricsError, match="strictly increasing"):
        aggregate_curves([([0, 0], [1, 2])])


def test_env_differences_resolve_variants_and_defaults():
    cartpole = {"id": "CartPole-v1", "params": {}}
    assert env_differences(cartpole, {"id": "CartPole-v1", "params": {"length": 1.0}}) == [
        "`length`: 0.5 → 1 m (half the pole's length)"]
    assert env_differences(cartpole, cartpole) == []
    blue = env_differences({"id": "rltransfer/PixelCatch-v0", "params": {}, "frame_stack": 4},
                           {"id": "rltransfer/PixelCatch-BlueBall-v0", "params": {},
                            "frame_stack": 1})
    assert blue[0].startswith("`ball_hue`: 0 → 0.67 (ball colour")
    assert blue[1] == "`frame_stack`: 4 → 1"
    assert env_differences({"id": "Pendulum-v1"}, {"id": "Acrobot-v1"})[0] == (
        "environment `Pendulum-v1` → `Acrobot-v1`")


def test_unfinished_runs_are_left_out_and_named(tmp_path, write_run):
    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]] * 3,
                              "finetune": [[50, 100, 100, 100, 100]] * 3},
                   states={("finetune", 2): "running"}, write_run=write_run)
    summary = summarize_study(study)
    result = summary.to_dict()
    assert result["metrics"]["conditions"]["finetune"]["n_runs"] == 2
    assert result["runs"]["finetune"] == {"finished": 2, "failed": [], "diverged": [],
                                          "left_out": ["seed_2 (running)"]}
    warning = "finetune: 1 of 3 runs not finished (seed_2 (running)); its metrics use the 2 others"
    assert result["warnings"] == [warning]
    markdown = (study / "report.md").read_text()
    assert f"## ⚠ Warnings\n\n- {warning}\n" in markdown
    assert "Runs left out" not in markdown
    assert "| finetune | 2 of 3 |" in markdown
    assert f"<li>{warning}</li>" in (study / "report.html").read_text()


NAN_ERROR = "FloatingPointError: reward is nan at step 512"


def test_a_failed_run_is_named_with_its_error_and_left_out_of_the_metrics(tmp_path,
                                                                          write_run):
    nan = float("nan")  # the failed run's curve: it would poison the metrics if it were used
    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]] * 3,
                              "finetune": [[50, 100, 100, 100, 100]] * 2
                              + [[50, nan, nan, nan, nan], [50, 100, 100, 100, 100]]},
                   errors={("finetune", 2): NAN_ERROR}, write_run=write_run)
    summary = summarize_study(study)
    result = summary.to_dict()
    assert result["runs"]["finetune"] == {
        "finished": 3, "failed": [{"run": "seed_2", "error": NAN_ERROR}], "diverged": [],
        "left_out": []}
    assert result["runs"]["scratch"] == {"finished": 3, "failed": [], "diverged": [],
                                         "left_out": []}
    warning = f"finetune: 1 of 4 runs failed (seed_2: {NAN_ERROR}); its metrics use the 3 others"
    assert result["warnings"] == [warning]
    finetune = result["metrics"]["conditions"]["finetune"]
    assert finetune["n_runs"] == 3
    assert set(result["per_run"]["finetune"]) == {"seed_0", "seed_1", "seed_3"}
    assert finetune["jumpstart"]["point"] == 0.5
    assert finetune["verdict"]["label"] == "too few seeds to test"  # 3 vs 3
    assert json.loads((study / "summary.json").read_text())["warnings"] == [warning]

    markdown = (study / "report.md").read_text()
    assert f"## ⚠ Warnings\n\n- {warning}\n" in markdown
    assert markdown.index("⚠ Warnings") < markdown.index("## Metrics")
    assert "| finetune | 3 of 4 |" in markdown and "| scratch | 3 |" in markdown
    page = (study / "report.html").read_text()
    assert f"<li>{warning}</li>" in page
    assert page.index("⚠ Warnings") < page.index("<h2>Metrics</h2>")
    text = _table_text(summary)
    assert "3 of 4" in text and "too few seeds to test" in text
    header = (study / "summary.csv").read_text().splitlines()[0]
    assert header == "condition,metric,point,low,high,flags,display"


def test_a_condition_whose_runs_all_failed_is_reported_without_metrics(tmp_path, write_run):
    long_error = "ValueError: observation <obs> & " + "x" * 200
    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]] * 3,
                              "finetune": [[50, 100, 100, 100, 100]] * 3},
                   errors={("finetune", 0): NAN_ERROR, ("finetune", 1): NAN_ERROR,
                           ("finetune", 2): long_error}, write_run=write_run)
    summary = summarize_study(study)
    result = summary.to_dict()
    assert result["runs"]["finetune"]["finished"] == 0
    assert result["runs"]["finetune"]["failed"][2] == {"run": "seed_2", "error": long_error}
    shown = long_error[:119] + "…"
    assert len(shown) == 120
    warning = (f"finetune: all 3 runs failed (seed_0, seed_1: {NAN_ERROR}; seed_2: {shown}); "
               "no metrics for it")
    assert result["warnings"] == [warning]
    assert list(result["metrics"]["conditions"]) == ["scratch"]
    scratch = result["metrics"]["conditions"]["scratch"]
    assert scratch["n_runs"] == 3 and scratch["auc"]["point"] == pytest.approx(0.4)
    assert "finetune" not in result["per_run"]

    markdown = (study / "report.md").read_text()
    assert "- " + warning.replace("<obs>", "\\<obs\\>") + "\n" in markdown
    assert ("| finetune | 0 of 3 | — | — | — | — | — | — | — | no metrics (all 3 runs "
            "failed) |") in markdown
    assert ("- **finetune: no verdict**: No metrics: all 3 runs failed, so there is nothing "
            "to judge.") in markdown
    page = (study / "report.html").read_text()
    assert "&lt;obs&gt; &amp; " in page and "<obs>" not in page
    assert "<span class=\"badge missing\">no metrics (all 3 runs failed)</span>" in page
    assert "no metrics (all 3 runs failed)" in _table_text(summary)
    rows = list(csv.DictReader((study / "summary.csv").open()))
    assert rows and {r["condition"] for r in rows} == {"scratch"}


def test_without_finished_scratch_runs_the_others_have_no_reference(tmp_path, write_run):
    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]] * 2,
                              "finetune": [[50, 100, 100, 100, 100]] * 2},
                   errors={("scratch", 0): NAN_ERROR, ("scratch", 1): NAN_ERROR},
                   write_run=write_run)
    summary = summarize_study(study)
    result = summary.to_dict()
    assert result["warnings"] == [
        f"scratch: all 2 runs failed (seed_0, seed_1: {NAN_ERROR}); no metrics for it"]
    assert result["metrics"]["reference"] is None
    finetune = result["metrics"]["conditions"]["finetune"]
    assert finetune["verdict"]["label"] == "no test"
    assert "No finished scratch runs" in finetune["verdict"]["reason"]
    assert "jumpstart" not in finetune and finetune["n_runs"] == 2
    assert "| scratch | 0 of 2 |" in (study / "report.md").read_text()


def test_failed_and_unfinished_runs_of_one_condition_are_told_apart(tmp_path, write_run):
    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]] * 3,
                              "finetune": [[50, 100, 100, 100, 100]] * 5},
                   states={("finetune", 3): "interrupted"},
                   errors={("finetune", 1): "RuntimeError: boom"}, write_run=write_run)
    (study / "finetune" / "seed_4" / "status.json").unlink()
    summary = summarize_study(study)
    result = summary.to_dict()
    assert result["runs"]["finetune"] == {
        "finished": 2, "failed": [{"run": "seed_1", "error": "RuntimeError: boom"}],
        "diverged": [], "left_out": ["seed_3 (interrupted)", "seed_4 (missing)"]}
    assert result["warnings"] == [
        "finetune: 1 of 5 runs failed (seed_1: RuntimeError: boom); its metrics use the 2 "
        "finished runs",
        "finetune: 2 of 5 runs not finished (seed_3 (interrupted), seed_4 (missing)); its "
        "metrics use the 2 finished runs"]
    assert set(result["per_run"]["finetune"]) == {"seed_0", "seed_2"}


def test_a_study_whose_runs_all_failed_has_nothing_to_report(tmp_path, write_run):
    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]]},
                   errors={("scratch", 0): NAN_ERROR}, write_run=write_run)
    with pytest.raises(OutputError, match="has no finished runs: nothing to report \\(scratch: "
                                          "its only run failed \\(seed_0: FloatingPointError"):
        summarize_study(study)


def test_report_on_a_folder_that_is_not_a_study(tmp_path):
    with pytest.raises(OutputError, match="is not a study folder \\(no study.json\\)"):
        summarize_study(tmp_path)


def test_compare_lists_a_condition_whose_runs_all_failed(tmp_path, write_run):
    from rltransfer.report.compare import compare_studies

    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]] * 2,
                              "finetune": [[50, 100, 100, 100, 100]] * 2},
                   errors={("finetune", 0): NAN_ERROR, ("finetune", 1): NAN_ERROR},
                   write_run=write_run)
    rows = compare_studies([study])["rows"]
    assert [row["condition"] for row in rows] == ["scratch",
                                                  "finetune (no finished runs: 2 failed)"]
    assert rows[1]["transfer_ratio"] is None


# --------------------------------------------------------------- one module per stage

PLOTTING_IMPORT = re.compile(r"^\s*(?:import|from)\s+matplotlib\b", re.MULTILINE)

NO_PLOTTING = """
import sys
from pathlib import Path

import rltransfer.report.pages
import rltransfer.report.build
import rltransfer.report.tables

result, study, _ = rltransfer.report.build.study_summary(Path(sys.argv[1]))
rltransfer.report.tables.summary_csv(result)
rltransfer.report.tables.terminal_table(result)
assert "| finetune | 5 |" in rltransfer.report.pages.report_markdown(result, study)
assert "<strong>finetune</strong>" in rltransfer.report.pages.report_html(result, study, {})
loaded = sorted(name for name in sys.modules if name.split(".")[0] == "matplotlib")
assert not loaded, loaded
"""


def test_tables_and_pages_are_built_without_a_plotting_library(tmp_path, write_run):
    study = _study(tmp_path, {"scratch": [[0, 20 + k, 40, 60, 80] for k in range(5)],
                              "finetune": [[50, 90 + k, 100, 100, 100] for k in range(5)]},
                   write_run=write_run)
    done = subprocess.run([sys.executable, "-c", NO_PLOTTING, str(study)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_only_the_figures_module_imports_a_plotting_library():
    package = Path(rltransfer.__file__).parent
    importing = {path.relative_to(package).as_posix() for path in package.rglob("*.py")
                 if PLOTTING_IMPORT.search(path.read_text(encoding="utf-8"))}
    # sweep_figure draws matrix.png's sweep panels; it imports matplotlib only for type hints
    # (figures.py, its only caller, passes it the figure), so importing it loads no plotting.
    assert importing == {"report/figures.py", "report/sweep_figure.py"}
    done = subprocess.run([sys.executable, "-c", "import sys, rltransfer.report.sweep_figure; "
                           "assert 'matplotlib' not in sys.modules"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
