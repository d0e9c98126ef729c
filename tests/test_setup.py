"""A light, quiet set-up: the package builds without setuptools warnings, `make demo`
installs the core dependencies only and `make test` every extra the tests import, and a
feature whose optional package is missing says in one line how to install it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rltransfer.errors import MissingDependencyError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# optional module a test may import -> the extra that installs it
EXTRA_OF = {"ray": "ray", "minari": "minari", "huggingface_hub": "hub", "ale_py": "atari",
            "minigrid": "minigrid", "mujoco": "mujoco", "Box2D": "box2d",
            "sb3_contrib": "contrib", "pandas": "notebook", "metaworld": "metaworld",
            "gymnasium_robotics": "robotics"}
# what, in a test file, needs which extra: an import, or making one of the extra's envs
NEEDS = {"ray": r"\bimport ray\b|importorskip\(\"ray\"\)", "minari": r"\bimport minari\b",
         "hub": r"\bhuggingface_hub\b", "atari": r"\bale_py\b|ALE/",
         "minigrid": r"\bminigrid\b|MiniGrid-", "mujoco": r"\bmujoco\b|Hopper|HalfCheetah",
         "box2d": r"LunarLander|BipedalWalker|CarRacing", "contrib": r"\bsb3_contrib\b",
         "notebook": r"\bpandas\b", "metaworld": r"\bmetaworld\b|Meta-World/",
         "robotics": r"\bgymnasium_robotics\b|PointMaze|AntMaze|FrankaKitchen|Fetch[A-Z]"}


def test_pyproject_uses_current_setuptools_forms():
    project = PYPROJECT["project"]
    assert isinstance(project["license"], str)  # an SPDX expression, not the table form
    assert re.fullmatch(r"[A-Za-z0-9.\-+ ()]+", project["license"])
    assert "setuptools>=77" in " ".join(PYPROJECT["build-system"]["requires"])
    # every folder is a listed package: a stage's code (it has __init__.py), or package data
    # with its files declared
    setuptools = PYPROJECT["tool"]["setuptools"]
    for folder in (ROOT / "rltransfer").iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            package = f"rltransfer.{folder.name}"
            assert package in setuptools["packages"], package
            if (folder / "__init__.py").is_file():
                continue
            patterns = setuptools["package-data"][package]
            for path in folder.iterdir():
                assert any(path.match(p) for p in patterns), path


def _setuptools_version() -> tuple[int, ...]:
    import setuptools

    return tuple(int(part) for part in setuptools.__version__.split(".")[:2])


@pytest.mark.skipif(_setuptools_version() < (77,), reason="the build needs setuptools>=77")
def test_the_package_builds_without_warnings_and_with_its_data(tmp_path):
    """What `pip install` runs, minus the network: setuptools' build_py on this tree."""
    done = subprocess.run([sys.executable, "-W", "always", "-c",
                           "import setuptools; setuptools.setup()", "-q", "build_py",
                           "--build-lib", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines()
                if "Warning" in line and "byte-compiling is disabled" not in line]
    assert warnings == []
    built = tmp_path / "rltransfer"
    for path in ("data/atari_scores.json", "presets/hyperparams.toml",
                 "templates/report.md.j2", "templates/report.html.j2", "envs/family.py"):
        assert (built / path).is_file(), path


def _make_commands(target: str) -> str:
    """The commands `make TARGET` runs on a fresh clone (make -n -B: printed, not run)."""
    if shutil.which("make") is None:
        pytest.skip("no make")
    done = subprocess.run(["make", "-n", "-B", target, "VENV=/nonexistent/venv"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _installs(commands: str) -> list[str]:
    return [line for line in commands.splitlines() if "pip install" in line
            and "--upgrade pip" not in line]


def test_make_demo_installs_the_core_dependencies_only():
    installs = _installs(_make_commands("demo"))
    assert len(installs) == 1 and installs[0].endswith("pip install --quiet -e .")
    for extra in ("ray", "mujoco", "atari", "box2d", "minigrid", "minari"):
        assert extra not in installs[0]


def test_make_test_installs_every_extra_the_tests_need():
    installs = _installs(_make_commands("test"))
    assert len(installs) == 1
    extras = set(re.search(r"-e '\.\[([a-z0-9,]+)\]'", installs[0]).group(1).split(","))
    needed = {"dev"}
    for test_file in (ROOT / "tests").glob("test_*.py"):
        if test_file.name == Path(__file__).name:  # names every extra, needs none
            continue
        text = test_file.read_text(encoding="utf-8")
        needed |= {extra for extra, pattern in NEEDS.items() if re.search(pattern, text)}
    assert needed <= extras, f"make test does not install {sorted(needed - extras)}"
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


@pytest.mark.parametrize("module,trigger,hint", [
    ("Box2D", "family:LunarLander-v3", "pip install 'rltransfer[box2d]'"),
    ("mujoco", "family:Hopper-v5", "pip install 'rltransfer[mujoco]'"),
    ("ale_py", "family:ALE/Pong-v5", "pip install 'rltransfer[atari]'"),
    ("minigrid", "family:MiniGrid-DoorKey-5x5-v0", "pip install 'rltransfer[minigrid]'"),
    ("metaworld", "family:Meta-World/MT1", "pip install 'rltransfer[metaworld]'"),
    ("gymnasium_robotics", "family:FetchPush-v4", "pip install 'rltransfer[robotics]'"),
    ("sb3_contrib", "algo:tqc", "pip install 'rltransfer[contrib]'"),
    ("ray", "ray", "pip install 'rltransfer[ray]'"),
    ("minari", "minari", "pip install 'rltransfer[minari]'"),
    ("huggingface_hub", "hub", "pip install rltransfer[hub]"),
])
def test_a_missing_extra_is_one_line_that_names_it(monkeypatch, module, trigger, hint):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    with pytest.raises(MissingDependencyError) as raised:
        _use(trigger)
    message = str(raised.value)
    assert hint in message and "\n" not in message
    assert EXTRA_OF[module] in message


def _use(trigger: str) -> None:
    kind, _, name = trigger.partition(":")
    if kind == "family":
        from rltransfer import envs as catalog

        found = catalog.family_of(name)  # may itself say the package is missing
        assert found is not None
        found[0].load()
    elif kind == "algo":
        from rltransfer.training.algos import get_algorithm

        get_algorithm(name)
    elif kind == "ray":
        from rltransfer.study.ray_backend import check_address

        check_address("127.0.0.1:1")
    elif kind == "minari":
        from rltransfer.strategies.replay import load_dataset

        load_dataset("cartpole/expert-v0")
    else:
        from rltransfer.training.checkpoints import resolve_source_model

        resolve_source_model("hf://sb3/ppo-CartPole-v1")
