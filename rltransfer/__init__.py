"""rltransfer: policy transfer studies (`python -m rltransfer run SOURCE TARGET`).

From Python: ``rltransfer.run(source, target, **options)`` runs a study with the options of
the `run` command and returns a `Study`; ``rltransfer.load(path)`` reads a study folder
(`rltransfer.api`). They are imported when first used, so the command line starts as fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Study, load, run

__all__ = ["Study", "load", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'rltransfer' has no attribute {name!r}")
