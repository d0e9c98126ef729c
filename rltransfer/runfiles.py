"""The reader of the run-folder format: what a run writes, read back without torch or SB3.

Training (rltransfer.training) writes these files; the report stage, `compare` and the
runner's checks read them through this module, so reading a finished, interrupted or copied
study never imports torch or Stable-Baselines3.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from .io_utils import read_json

# evaluations.csv: one row per evaluation, the first at timesteps = 0 (before any training)
EVAL_COLUMNS = ("timesteps", "mean_return", "std_return", "n_episodes", "wall_time")


def read_evaluations(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, mean_return) from an evaluations.csv."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = np.array([int(r["timesteps"]) for r in rows], dtype=np.int64)
    returns = np.array([float(r["mean_return"]) for r in rows], dtype=np.float64)
    return steps, returns


def diverged_curve(path: Path, at: int) -> tuple[np.ndarray, np.ndarray]:
    """A diverged run's curve: its evaluations before step `at`, then NaN at `at` (or just
    after its last evaluation)."""
    if path.is_file():
        steps, returns = read_evaluations(path)
        keep = steps < at
        steps, returns = steps[keep], returns[keep]
    else:
        steps, returns = np.zeros(0, dtype=np.int64), np.zeros(0)
    if steps.size == 0:  # diverged before its first evaluation: NaN from the start
        return np.array([0], dtype=np.int64), np.array([np.nan])
    end = max(int(at), int(steps[-1]) + 1)
    return np.append(steps, end), np.append(returns, np.nan)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of an evaluations.csv, typed; [] when the file does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{"timesteps": int(r["timesteps"]), "mean_return": float(r["mean_return"]),
                 "std_return": float(r["std_return"]), "n_episodes": int(r["n_episodes"]),
                 "wall_time": float(r["wall_time"])} for r in csv.DictReader(handle)]


def collect_runs(study_dir: Path, conditions: list[str]) -> tuple[dict, dict, dict]:
    """Curves of the runs that are outcomes by condition, their run folders, and the runs not
    used by condition: ``{"failed": [{"run": "seed_3", "error": "Type: message"}],
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
            status_path = run_dir / "status.json"
            status = read_json(status_path) if status_path.is_file() else {"state": "missing"}
            state = status.get("state")
            csv_path = run_dir / "evaluations.csv"
            if state == "failed" and status.get("diverged"):
                curves[condition].append(diverged_curve(csv_path, int(status["diverged_at"])))
                folders[condition].append(run_dir.name)
                diverged.append(run_dir.name)
            elif state == "failed":
                failed.append({"run": run_dir.name,
                               "error": str(status.get("error") or "no error recorded")})
            elif state != "done" or not csv_path.is_file():
                left_out.append(f"{run_dir.name} ({state})")
            else:
                curves[condition].append(read_evaluations(csv_path))
                folders[condition].append(run_dir.name)
        not_used[condition] = {"failed": failed, "diverged": diverged, "left_out": left_out}
    return curves, folders, not_used
