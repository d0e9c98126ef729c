"""The report's tables: the metric registry, the warnings about runs not used, the
comparison table (terminal, markdown) and summary.csv.

Every table of a study (terminal, summary.csv, report.md/.html, TensorBoard's text tab) and
of `compare` shows the metrics of `METRICS`, in that order, through its formatters; the
primary claim is the first column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import metrics
from .fit_table import FitTable
from .verdict import FAILED_RUNS, MIXED, NEGATIVE, NO_CLEAR, POSITIVE, REFERENCE, UNDECIDED

# --------------------------------------------------------------------------- the registry


def format_claim(diff: Mapping[str, Any]) -> str:
    """The primary claim's cell: "+0.42 [+0.18, +0.66], p = 0.004"."""
    if diff.get("point") is None:
        return "n/a"
    return f"{metrics.format_estimate(diff, signed=True)}, {metrics.format_p(diff.get('p_value'))}"


def format_signed(est: Mapping[str, Any]) -> str:
    return metrics.format_estimate(est, signed=True)


@dataclass(frozen=True)
class Metric:
    """One entry of the metric registry: summary key, column title, cell formatter, and
    whether it is the primary claim (every other metric is descriptive)."""

    key: str
    title: str
    formatter: Any
    primary: bool = False


METRICS = (
    Metric("auc_difference", "area vs scratch (primary; Welch)", format_claim, primary=True),
    Metric("jumpstart", "jumpstart", format_signed),
    Metric("time_to_threshold", "time to threshold (steps)", metrics.format_time_to_threshold),
    Metric("speedup", "speedup vs scratch", metrics.format_speedup),
    Metric("asymptote", "asymptote", metrics.format_estimate),
    Metric("prob_improvement", "P(improve)", metrics.format_estimate),
    Metric("transfer_ratio", "transfer ratio (area)", format_signed),
)
"""The metrics every table shows, in order (terminal, summary.csv, report.md/html, compare)."""
FORMATTERS = {m.key: m.formatter for m in METRICS}

MATRIX_METRICS = (("auc_difference", "area vs scratch (primary)"),
                  ("jumpstart", "jumpstart (step 0 vs scratch)"))
"""(summary key, title) of what the transfer matrix shows per cell (matrix.md, matrix.png)."""


# --------------------------------------------------------------------------- warnings

ERROR_CHARS = 120  # an error is shortened to this many characters where it is shown
_MAX_ERRORS = 3  # distinct errors quoted per condition


