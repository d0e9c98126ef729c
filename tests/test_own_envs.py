"""Issue 19 §1-2: a researcher's own environments and families, used as a user would: a
module of the test's own on PYTHONPATH, the README's worked example (examples/corridor),
and a family an installed package declares through the ``rltransfer.families`` entry
point (a distribution's metadata written next to the module, which importlib.metadata
finds on sys.path as it finds an installed package's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rltransfer import envs
from rltransfer.cli import main
from rltransfer.env_factory import make_env
from rltransfer.errors import ParameterError
from rltransfer.specs import EnvSpec
from rltransfer.study.matrix import expand_grids

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "corridor"
TINY = ["--seeds", "2", "--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
        "--eval-episodes", "5", "--conditions", "scratch,finetune",
        "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1"]

# The test's own env: its constructor checks its arguments' types itself, and writes what
# it was given to $LANES_LOG, so the test sees the values that reached every instance.
LANES = '''
import json, os
import gymnasium as gym
import numpy as np


class Lanes(gym.Env):
    def __init__(self, lanes: int = 3, wind: float = 0.0, mode: str = "easy",
                 render_mode=None):
        if type(lanes) is not int or lanes < 2:
            raise ValueError(f"lanes must be an int >= 2, got {lanes!r}")
        if mode not in ("easy", "hard"):
            raise ValueError(f"mode must be easy or hard, got {mode!r}")
        with open(os.environ["LANES_LOG"], "a") as log:
            log.write(json.dumps({"lanes": lanes, "wind": wind, "mode": mode}) + "\\n")
        self.lanes, self.wind, self.mode = lanes, wind, mode
        self.observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        reward = float(action == 1) / self.lanes
        return np.full(1, self.t / 10, np.float32), reward, self.t >= 10, False, {}


gym.register("Lanes-v0", entry_point="lanes:Lanes")
'''


@pytest.fixture
def own_env(tmp_path, monkeypatch):
    """lanes.py in a folder on PYTHONPATH (this process and its workers)."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "lanes.py").write_text(LANES)
    log = tmp_path / "lanes.log"
    log.touch()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(EXAMPLE)]))
    monkeypatch.setenv("LANES_LOG", str(log))
    return log


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rltransfer", *args], capture_output=True,
                          text=True, cwd=cwd, env=os.environ.copy())


def test_an_own_env_gets_its_constructor_arguments_in_every_worker(tmp_path, own_env):
    out = tmp_path / "runs"
    done = _cli(["run", "lanes:Lanes-v0:lanes=2", 'lanes:Lanes-v0:lanes=4,mode="hard"',
                 "--out", str(out), "--name", "own", "--workers", "2", *TINY], tmp_path)
    assert done.returncode == 0, done.stderr
    study = json.loads((out / "own" / "study.json").read_text())
    assert study["spec"]["env"]["target"] == {"id": "lanes:Lanes-v0",
                                              "params": {"lanes": 4, "mode": '"hard"'}}
    made = [json.loads(line) for line in own_env.read_text().splitlines()]
    # every instance got an int and a str, as the constructor checks: the source's and
    # the target's, in the study process and in both workers
    assert {"lanes": 2, "wind": 0.0, "mode": "easy"} in made
    assert {"lanes": 4, "wind": 0.0, "mode": "hard"} in made
    assert {(m["lanes"], m["mode"]) for m in made} == {(2, "easy"), (4, "hard")}
    for condition in ("scratch", "finetune"):
        assert len(list((out / "own" / condition).glob("seed_*/evaluations.csv"))) == 2
    assert 'lanes:Lanes-v0:lanes=4,mode="hard"' in (out / "own" / "report.md").read_text()
    # gym.make(env.spec) rebuilds it with the same arguments
    import gymnasium as gym

    env = make_env(EnvSpec.parse('lanes:Lanes-v0:lanes=4,mode="hard"'))
    assert gym.make(env.spec).unwrapped.lanes == 4


