"""The environment catalog: families of related tasks and the parameters that vary.

Importing this package registers every family's named variants as Gymnasium ids
(e.g. ``rltransfer/CartPole-LongPole-v0``).
"""

from . import classic_control  # noqa: F401  (registers the classic-control families)
from .family import (
    Family,
    Parameter,
    ParamWrapper,
    add_family,
    families,
    family_of,
    get_family,
)

__all__ = [
    "Family",
    "Parameter",
    "ParamWrapper",
    "add_family",
    "families",
    "family_of",
    "get_family",
]
