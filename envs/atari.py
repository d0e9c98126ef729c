"""Atari 2600 games through ale-py: game modes and difficulties as task parameters.

The ALE's modes and difficulties are the game's own "flavours" (Machado et al. 2018,
"Revisiting the Arcade Learning Environment", JAIR): the same game with other rules,
speeds or opponents, the classic Atari transfer setting. They are ``gym.make`` kwargs of
ale-py's ``AtariEnv``, and the valid values differ per game.

Preprocessing is SB3's ``AtariWrapper`` with its defaults (RL-Zoo's ``env_wrapper`` for
every Atari entry): no-op reset (up to 30), frame skip 4 with a max over the last two frames,
a terminal signal at each life lost, FIRE on reset, 84x84 grayscale (84, 84, 1) uint8, and
rewards clipped to {-1, 0, 1}. Frames are *not* stacked here: stack them on the vectorized
env (SB3's ``VecFrameStack``, 4 frames, as RL-Zoo does).

Frame skip: ``ALE/<Game>-v5`` skips 4 frames inside the emulator and returns only the last
one, so AtariWrapper's max-pooling over two consecutive frames (which removes sprite
flicker) cannot be done on top of it (Gymnasium issue #702). rltransfer therefore makes every
ALE env with ``frameskip=1`` and lets AtariWrapper skip 4 frames with max-pooling, which is
what RL-Zoo does with ``*NoFrameskip-v4`` (its default) and what its users pass for v5
(``--env-kwargs frameskip:1``). An agent step is still 4 emulator frames, and v5's other
settings are kept: sticky actions with probability 0.25 (applied by the emulator at every
frame, as Machado et al. specify), the minimal action set, and 108,000 frames at most per
episode.

Needs ``pip install 'rltransfer[atari]'`` (ale-py, which ships the ROMs, and OpenCV for the
84x84 resize).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym

from rltransfer.errors import MissingDependencyError

from .family import MAKE_KWARG, Family, Parameter, add_family

_ALE = "ale_py.env:AtariEnv"
_PLURAL = {"mode": "modes", "difficulty": "difficulties"}


def atari_preprocessing(env: gym.Env) -> gym.Env:
    """SB3's AtariWrapper with its defaults; the env must not skip frames itself."""
    try:
        import cv2  # noqa: F401  (AtariWrapper's resize needs it)
    except ImportError:
        raise MissingDependencyError(
            "Atari preprocessing needs OpenCV: pip install 'rltransfer[atari]'") from None
    from stable_baselines3.common.atari_wrappers import AtariWrapper

    return AtariWrapper(env)


def available(env_id: str, make_kwargs: Mapping[str, Any] | None = None) -> dict[str, list[int]]:
    """The modes and difficulties a game accepts, read from the emulator."""
    env = gym.make(env_id, **(make_kwargs or {}))
    try:
        ale = env.unwrapped.ale
        return {"mode": [int(m) for m in ale.getAvailableModes()],
                "difficulty": [int(d) for d in ale.getAvailableDifficulties()]}
    finally:
        env.close()


def _diagnose(env_id: str, kwargs: Mapping[str, Any]) -> str | None:
    """Which of `kwargs`' mode / difficulty the game does not have, with the valid values."""
    if "mode" not in kwargs and "difficulty" not in kwargs:
        return None
    valid = available(env_id, {k: v for k, v in kwargs.items() if k not in _PLURAL})
    for name, values in valid.items():
        if name in kwargs and kwargs[name] not in values:
            return (f"{name}={kwargs[name]} is not available in {env_id}: valid {_PLURAL[name]} "
                    f"are {', '.join(map(str, values))}")
    return None


def _parameters(modes: tuple[int, ...], difficulties: tuple[int, ...]) -> tuple[Parameter, ...]:
    def listing(values):
        return ", ".join(map(str, values)) if values else "the game's own; checked when made"

    return (
        Parameter("mode", modes[0] if modes else 0, min(modes, default=0),
                  max(modes, default=255), "-", f"game mode (valid: {listing(modes)})",
                  via=MAKE_KWARG, value_type=int, choices=tuple(map(float, modes))),
        Parameter("difficulty", 0, min(difficulties, default=0), max(difficulties, default=255),
                  "-", f"game difficulty, the console's switch (valid: {listing(difficulties)})",
                  via=MAKE_KWARG, value_type=int, choices=tuple(map(float, difficulties))),
    )


def atari_family(game: str, doc: str, modes: tuple[int, ...], difficulties: tuple[int, ...],
                 variants: Mapping[str, Mapping[str, float]]) -> Family:
    """A family for ``ALE/<game>-v5`` with the game's modes and difficulties (checked by the
    tests against the emulator)."""
    return add_family(Family(
        name=game,
        env_ids=(f"ALE/{game}-v5",),
        entry_point="",  # only its own id: other ALE ids belong to the generic Atari family
        doc=doc,
        parameters=_parameters(modes, difficulties),
        variants=variants,
        wrap=atari_preprocessing,
        make_kwargs={"frameskip": 1},
        requires="ale_py",
        extra="atari",
        diagnose=_diagnose,
    ))


PONG = atari_family(
    "Pong", "Atari Pong: return the ball past the computer's paddle.",
    modes=(0, 1), difficulties=(0, 1, 2, 3),
    variants={"Mode1": {"mode": 1}, "Difficulty1": {"difficulty": 1},
              "Difficulty3": {"difficulty": 3}},
)
BREAKOUT = atari_family(
    "Breakout", "Atari Breakout: break the bricks with a ball and a paddle.",
    modes=tuple(range(0, 45, 4)), difficulties=(0, 1),
    variants={"Mode4": {"mode": 4}, "Mode8": {"mode": 8}, "Difficulty1": {"difficulty": 1}},
)
SPACE_INVADERS = atari_family(
    "SpaceInvaders", "Atari Space Invaders: shoot the descending aliens.",
    modes=tuple(range(16)), difficulties=(0, 1),
    variants={"Mode1": {"mode": 1}, "Difficulty1": {"difficulty": 1}},
)
FREEWAY = atari_family(
    "Freeway", "Atari Freeway: lead the chicken across a busy road.",
    modes=tuple(range(8)), difficulties=(0, 1),
    variants={"Mode1": {"mode": 1}, "Difficulty1": {"difficulty": 1}},
)

# Any other ALE id (ALE/<Game>-v5, <Game>NoFrameskip-v4, ...) resolves here through the env
# class; its modes and difficulties are checked against the emulator when it is made.
ATARI = add_family(Family(
    name="Atari",
    env_ids=("ALE/Pong-v5",),  # an example: the games above resolve to their own family
    entry_point=_ALE,
    doc="Any Atari game, ALE/<Game>-v5 (ale-py); modes and difficulties differ per game.",
    parameters=_parameters((), ()),
    wrap=atari_preprocessing,
    make_kwargs={"frameskip": 1},
    requires="ale_py",
    extra="atari",
    diagnose=_diagnose,
))
