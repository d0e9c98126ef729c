"""Collections of studies: the source x target transfer matrix, and comparing studies.

A matrix runs every source x target study into one folder. Sources are trained once (the
source cache) and each target's scratch runs once (the scratch cache), so an S x T matrix
trains S sources, T scratch baselines and S x T transfer conditions.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import metrics
from .errors import ConfigError, OutputError
from .execution import Execution
from .io_utils import atomic_write_json, atomic_write_text, read_json
from .specs import EnvSpec, StudySpec


def parse_env_list(text: str) -> list[EnvSpec]:
    """Split 'A,B:x=1,y=2;C' into env specs: ';' always separates; ',' separates unless the
    next piece is a name=value parameter of the env before it."""
    pieces: list[str] = []
    for part in text.split(";"):
        for token in part.split(","):
            token = token.strip()
            if not token:
                continue
            if "=" in token and ":" not in token and pieces and ":" in pieces[-1]:
                pieces[-1] += "," + token  # a further parameter of the previous env
            else:
                pieces.append(token)
    if not pieces:
        raise ConfigError(f"no environments in {text!r}: give e.g. CartPole-v1,Acrobot-v1")
    return [EnvSpec.parse(piece) for piece in pieces]


def matrix_specs(base: StudySpec, sources: list[EnvSpec],
                 targets: list[EnvSpec]) -> tuple[Path, list[StudySpec]]:
    """The matrix folder and one study spec per source x target pair (targets outer)."""
    if "scratch" not in base.conditions:
        raise ConfigError("a transfer matrix compares against scratch: include scratch in "
                          "--conditions")
    name = base.name or f"matrix-{base.algo}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = Path(base.out) / name
    specs = [dataclasses.replace(base, source=source, target=target, out=str(folder),
                                 name=f"{source.slug}--{target.slug}")
             for target in targets for source in sources]
    return folder, specs


def run_matrix(base: StudySpec, sources: list[EnvSpec], targets: list[EnvSpec], *,
               command: str = "", console: Console | None = None,
               execution: Execution | None = None) -> Path:
    """Run every pair (checking all of them first), then write matrix.md and matrix.json."""
    from .runner import check_writable, plan, run_study

    console = console or Console()
    folder, specs = matrix_specs(base, sources, targets)
    if folder.exists() and any(folder.iterdir()):
        raise OutputError(f"{folder} already exists and is not empty: choose another --name")
    for spec in specs:  # every bad input fails before anything trains
        plan(spec)
    check_writable(folder)
    atomic_write_json(folder / "matrix_spec.json", {
        "command": command, "sources": [s.to_dict() for s in sources],
        "targets": [t.to_dict() for t in targets], "base": base.to_dict()})
    for index, spec in enumerate(specs, 1):
        console.print(f"matrix study {index}/{len(specs)}: {spec.source} → {spec.target}",
                      markup=False, highlight=False)
        run_study(spec, command=command, console=console, execution=execution)
    return folder


def summarize_matrix(folder: Path) -> dict[str, Any]:
    """Collect every pair's summary into matrix.json and matrix.md."""
    from .report import summarize_study

    spec_path = folder / "matrix_spec.json"
    if not spec_path.is_file():
        raise OutputError(f"{folder} is not a matrix folder (no matrix_spec.json)")
    record = read_json(spec_path)
    sources = [EnvSpec.from_dict(s) for s in record["sources"]]
    targets = [EnvSpec.from_dict(t) for t in record["targets"]]
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for target in targets:
        for source in sources:
            study = folder / f"{source.slug}--{target.slug}"
            if not (study / "study.json").is_file():
                continue
            try:
                summary = summarize_study(study)
            except OutputError:
                continue  # not finished yet
            for condition, data in summary["metrics"]["conditions"].items():
                if condition == summary["metrics"].get("reference"):
                    continue
                cells.setdefault(condition, {}).setdefault(str(source), {})[str(target)] = {
                    key: data.get(key) for key in ("transfer_ratio", "jumpstart", "verdict")}
    result = {"sources": [str(s) for s in sources], "targets": [str(t) for t in targets],
              "cells": cells}
    atomic_write_json(folder / "matrix.json", result)
    atomic_write_text(folder / "matrix.md", matrix_markdown(result, record.get("command", "")))
    if cells:
        from .report import write_matrix_figure

        write_matrix_figure(folder, result)
    return result


def matrix_markdown(result: dict[str, Any], command: str = "") -> str:
    lines = ["# Transfer matrix", ""]
    for condition, rows in result["cells"].items():
        for key, title in (("transfer_ratio", "transfer ratio (area vs scratch)"),
                           ("jumpstart", "jumpstart (normalized score at step 0 vs scratch)")):
            lines += [f"## {condition}: {title}", "",
                      "| source \\ target | " + " | ".join(f"`{t}`" for t in result["targets"])
                      + " |", "|---|" + "---|" * len(result["targets"])]
            for source in result["sources"]:
                cells = [metrics.format_estimate(rows.get(source, {}).get(target, {}).get(key)
                                                 or {}) if rows.get(source, {}).get(target)
                         else "—" for target in result["targets"]]
                lines.append(f"| `{source}` | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["95% bootstrap intervals over seeds; each cell is one study in this folder."]
    if command:
        lines += ["", "Reproduce:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def compare_studies(studies: list[Path]) -> dict[str, Any]:
    """Every condition of every study in one table (rows: study / condition)."""
    from .report import summarize_study

    rows = []
    for study in studies:
        summary = summarize_study(study)
        reference = summary["metrics"].get("reference")
        measured = summary["metrics"]["conditions"]
        for condition, runs in summary["runs"].items():
            data = measured.get(condition, {})
            label = condition if condition in measured else (
                f"{condition} (no finished runs: {len(runs.get('failed', []))} failed)")
            rows.append({"study": study.name, "source": summary["source"],
                         "target": summary["target"], "condition": label,
                         "reference": condition == reference, **{
                             key: data.get(key) for key in (
                                 "jumpstart", "time_to_threshold", "speedup",
                                 "transfer_ratio", "asymptote")}})
    return {"studies": [str(s) for s in studies], "rows": rows}


_COMPARE_COLUMNS = (("jumpstart", metrics.format_estimate),
                    ("time_to_threshold", metrics.format_time_to_threshold),
                    ("speedup", metrics.format_speedup),
                    ("transfer_ratio", metrics.format_estimate),
                    ("asymptote", metrics.format_estimate))


def _compare_cells(row: dict[str, Any]) -> list[str]:
    cells = [row["study"], f"{row['source']} → {row['target']}", row["condition"]]
    for key, formatter in _COMPARE_COLUMNS:
        value = row.get(key)
        cells.append(formatter(value) if value else ("(reference)" if row["reference"] else "—"))
    return cells


COMPARE_HEADERS = ["study", "source → target", "condition", "jumpstart", "time to threshold",
                   "speedup vs scratch", "transfer ratio", "asymptote"]


def compare_table(result: dict[str, Any]) -> Table:
    table = Table(title="studies compared (95% bootstrap CIs over seeds)", title_justify="left")
    for header in COMPARE_HEADERS:
        table.add_column(header, overflow="fold")
    for row in result["rows"]:
        table.add_row(*(escape(cell) for cell in _compare_cells(row)))
    return table


def compare_markdown(result: dict[str, Any]) -> str:
    lines = ["# Studies compared", "", "| " + " | ".join(COMPARE_HEADERS) + " |",
             "|" + "---|" * len(COMPARE_HEADERS)]
    lines += ["| " + " | ".join(_compare_cells(row)) + " |" for row in result["rows"]]
    return "\n".join(lines) + "\n"
