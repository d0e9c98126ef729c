"""TensorBoard views of a study: per-condition aggregate runs, a custom-scalars layout, the
study's hyperparameters and its summary table; and starting TensorBoard on a study.

`runs/<study>/_aggregate/<condition>/` holds, at each evaluation step (target env steps),
the across-seed mean and the 95% interval bounds of the evaluation return, raw and
normalized. The custom-scalars layout (TensorBoard's Margin charts) shows every condition's
mean with its band in one chart, so transfer vs scratch reads at a glance.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

AGGREGATE_DIR = "_aggregate"
# (tag prefix, chart title) of the aggregate scalars
SERIES = (("aggregate/return", "evaluation return: mean and 95% CI over seeds"),
          ("aggregate/normalized", "normalized score (0 = random, 1 = threshold): mean and "
                                   "95% CI over seeds"))

Aggregate = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # steps, mean, low, high


def layout(conditions: list[str]) -> dict[str, Any]:
    """The custom-scalars layout: one Margin chart per series, covering every condition's
    aggregate run (the chart plots each run that has the tags), plus one chart per condition."""
    charts = {title: ["Margin", [f"{tag}/mean", f"{tag}/low", f"{tag}/high"]]
              for tag, title in SERIES}
    per_condition = {f"{condition}: {SERIES[0][1]}":
                     ["Margin", [f"{SERIES[0][0]}/mean", f"{SERIES[0][0]}/low",
                                 f"{SERIES[0][0]}/high"]] for condition in conditions}
    return {"transfer vs scratch (all conditions)": charts,
            "conditions": per_condition}


def write_aggregates(study_dir: Path, raw: Mapping[str, Aggregate],
                     normalized: Mapping[str, Aggregate], hparams: Mapping[str, Any],
                     metrics: Mapping[str, Mapping[str, float]], table_markdown: str) -> Path:
    """Write `_aggregate/<condition>` runs (replacing earlier ones) and return the folder."""
    from torch.utils.tensorboard import SummaryWriter  # TensorBoard's own writer, via torch

    root = study_dir / AGGREGATE_DIR
    shutil.rmtree(root, ignore_errors=True)  # regenerated from the files, never appended to
    for condition, series in raw.items():
        writer = SummaryWriter(log_dir=str(root / condition))
        try:
            for (tag, _), values in zip(SERIES, (series, normalized[condition]), strict=True):
                for step, mean, low, high in zip(*values, strict=True):
                    step = int(step)
                    writer.add_scalar(f"{tag}/mean", float(mean), step)
                    writer.add_scalar(f"{tag}/low", float(low), step)
                    writer.add_scalar(f"{tag}/high", float(high), step)
            writer.add_text("summary", table_markdown)
            writer.add_hparams({**_flat(hparams), "condition": condition},
                               {f"hparam/{k}": v for k, v in metrics.get(condition, {}).items()},
                               run_name="hparams")
        finally:
            writer.close()
    writer = SummaryWriter(log_dir=str(root))
    try:
        writer.add_custom_scalars(layout(list(raw)))
    finally:
        writer.close()
    return root


def _flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """hparams values must be numbers, strings or booleans."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def start_tensorboard(logdir: Path, port: int) -> tuple[Any, str]:
    """Start TensorBoard on loopback for `logdir`; return (the server, its URL)."""
    from tensorboard import program

    if not logdir.is_dir():
        raise OutputError(f"{logdir} does not exist: give runs/<study> or the runs folder")
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--host", "127.0.0.1",
                          "--port", str(port)])
    try:
        url = board.launch()
    except program.TensorBoardPortInUseError:
        raise OutputError(f"port {port} is already in use (another TensorBoard?): "
                          f"pass --port N with a free port") from None
    return board, url