def shorten(text: str, width: int = ERROR_CHARS) -> str:
    """`text` on one line, cut to at most `width` characters (ending in "…" when cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def run_warnings(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per condition with failed runs and per condition with unfinished runs
    (summary.json's ``runs``): how many, which, why, and what its metrics use."""
    lines = []
    for condition, record in runs.items():
        finished, failed, left_out = record["finished"], record["failed"], record["left_out"]
        total = finished + len(failed) + len(left_out)
        diverged = record.get("diverged") or []
        if diverged:
            held = "; ".join(f"{d['run']} from step {d['at']:,}, held at {d['held_at']}"
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


def _failures_text(failed: Sequence[Mapping[str, str]]) -> str:
    """"seed_3: Error: message; seed_1, seed_4: Other: message": runs grouped by error."""
    by_error: dict[str, list[str]] = {}
    for run in failed:
        by_error.setdefault(shorten(run["error"]), []).append(run["run"])
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


def without_metrics(result: Mapping[str, Any]) -> dict[str, str]:
    """Conditions with runs but none finished, and why: "all 5 runs failed", ..."""
    out = {}
    for condition, record in result["runs"].items():
        failed, left_out = len(record["failed"]), len(record["left_out"])
        if record["finished"] or not (failed or left_out):
            continue
        if not left_out:
            out[condition] = f"{_how_many(failed, failed)} failed"
        elif not failed:
            out[condition] = f"{_how_many(left_out, left_out)} not finished"
        else:
            out[condition] = f"{failed} failed, {left_out} not finished"
    return out


# --------------------------------------------------------------------------- tables


def _cells(name: str, data: dict[str, Any], reference: str | None) -> list[str]:
    cells = []
    for metric in METRICS:
        if metric.key in data and data[metric.key] is not None:
            cells.append(metric.formatter(data[metric.key]))
        else:
            cells.append("(reference)" if name == reference else "—")
    return cells


NO_METRICS = "no metrics"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """A row per condition in study order; the runs column reads "4 of 5" when some runs of
    the condition failed or did not finish, and a condition without finished runs has a row
    of "—" whose verdict cell says why ("no metrics (all 5 runs failed)")."""
    summary = result["metrics"]
    missing = without_metrics(result)
    runs = result["runs"]
    rows = []
    for name in [c for c in runs if c in summary["conditions"] or c in missing]:
        if name in missing:
            rows.append([name, _runs_cell(0, runs[name])] + ["—"] * len(METRICS)
                        + [f"{NO_METRICS} ({missing[name]})"])
            continue
        data = summary["conditions"][name]
        verdict = data.get("verdict", {}).get("label", "—")
        rows.append([name, _runs_cell(data["n_runs"], runs[name])]
                    + _cells(name, data, summary.get("reference"))
                    + [f"({verdict})" if verdict == REFERENCE else verdict])
    return rows


def _runs_cell(used: int, record: Mapping[str, Any]) -> str:
    """Runs used: "5", or "4 of 5" when some runs failed or did not finish."""
    if not (record["failed"] or record["left_out"]):
        return str(used)
    return f"{used} of {record['finished'] + len(record['failed']) + len(record['left_out'])}"


def headers() -> list[str]:
    return ["condition", "runs"] + [metric.title for metric in METRICS] + ["verdict"]


def markdown_table(result: dict[str, Any]) -> str:
    """The table as markdown (report.md, TensorBoard's text tab), without a final newline."""
    return "\n".join(["| " + " | ".join(headers()) + " |", "|" + "---|" * len(headers())]
                     + ["| " + " | ".join(row) + " |" for row in table_rows(result)])


_TERMINAL_STYLES = {POSITIVE: "bold green", NEGATIVE: "bold red", NO_CLEAR: "dim",
                    MIXED: "bold yellow", UNDECIDED: "yellow", FAILED_RUNS: "yellow"}
_TERMINAL_WARNING = "bold yellow"


def terminal_table(result: dict[str, Any]) -> FitTable:
    """The comparison table, for the terminal: a column per metric where the console is wide
    enough for every cell on one line, else a block per condition (`FitTable`)."""
    level = metrics.percent(1 - result.get('alpha', metrics.DEFAULT_ALPHA))
    rows = table_rows(result)
    styles: list[list[str | None]] = []
    for row in rows:
        row_styles: list[str | None] = [None] * len(row)
        row_styles[-1] = _TERMINAL_STYLES.get(row[-1]) or (
            _TERMINAL_WARNING if row[-1].startswith(NO_METRICS) else None)
        if not row[1].isdigit():  # some runs failed or did not finish
            row_styles[1] = _TERMINAL_WARNING
        styles.append(row_styles)
    return FitTable(f"{result['source']} → {result['target']} ({result['algo']}), "
                    f"{level} intervals over seeds", headers(), rows, styles)


def summary_csv(result: dict[str, Any]) -> str:
    """One row per condition x metric: point estimate, interval bounds, and the shown text;
    and a "verdict" row per compared condition (its Holm-adjusted p and label)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["condition", "metric", "point", "low", "high", "flags", "display"])
    for name, data in result["metrics"]["conditions"].items():
        for key, value in data.items():
            if not isinstance(value, dict) or key == "verdict":
                continue
            display = FORMATTERS.get(key, metrics.format_estimate)(value)
            writer.writerow([name, key, _csv(value.get("point")), _csv(value.get("low")),
                             _csv(value.get("high")), _flags(value), display])
        verdict = data.get("verdict")
        if verdict and verdict.get("p_holm") is not None:  # point: the Holm-adjusted p
            writer.writerow([name, "verdict", _csv(verdict["p_holm"]), "", "",
                             f"Holm over {verdict['m']} comparisons; alpha={result['alpha']:g}",
                             verdict["label"]])
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


def table_note(alpha: float) -> str:
    """What the table's numbers are, under every table."""
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
    )
