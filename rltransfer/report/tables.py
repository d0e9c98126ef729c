"""The report's tables: the warnings about runs not used, the comparison table (terminal,
markdown) and summary.csv, from a study's typed summary (`rltransfer.report.summary`).

Every table of a study (terminal, summary.csv, report.md/.html, TensorBoard's text tab) and
of `compare` shows the metrics of `metrics.METRICS` (the registry's columns), in that order,
through their formatters; the primary claim is the first column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from . import metrics
from .fit_table import FitTable
from .metrics import METRICS, REGISTRY, Metric, shown_metrics
from .summary import ConditionSummary, FailedRun, RunRecord, StudySummary
from .verdict import FAILED_RUNS, MIXED, NEGATIVE, NO_CLEAR, POSITIVE, REFERENCE, UNDECIDED

# --------------------------------------------------------------------------- warnings

ERROR_CHARS = 120  # an error is shortened to this many characters where it is shown
_MAX_ERRORS = 3  # distinct errors quoted per condition


def shorten(text: str, width: int = ERROR_CHARS) -> str:
    """`text` on one line, cut to at most `width` characters (ending in "…" when cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def run_warnings(runs: Mapping[str, RunRecord]) -> list[str]:
    """One line per condition with failed runs and per condition with unfinished runs
    (summary.json's ``runs``): how many, which, why, and what its metrics use."""
    lines = []
    for condition, record in runs.items():
        finished, failed, left_out = record.finished, record.failed, record.left_out
        total = record.total
        diverged = record.diverged
        if diverged:
            held = "; ".join(f"{d.run} from step {d.at:,}, held at {d.held_at}"
                             for d in diverged)
            lines.append(f"{condition}: {_how_many(len(diverged), total)} diverged ({held}): "
                         "each counts as an outcome, at the worst its score allows")
        if failed:
            lines.append(f"{condition}: {_how_many(len(failed), total)} failed "
                         f"({_failures_text(failed)}); "
                         f"{_metrics_use(finished, alone=not left_out)}")
        if left_out:
            lines.append(f"{condition}: {_how_many(len(left_out), total)} not finished "
                         f"({', '.join(left_out)}); {_metrics_use(finished, alone=not failed)}")
    return lines


def _how_many(count: int, total: int) -> str:
    if count == total:
        return "its only run" if total == 1 else f"all {total} runs"
    return f"{count} of {total} runs"


def _failures_text(failed: Sequence[FailedRun]) -> str:
    """"seed_3: Error: message; seed_1, seed_4: Other: message": runs grouped by error."""
    by_error: dict[str, list[str]] = {}
    for run in failed:
        by_error.setdefault(shorten(run.error), []).append(run.run)
    parts = [f"{', '.join(names)}: {error}" for error, names in by_error.items()]
    if len(parts) > _MAX_ERRORS:
        parts[_MAX_ERRORS:] = [f"{len(parts) - _MAX_ERRORS} more errors"]
    return "; ".join(parts)


def _metrics_use(finished: int, *, alone: bool) -> str:
    """What a condition's metrics rest on; `alone`: only one kind of run was not used."""
    if finished == 0:
        return "no metrics for it"
    if alone:
        return "its metrics use the other run" if finished == 1 else (
            f"its metrics use the {finished} others")
    return f"its metrics use the {finished} finished run{'s' if finished > 1 else ''}"


def without_metrics(result: StudySummary) -> dict[str, str]:
    """Conditions with runs but none finished, and why: "all 5 runs failed", ..."""
    out = {}
    for condition, record in result.runs.items():
        failed, left_out = len(record.failed), len(record.left_out)
        if record.finished or not (failed or left_out):
            continue
        if not left_out:
            out[condition] = f"{_how_many(failed, failed)} failed"
        elif not failed:
            out[condition] = f"{_how_many(left_out, left_out)} not finished"
        else:
            out[condition] = f"{failed} failed, {left_out} not finished"
    return out


# --------------------------------------------------------------------------- tables


def _cells(name: str, data: ConditionSummary, reference: str | None,
           shown: tuple[Metric, ...] = METRICS) -> list[str]:
    cells = []
    for metric in shown:
        record = data.estimates.get(metric.key)
        if record is not None:
            cells.append(metric.formatter(record))
        else:
            cells.append("(reference)" if name == reference else "—")
    return cells


NO_METRICS = "no metrics"


def table_rows(result: StudySummary) -> list[list[str]]:
    """A row per condition in study order; the runs column reads "4 of 5" when some runs of
    the condition failed or did not finish, and a condition without finished runs has a row
    of "—" whose verdict cell says why ("no metrics (all 5 runs failed)")."""
    conditions = result.conditions
    missing = without_metrics(result)
    runs = result.runs
    shown = shown_metrics(conditions)
    rows = []
    for name in [c for c in runs if c in conditions or c in missing]:
        if name in missing:
            rows.append([name, _runs_cell(0, runs[name])] + ["—"] * len(shown)
                        + [f"{NO_METRICS} ({missing[name]})"])
            continue
        data = conditions[name]
        verdict = data.verdict.label if data.verdict is not None else "—"
        rows.append([name, _runs_cell(data.n_runs, runs[name])]
                    + _cells(name, data, result.reference, shown)
                    + [f"({verdict})" if verdict == REFERENCE else verdict])
    return rows


def _runs_cell(used: int, record: RunRecord) -> str:
    """Runs used: "5", or "4 of 5" when some runs failed or did not finish."""
    if not (record.failed or record.left_out):
        return str(used)
    return f"{used} of {record.total}"


def headers(result: StudySummary | None = None) -> list[str]:
    """The table's headers; with `result`, its success columns where its runs recorded
    success rates (`metrics.shown_metrics`)."""
    shown = METRICS if result is None else shown_metrics(result.conditions)
    return ["condition", "runs"] + [metric.title for metric in shown] + ["verdict"]


def markdown_table(result: StudySummary) -> str:
    """The table as markdown (report.md, TensorBoard's text tab), without a final newline."""
    return "\n".join(["| " + " | ".join(headers(result)) + " |",
                      "|" + "---|" * len(headers(result))]
                     + ["| " + " | ".join(row) + " |" for row in table_rows(result)])


_TERMINAL_STYLES = {POSITIVE: "bold green", NEGATIVE: "bold red", NO_CLEAR: "dim",
                    MIXED: "bold yellow", UNDECIDED: "yellow", FAILED_RUNS: "yellow"}
_TERMINAL_WARNING = "bold yellow"


def terminal_table(result: StudySummary) -> FitTable:
    """The comparison table, for the terminal: a column per metric where the console is wide
    enough for every cell on one line, else a block per condition (`FitTable`)."""
    level = metrics.percent(1 - result.alpha)
    rows = table_rows(result)
    styles: list[list[str | None]] = []
    for row in rows:
        row_styles: list[str | None] = [None] * len(row)
        row_styles[-1] = _TERMINAL_STYLES.get(row[-1]) or (
            _TERMINAL_WARNING if row[-1].startswith(NO_METRICS) else None)
        if not row[1].isdigit():  # some runs failed or did not finish
            row_styles[1] = _TERMINAL_WARNING
        styles.append(row_styles)
    return FitTable(f"{result.source} → {result.target} ({result.algo}), "
                    f"{level} intervals over seeds", headers(result), rows, styles)


def summary_csv(result: StudySummary) -> str:
    """One row per condition x metric: point estimate, interval bounds, and the shown text;
    and a "verdict" row per compared condition (its Holm-adjusted p and label)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["condition", "metric", "point", "low", "high", "flags", "display"])
    for name, data in result.conditions.items():
        for key, record in data.estimates.items():
            value = record.to_dict()
            writer.writerow([name, key, _csv(value.get("point")), _csv(value.get("low")),
                             _csv(value.get("high")), _flags(value),
                             REGISTRY[key].formatter(record)])
        if data.sequential is not None:  # --seeds auto: the repeated p-value, in flags
            looks = data.sequential.to_dict()
            writer.writerow([name, "sequential", "", "", "", _flags(looks),
                             metrics.format_estimate(looks)])
        verdict = data.verdict
        if verdict is not None and verdict.p_holm is not None:  # point: the Holm-adjusted p
            writer.writerow([name, "verdict", _csv(verdict.p_holm), "", "",
                             f"Holm over {verdict.m} comparisons; alpha={result.alpha:g}",
                             verdict.label])
    return buffer.getvalue()


def _flags(value: dict[str, Any]) -> str:
    """What an empty or plain number in the CSV means: censored values, bounds, p-values."""
    flags = [f"{part} censored (>{value['censored_at']})"
             for part in ("point", "low", "high") if value.get(f"{part}_censored")]
    words = {metrics.ABOVE: "a lower bound (the truth is above it)",
             metrics.BELOW: "an upper bound (the truth is below it)"}
    flags += [f"{part} is {words[value[f'{part}_bound']]}" for part in ("point", "low", "high")
              if value.get(f"{part}_bound") in words]
    if value.get("p_value") is not None:
        flags.append(f"p={value['p_value']:.6g}")
    if value.get("level") is not None:
        flags.append(f"interval level {value['level']:.4g}")
    return "; ".join(flags)


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)


SUCCESS_NOTE = (
    " Final success rate: the mean over runs of each run's success rate over its last 3 "
    "evaluations (not normalized), t interval cut to [0, 1]. Forward transfer (Continual "
    "World): (AUC − scratch's) / (1 − scratch's), AUC the area under the success-rate curve "
    "over the budget / the budget; Fieller interval for the ratio of failure areas, "
    "reported only when scratch's success area is clearly below 1.")


def table_note(alpha: float, success: bool = False) -> str:
    """What the table's numbers are, under every table; `success`: with its success
    columns (`SUCCESS_NOTE`)."""
    return (
        f"Intervals are {metrics.percent(1 - alpha)} intervals over seeds, on normalized "
        "scores (0 = random, "
        "1 = threshold). Only the area difference (primary, Welch t) decides the verdict; "
        "the other columns are descriptive effects. Means and differences: t and Welch t "
        "intervals. Time to threshold: the median over seeds with its order-statistic "
        "interval (its exact level is printed when below 95%); a run that never reaches the "
        "threshold is censored, printed as >budget, never as a number. Speedup: scratch's "
        "median time / the condition's, from those two intervals; >x and <x are bounds. "
        "P(improve): P(area > scratch's area), Newcombe interval. Transfer ratio: (area − "
        "scratch's) / scratch's area, Fieller interval, reported only when scratch's area is "
        "clearly above 0; it depends on where 0 (the random policy) lies."
    ) + (SUCCESS_NOTE if success else "")
