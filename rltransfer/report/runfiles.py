"""The reader of the run-folder format: what a run writes, read back without torch or SB3.

Training (rltransfer.training.run) writes these files; the report stage, `compare` and the
runner's checks read them through this module, so reading a finished, interrupted or copied
study never imports torch or Stable-Baselines3.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError
from ..io_utils import read_json
from ..study.study_spec import STUDY_FORMAT

# evaluations.csv: one row per evaluation, the first at timesteps = 0 (before any training)
EVAL_COLUMNS = ("timesteps", "mean_return", "std_return", "n_episodes", "wall_time")
# ... and, where the env reports success (`rltransfer.training.success`), the share of the
# evaluation's episodes that succeeded. Optional: written only by envs that report success,
# absent from run folders written before it was recorded; read as None where absent.
SUCCESS_COLUMN = "success_rate"
SCORE_COLUMNS = {"return": "mean_return", "success": SUCCESS_COLUMN}
"""A study's score (``--score``) -> the evaluations.csv column its curves read."""


class NoSuccessColumn(OutputError):
    """A study scored by success reads a run folder that recorded no success rate."""


class DamagedFile(OutputError):
    """A run or study file that cannot be read as what it should be (edited, or damaged on
    disk: the study writes every file atomically, so an interruption never leaves one)."""


def _damaged(path: Path, problem: str) -> DamagedFile:
    return DamagedFile(f"{path} is damaged ({problem}): restore it from a copy, or delete the "
                       f"run folder {path.parent} and resume the study to train that run again")


