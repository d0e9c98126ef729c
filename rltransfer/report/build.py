"""Study report: read a study folder, compute the metrics and a verdict per condition, and
write summary.json, summary.csv, the figures (curves.png/.svg, profiles.png, metrics.png),
report.md and a self-contained report.html; render the terminal table.

Reads only files, so it works on a finished, interrupted or copied study alike. This module
is the orchestrator; each stage lives in its own module:

* `runfiles`: the reader of the run-folder format (`collect_runs`);
* `metrics`: the metrics and their registry (with `intervals`, the estimators);
  `verdict`: the verdict rule;
* `summary`: the typed summary this module builds once (`StudySummary`; summary.json is its
  `to_dict`), which every reader takes;
* `curves`: learning curves across seeds (`aggregate_curves`);
* `tables`: the run warnings, the terminal table and summary.csv;
* `figures`: the figures (the only module that imports a plotting library, lazily);
* `pages`: report.md and report.html, from Jinja2 templates.

The names other modules and the tests import from here are re-exported.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError
from ..io_utils import atomic_write_json, atomic_write_text, read_json
from ..specs import format_value
from ..strategies import registry
from ..study.budgets import MIN_EVALUATIONS, describe_grid
from ..study.similarity import FILE as SIMILARITY_FILE
from ..study.similarity import read as read_similarity
from ..study.study_spec import flat_spec
from . import metrics, sequential
from . import success as success_metrics
from . import verdict as verdicts
from .curves import AggregateCurve, aggregate_curves
from .figures import (
    CURVES_SIZE,
    FIGURE_DPI,
    condition_colors,
    curves_figure,
    format_steps,
    metrics_figure,
    write_compare_figure,
    write_figures,
    write_matrix_figure,
)
from .metrics import MATRIX_METRICS, METRICS, format_claim
from .pages import env_differences, report_html, report_markdown
from .runfiles import collect_runs, collect_success, outside_budget, read_study
from .summary import (
    DivergedRun,
    EvaluationGrid,
    FailedRun,
    MetricsSummary,
    RunRecord,
    SequentialComparison,
    SequentialDesign,
    Similarity,
    StudySummary,
)
from .tables import markdown_table, run_warnings, summary_csv, terminal_table

__all__ = [
    "CURVES_SIZE", "FIGURE_DPI", "MATRIX_METRICS", "METRICS", "NEGATIVE", "NO_CLEAR",
    "POSITIVE", "REFERENCE", "AggregateCurve", "aggregate_curves", "collect_runs",
    "condition_colors", "curves_figure", "env_differences", "format_claim", "format_steps",
    "StudySummary", "metrics_figure", "report_html", "report_markdown", "seed_note",
    "study_summary", "summarize_study", "summary_csv", "terminal_table", "write_compare_figure",
    "write_figures", "write_matrix_figure", "write_tensorboard",
]

POSITIVE, NEGATIVE, NO_CLEAR, REFERENCE = (verdicts.POSITIVE, verdicts.NEGATIVE,
                                          verdicts.NO_CLEAR, verdicts.REFERENCE)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def study_summary(study_dir: Path) -> tuple[StudySummary, dict[str, Any], dict[str, list]]:
    """(the study's summary, study.json, the finished curves) of a study folder, computed
    from its files without writing anything (what `compare` and `matrix` read)."""
    study_dir = Path(study_dir)
    study = read_study(study_dir)  # a damaged or newer study.json: one line naming it
    study["spec"] = flat_spec(study["spec"])  # any study.json format, read flat
    if "threshold" not in study:
        raise OutputError(f"{study_dir} stopped before its first target run: nothing to report")
    score = study["spec"].get("score", "return")
    curves, folders, not_used = collect_runs(study_dir, list(study["spec"]["conditions"]), score)
    finished = {c: v for c, v in curves.items() if v}
    if not finished:
        runs = {c: _run_record(0, not_used[c], ()) for c in curves}
        why = "; ".join(run_warnings(runs)) if any(r.failed for r in runs.values()) else ""
        raise OutputError(f"{study_dir} has no finished runs" + (
            f": nothing to report ({why})" if why else " yet: nothing to report"))
    success = collect_success(study_dir, {c: folders[c] for c in finished},
                              {c: not_used[c]["diverged"] for c in finished})
    result = _result(study_dir.name, study, finished, folders, not_used,
                     _source_steps(study_dir, study), success)
    result = dataclasses.replace(result, similarity=_similarity(study_dir, result), runs={
        c: dataclasses.replace(record, outside_budget=_outside_budget(study_dir, c,
                                                                      folders.get(c, [])))
        for c, record in result.runs.items()})
    return result, study, finished


def _similarity(study_dir: Path, result: StudySummary) -> Similarity | None:
    """The study's similarity.json (`study.similarity`) as the summary holds it, with the
    zero-shot return normalized on the study's score scale; None when the study has none
    (started before it was measured, or with --similarity left out of an old study)."""
    try:
        record = read_similarity(study_dir)
    except (OSError, ValueError) as err:  # damaged: said, and the rest is reported
        return Similarity(0, skipped=f"{SIMILARITY_FILE} cannot be read ({err}): resume the "
                                     f"study to measure it again")
    if record is None:
        return None
    zero_shot = record.get("zero_shot") or {}
    classifier = record.get("classifier") or {}
    distance = record.get("feature_distance") or {}
    mean = zero_shot.get("mean_return")
    normalized = (None if mean is None or result.score != "return" else  # a return, not a rate
                  _finite(float(metrics.normalize(mean, result.random_return, result.threshold))))
    return Similarity(int(record.get("transitions", 0)), mean, normalized,
                      zero_shot.get("episodes"), classifier.get("accuracy"),
                      classifier.get("n_test"), classifier.get("rows"), distance.get("value"),
                      record.get("skipped"), tuple(record.get("notes") or ()))


def summarize_study(study_dir: Path) -> StudySummary:
    """Compute the study's metrics and verdicts from its files; write summary.json/csv,
    curves.png/.svg, profiles.png, metrics.png, report.md, report.html and the TensorBoard
    aggregates. Returns the summary (summary.json is its `to_dict`)."""
    study_dir = Path(study_dir)
    result, study, finished = study_summary(study_dir)
    atomic_write_json(study_dir / "summary.json", result.to_dict())
    atomic_write_text(study_dir / "summary.csv", summary_csv(result))
    images = write_figures(study_dir, result, finished)
    atomic_write_text(study_dir / "report.md", report_markdown(result, study))
    atomic_write_text(study_dir / "report.html", report_html(result, study, images))
    write_tensorboard(study_dir, result, study, finished)
    return result


def write_tensorboard(study_dir: Path, result: StudySummary, study: dict[str, Any],
                      finished: dict[str, list]) -> None:
    """The aggregate TensorBoard runs: across-seed mean and 95% band per condition, raw and
    normalized, the study's hyperparameters and the summary table (rltransfer.report.board)."""
    from .board import write_aggregates

    random_return, threshold = result.random_return, result.threshold
    conditions = list(finished)
    returns, folders, not_used = collect_runs(study_dir, conditions)  # the score's may be success
    success = collect_success(study_dir, folders, {c: not_used[c]["diverged"] for c in folders})
    raw = {condition: aggregate_curves(runs) for condition, runs in returns.items() if runs}
    normalized = {condition: AggregateCurve(curve.steps, *(
        metrics.normalize(values, random_return, threshold)
        for values in (curve.mean, curve.low, curve.high)))
        for condition, curve in ((c, aggregate_curves(runs)) for c, runs in finished.items())}
    spec = study["spec"]
    hparams = {"source": result.source, "target": result.target, "algo": result.algo,
               "seeds": spec["seeds"], "timesteps": spec["timesteps"],
               "source_timesteps": spec["source_timesteps"], "threshold": threshold}
    points = {condition: {key: data.estimates[key].point for key in BOARD_METRICS
                          if key in data.estimates and data.estimates[key].point is not None}
              for condition, data in result.conditions.items()}
    write_aggregates(study_dir, raw, normalized, hparams, points, markdown_table(result),
                     None if success is None else {condition: aggregate_curves(runs)
                                                   for condition, runs in success.items()})


BOARD_METRICS = ("auc_difference", "jumpstart", "asymptote", "auc")
"""The metrics TensorBoard's hparams view shows per condition (their point estimates)."""


def _result(name: str, study: dict[str, Any], finished: dict[str, list], folders: dict,
            not_used: dict, source_steps: int | None,
            success: dict[str, list] | None = None) -> StudySummary:
    spec = study["spec"]
    grid = evaluation_grid(finished, int(spec["timesteps"]))
    budget = grid.steps  # what every run really trained: whole rollouts, not --timesteps
    alpha = float(spec.get("alpha", metrics.DEFAULT_ALPHA))  # studies from before --alpha
    scale = {"random_return": study["target_random_return"],
             "threshold": study["threshold"], "budget": budget}
    reference = registry.REFERENCE if registry.REFERENCE in finished else None
    values = {condition: [metrics.run_metrics(steps, returns, **scale)
                          for steps, returns in runs] for condition, runs in finished.items()}
    summarized = metrics.summarize(finished, reference=reference, alpha=alpha, runs=values,
                                   **scale)
    if success is not None:  # the runs recorded success rates: its metrics beside the others
        for condition, entries in success_metrics.success_summary(
                success, budget, reference, 1 - alpha).items():
            summarized["conditions"][condition].update(entries)
    summary = MetricsSummary.from_dict(summarized)
    per_run = {condition: {folder: {k: _finite(v) for k, v in run.items()}
                           for folder, run in zip(folders[condition], values[condition],
                                                  strict=True)}
               for condition in finished}
    design = sequential.design_of(spec)
    final = True
    if design is not None and reference is not None:
        seeds = {c: _seed_columns(folders[c], values[c], int(spec.get("seed", 0)))
                 for c in finished}
        summary = summary.with_sequential({
            condition: SequentialComparison.from_dict(sequential.analyze(
                seeds[condition], seeds[reference], design))
            for condition in finished if condition != reference})
        final = bool((study.get("sequential") or {}).get("done"))
    # planned comparisons without runs enter Holm with p = 1: m is the planned family's size
    planned = sum(c != registry.REFERENCE for c in spec["conditions"])
    (judged,) = verdicts.judge([summary], alpha, planned=planned, final=final)
    summary = summary.with_verdicts(judged)
    runs = {c: _run_record(len(folders[c]), not_used[c], tuple(
        _diverged(run, *finished[c][folders[c].index(run)], scale)
        for run in not_used[c].get("diverged", []))) for c in spec["conditions"]}
    return StudySummary(
        study=name, source=_env_label(spec["source"]), target=_env_label(spec["target"]),
        algo=spec["algo"], threshold=study["threshold"],
        threshold_from=study.get("threshold_from"),
        random_return=study["target_random_return"], budget=budget,
        requested_budget=int(spec["timesteps"]), evaluations=grid, runs=runs,
        warnings=tuple(run_warnings(runs) + grid_warnings(grid)), metrics=summary,
        alpha=alpha, verdict_rule=verdicts.rule(alpha),
        seed_note=seed_note(summary, alpha, None if design else {
            c: metrics.table(v) for c, v in values.items()}),
        per_run=per_run,
        sequential=(SequentialDesign(design.first, design.step, design.max, design.looks,
                                     final) if design is not None else None),
        source_steps=source_steps, score=spec.get("score", "return"))


def _run_record(finished: int, not_used: Mapping[str, Any],
                diverged: tuple[DivergedRun, ...]) -> RunRecord:
    """A condition's `RunRecord` from `runfiles.collect_runs`' runs not used."""
    return RunRecord(finished, tuple(FailedRun(**run) for run in not_used["failed"]),
                     diverged, tuple(not_used["left_out"]))


def _outside_budget(study_dir: Path, condition: str,
                    runs: list[str]) -> tuple[tuple[str, int, int], ...]:
    """(env, fewest, most) env steps the condition's finished `runs` took besides the target
    budget (`runfiles.outside_budget`: darc's source steps...)."""
    steps = [outside_budget(study_dir / condition / run) for run in runs]
    envs = sorted({env for taken in steps for env in taken})
    return tuple((env, min(t.get(env, 0) for t in steps), max(t.get(env, 0) for t in steps))
                 for env in envs)


def evaluation_grid(finished: Mapping[str, list], requested: int) -> EvaluationGrid:
    """The steps the runs really trained and where they were really evaluated, from their
    evaluations.csv: ``steps`` (the metrics' budget: the fewest steps a run that did not
    diverge trained, which SB3's whole rollouts round up from `requested`; `requested` when
    none did), ``per_run`` ([fewest, most] evaluations up to ``steps``), ``spacing``
    ([smallest, largest] gap) and ``grid`` (the steps, when every run shares them)."""
    curves = [np.asarray(steps, dtype=float) for runs in finished.values()
              for steps, returns in runs if np.isfinite(np.asarray(returns, dtype=float)).all()]
    curves = curves or [np.asarray(steps, dtype=float) for runs in finished.values()
                        for steps, _ in runs]
    ends = [int(steps[-1]) for steps in curves]
    steps = max(requested, min(ends)) if ends else requested
    counts = [int((c <= steps).sum()) for c in curves]
    gaps = [float(g) for c in curves for g in np.diff(c[c <= steps])]
    grids = {tuple(int(x) for x in c[c <= steps]) for c in curves}
    return EvaluationGrid(steps, requested,
                          (min(ends), max(ends)) if ends else (),
                          (min(counts), max(counts)) if counts else (),
                          (int(min(gaps)), int(max(gaps))) if gaps else (),
                          next(iter(grids)) if len(grids) == 1 else None)


def grid_warnings(grid: EvaluationGrid) -> list[str]:
    """A warning when runs were evaluated fewer than `budgets.MIN_EVALUATIONS` times."""
    if not grid.per_run or grid.per_run[0] >= MIN_EVALUATIONS:
        return []
    where = f" ({describe_grid(list(grid.grid))})" if grid.grid else ""
    return [f"runs were evaluated only {grid.per_run[0]} times up to step "
            f"{grid.steps:,}{where}, so the area under the curve is coarse: a longer "
            f"--timesteps, a smaller --eval-freq or a shorter rollout gives a finer grid"]


def _source_steps(study_dir: Path, study: Mapping[str, Any]) -> int | None:
    """The env steps the study's source policy was trained for (in this study or when it was
    cached); None for an external checkpoint or when not known."""
    source = study.get("source") or {}
    if source.get("kind") == "external":
        return None
    status = study_dir / "source" / "status.json"
    try:
        steps = read_json(status).get("timesteps") if status.is_file() else None
    except (OSError, ValueError, AttributeError):
        steps = None
    if steps is None and not source.get("reused"):
        steps = source.get("trained_steps") or None
    return int(steps) if steps is not None else None


def _seed_columns(folders: list[str], values: list[dict[str, float]],
                  first: int) -> dict[str, Any]:
    """One condition's per-run metrics in seed order, cut at the first missing seed (a look
    uses seeds first..first+n-1 of each arm: all of them, or it is not taken)."""
    by_folder = dict(zip(folders, values, strict=True))
    rows = []
    while (run := by_folder.get(f"seed_{first + len(rows)}")) is not None:
        rows.append(run)
    if not rows:
        return {key: np.zeros(0) for key in ("auc", "failed", "time_to_threshold")}
    return metrics.table(rows)


def _diverged(name: str, steps: Any, returns: Any, scale: Mapping[str, Any]) -> DivergedRun:
    return DivergedRun(name, int(steps[-1]), metrics.failure_floor(
        steps, returns, random_return=scale["random_return"], threshold=scale["threshold"]))


def seed_note(summary: MetricsSummary, alpha: float,
              seeds: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """What the study's seed count risks: why no claim is made when a comparison has fewer
    runs than a claim needs, or, for a fixed seed count (`seeds`: each condition's per-run
    metrics), what in the data makes it unreliable (failed runs in one arm only, strongly
    unequal spread), with the advice to use --seeds auto."""
    reference = summary.reference
    if reference is None:
        return None
    conditions = summary.conditions
    n_ref = conditions[reference].n_runs
    few = [name for name, data in conditions.items()
           if name != reference and min(data.n_runs, n_ref) < verdicts.MIN_CLAIM_RUNS]
    if few:
        n = min(conditions[name].n_runs for name in few)
        return f"No claim is possible for {', '.join(few)}. " + verdicts.too_few_runs_reason(
            n, n_ref, alpha)
    reasons = [f"{name}: {why}" for name in conditions if name != reference and seeds
               and (why := sequential.disagreement(seeds[name], seeds[reference]))]
    if not reasons:
        return None
    return (f"With {n_ref} fixed seeds these comparisons rest on outcomes that disagree "
            f"between the arms ({'; '.join(reasons)}); a mean over few seeds then claims "
            "too often (benchmarks/README.md, calibration). Run it with --seeds auto, which "
            "adds seeds until the verdict is clear.")


def _env_label(env: dict[str, Any]) -> str:
    params = env.get("params") or {}
    if not params:
        return env["id"]
    return env["id"] + ":" + ",".join(f"{k}={format_value(v)}" for k, v in sorted(params.items()))
