"""Study report: read a study folder, compute the metrics, write summary.json, summary.csv
and report.md, and render the terminal table.

Reads only files, so it works on a finished, interrupted or copied study alike.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from . import metrics
from .errors import OutputError
from .io_utils import atomic_write_json, atomic_write_text, read_json
from .training import read_evaluations

# (summary key, column title, formatter) of the comparison table.
_COLUMNS = (
    ("jumpstart", "jumpstart", metrics.format_estimate),
    ("time_to_threshold", "time to threshold (steps)", metrics.format_time_to_threshold),
    ("speedup", "speedup vs scratch", metrics.format_speedup),
    ("transfer_ratio", "transfer ratio (area)", metrics.format_estimate),
    ("asymptote", "asymptote", metrics.format_estimate),
    ("prob_improvement", "P(improve)", metrics.format_estimate),
)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def collect_runs(study_dir: Path, conditions: list[str]) -> tuple[dict, dict, dict]:
    """Curves of finished runs by condition, per-run folders, and runs left out (and why)."""
    curves: dict[str, list] = {}
    folders: dict[str, list[str]] = {}
    left_out: dict[str, list[str]] = {}
    for condition in conditions:
        curves[condition], folders[condition], left_out[condition] = [], [], []
        for run_dir in sorted((study_dir / condition).glob("seed_*"),
                              key=lambda p: int(p.name.split("_")[1])):
            status_path = run_dir / "status.json"
            state = read_json(status_path).get("state") if status_path.is_file() else "missing"
            csv_path = run_dir / "evaluations.csv"
            if state != "done" or not csv_path.is_file():
                left_out[condition].append(f"{run_dir.name} ({state})")
                continue
            curves[condition].append(read_evaluations(csv_path))
            folders[condition].append(run_dir.name)
    return curves, folders, left_out


def summarize_study(study_dir: Path) -> dict[str, Any]:
    """Compute the study's metrics from its files and write summary.json/csv and report.md."""
    study_path = study_dir / "study.json"
    if not study_path.is_file():
        raise OutputError(f"{study_dir} is not a study folder (no study.json): give runs/<study>")
    study = read_json(study_path)
    if "threshold" not in study:
        raise OutputError(f"{study_dir} stopped before its first target run: nothing to report")
    spec = study["spec"]
    conditions = list(spec["conditions"])
    curves, folders, left_out = collect_runs(study_dir, conditions)
    finished = {c: v for c, v in curves.items() if v}
    if not finished:
        raise OutputError(f"{study_dir} has no finished runs yet: nothing to report")
    budget = int(spec["timesteps"])  # runs may overshoot it by part of a rollout
    normalization = {"random_return": study["target_random_return"],
                     "threshold": study["threshold"], "budget": budget}
    summary = metrics.summarize(finished, reference="scratch" if "scratch" in finished else None,
                                **normalization)
    per_run = {
        condition: {
            folder: {k: _finite(v) for k, v in
                     metrics.run_metrics(steps, returns, **normalization).items()}
            for folder, (steps, returns) in zip(folders[condition], runs, strict=True)
        }
        for condition, runs in finished.items()
    }
    result = {
        "study": study_dir.name, "source": _env_label(spec["source"]),
        "target": _env_label(spec["target"]), "algo": spec["algo"],
        "threshold": study["threshold"], "threshold_from": study.get("threshold_from"),
        "random_return": study["target_random_return"], "budget": budget,
        "runs": {c: {"finished": len(folders[c]), "left_out": left_out[c]} for c in conditions},
        "metrics": summary, "per_run": per_run,
    }
    atomic_write_json(study_dir / "summary.json", result)
    atomic_write_text(study_dir / "summary.csv", summary_csv(result))
    atomic_write_text(study_dir / "report.md", report_markdown(result, study))
    return result


def _env_label(env: dict[str, Any]) -> str:
    params = env.get("params") or {}
    if not params:
        return env["id"]
    return env["id"] + ":" + ",".join(f"{k}={v:g}" for k, v in sorted(params.items()))