def read_evaluations(path: str | Path, score: str = "return") -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, mean_return) from an evaluations.csv, or with ``score="success"``
    (timesteps, success_rate); `DamagedFile` when a row is not numbers (or cut short), or
    its steps do not start at 0 and increase; `NoSuccessColumn` when success is asked of a
    file that has no success rate at some evaluation."""
    rows = read_rows(Path(path), check_curve=True)
    column = SCORE_COLUMNS[score]
    if any(r[column] is None for r in rows):
        raise NoSuccessColumn(
            f"{path} has no {column} column (written before success rates were recorded, or "
            f"its env reports no success): delete the run folder {Path(path).parent} and "
            f"resume the study to train that run again, or use --score return")
    steps = np.array([r["timesteps"] for r in rows], dtype=np.int64)
    values = np.array([r[column] for r in rows], dtype=np.float64)
    return steps, values


def has_success(path: Path) -> bool:
    """Whether an evaluations.csv records a success rate at every evaluation."""
    rows = read_rows(path)
    return bool(rows) and all(r[SUCCESS_COLUMN] is not None for r in rows)


def diverged_curve(path: Path, at: int, score: str = "return") -> tuple[np.ndarray, np.ndarray]:
    """A diverged run's curve: its evaluations before step `at`, then NaN at `at` (or just
    after its last evaluation)."""
    if path.is_file():
        steps, returns = read_evaluations(path, score)
        keep = steps < at
        steps, returns = steps[keep], returns[keep]
    else:
        steps, returns = np.zeros(0, dtype=np.int64), np.zeros(0)
    if steps.size == 0:  # diverged before its first evaluation: NaN from the start
        return np.array([0], dtype=np.int64), np.array([np.nan])
    end = max(int(at), int(steps[-1]) + 1)
    return np.append(steps, end), np.append(returns, np.nan)


_TYPES = {"timesteps": int, "mean_return": float, "std_return": float, "n_episodes": int,
          "wall_time": float}


def read_rows(path: Path, check_curve: bool = False) -> list[dict[str, Any]]:
    """Every row of an evaluations.csv, typed; [] when the file does not exist;
    `DamagedFile` naming the file and line when a row is not numbers or is cut short. With
    `check_curve`, also when it has no row, or its steps do not start at 0 and increase."""
    if not path.is_file():
        return []
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or set(EVAL_COLUMNS) - set(reader.fieldnames):
                raise _damaged(path, f"its header is not {','.join(EVAL_COLUMNS)}")
            for row in reader:
                rows.append(_typed(row, path, reader.line_num))
    except (UnicodeDecodeError, csv.Error) as err:
        raise _damaged(path, f"not a CSV file: {err}") from None
    if check_curve:
        steps = [row["timesteps"] for row in rows]
        if not steps:
            raise _damaged(path, "no evaluation in it")
        if steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise _damaged(path, f"its timesteps {steps[:4]}... do not start at 0 and increase")
    return rows


def _typed(row: dict[str, Any], path: Path, line: int) -> dict[str, Any]:
    if None in row or any(row.get(name) in (None, "") for name in EVAL_COLUMNS):
        raise _damaged(path, f"line {line} is cut short or has extra fields")
    try:
        typed = {name: kind(row[name]) for name, kind in _TYPES.items()}
        success = row.get(SUCCESS_COLUMN)
        typed[SUCCESS_COLUMN] = float(success) if success not in (None, "") else None
        return typed
    except ValueError:
        text = ",".join(str(row[name]) for name in EVAL_COLUMNS)
        raise _damaged(path, f"line {line} is not numbers: {text!r}") from None


def read_status(path: Path) -> dict[str, Any]:
    """A run's status.json ({} when there is none); `DamagedFile` when it is not a JSON
    object."""
    if not path.is_file():
        return {}
    try:
        status = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise _damaged(path, f"not JSON: {err}") from None
    if not isinstance(status, dict):
        raise _damaged(path, "not a JSON object")
    return status


def read_study(study_dir: Path) -> dict[str, Any]:
    """study.json of a study folder, checked: a JSON object with a spec, in a format this
    version reads (`STUDY_FORMAT` or older). One-line errors that name the file."""
    path = study_dir / "study.json"
    if not path.is_file():
        raise OutputError(f"{study_dir} is not a study folder (no study.json): give runs/<study>")
    try:
        record = read_json(path)
    except (ValueError, UnicodeDecodeError) as err:
        raise OutputError(f"{path} is damaged (not JSON: {err}): restore it from a copy; the "
                          f"study cannot be read or resumed without it") from None
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise OutputError(f"{path} is damaged (no study spec in it): restore it from a copy; "
                          f"the study cannot be read or resumed without it")
    version = record.get("format", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise OutputError(f"{path} is damaged (its format {version!r} is not a version "
                          f"number): restore it from a copy")
    if version > STUDY_FORMAT:
        raise OutputError(f"{path} is in format {version}, newer than this rltransfer reads "
                          f"(up to {STUDY_FORMAT}): upgrade rltransfer to read or resume it")
    return record


OUTSIDE_BUDGET = "env_steps_outside_budget"  # = strategies.hooks.OUTSIDE_BUDGET (torch-free)


def outside_budget(run_dir: Path) -> dict[str, int]:
    """The env steps a run took besides its target budget, by env (``{"source": 25000}``),
    from its transfer.json; {} when it took none or has no transfer.json."""
    path = run_dir / "transfer.json"
    if not path.is_file():
        return {}
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict):
        return {}
    steps = record.get(OUTSIDE_BUDGET)
    return {str(k): int(v) for k, v in steps.items()} if isinstance(steps, dict) else {}


def collect_runs(study_dir: Path, conditions: list[str],
                 score: str = "return") -> tuple[dict, dict, dict]:
    """Curves of the runs that are outcomes by condition (their `score`'s column,
    `SCORE_COLUMNS`), their run folders, and the runs not used by condition:
    ``{"failed": [{"run": "seed_3", "error": "Type: message"}],
    "diverged": ["seed_4"], "left_out": ["seed_2 (running)", ...]}``.

    Outcomes are finished runs and runs whose training diverged (status.json's
    ``diverged``): a diverged run's curve is its evaluations before it diverged, then a NaN
    evaluation at the step it diverged, which `metrics.run_metrics` completes at the worst
    its score allows. Runs that failed for another reason (killed, out of memory, an env
    exception) are not outcomes: `resume` runs them again. Left out: pending, running,
    interrupted, no status."""
    curves: dict[str, list] = {}
    folders: dict[str, list[str]] = {}
    not_used: dict[str, dict[str, list]] = {}
    for condition in conditions:
        curves[condition], folders[condition] = [], []
        failed: list[dict[str, str]] = []
        diverged: list[str] = []
        left_out: list[str] = []
        for run_dir in sorted((study_dir / condition).glob("seed_*"),
                              key=lambda p: int(p.name.split("_")[1])):
            status = read_status(run_dir / "status.json") or {"state": "missing"}
            state = status.get("state")
            csv_path = run_dir / "evaluations.csv"
            if state == "failed" and status.get("diverged"):
                curves[condition].append(diverged_curve(csv_path, int(status["diverged_at"]),
                                                        score))
                folders[condition].append(run_dir.name)
                diverged.append(run_dir.name)
            elif state == "failed":
                failed.append({"run": run_dir.name,
                               "error": str(status.get("error") or "no error recorded")})
            elif state != "done" or not csv_path.is_file():
                left_out.append(f"{run_dir.name} ({state})")
            else:
                curves[condition].append(read_evaluations(csv_path, score))
                folders[condition].append(run_dir.name)
        not_used[condition] = {"failed": failed, "diverged": diverged, "left_out": left_out}
    return curves, folders, not_used


def collect_success(study_dir: Path, folders: dict[str, list[str]],
                    diverged: dict[str, list[str]]) -> dict[str, list] | None:
    """The success-rate curves of the runs `collect_runs` used (its `folders`; `diverged`:
    those that diverged, NaN from the step they diverged, as their score curves are); None
    unless every one of them recorded a success rate (an env that reports no success, or a
    run folder written before success rates were recorded)."""
    curves: dict[str, list] = {}
    for condition, runs in folders.items():
        curves[condition] = []
        for run in runs:
            run_dir = study_dir / condition / run
            csv_path = run_dir / "evaluations.csv"
            if not has_success(csv_path):
                if run in diverged.get(condition, ()) and not read_rows(csv_path):
                    curves[condition].append(diverged_curve(csv_path, 0))  # no evaluation
                    continue
                return None
            if run in diverged.get(condition, ()):
                status = read_status(run_dir / "status.json")
                curves[condition].append(diverged_curve(csv_path, int(status["diverged_at"]),
                                                        "success"))
            else:
                curves[condition].append(read_evaluations(csv_path, "success"))
    return curves if any(curves.values()) else None
