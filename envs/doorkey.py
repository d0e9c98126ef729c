"""MiniGrid DoorKey: pick up the key, open the door, reach the goal; sizes as related tasks.

``size`` picks the registered id (MiniGrid-DoorKey-{5x5,6x6,8x8,16x16}-v0), a classic
curriculum / transfer ladder. Observations are the agent's egocentric partial view rendered
as RGB (MiniGrid's ``RGBImgPartialObsWrapper`` then ``ImgObsWrapper``): 7x7 cells of 8x8
pixels, (56, 56, 3) uint8 for every size, so a policy's network fits all of them (the full
view would be 40x40 for 5x5 but 128x128 for 16x16). Actions: Discrete(7) (MiniGrid's
left, right, forward, pickup, drop, toggle, done). Episodes end at the goal (reward
1 - 0.9 * steps / max_steps) or after max_steps = 10 * size^2 steps (reward 0).

Needs ``pip install 'rltransfer[minigrid]'``.
"""

from __future__ import annotations

import gymnasium as gym

from .family import ENV_ID, Family, Parameter, add_family

TILE_SIZE = 8  # pixels per grid cell: the 7x7 view is 56x56


def rgb_partial_view(env: gym.Env) -> gym.Env:
    """The agent's 7x7 view as a (56, 56, 3) uint8 image (the mission string is dropped)."""
    from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

    return ImgObsWrapper(RGBImgPartialObsWrapper(env, tile_size=TILE_SIZE))


SIZES = (5, 6, 8, 16)

DOOR_KEY = add_family(Family(
    name="DoorKey",
    env_ids=tuple(f"MiniGrid-DoorKey-{s}x{s}-v0" for s in SIZES),
    entry_point="minigrid.envs:DoorKeyEnv",
    doc="MiniGrid DoorKey: key, door, goal; the agent's view as 56x56 RGB.",
    parameters=(
        Parameter("size", 5, min(SIZES), max(SIZES), "cells",
                  "side of the grid, walls included (picks MiniGrid-DoorKey-<size>x<size>-v0)",
                  via=ENV_ID, value_type=int, choices=tuple(map(float, SIZES))),
    ),
    variants={f"{s}x{s}": {"size": s} for s in SIZES[1:]},
    wrap=rgb_partial_view,
    id_template="MiniGrid-DoorKey-{size}x{size}-v0",
    requires="minigrid",
    extra="minigrid",
))
