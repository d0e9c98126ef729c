"""The Corridor's family: which of its parameters vary, their ranges and how they reach it.

    python -m rltransfer run corridor_family:Corridor-v0 \
        corridor_family:Corridor-v0:slip=uniform(0,0.3)

With the family declared, rltransfer checks ranges (`length=1` is a one-line error before
anything runs), draws `slip` anew at every episode when it is a distribution (an attribute
of the env, read at every step), and registers the named variants as Gymnasium ids
(``rltransfer/Corridor-Long-v0``). The package in this folder also declares the family
through the ``rltransfer.families`` entry point (pyproject.toml), so once installed
(``pip install -e examples/corridor``) plain ``Corridor-v0`` works and ``python -m
rltransfer envs`` lists it.
"""

from __future__ import annotations

import corridor_env  # noqa: F401  (registers Corridor-v0)
from rltransfer.envs import MAKE_KWARG, Family, Parameter, add_family

CORRIDOR = Family(
    name="Corridor",
    env_ids=("Corridor-v0",),
    entry_point="corridor_env:Corridor",
    parameters=(
        # fixed when the env is built: a constructor argument
        Parameter("length", default=8, low=2, high=64, unit="cells",
                  doc="cells from the start to the goal", via=MAKE_KWARG, value_type=int),
        # an attribute the env reads at every step: it can be drawn per episode
        Parameter("slip", default=0.0, low=0.0, high=0.5, unit="-",
                  doc="probability that a move goes the other way"),
    ),
    variants={"Long": {"length": 16}, "Slippery": {"slip": 0.2}},
    doc="A 1-D corridor: walk right to the goal (examples/corridor).",
)

add_family(CORRIDOR)