@pytest.mark.parametrize("target, message", [
    ("lanes:Lanes-v0:lane=4",
     "Lanes-v0 takes no argument 'lane'. Did you mean 'lanes'? Its constructor takes: lanes, "
     "wind, mode (it is not in rltransfer's catalog, so lanes:Lanes-v0:name=value passes "
     "keyword arguments to gym.make)"),
    ("lanes:Lanes-v0:lanes=1",
     "lanes:Lanes-v0 rejected lanes=1 in lanes:Lanes-v0:lanes=1: ValueError: lanes must be an "
     "int >= 2, got 1; give a value its constructor accepts"),
    ('lanes:Lanes-v0:lanes=3,mode="wild"',
     "lanes:Lanes-v0 rejected mode=\"wild\" in lanes:Lanes-v0:lanes=3,mode=\"wild\": "
     "ValueError: mode must be easy or hard, got 'wild'; give a value its constructor accepts"),
    ("lanes:Lanes-v0:wind=uniform(0,1)",
     "wind=uniform(0,1) in lanes:Lanes-v0:wind=uniform(0,1): Lanes-v0 is not in rltransfer's "
     "catalog, so wind is a constructor argument, fixed when the env is built, and cannot be "
     "drawn per episode; give one value, or declare a family with wind as an attribute "
     "parameter (README, 'Your own family')"),
])
def test_a_bad_argument_is_a_one_line_error_before_anything_is_written(
        tmp_path, own_env, capsys, target, message):
    out = tmp_path / "runs"
    assert main(["run", "lanes:Lanes-v0", target, "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err == f"rltransfer: error: {message}\n"
    assert not out.exists()


def test_integer_grids_sweep_a_constructor_argument_as_ints(own_env):
    texts = expand_grids("lanes:Lanes-v0:lanes=grid(2,6,3)")
    specs = [EnvSpec.parse(text) for text in texts]
    assert [s.params["lanes"] for s in specs] == [2, 4, 6]
    assert all(type(s.params["lanes"]) is int for s in specs)
    assert [make_env(s).unwrapped.lanes for s in specs] == [2, 4, 6]
    assert len({s.slug for s in specs}) == 3


def test_the_worked_example_family_through_the_module_form(tmp_path, own_env):
    """examples/corridor: the family declared by the module the id names; slip drawn per
    episode (contexts.json), length a constructor argument checked against its range."""
    out = tmp_path / "runs"
    target = "corridor_family:Corridor-v0:slip=uniform(0,0.3)"
    done = _cli(["run", "corridor_family:Corridor-v0", target, "--out", str(out), "--name",
                 "corridor", "--workers", "2", *TINY, "--threshold", "0.9", "--eval-episodes",
                 "15"], tmp_path)
    assert done.returncode == 0, done.stderr
    contexts = json.loads(next((out / "corridor" / "finetune").glob(
        "seed_*/contexts.json")).read_text())
    assert contexts["randomized"] == {"slip": "uniform(0,0.3)"}
    slips = [c["slip"] for c in contexts["evaluation"]]
    assert len(slips) == 15 and all(0.0 <= s <= 0.3 for s in slips) and len(set(slips)) > 1
    training = contexts["training"]["slip"]
    assert 0.0 <= training["min"] < training["max"] <= 0.3
    bad = _cli(["run", "corridor_family:Corridor-v0", "corridor_family:Corridor-v0:length=1",
                "--out", str(out / "bad")], tmp_path)
    assert bad.returncode == 2
    assert bad.stderr == ("rltransfer: error: length=1 is outside its valid range [2, 64] "
                          "cells in corridor_family:Corridor-v0:length=1: pick a value inside "
                          "the range\n")
    assert not (out / "bad").exists()


def _fake_installed_package(folder: Path) -> None:
    """The metadata pip writes for examples/corridor's pyproject.toml: importlib.metadata
    finds it on sys.path exactly as it finds an installed package."""
    info = folder / "rltransfer_corridor_example-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rltransfer-corridor-example\n"
                                   "Version: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[rltransfer.families]\ncorridor = corridor_family:CORRIDOR\n")


def test_an_installed_package_declares_its_family_through_the_entry_point(
        tmp_path, own_env, monkeypatch):
    site = tmp_path / "site"
    _fake_installed_package(site)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(EXAMPLE)]))
    listed = _cli(["envs", "corridor"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    for text in ("Corridor", "length", "slip", "[2, 64]", "Long", "Slippery"):
        assert text in listed.stdout
    out = tmp_path / "runs"
    done = _cli(["run", "Corridor-v0:length=6", "rltransfer/Corridor-Slippery-v0",
                 "--out", str(out), "--name", "plain", "--workers", "1", *TINY,
                 "--threshold", "0.9", "--eval-episodes", "10"], tmp_path)
    assert done.returncode == 0, done.stderr
    study = json.loads((out / "plain" / "study.json").read_text())
    assert study["spec"]["env"]["source"]["params"] == {"length": 6.0}


def test_a_broken_plugin_is_named_and_skipped(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[rltransfer.families]\nbad = no_such_module:X\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(envs.family, "_plugins_loaded", False)
    assert "CartPole" in envs.families()
    err = capsys.readouterr().err
    assert err.startswith("rltransfer: warning: the rltransfer.families entry point 'bad' of "
                          "broken-plugin (no_such_module:X) failed to load "
                          "(ModuleNotFoundError: No module named 'no_such_module')")


def test_a_switch_on_a_number_parameter_is_refused():
    with pytest.raises(ParameterError, match=r"^length=true in CartPole-v1:length=true is a "
                       r"switch, but CartPole's length is a number: give e\.g\. length=0\.5$"):
        make_env(EnvSpec.parse("CartPole-v1:length=true"))
