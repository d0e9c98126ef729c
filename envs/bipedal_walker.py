"""BipedalWalker-v3 (Box2D): walk a two-legged robot across rough terrain, from its 24-dim state.

``hardcore`` (stumps, pits and stairs) is a constructor argument of Gymnasium's env (a
``gym.make`` kwarg). The physical parameters are module constants of
``gymnasium.envs.box2d.bipedal_walker`` and are applied per instance ("derive" parameters),
the module is never changed:

* ``friction`` (``FRICTION``) is read once, in ``__init__``, into the env's own terrain
  fixture definitions (``fd_polygon``, ``fd_edge``); the env's copies get the value, and the
  terrain the next ``reset`` builds carries it.
* ``motors_torque`` (``MOTORS_TORQUE``; read by ``reset``, which builds the joints, and by
  ``step``, which drives them and charges the torque in the reward), ``speed_hip`` and
  ``speed_knee`` (``SPEED_HIP``, ``SPEED_KNEE``; ``step``: the joints' motor speeds and the
  observation's speed scaling) and ``lidar_range`` (``LIDAR_RANGE``; ``step``) reach the env
  through its own copies of ``reset`` and ``step``, whose globals carry its values, bound to
  it alone.

The leg and hull sizes are left out: the module builds its fixture definitions (``HULL_FD``,
``LEG_FD``, ``LOWER_FD``) from them at import time and ``reset`` places the bodies with them,
so they need per-instance fixtures as well as copied methods. Needs ``pip install
'rltransfer[box2d]'``; without it the family is listed but making one of its envs raises
MissingDependencyError.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym

from .family import DERIVE, MAKE_KWARG, Family, Parameter, add_family, method_copy

# Gymnasium's values, the defaults (gymnasium.envs.box2d.bipedal_walker)
FRICTION = 2.5
MOTORS_TORQUE = 80.0
SPEED_HIP = 4.0
SPEED_KNEE = 6.0
LIDAR_RANGE = 160 / 30.0

# parameter name -> the module constant it replaces in the copied methods
CONSTANTS = {"motors_torque": "MOTORS_TORQUE", "speed_hip": "SPEED_HIP",
             "speed_knee": "SPEED_KNEE", "lidar_range": "LIDAR_RANGE"}
DEFAULTS = {"motors_torque": MOTORS_TORQUE, "speed_hip": SPEED_HIP, "speed_knee": SPEED_KNEE,
            "lidar_range": LIDAR_RANGE}
READERS = ("reset", "step")  # the BipedalWalker methods that read those constants


def _derive(env: gym.Env, params: Mapping[str, float]) -> None:
    friction = float(params.get("friction", FRICTION))
    env.fd_polygon.friction = friction  # the env's own fixture definitions, made in __init__
    env.fd_edge.friction = friction
    values = {name: float(params.get(name, default)) for name, default in DEFAULTS.items()}
    if values == DEFAULTS:
        for method in READERS:
            vars(env).pop(method, None)  # the class's own methods read these
    else:
        constants = {CONSTANTS[name]: value for name, value in values.items()}
        for method in READERS:
            setattr(env, method, method_copy(env, method, constants))


BIPEDAL_WALKER = add_family(Family(
    name="BipedalWalker",
    env_ids=("BipedalWalker-v3",),
    entry_point="gymnasium.envs.box2d.bipedal_walker:BipedalWalker",
    doc="Walk a two-legged robot over rough terrain from its 24-dim state (Box2D); "
        "friction, motors.",
    parameters=(
        Parameter("hardcore", 0, 0, 1, "-",
                  "1: the terrain has stumps, pits and stairs", via=MAKE_KWARG, value_type=bool),
        Parameter("friction", FRICTION, 0.0, 10.0, "-",
                  "friction coefficient of the terrain (applied per env, module left as is)",
                  via=DERIVE),
        Parameter("motors_torque", MOTORS_TORQUE, 0.0, 200.0, "N*m",
                  "largest torque of the hip and knee motors (per env, module left as is)",
                  via=DERIVE),
        Parameter("speed_hip", SPEED_HIP, 0.5, 10.0, "rad/s",
                  "rated hip motor speed, also the observation's hip-speed scale (per env)",
                  via=DERIVE),
        Parameter("speed_knee", SPEED_KNEE, 0.5, 12.0, "rad/s",
                  "rated knee motor speed, also the observation's knee-speed scale (per env)",
                  via=DERIVE),
        Parameter("lidar_range", LIDAR_RANGE, 1.0, 20.0, "m",
                  "reach of the 10 lidar rays (per env, module left as is)", via=DERIVE),
    ),
    derive=_derive,
    variants={
        "Hardcore": {"hardcore": 1},
        "Slippery": {"friction": 1.0},
        "WeakMotors": {"motors_torque": 50.0},
    },
    requires="Box2D",
    extra="box2d",
))
