"""Comparing studies: every condition of several study folders in one table (`compare`:
compare.md, compare.json, and compare.png from `figures.write_compare_figure`).

Each row keeps its own study's verdict (Holm within that study). The studies are read as the
report reads them (`build.study_summary`) and their files are never rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .build import study_summary
from .fit_table import FitTable
from .metrics import METRICS


def compare_studies(studies: list[Path]) -> dict[str, Any]:
    """Every condition of every study in one table (rows: study / condition), each with its
    own study's verdict (Holm within that study): compare.json's content."""
    seen: dict[Path, Path] = {}
    for study in studies:  # the same study twice would double its rows
        first = seen.get(study.resolve())
        if first is not None:
            twice = (f"{study} is given twice" if str(first) == str(study) else
                     f"{first} and {study} are the same study")
            raise ConfigError(f"{twice}: give each study once")
        seen[study.resolve()] = study
    rows = []
    for study in studies:
        summary, _, _ = study_summary(study)
        for condition, runs in summary.runs.items():
            data = summary.conditions.get(condition)
            label = condition if data is not None else (
                f"{condition} (no finished runs: {len(runs.failed)} failed)")
            estimates = data.estimates if data is not None else {}
            rows.append({"study": study.name, "source": summary.source,
                         "target": summary.target, "condition": label,
                         "reference": condition == summary.reference,
                         "verdict": (data.verdict.label if data is not None
                                     and data.verdict is not None else None),
                         **{metric.key: (estimates[metric.key].to_dict()
                                         if metric.key in estimates else None)
                            for metric in METRICS}})
    return {"studies": [str(s) for s in studies], "rows": rows}


def _compare_cells(row: dict[str, Any]) -> list[str]:
    cells = [row["study"], f"{row['source']} → {row['target']}", row["condition"]]
    for metric in METRICS:
        value = row.get(metric.key)
        cells.append(metric.formatter(value) if value else
                     ("(reference)" if row["reference"] else "—"))
    return cells + [row.get("verdict") or "—"]


def compare_headers() -> list[str]:
    return (["study", "source → target", "condition"] + [m.title for m in METRICS]
            + ["verdict (Holm within its study)"])


def compare_table(result: dict[str, Any]) -> FitTable:
    """The compared studies for the terminal: a column per metric where they fit on one line,
    else a block per study and condition."""
    return FitTable("studies compared (intervals over seeds; verdicts from each study's "
                    "primary claim)", compare_headers(),
                    [_compare_cells(row) for row in result["rows"]], heading=(0, 2))


def compare_markdown(result: dict[str, Any]) -> str:
    headers = compare_headers()
    lines = ["# Studies compared", "", "| " + " | ".join(headers) + " |",
             "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_compare_cells(row)) + " |" for row in result["rows"]]
    lines += ["", "Each study's verdict is Holm-corrected across its own conditions only; "
              "comparing verdicts across studies is itself a further comparison."]
    return "\n".join(lines) + "\n"
