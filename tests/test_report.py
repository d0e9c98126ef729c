"""The report reads only files: a hand-made study folder gives hand-computed numbers."""

from __future__ import annotations

import csv
import json

import pytest

from rltransfer import metrics
from rltransfer.errors import OutputError
from rltransfer.io_utils import atomic_write_json
from rltransfer.report import summarize_study

STEPS = [0, 100, 200, 300, 400]


def _study(tmp_path, curves: dict[str, list[list[float]]], states=None):
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
            run = study / condition / f"seed_{seed}"
            run.mkdir(parents=True)
            with open(run / "evaluations.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["timesteps", "mean_return", "std_return", "n_episodes",
                                 "wall_time"])
                writer.writerows([s, r, 0, 5, 0] for s, r in zip(STEPS, returns, strict=True))
            state = (states or {}).get((condition, seed), "done")
            atomic_write_json(run / "status.json", {"state": state})
    return study


def test_summary_numbers_are_computed_from_the_curves(tmp_path):
    study = _study(tmp_path, {
        "scratch": [[0, 20, 40, 60, 80]] * 3,  # never reaches 100: censored
        "finetune": [[50, 100, 100, 100, 100]] * 3,
    })
    result = summarize_study(study)
    finetune = result["metrics"]["conditions"]["finetune"]
    assert finetune["jumpstart"] == {"point": 0.5, "low": 0.5, "high": 0.5}
    assert finetune["time_to_threshold"]["point"] == 100
    scratch = result["metrics"]["conditions"]["scratch"]
    assert scratch["time_to_threshold"]["point"] is None
    assert scratch["time_to_threshold"]["point_censored"] is True
    # scratch area: mean of 0, .2, .4, .6, .8 by the trapezoid rule = 0.4
    assert scratch["auc"]["point"] == pytest.approx(0.4)
    # finetune area = (0.75*100 + 3*100)/400 = 0.9375; ratio (0.9375-0.4)/0.4
    assert finetune["transfer_ratio"]["point"] == pytest.approx((0.9375 - 0.4) / 0.4)
    assert finetune["speedup"]["lower_bound"] is True
    assert result["per_run"]["finetune"]["seed_0"]["time_to_threshold"] == 100
    assert result["per_run"]["scratch"]["seed_0"]["time_to_threshold"] is None

    on_disk = json.loads((study / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    markdown = (study / "report.md").read_text()
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


def test_unfinished_runs_are_left_out_and_named(tmp_path):
    study = _study(tmp_path, {"scratch": [[0, 20, 40, 60, 80]] * 3,
                              "finetune": [[50, 100, 100, 100, 100]] * 3},
                   states={("finetune", 2): "running"})
    result = summarize_study(study)
    assert result["metrics"]["conditions"]["finetune"]["n_runs"] == 2
    assert result["runs"]["finetune"]["left_out"] == ["seed_2 (running)"]
    assert "seed_2 (running)" in (study / "report.md").read_text()


def test_report_on_a_folder_that_is_not_a_study(tmp_path):
    with pytest.raises(OutputError, match="is not a study folder \\(no study.json\\)"):
        summarize_study(tmp_path)
