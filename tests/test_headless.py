"""Headless rendering: `--pixels` on a machine with no display works and prints nothing.

Each test runs Python in a subprocess whose environment has no display (no DISPLAY,
WAYLAND_DISPLAY, XDG_RUNTIME_DIR, nor any SDL_* variable), as on a cluster node: SDL reads
these variables once, when pygame's display starts, so this process's own state says nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rltransfer.pixels import headless_rendering

DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR")
X11_OR_WAYLAND = pytest.mark.skipif(sys.platform.startswith(("win", "darwin")),
                                    reason="no X11/Wayland here: SDL uses the native driver")

# A --pixels CartPole from the env factory (one env, then a vectorized pair), reset, stepped.
MAKE_AND_STEP = """
import os
import numpy as np
from rltransfer.env_factory import make_env, make_vec
from rltransfer.specs import EnvSpec

spec = EnvSpec("CartPole-v1", pixels=True)
env = make_env(spec)
obs, _ = env.reset(seed=0)
obs, *_ = env.step(env.action_space.sample())
import pygame
driver = pygame.display.get_driver()  # the video driver SDL rendered with
env.close()
venv = make_vec(spec, n_envs=2, seed=0)
batch = venv.reset()
venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
venv.close()
"""


def headless_env(**extra: str) -> dict[str, str]:
    """This process's environment without a display or any SDL setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in DISPLAY_VARIABLES and not k.startswith("SDL_")}
    return {**env, **extra}


def run_python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300)


@X11_OR_WAYLAND
def test_pixels_render_headless_and_print_nothing():
    code = MAKE_AND_STEP + """
assert obs.dtype == np.uint8 and obs.shape == (84, 84, 3), (obs.dtype, obs.shape)
assert obs.std() > 5 and len(np.unique(obs)) > 2, "blank frame"  # white, cart, pole, track
assert batch.shape == (2, 84, 84, 3) and batch.std() > 5, batch.shape
assert driver == "dummy", driver
"""
    done = run_python(["-c", textwrap.dedent(code)], headless_env())
    assert done.stderr == ""  # not libwayland's "XDG_RUNTIME_DIR is invalid or not set ..."
    assert done.stdout == ""
    assert done.returncode == 0


@pytest.mark.parametrize("driver", ["offscreen", "dummy"])
def test_a_video_driver_the_user_set_is_kept(driver):
    code = MAKE_AND_STEP + f"""
assert os.environ["SDL_VIDEODRIVER"] == {driver!r}, os.environ["SDL_VIDEODRIVER"]
assert os.environ["SDL_AUDIODRIVER"] == "alsa", os.environ["SDL_AUDIODRIVER"]
assert driver == {driver!r}, driver
"""
    user = headless_env(SDL_VIDEODRIVER=driver, SDL_AUDIODRIVER="alsa")
    done = run_python(["-c", textwrap.dedent(code)], user)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("display", [{"DISPLAY": ":0"}, {"WAYLAND_DISPLAY": "wayland-0"}])
def test_no_driver_is_forced_where_there_is_a_display(monkeypatch, display):
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    for name in DISPLAY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in display.items():
        monkeypatch.setenv(name, value)
    headless_rendering()
    assert "SDL_VIDEODRIVER" not in os.environ


@X11_OR_WAYLAND
def test_headless_default_is_the_dummy_driver(monkeypatch):
    for name in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER", *DISPLAY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    headless_rendering()
    assert os.environ["SDL_VIDEODRIVER"] == "dummy"
    assert "SDL_AUDIODRIVER" not in os.environ  # rgb_array frames never start SDL's audio
    assert "XDG_RUNTIME_DIR" not in os.environ  # no runtime dir is made up


# --------------------------------------------------------------- CLI input errors, headless

RUN = ["-m", "rltransfer", "run", "CartPole-v1", "CartPole-v1:length=1.0", "--pixels",
       "--conditions", "scratch,pretrained-encoder"]


def _one_line_error(tmp_path, *options: str) -> str:
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("there before")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    done = run_python([*RUN, *options, "--out", str(out)], headless_env())
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and done.stderr.endswith("\n"), done.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written
    return lines[0]


def test_unknown_encoder_is_one_line_headless(tmp_path):
    line = _one_line_error(tmp_path, "--encoder", "nosuchnet")
    assert line.startswith("rltransfer: error: unknown encoder 'nosuchnet'"), line


def test_encoder_weights_that_are_no_state_dict_are_one_line_headless(tmp_path):
    import torch

    weights = tmp_path / "tensors.pt"
    torch.save([torch.zeros(3), torch.ones(2)], weights)
    line = _one_line_error(tmp_path, "--encoder-weights", str(weights))
    assert line.startswith(f"rltransfer: error: {weights} does not hold a state dict"), line
