"""Training one run: algorithms and presets, building the SB3 model, reading source weights
safely and copying them onto a target, encoders for pixels, optimizer groups, VecNormalize
statistics, checkpoints, and the run's own files (`rltransfer.training.run`).

``from rltransfer.training import train_run`` (and `build_model`, `frozen_features`,
`RunResult`) keep working: they are `rltransfer.training.run`'s, imported when first used.
"""

from __future__ import annotations

from typing import Any

_RUN = ("train_run", "build_model", "frozen_features", "RunResult", "save_model")


def __getattr__(name: str) -> Any:
    if name in _RUN:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'rltransfer.training' has no attribute {name!r}")
