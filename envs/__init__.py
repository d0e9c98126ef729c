"""The environment catalog: families of related tasks and the parameters that vary.

Importing this package registers every family's named variants as Gymnasium ids
(e.g. ``rltransfer/CartPole-LongPole-v0``, ``rltransfer/PixelCatch-BlueBall-v0``). Families
whose env needs an optional package (Box2D, MuJoCo, ale-py, minigrid, metaworld,
gymnasium-robotics) are listed without it; the package is imported only when one of their
envs is made.
"""

# Import order is the order `python -m rltransfer envs` lists the families in.
# isort: off
from . import classic_control, pixel_catch  # noqa: F401  (they register their families)
from . import car_racing, lunar_lander, bipedal_walker, mujoco, doorkey, atari  # noqa: F401
from . import metaworld, robotics  # noqa: F401
# isort: on
from .family import (
    ATTRIBUTE,
    DERIVE,
    ENV_ID,
    MAKE_KWARG,
    Family,
    Parameter,
    ParamWrapper,
    add_family,
    families,
    family_of,
    get_family,
)

__all__ = [
    "ATTRIBUTE",
    "DERIVE",
    "ENV_ID",
    "MAKE_KWARG",
    "Family",
    "Parameter",
    "ParamWrapper",
    "add_family",
    "families",
    "family_of",
    "get_family",
]
