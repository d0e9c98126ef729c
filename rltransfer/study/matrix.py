"""The source x target transfer matrix: running every pair, and its summary (matrix.json,
matrix.md, matrix.png). Comparing finished studies is `rltransfer.report.compare`.

A matrix runs every source x target study into one folder. Sources are trained once (the
source cache) and each target's scratch runs once (the scratch cache), so an S x T matrix
trains S sources, T scratch baselines and S x T transfer conditions.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console

from ..errors import ConfigError, OutputError
from ..io_utils import atomic_write_json, atomic_write_text, read_json
from ..report import metrics
from ..report import verdict as verdicts
from ..report.metrics import MATRIX_METRICS, format_claim
from ..report.sweep_figure import sweep_series
from ..specs import EnvSpec, split_top_level
from ..strategies.registry import REFERENCE
from .execution import Execution
from .study_spec import StudySpec, flat_spec, flat_values

if TYPE_CHECKING:
    from ..report.summary import StudySummary
    from .plan import Plan


def parse_env_list(text: str, option: str = "ENVS") -> list[EnvSpec]:
    """Split 'A,B:x=1,y=2;C' into env specs: ';' always separates; ',' separates unless the
    next piece is a name=value parameter of the env before it. A ``name=grid(low,high,n)``
    parameter expands the env into n envs (`expand_grids`); `option` names the list in errors."""
    pieces: list[str] = []
    for part in split_top_level(text, ";"):
        for token in split_top_level(part):
            token = token.strip()
            if not token:
                continue
            if "=" in token and ":" not in token and pieces and ":" in pieces[-1]:
                pieces[-1] += "," + token  # a further parameter of the previous env
            else:
                pieces.append(token)
    if not pieces:
        raise ConfigError(f"{option} {text!r} names no environment: give e.g. "
                          f"{option} CartPole-v1,Acrobot-v1")
    specs = [EnvSpec.parse(one) for piece in pieces for one in expand_grids(piece, option)]
    seen: set[str] = set()
    for spec in specs:  # two equal envs would share one study folder
        if str(spec) in seen:
            raise ConfigError(f"{spec} is given twice in {option} (after expanding grids): "
                              "give each environment once")
        seen.add(str(spec))
    return specs


_GRID_RE = re.compile(r"(?<![\w.])([A-Za-z_][\w.]*)\s*=\s*grid\s*\(([^()]*)\)")
GRID_DIGITS = 6
"""Grid values are rounded to the significant digits env labels and study folders show
(``:g``): 0.3, not 0.30000000000000004, and a value is the one its label names."""

MAX_GRID_POINTS = 100
"""Points one grid may have: each point is a study per source (or target)."""


def expand_grids(text: str, option: str = "ENVS") -> list[str]:
    """One env text per point of its grids: ``length=grid(low,high,n)`` is n values evenly
    spaced from low to high, both included (numpy.linspace). Several grids in one env expand
    to their Cartesian product, the first grid outermost; fixed parameters stay as given."""
    matches = list(_GRID_RE.finditer(text))
    if not matches:
        return [text]
    axes = [_grid_values(match, option) for match in matches]
    texts = []
    for values in itertools.product(*axes):
        pieces, end = [], 0
        for match, value in zip(matches, values, strict=True):
            pieces += [text[end:match.start()], f"{match.group(1)}={value!r}"]
            end = match.end()
        texts.append("".join(pieces) + text[end:])
    return texts


def _grid_values(match: re.Match[str], option: str) -> list[float | int]:
    where = f"{match.group(0)} in {option}"
    fix = "write grid(low,high,n), e.g. grid(0.25,2.0,8)"
    args = [a.strip() for a in match.group(2).split(",")]
    if len(args) != 3:
        raise ConfigError(f"{where} needs three numbers (low, high, points), "
                          f"not {len(args)}: {fix}")
    try:
        low, high, points = (float(a) for a in args)
    except ValueError:
        raise ConfigError(f"{where} has a value that is not a number: {fix}") from None
    if not all(math.isfinite(v) for v in (low, high, points)):
        raise ConfigError(f"{where} has a value that is not a finite number: {fix}")
    if not points.is_integer():
        raise ConfigError(f"{where} needs a whole number of points, not {args[2]}: "
                          "write grid(low,high,n) with n a whole number >= 2")
    if points < 2:
        raise ConfigError(f"{where} needs at least 2 points: write grid(low,high,n) with "
                          "n >= 2")
    if not low < high:
        raise ConfigError(f"{where} needs low < high: write grid(low,high,n), e.g. "
                          f"grid({args[1]},{args[0]},{args[2]})" if low > high else
                          f"{where} needs low < high: {fix}")
    if points > MAX_GRID_POINTS:
        raise ConfigError(f"{where} has {points:g} points, each a study: give at most "
                          f"{MAX_GRID_POINTS} per grid")
    values: list[float | int] = [float(f"{v:.{GRID_DIGITS}g}")
                                 for v in np.linspace(low, high, int(points))]
    if len(set(values)) < len(values):
        raise ConfigError(f"{where} has points closer than {GRID_DIGITS} significant digits, "
                          "which would name the same env: widen the range or use fewer points")
    if _whole(args[0]) and _whole(args[1]) and all(float(v).is_integer() for v in values):
        # grid(8,16,3) over a constructor's int argument: 8, 12, 16, not 8.0 (a catalog
        # family's values become floats anyway, EnvSpec.parse)
        values = [int(v) for v in values]
    return values


def _whole(text: str) -> bool:
    return text.lstrip("+-").isdigit()


def matrix_specs(base: StudySpec, sources: list[EnvSpec],
                 targets: list[EnvSpec]) -> tuple[Path, list[StudySpec]]:
    """The matrix folder and one study spec per source x target pair (targets outer)."""
    if REFERENCE not in base.transfer.conditions:
        raise ConfigError("a transfer matrix compares against scratch: include scratch in "
                          "--conditions")
    name = base.output.name or f"matrix-{base.agent.algo}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = Path(base.output.out) / name
    specs = [base.update(source=source, target=target, out=str(folder),
                         name=f"{source.slug}--{target.slug}")
             for target in targets for source in sources]
    return folder, specs


def run_matrix(base: StudySpec, sources: list[EnvSpec], targets: list[EnvSpec], *,
               command: str = "", console: Console | None = None,
               execution: Execution | None = None, resume: bool = False) -> Path:
    """Run every pair (checking all of them first), then write matrix.md and matrix.json.

    With `resume`, an interrupted matrix of the same sources, targets and options is
    finished: its done studies are skipped untouched, the others resumed (`run_study`)."""
    from .plan import plan
    from .preflight import check_success_score, check_writable
    from .runner import run_study
    from .study_folder import check_same_study, existing_study

    if resume and base.output.name is None:
        raise ConfigError("matrix --resume needs --name NAME, the matrix to finish (the "
                          "folder under --out that holds its matrix_spec.json)")
    console = console or Console()
    folder, specs = matrix_specs(base, sources, targets)
    spec_file = folder / "matrix_spec.json"
    record = {"command": command, "sources": [s.to_dict() for s in sources],
              "targets": [t.to_dict() for t in targets], "base": base.to_dict()}
    started = resume and spec_file.is_file()
    if started:
        check_same_matrix(folder, read_json(spec_file), record)
    elif folder.exists() and any(folder.iterdir()):
        raise OutputError(
            f"{folder} already exists and is not empty: pass --resume to finish the matrix "
            f"in it, or choose another --name" if not resume else
            f"{folder} exists and is not a matrix folder (no matrix_spec.json): choose "
            f"another --name")
    plans = [plan(spec) for spec in specs]  # every bad input fails before anything trains
    done = []
    for plan_ in plans:
        on_disk = started and plan_.study_dir.is_dir()
        existing = existing_study(plan_.study_dir) if on_disk else None
        if existing is not None:
            check_same_study(plan_, existing, plan_.study_dir)
        done.append(existing is not None and _finished(plan_, existing))
    check_writable(folder)
    check_success_score(plans)  # a target without success: refused before the first file
    if not started:
        if resume:
            console.print(f"--resume: {folder} has no matrix yet; starting it", markup=False,
                          highlight=False)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(spec_file, record)
    for index, (spec, finished) in enumerate(zip(specs, done, strict=True), 1):
        console.print(f"matrix study {index}/{len(specs)}: {spec.env.source} → {spec.env.target}"
                      + (": done before this resume (0 training steps)" if finished else ""),
                      markup=False, highlight=False)
        if not finished:  # a done study is left as it is, its study.json included
            run_study(spec, command=command, console=console, execution=execution,
                      resume=resume, resume_command=_resume_command(command, folder))
    return folder


def _resume_command(command: str, folder: Path) -> str | None:
    """The command that finishes this matrix: its own, with --resume (and the --name and
    --out of its folder when it was not given them); None without a command."""
    if not command:
        return None
    words = shlex.split(command)
    if "--name" not in words:
        words += ["--name", folder.name]
    if "--out" not in words:
        words += ["--out", str(folder.parent)]
    return shlex.join([*words, "--resume"])


_SAME_MATRIX_IGNORED = ("source", "target", "out", "name", "retrain_source")
"""Base options a resumed matrix does not compare: the pairs are its sources and targets,
the folder is the one given, and --retrain-source is allowed as on `run --resume`."""


def check_same_matrix(folder: Path, before: dict[str, Any], now: dict[str, Any]) -> None:
    """Stop with a one-line error when `folder`'s matrix_spec.json (`before`) has other
    sources, targets or study options than the matrix given `now` (execution options, such
    as --workers, are not in it, so they may differ)."""
    def table(record: dict[str, Any]) -> dict[str, Any]:
        base = flat_spec(json.loads(json.dumps(record.get("base", {}))))
        values = {k: v for k, v in base.items() if k not in _SAME_MATRIX_IGNORED}
        return {"sources": [str(EnvSpec.from_dict(s)) for s in record["sources"]],
                "targets": [str(EnvSpec.from_dict(t)) for t in record["targets"]],
                **dict(sorted(values.items()))}

    old, new = table(before), table(now)
    changed = [key for key in {**old, **new} if old.get(key) != new.get(key)]
    if changed:
        key = changed[0]
        command = before.get("command") or f"the options in {folder / 'matrix_spec.json'}"
        raise OutputError(
            f"{folder} was started with other options ({key}: {old.get(key)!r} there, "
            f"{new.get(key)!r} now): resume it with {command} --resume, or choose another "
            f"--name for a new matrix")


def _finished(plan_: Plan, record: dict[str, Any]) -> bool:
    """Whether a study ended with every target run done: resuming it would train nothing."""
    from .study_folder import run_states

    states = run_states(plan_.study_dir, plan_.target_runs())
    return record.get("ended") is not None and set(states.values()) == {"done"}


def summarize_matrix(folder: Path) -> dict[str, Any]:
    """Collect every pair's summary into matrix.json, matrix.md and matrix.png, with the
    verdicts Holm-corrected across every condition x cell of the matrix; a sweep (targets or
    sources varying one parameter of one env) is named in matrix.json's ``sweep`` and drawn
    as line plots in matrix.png. The studies'
    own files (summary.json, report.md, ...) are read, never rewritten."""
    from ..report.build import study_summary

    spec_path = folder / "matrix_spec.json"
    if not spec_path.is_file():
        raise OutputError(f"{folder} is not a matrix folder (no matrix_spec.json)")
    record = read_json(spec_path)
    sources = [EnvSpec.from_dict(s) for s in record["sources"]]
    targets = [EnvSpec.from_dict(t) for t in record["targets"]]
    base = flat_values(record.get("base", {}))  # flat before the nested study spec, or nested
    alpha = float(base.get("alpha", metrics.DEFAULT_ALPHA))
    summaries: list[tuple[EnvSpec, EnvSpec, StudySummary]] = []
    for target in targets:
        for source in sources:
            study = folder / f"{source.slug}--{target.slug}"
            if not (study / "study.json").is_file():
                continue
            try:
                summary, _, _ = study_summary(study)
            except OutputError:
                continue  # not finished yet
            summaries.append((source, target, summary))
    compared = [c for c in base.get("conditions", []) if c != REFERENCE]
    # cells not finished yet, or without scratch runs, count with p = 1: m is the planned
    # family's size
    final = all(summary.sequential is None or summary.sequential.done
                for _, _, summary in summaries)  # --seeds auto: every study took its last look
    judged = verdicts.judge([summary.metrics for _, _, summary in summaries], alpha,
                            planned=len(compared) * len(sources) * len(targets), final=final)
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for (source, target, summary), verdict in zip(summaries, judged, strict=True):
        for condition, data in summary.conditions.items():
            if condition == summary.reference:
                continue
            cell = {key: (data.estimates[key].to_dict() if key in data.estimates else None)
                    for key, _ in MATRIX_METRICS}
            cell["verdict"] = verdict[condition].to_dict()
            cells.setdefault(condition, {}).setdefault(str(source), {})[str(target)] = cell
    result = {"sources": [str(s) for s in sources], "targets": [str(t) for t in targets],
              "alpha": alpha, "verdict_rule": verdicts.rule(alpha), "cells": cells,
              "similarity": matrix_similarity(summaries, cells, alpha)}
    sweep = sweep_series(result, record)  # a swept parameter: its name and values
    result["sweep"] = sweep.to_dict() if sweep else None
    atomic_write_json(folder / "matrix.json", result)
    atomic_write_text(folder / "matrix.md", matrix_markdown(result, record.get("command", "")))
    if cells:
        from ..report.build import write_matrix_figure

        write_matrix_figure(folder, result, sweep)
    return result


def matrix_markdown(result: dict[str, Any], command: str = "") -> str:
    lines = ["# Transfer matrix", ""]
    for condition, rows in result["cells"].items():
        tables = (*MATRIX_METRICS, ("verdict", "verdict (Holm across every cell)"))
        for key, title in tables:
            lines += [f"## {condition}: {title}", "",
                      "| source \\ target | " + " | ".join(f"`{t}`" for t in result["targets"])
                      + " |", "|---|" + "---|" * len(result["targets"])]
            for source in result["sources"]:
                cells = [_matrix_cell(rows.get(source, {}).get(target), key, format_claim)
                         for target in result["targets"]]
                lines.append(f"| `{source}` | " + " | ".join(cells) + " |")
            lines.append("")
    lines += similarity_markdown(result.get("similarity"))
    level = metrics.percent(1 - result.get("alpha", metrics.DEFAULT_ALPHA))
    lines += [f"{level} intervals over seeds; "
              "each cell is one study in this folder.", "",
              f"How verdicts are decided: {result.get('verdict_rule', '')}"]
    if command:
        lines += ["", "Reproduce:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def matrix_similarity(summaries: list[tuple[EnvSpec, EnvSpec, StudySummary]],
                      cells: dict[str, dict[str, dict[str, dict[str, Any]]]],
                      alpha: float) -> dict[str, Any]:
    """matrix.json's ``similarity``: each pair's measures (`summary.Similarity`) and, per
    condition and measure, Spearman's rank correlation between the measure and the pair's
    area difference against scratch, with its interval at 1 - alpha
    (`report.rank_correlation`)."""
    from ..report.rank_correlation import METHOD, min_pairs, rank_correlation
    from ..report.summary import Similarity

    pairs = []
    for source, target, summary in summaries:
        found = summary.similarity
        row: dict[str, Any] = {"source": str(source), "target": str(target)}
        row.update(found.to_dict() if found is not None else
                   {"skipped": "not recorded (a study started before it was measured)"})
        pairs.append(row)
    correlations: dict[str, dict[str, Any]] = {}
    for condition, rows in cells.items():
        areas = [((rows.get(p["source"], {}).get(p["target"]) or {}).get("auc_difference")
                  or {}).get("point") for p in pairs]
        correlations[condition] = {
            key: rank_correlation([p.get(key) for p in pairs], areas, 1 - alpha).to_dict()
            for key, _ in Similarity.MEASURES}
    return {"pairs": pairs, "correlations": correlations, "level": 1 - alpha,
            "method": METHOD, "min_pairs": min_pairs(1 - alpha)}


def similarity_markdown(found: dict[str, Any] | None) -> list[str]:
    """matrix.md's similarity sections: each pair's measures, then their rank correlation
    with each condition's area difference."""
    from ..report.rank_correlation import Correlation
    from ..report.summary import Similarity

    if not found or not found["pairs"]:
        return []
    lines = ["## How similar are source and target?", "",
             "| source → target | zero-shot return | zero-shot (normalized) | classifier "
             "accuracy | feature distance |", "|---|---|---|---|---|"]
    for pair in found["pairs"]:
        values = [_number(pair.get(key), digits) for key, digits in (
            ("zero_shot", ".4g"), ("zero_shot_normalized", ".2f"),
            ("classifier_accuracy", ".2f"), ("feature_distance", ".3g"))]
        if pair.get("skipped"):
            values = [f"not measured: {pair['skipped']}", "—", "—", "—"]
        lines.append(f"| `{pair['source']}` → `{pair['target']}` | " + " | ".join(values)
                     + " |")
    level = metrics.percent(found["level"])
    lines += ["", "## Does similarity predict transfer?", "",
              "Spearman's rank correlation between each measure and the area difference "
              f"(condition − scratch) over the pairs, with its {level} interval:", "",
              "| condition | " + " | ".join(title for _, title in Similarity.MEASURES) + " |",
              "|---|" + "---|" * len(Similarity.MEASURES)]
    for condition, measures in found["correlations"].items():
        lines.append(f"| {condition} | " + " | ".join(
            Correlation.from_dict(measures[key]).text() for key, _ in Similarity.MEASURES)
                     + " |")
    lines += ["", f"Interval: {found['method']}; none below {found['min_pairs']} pairs, where "
              "even a perfect ranking's would include 0. Its coverage was checked "
              "by simulation (benchmarks/similarity_coverage.py): at least 94% for 6 to 30 "
              "independent pairs, conservative below 12. Pairs that share a source or a "
              "target are not independent: in a simulated 4 × 4 matrix with strong shared "
              "effects it covered 92%. Not corrected for the several measures and "
              "conditions.", ""]
    return lines


def _number(value: float | None, digits: str) -> str:
    return "—" if value is None else format(value, digits)


def _matrix_cell(cell: dict[str, Any] | None, key: str, claim: Any) -> str:
    if not cell:
        return "—"
    value = cell.get(key) or {}
    if key == "verdict":
        holm = value.get("p_holm")
        return value.get("label", "—") + (f" (Holm p = {holm:.3g})" if holm is not None else "")
    if key == "auc_difference":
        return claim(value)
    return metrics.format_estimate(value, signed=True)
