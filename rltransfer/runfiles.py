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

# evaluations.csv: one row per evaluation, the first at timesteps = 0 (before any training)
EVAL_COLUMNS = ("timesteps", "mean_return", "std_return", "n_episodes", "wall_time")


def read_evaluations(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, mean_return) from an evaluations.csv."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = np.array([int(r["timesteps"]) for r in rows], dtype=np.int64)
    returns = np.array([float(r["mean_return"]) for r in rows], dtype=np.float64)
    return steps, returns


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every row of an evaluations.csv, typed; [] when the file does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{"timesteps": int(r["timesteps"]), "mean_return": float(r["mean_return"]),
                 "std_return": float(r["std_return"]), "n_episodes": int(r["n_episodes"]),
                 "wall_time": float(r["wall_time"])} for r in csv.DictReader(handle)]
