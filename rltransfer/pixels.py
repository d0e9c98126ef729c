"""Pixel observations for any environment that renders `rgb_array` frames.

render → resize to `image_size` → optional grayscale (Gymnasium's own wrappers, so the env
can be rebuilt from its spec), then frame stacking at the vectorized level (SB3's
VecFrameStack, channels last, as RL-Zoo does for Atari).
"""

from __future__ import annotations

import os
import sys

import gymnasium as gym
from gymnasium.wrappers import AddRenderObservation, GrayscaleObservation, ResizeObservation
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from .errors import MissingDependencyError, ParameterError


def headless_rendering() -> None:
    """Let SDL render off-screen, silently, where there is no display to show a window on.

    Gymnasium's classic-control envs call ``pygame.display.init()`` even for ``rgb_array``
    frames. With no X11/Wayland display, SDL then probes its Wayland driver, whose
    libwayland-client prints "error: XDG_RUNTIME_DIR is invalid or not set in the
    environment." to stderr before SDL falls back to off-screen rendering (the frames are
    fine). SDL's "dummy" video driver renders the same surfaces and probes nothing. A value
    the user set wins, and so does a real display. Call it before pygame's display starts
    (SDL reads the variable then), in every process that renders."""
    if sys.platform.startswith(("win", "darwin")) or os.environ.get("DISPLAY") \
            or os.environ.get("WAYLAND_DISPLAY"):
        return
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def add_pixel_observations(env: gym.Env, image_size: int, grayscale: bool) -> gym.Env:
    """Replace the env's observations by its rendered frames, resized (and grayscale)."""
    if env.render_mode != "rgb_array":
        raise ParameterError(
            f"{env.spec.id if env.spec else env} cannot render rgb_array frames, so --pixels "
            f"cannot observe it"
        )
    env = AddRenderObservation(env, render_only=True)
    try:
        env = ResizeObservation(env, (image_size, image_size))
    except gym.error.DependencyNotInstalled as err:  # OpenCV
        raise MissingDependencyError(f"--pixels needs OpenCV: {err}") from None
    if grayscale:
        env = GrayscaleObservation(env, keep_dim=True)
    return env


def stack_frames(venv: VecEnv, frame_stack: int) -> VecEnv:
    """Stack the last `frame_stack` observations along channels (no-op for 1)."""
    return VecFrameStack(venv, frame_stack) if frame_stack > 1 else venv


def is_image_observation(space: gym.Space) -> bool:
    """Whether SB3 treats `space` as an image (uint8 HxWxC or CxHxW with 1/3/4 channels)."""
    return is_image_space(space, check_channels=False)
