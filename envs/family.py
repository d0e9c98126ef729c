"""Environment families: a base Gymnasium env plus named physical parameters.

A *family* knows which parameters of an environment can be varied, their defaults, valid
ranges and units, and how to apply them so that the dynamics really change (derived
quantities included). A *variant* is a family plus parameter values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import gymnasium as gym


@dataclass(frozen=True)
class Parameter:
    """One physical parameter of a family."""

    name: str
    default: float
    low: float
    high: float
    unit: str
    doc: str
    attr: str = ""  # attribute on the unwrapped env; defaults to `name`

    @property
    def attribute(self) -> str:
        return self.attr or self.name

    def check(self, value: float) -> str | None:
        """Return why `value` is invalid, or None when it is fine."""
        if not math.isfinite(value):
            return f"{self.name}={value} is not a finite number"
        if not self.low <= value <= self.high:
            unit = f" {self.unit}" if self.unit and self.unit != "-" else ""
            return (f"{self.name}={value:g} is outside its valid range "
                    f"[{self.low:g}, {self.high:g}]{unit}")
        return None


ApplyFn = Callable[[gym.Env, Mapping[str, float]], None]


@dataclass(frozen=True)
class Family:
    """A base environment and the parameters that vary across its related tasks."""

    name: str
    env_ids: tuple[str, ...]  # Gymnasium ids this family covers; the first is canonical
    entry_point: str  # the env class, as Gymnasium's registry names it
    parameters: tuple[Parameter, ...]
    derive: ApplyFn | None = None  # recompute derived quantities after the attributes are set
    variants: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    doc: str = ""

    @property
    def base_id(self) -> str:
        return self.env_ids[0]

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def variant_id(self, variant: str) -> str:
        """The Gymnasium id under which a named variant is registered."""
        return f"rltransfer/{self.name}-{variant}-v0"

    def apply(self, env: gym.Env, params: Mapping[str, float]) -> None:
        """Set `params` on the unwrapped env and recompute what depends on them."""
        unwrapped = env.unwrapped
        for name, value in params.items():
            parameter = self.parameter(name)
            if parameter is None:
                raise KeyError(f"{self.name} has no parameter {name!r}")
            setattr(unwrapped, parameter.attribute, float(value))
        if self.derive is not None:
            self.derive(unwrapped, params)


_FAMILIES: dict[str, Family] = {}


def add_family(family: Family) -> Family:
    """Add a family to the catalog and register its named variants with Gymnasium."""
    _FAMILIES[family.name] = family
    base = gym.spec(family.base_id)
    for variant, params in family.variants.items():
        variant_id = family.variant_id(variant)
        if variant_id in gym.registry:
            continue
        gym.register(
            id=variant_id,
            entry_point=base.entry_point,
            max_episode_steps=base.max_episode_steps,
            reward_threshold=base.reward_threshold,
            additional_wrappers=(
                gym.envs.registration.WrapperSpec(
                    name="ParamWrapper",
                    entry_point="rltransfer.envs.family:ParamWrapper",
                    kwargs={"family": family.name, "params": dict(params)},
                ),
            ),
        )
    return family


def families() -> dict[str, Family]:
    """All families in the catalog, by name."""
    return dict(_FAMILIES)


def get_family(name: str) -> Family | None:
    """A family by name (case-insensitive), or None."""
    lowered = {k.lower(): v for k, v in _FAMILIES.items()}
    return lowered.get(name.lower())


def family_of(env_id: str) -> tuple[Family, str, dict[str, float]] | None:
    """Resolve an env id to (family, base id, variant parameters), or None if no family fits.

    Named variants resolve to their family's base id and their parameter values; any other
    registered id whose env class belongs to a family resolves to that family with no values.
    """
    for family in _FAMILIES.values():
        for variant, params in family.variants.items():
            if env_id == family.variant_id(variant):
                return family, family.base_id, dict(params)
    try:
        entry_point = gym.spec(env_id).entry_point
    except gym.error.Error:
        return None
    for family in _FAMILIES.values():
        if env_id in family.env_ids or entry_point == family.entry_point:
            return family, env_id, {}
    return None


class ParamWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Applies a family's parameter values to the wrapped env.

    It records its constructor arguments, so ``gym.make(env.spec)`` rebuilds the variant.
    """

    def __init__(self, env: gym.Env, family: str, params: Mapping[str, float]):
        gym.utils.RecordConstructorArgs.__init__(self, family=family, params=dict(params))
        gym.Wrapper.__init__(self, env)
        found = get_family(family)
        if found is None:
            raise KeyError(f"unknown environment family {family!r}")
        self.family = found
        self.params = dict(params)
        found.apply(env, self.params)