def _cells(name: str, data: dict[str, Any], reference: str | None) -> list[str]:
    cells = []
    for key, _, formatter in _COLUMNS:
        if key in data and data[key] is not None:
            cells.append(formatter(data[key]))
        else:
            cells.append("(reference)" if name == reference else "—")
    return cells


def _rows(result: dict[str, Any]) -> list[list[str]]:
    summary = result["metrics"]
    rows = []
    for name, data in summary["conditions"].items():
        rows.append([name, str(data["n_runs"])] + _cells(name, data, summary.get("reference")))
    return rows


def headers() -> list[str]:
    return ["condition", "runs"] + [title for _, title, _ in _COLUMNS]


def terminal_table(result: dict[str, Any]) -> Table:
    """The comparison table, for the terminal."""
    table = Table(title=escape(f"{result['source']} → {result['target']} ({result['algo']}), "
                               f"95% bootstrap CIs over seeds"), title_justify="left")
    for title in headers():
        table.add_column(title, overflow="fold")
    for row in _rows(result):
        table.add_row(*(escape(cell) for cell in row))
    return table


def summary_csv(result: dict[str, Any]) -> str:
    """One row per condition x metric: point estimate, interval bounds, and the shown text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["condition", "metric", "point", "low", "high", "flags", "display"])
    formatters = {key: formatter for key, _, formatter in _COLUMNS}
    for name, data in result["metrics"]["conditions"].items():
        for key, value in data.items():
            if not isinstance(value, dict):
                continue
            display = formatters.get(key, metrics.format_estimate)(value)
            writer.writerow([name, key, _csv(value.get("point")), _csv(value.get("low")),
                             _csv(value.get("high")), _flags(value), display])
    return buffer.getvalue()


def _flags(value: dict[str, Any]) -> str:
    """What an empty or plain number in the CSV means: censored values, lower bounds."""
    flags = [f"{part} censored (>{value['censored_at']})"
             for part in ("point", "low", "high") if value.get(f"{part}_censored")]
    if value.get("lower_bound"):
        flags.append("point is a lower bound")
    if value.get("high_lower_bound"):
        flags.append("high is a lower bound")
    return "; ".join(flags)


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)


def report_markdown(result: dict[str, Any], study: dict[str, Any]) -> str:
    """report.md: what was compared, the table with intervals, and how to reproduce it."""
    spec = study["spec"]
    lines = [
        f"# Transfer study `{result['study']}`",
        "",
        f"- **source**: `{result['source']}` → **target**: `{result['target']}`",
        f"- **algorithm**: {result['algo']}, {spec['seeds']} seeds per condition "
        f"(seeds {spec['seed']}–{spec['seed'] + spec['seeds'] - 1}), "
        f"target budget {spec['timesteps']:,} steps, source budget {spec['source_timesteps']:,}",
        f"- **threshold**: {result['threshold']:g} ({result['threshold_from']}); "
        f"random policy's return on the target: {result['random_return']:.4g}. Scores are "
        f"normalized: 0 = random, 1 = threshold.",
        f"- **hyperparameters** (target): `{study['target_agent']['hparams']}`",
        "",
        "| " + " | ".join(headers()) + " |",
        "|" + "---|" * len(headers()),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    lines += ["", "Intervals are 95% percentile-bootstrap confidence intervals over seeds. "
              "Jumpstart, asymptote and transfer ratio are on normalized scores; time to "
              "threshold is the median over seeds, and a run that never reaches the threshold "
              "is censored (reported as not reached, never as a number)."]
    left_out = {c: v["left_out"] for c, v in result["runs"].items() if v["left_out"]}
    if left_out:
        lines += ["", f"Runs left out (not finished): {left_out}"]
    if study.get("command"):
        lines += ["", "Reproduce:", "", "```", study["command"], "```"]
    lines += ["", "Learning curves: `tensorboard --logdir " + str(Path(spec["out"]) /
              result["study"]) + "` (tag `eval/mean_reward`)."]
    return "\n".join(lines) + "\n"
