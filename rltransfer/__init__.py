"""rltransfer: policy transfer studies (`python -m rltransfer run SOURCE TARGET`).

From Python: ``rltransfer.run(source, target, **options)`` runs a study with the options of
the `run` command and returns a `Study`; ``rltransfer.load(path)`` reads a study folder
(`rltransfer.api`). They are imported when first used, so the command line starts as fast.

The package is laid out by stage, in the order data flows through a study:

* `rltransfer.study`: a study's planning and execution (spec, plan, pre-flight checks, the
  study folder, the scheduler and its backends, caches, the runner, the transfer matrix);
* `rltransfer.training`: training one run (algorithms, building the model, copying source
  weights, encoders, VecNormalize statistics, checkpoints);
* `rltransfer.strategies`: the transfer conditions, one module each, behind their registry;
* `rltransfer.report`: the report stage (run files, metrics, the verdict, tables, figures,
  pages), which never imports torch or SB3;
* `rltransfer.envs` (the top-level `envs/` folder): the environment catalog.

Modules that every stage uses (`specs`, `errors`, `io_utils`, `env_factory`, `pixels`) and
the entry points (`cli`, `api`) stay at the top. The import paths that the README documented
before the stages had folders (``rltransfer.training.train_run``, ``rltransfer.encoders``,
``rltransfer.metrics``...) still work: `MOVED` maps them to their new modules.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Study, load, run

__all__ = ["Study", "load", "run"]

MOVED = {
    "rltransfer.metrics": "rltransfer.report.metrics",
    "rltransfer.verdict": "rltransfer.report.verdict",
    "rltransfer.sequential": "rltransfer.report.sequential",
    "rltransfer.encoders": "rltransfer.training.encoders",
    "rltransfer.features": "rltransfer.training.features",
    "rltransfer.optim_groups": "rltransfer.training.optim_groups",
    "rltransfer.conditions": "rltransfer.strategies.registry",
}
"""Old module paths (before the stage folders) that users' code may import: each is the same
module object as its new path. ``rltransfer.training`` itself stays importable with the names
it had (`rltransfer.training.train_run`, `build_model`, `frozen_features`)."""


class _Moved(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path of `MOVED` as its new module (the very same module object)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> Any:
        module = importlib.import_module(MOVED[spec.name])
        self._spec = module.__spec__  # the import system sets __spec__: give it back after
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self._spec


if not any(isinstance(finder, _Moved) for finder in sys.meta_path):
    sys.meta_path.append(_Moved())


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'rltransfer' has no attribute {name!r}")
