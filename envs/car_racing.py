"""CarRacing-v3 (Box2D): drive around a random track from 96x96 RGB frames.

Its parameters are constructor arguments of Gymnasium's env (``gym.make`` kwargs). Frames
are native 96x96x3 uint8, so no preprocessing is added. Needs ``pip install
'rltransfer[box2d]'`` (Box2D and pygame); without it the family is listed but making one of
its envs raises MissingDependencyError.
"""

from __future__ import annotations

from .family import MAKE_KWARG, Family, Parameter, add_family

CAR_RACING = add_family(Family(
    name="CarRacing",
    env_ids=("CarRacing-v3",),
    entry_point="gymnasium.envs.box2d.car_racing:CarRacing",
    doc="Drive a car around a random track, from 96x96 RGB frames (Box2D).",
    parameters=(
        Parameter("domain_randomize", 0, 0, 1, "-",
                  "1: new random road, grass and background colours at every reset",
                  via=MAKE_KWARG, value_type=bool),
        Parameter("lap_complete_percent", 0.95, 0.1, 0.99, "-",
                  "fraction of the track's tiles to visit for the lap to count",
                  via=MAKE_KWARG),
        Parameter("continuous", 1, 0, 1, "-",
                  "1: Box(3) steer/gas/brake; 0: Discrete(5) (for DQN; source and target "
                  "must agree)", via=MAKE_KWARG, value_type=bool),
    ),
    variants={
        "DomainRandomized": {"domain_randomize": 1},
        "ShortLap": {"lap_complete_percent": 0.5},
        "Discrete": {"continuous": 0},
        "DiscreteDomainRandomized": {"continuous": 0, "domain_randomize": 1},
    },
    requires="Box2D",
    extra="box2d",
))
