"""LunarLander-v3 (Box2D): land a craft on a pad, from its 8-dimensional state.

Gravity, wind power and turbulence power are attributes of the env: Gymnasium's ``reset``
builds a new Box2D world with ``self.gravity`` and ``step`` reads the wind powers, so they are
set after the env is built and can be randomized per episode. ``enable_wind`` and
``continuous`` (Box(2) throttles or Discrete(4) engines) are constructor arguments
(``gym.make`` kwargs). The engine
powers are module constants of ``gymnasium.envs.box2d.lunar_lander`` (``MAIN_ENGINE_POWER``,
``SIDE_ENGINE_POWER``) that ``LunarLander.step`` reads as globals. They are applied per
instance ("derive" parameters): the env gets its own copy of ``step`` whose globals carry
its powers, bound to it alone. The module's constants are never changed, so envs with
different powers live side by side in one process. Needs ``pip install
'rltransfer[box2d]'``; without it the family is listed but making one of its envs raises
MissingDependencyError.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym

from .family import DERIVE, MAKE_KWARG, Family, Parameter, add_family, method_copy

MAIN_ENGINE_POWER = 13.0  # Gymnasium's values, the defaults
SIDE_ENGINE_POWER = 0.6


def _derive(env: gym.Env, params: Mapping[str, float]) -> None:
    main = params.get("main_engine_power", MAIN_ENGINE_POWER)
    side = params.get("side_engine_power", SIDE_ENGINE_POWER)
    if (main, side) == (MAIN_ENGINE_POWER, SIDE_ENGINE_POWER):
        vars(env).pop("step", None)  # the class's own step reads these
    else:
        env.step = method_copy(env, "step", {"MAIN_ENGINE_POWER": main,
                                             "SIDE_ENGINE_POWER": side})


LUNAR_LANDER = add_family(Family(
    name="LunarLander",
    env_ids=("LunarLander-v3",),
    entry_point="gymnasium.envs.box2d.lunar_lander:LunarLander",
    doc="Land a craft between the flags from its 8-dim state (Box2D); gravity, wind, engines.",
    parameters=(
        Parameter("gravity", -10.0, -11.99, -0.01, "m/s^2",
                  "vertical gravity (Gymnasium requires -12 < gravity < 0)"),
        Parameter("enable_wind", 0, 0, 1, "-",
                  "1: wind and turbulence push the craft (wind_power, turbulence_power)",
                  via=MAKE_KWARG, value_type=bool),
        Parameter("wind_power", 15.0, 0.0, 20.0, "-",
                  "largest linear wind force, with enable_wind=1 (Gymnasium recommends 0-20)"),
        Parameter("turbulence_power", 1.5, 0.0, 2.0, "-",
                  "largest rotational wind torque, with enable_wind=1 (recommended 0-2)"),
        Parameter("main_engine_power", MAIN_ENGINE_POWER, 0.0, 40.0, "-",
                  "impulse scale of the main engine (applied per env, module left as is)",
                  via=DERIVE),
        Parameter("side_engine_power", SIDE_ENGINE_POWER, 0.0, 3.0, "-",
                  "impulse scale of the side engines (applied per env, module left as is)",
                  via=DERIVE),
        Parameter("continuous", 0, 0, 1, "-",
                  "1: Box(2) main/lateral throttles; 0: Discrete(4) (for DQN; source and "
                  "target must agree)", via=MAKE_KWARG, value_type=bool),
    ),
    derive=_derive,
    variants={
        "Continuous": {"continuous": 1},
        "LowGravity": {"gravity": -5.0},
        "HighGravity": {"gravity": -11.5},
        "Windy": {"enable_wind": 1, "wind_power": 15.0},
        "WeakEngines": {"main_engine_power": 9.0, "side_engine_power": 0.4},
    },
    requires="Box2D",
    extra="box2d",
))
