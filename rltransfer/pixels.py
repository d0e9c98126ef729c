"""Pixel observations for any environment that renders `rgb_array` frames.

render → resize to `image_size` → optional grayscale (Gymnasium's own wrappers, so the env
can be rebuilt from its spec), then frame stacking at the vectorized level (SB3's
VecFrameStack, channels last, as RL-Zoo does for Atari).
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.wrappers import AddRenderObservation, GrayscaleObservation, ResizeObservation
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from .errors import MissingDependencyError, ParameterError


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
