"""The typed summary (rltransfer.report.summary): built once by the report, summary.json is
its `to_dict` byte for byte, and `from_dict` reads summary.json back to the same record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rltransfer.io_utils import atomic_write_json
from rltransfer.report import metrics
from rltransfer.report.build import summarize_study
from rltransfer.report.summary import (
    ConditionSummary,
    DivergedRun,
    FailedRun,
    MetricsSummary,
    StudySummary,
)

STEPS = [0, 100, 200, 300, 400]


def _study(tmp_path, curves, write_run, **spec):
    study = tmp_path / "s"
    atomic_write_json(study / "study.json", {
        "spec": {"source": {"id": "CartPole-v1", "params": {}},
                 "target": {"id": "CartPole-v1", "params": {"length": 1.0}}, "algo": "ppo",
                 "conditions": list(curves), "seeds": 5, "seed": 0, "timesteps": 400,
                 "source_timesteps": 1000, "out": str(tmp_path), **spec},
        "target_agent": {"hparams": {}}, "command": "python -m rltransfer run x y",
        "threshold": 100.0, "threshold_from": "--threshold", "target_random_return": 0.0})
    for condition, runs in curves.items():
        for seed, returns in enumerate(runs):
            write_run(study / condition / f"seed_{seed}", STEPS, returns)
    return study


def _runs(rng, shape, n=10):
    return [list(np.array(shape, dtype=float) + rng.normal(0, 4, 5)) for _ in range(n)]


@pytest.mark.parametrize("sequential", [None, "auto:first=5,step=5,max=20"])
def test_summary_json_is_the_typed_summary_and_reads_back_to_it(tmp_path, write_run,
                                                                 sequential):
    rng = np.random.default_rng(3)
    curves = {"scratch": _runs(rng, [0, 40, 80, 115, 120]),
              "finetune": _runs(rng, [60, 110, 120, 122, 122]),
              "reinit-head": _runs(rng, [0, 40, 80, 115, 120], 6)}
    study = _study(tmp_path, curves, write_run,
                   **({"sequential": sequential} if sequential else {}))
    atomic_write_json(study / "reinit-head" / "seed_1" / "status.json",
                      {"state": "failed", "error": "RuntimeError: boom"})
    atomic_write_json(study / "reinit-head" / "seed_2" / "status.json", {"state": "running"})
    atomic_write_json(study / "finetune" / "seed_3" / "status.json",
                      {"state": "failed", "error": "Diverged: NaN", "diverged": True,
                       "diverged_at": 150})
    summary = summarize_study(study)
    text = (study / "summary.json").read_text()
    assert json.dumps(summary.to_dict(), indent=2) + "\n" == text
    again = StudySummary.from_dict(json.loads(text))
    assert again == summary
    assert json.dumps(again.to_dict(), indent=2) + "\n" == text

    assert summary.runs["reinit-head"].failed == (FailedRun("seed_1", "RuntimeError: boom"),)
    assert summary.runs["reinit-head"].left_out == ("seed_2 (running)",)
    assert summary.runs["reinit-head"].total == 6
    assert summary.runs["finetune"].diverged == (
        DivergedRun("seed_3", 150, "the random policy's level"),)
    finetune = summary.conditions["finetune"]
    assert finetune.failed_runs == 1 and finetune.n_runs == 10
    assert finetune.verdict.m == 2  # finetune and reinit-head in one Holm family
    assert summary.conditions["scratch"].verdict.label == "reference"
    assert summary.conditions["scratch"].auc_difference is None
    assert (finetune.sequential is not None) == (sequential is not None)
    assert (summary.sequential is not None) == (sequential is not None)


def test_every_metric_the_summary_holds_has_a_registry_entry_that_reads_it_back():
    rng = np.random.default_rng(0)
    t = np.arange(0, 500, 100.0)
    curves = {name: [(t, np.array(shape) + rng.normal(0, 4, 5)) for _ in range(5)]
              for name, shape in (("scratch", [0, 40, 80, 115, 120]),
                                  ("finetune", [60, 110, 120, 122, 122]))}
    data = metrics.summarize(curves, random_return=0.0, threshold=100.0, budget=400)
    for entry in data["conditions"].values():
        measured = set(entry) - {"n_runs", "failed_runs"}
        assert measured <= set(metrics.REGISTRY)
        for key in measured:  # each metric's typed record is its summary.json form
            record = metrics.REGISTRY[key].record.from_dict(entry[key])
            assert record.to_dict() == entry[key]
        assert ConditionSummary.from_dict(entry).to_dict() == entry
    assert MetricsSummary.from_dict(data).to_dict() == data
    # the tables show registered metrics, the primary claim first
    assert metrics.METRICS[0].primary and metrics.METRICS[0].key == "auc_difference"
    assert all(metric.title for metric in metrics.METRICS)
