"""The package's layout: stages in folders, the old documented import paths still working."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rltransfer

PACKAGE = Path(rltransfer.__file__).parent
TOP = {"__init__", "__main__", "api", "cli", "env_factory", "errors", "io_utils", "pixels",
       "specs"}
STAGES = {"study", "training", "strategies", "report"}


@pytest.mark.parametrize("old,new", sorted(rltransfer.MOVED.items()))
def test_an_old_import_path_is_the_moved_module_itself(old, new):
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(old).__spec__.name == new  # its own spec, not the alias's


def test_the_old_training_names_still_import():
    from rltransfer.training import build_model, frozen_features, train_run
    from rltransfer.training.run import build_model as built
    from rltransfer.training.run import train_run as trained

    assert (train_run, build_model) == (trained, built)
    assert callable(frozen_features)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        rltransfer.training.nothing  # noqa: B018


def test_only_shared_modules_and_entry_points_stay_at_the_top():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == TOP
    assert folders == STAGES


def test_the_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Layout")
    layout = readme[start:readme.index("```\n", readme.index("```", start) + 3)]  # its tree
    for path in PACKAGE.rglob("*.py"):
        if path.stem.startswith("__"):
            continue
        named = re.search(rf"(?<![\w./-]){path.stem}(?![\w-])", layout)
        assert named, f"README's layout does not name {path}"


def test_the_command_line_does_not_import_the_stages_it_does_not_use():
    code = ("import json, sys, rltransfer.cli; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('rltransfer.'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = json.loads(done.stdout)
    assert "rltransfer.training.run" not in loaded and "rltransfer.report.build" not in loaded
