"""Environment families: a base Gymnasium env plus named physical and visual parameters.

A *family* knows which parameters of an environment can be varied, their defaults, valid
ranges and units, and how to apply them so that the dynamics really change (derived
quantities included). A *variant* is a family plus parameter values.

A parameter reaches the env in one of four ways (`Parameter.via`):

* ``"attribute"``: set on the unwrapped env after ``gym.make`` (CartPole's ``length``);
* ``"make"``: a ``gym.make`` keyword argument (CarRacing's ``domain_randomize``, ALE's ``mode``);
* ``"id"``: picks the registered id through the family's ``id_template`` (MiniGrid's sizes);
* ``"derive"``: applied after ``gym.make`` by the family's ``derive`` alone, for values the env
  keeps outside its attributes (LunarLander's engine powers, module constants of its env).

Families whose env lives in an optional package (``requires``) import it only when such an
env is made, so the catalog imports and lists them without the package.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import math
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, WrapperSpec, load_env_creator

from rltransfer.errors import (
    MissingDependencyError,
    ParameterError,
    UnknownEnvError,
    did_you_mean,
)

from . import randomization

ATTRIBUTE = "attribute"
MAKE_KWARG = "make"
ENV_ID = "id"
DERIVE = "derive"
_VIA = (ATTRIBUTE, MAKE_KWARG, ENV_ID, DERIVE)


@dataclass(frozen=True)
class Parameter:
    """One physical or visual parameter of a family.

    Values travel as floats (``ID:name=value`` on the command line); `convert` turns them
    into `value_type` (``int``, ``bool`` or ``float``) before they reach the env.

    A *name-valued* parameter (``value_type=str``, made with `name_parameter`) takes one of
    `names` (Meta-World's ``task=push-v3``, a maze's ``layout=Medium``), or with a
    `separator` a set of them (FrankaKitchen's ``tasks=kettle+microwave``). An `EnvSpec`
    stores it as a quoted string's text (``'"push-v3"'``), which no distribution has, so
    float parameters hash as they always did; it is never randomized.
    """

    name: str
    default: float | str
    low: float
    high: float
    unit: str
    doc: str
    attr: str = ""  # attribute on the unwrapped env; defaults to `name` (via "attribute")
    via: str = ATTRIBUTE  # how the value reaches the env: "attribute", "make", "id", "derive"
    value_type: type = float  # float, int, bool (given as 0 or 1) or str (a name)
    choices: tuple[float, ...] = ()  # the only valid values, when not every value in range is
    # A name-valued parameter's valid names, or a function listing them, called only when
    # needed (Meta-World's tasks come from its package, which the catalog does not import).
    names: tuple[str, ...] | Callable[[], Sequence[str]] = ()
    separator: str = ""  # when set, a value is a set of names joined by it (e.g. '+')
    to_env: Callable[[str], Any] | None = None  # a name-valued value as the env takes it
    # It sets a bound of the observation or action space, which a run's vectorized env and
    # policy read once: it cannot change per episode (randomization.check_spaces verifies).
    bounds_space: bool = False

    def __post_init__(self) -> None:
        assert self.via in _VIA, f"{self.name}: via must be one of {_VIA}"
        assert self.value_type in (float, int, bool, str), \
            f"{self.name}: value_type {self.value_type}"
        assert (self.value_type is str) == bool(self.names), f"{self.name}: names with str only"

    @property
    def attribute(self) -> str:
        return self.attr or self.name

    @property
    def randomizable(self) -> bool:
        """Whether the value can be a distribution, resampled at every reset
        (`rltransfer.envs.randomization`): only float values applied after the env is built;
        "make" and "id" values are fixed when it is constructed, and a space bound is fixed
        for the run."""
        return (self.via in (ATTRIBUTE, DERIVE) and self.value_type is float
                and not self.choices and not self.bounds_space)

    def convert(self, value: float | str) -> Any:
        """`value` as the env expects it (`value_type`; a name-valued one through `to_env`)."""
        if self.value_type is str:
            name = self.canonical_name(unquoted(value))
            return self.to_env(name) if self.to_env is not None else name
        if self.value_type is bool:
            return bool(round(value))
        if self.value_type is int:
            return int(round(value))
        return float(value)

    def valid_names(self) -> tuple[str, ...]:
        """A name-valued parameter's valid names (a listing function is called here)."""
        return tuple(self.names() if callable(self.names) else self.names)

    def canonical_name(self, value: str) -> str:
        """A name-valued value as stored: spaces as underscores (FrankaKitchen's 'light
        switch' is light_switch), a set's names sorted, so kettle+microwave is
        microwave+kettle's spec. Not checked: `check_name` says what is wrong."""
        value = "_".join(value.split())
        if not self.separator:
            return value
        return self.separator.join(sorted(value.split(self.separator)))

    def check_name(self, value: str) -> str | None:
        """Why the name-valued `value` is invalid (one line listing the valid names, with a
        guess when one is close), or None when it is fine."""
        valid = self.valid_names()
        given = self.canonical_name(value)
        parts = given.split(self.separator) if self.separator else [given]
        joined = f" joined by {self.separator!r}" if self.separator else ""
        for part in parts:
            if part not in valid:
                what = "no name" if not part else repr(part)
                return (f"{self.name}={value}: {what} is not one of its valid names"
                        f"{' (give one or more' + joined + ')' if joined else ''}; valid: "
                        f"{', '.join(valid)}.{did_you_mean(part, valid)}")
        twice = sorted({part for part in parts if parts.count(part) > 1})
        if twice:
            return f"{self.name}={value} names {', '.join(twice)} twice: give each once"
        return None

    def check(self, value: float) -> str | None:
        """Return why `value` is invalid, or None when it is fine."""
        if not math.isfinite(value):
            return f"{self.name}={value} is not a finite number"
        if self.value_type is bool and value not in (0, 1):
            return f"{self.name}={value:g} is a switch: give 0 (off) or 1 (on)"
        if self.value_type is int and value != round(value):
            return f"{self.name}={value:g} must be a whole number"
        if self.choices and value not in self.choices:
            valid = ", ".join(f"{c:g}" for c in self.choices)
            return f"{self.name}={value:g} is not one of the valid values ({valid})"
        if not self.low <= value <= self.high:
            unit = f" {self.unit}" if self.unit and self.unit != "-" else ""
            return (f"{self.name}={value:g} is outside its valid range "
                    f"[{self.low:g}, {self.high:g}]{unit}")
        return None


def name_parameter(name: str, default: str, names: tuple[str, ...] | Callable[[], Sequence[str]],
                   doc: str, via: str = MAKE_KWARG, attr: str = "", separator: str = "",
                   to_env: Callable[[str], Any] | None = None) -> Parameter:
    """A name-valued parameter (`Parameter`, ``value_type=str``): no range, no unit."""
    return Parameter(name, default, 0.0, 0.0, "", doc, attr=attr, via=via, value_type=str,
                     names=names, separator=separator, to_env=to_env)


def unquoted(value: float | str) -> str:
    """A name-valued parameter's name from its stored form (a quoted string's text, as
    `rltransfer.specs` keeps it) or as given (a default)."""
    text = str(value)
    if text[:1] in ('"', "'") and text[-1:] == text[:1] and len(text) >= 2:
        try:
            return str(json.loads(text))
        except ValueError:  # a TOML literal string ('...') holds no escapes
            return text[1:-1]
    return text


ApplyFn = Callable[[gym.Env, Mapping[str, float]], None]
WrapFn = Callable[[gym.Env], gym.Env]
DiagnoseFn = Callable[[str, Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class Family:
    """A base environment and the parameters that vary across its related tasks."""

    name: str
    env_ids: tuple[str, ...]  # Gymnasium ids this family covers; the first is canonical
    # Other ids registered with this env class belong to the family too ('' for none).
    entry_point: str
    parameters: tuple[Parameter, ...]
    derive: ApplyFn | None = None  # recompute derived quantities after the attributes are set
    variants: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    doc: str = ""
    wrap: WrapFn | None = None  # the family's standard preprocessing (e.g. AtariWrapper)
    make_kwargs: Mapping[str, Any] = field(default_factory=dict)  # fixed gym.make kwargs
    id_template: str = ""  # e.g. "MiniGrid-DoorKey-{size}x{size}-v0", for "id" parameters
    requires: str = ""  # module the env needs; importing it registers its ids
    extra: str = ""  # the rltransfer extra that installs `requires`
    # Called when gym.make rejects the kwargs: a one-line reason (e.g. the valid ALE modes).
    diagnose: DiagnoseFn | None = None
    # Run after `requires` is imported, before any env is built (MuJoCo: silence its compiler).
    on_load: Callable[[], None] | None = None
    # A one-line reason for a parameter name the family lacks, sharper than the generic one
    # (MuJoCo: the bodies mass.<body> can name), or None to use the generic one.
    unknown_parameter: Callable[[str], str | None] | None = None
    # (base id, the "id" parameters given, converted) -> the id to make, for families whose
    # ids no one `id_template` spells (Fetch's and the mazes' Dense ids and versions).
    id_for: Callable[[str, Mapping[str, Any]], str] | None = None
    # (source registered id, target registered id) -> obs_map text for a transfer between
    # them, or None when the observations line up as they are (the text's syntax:
    # rltransfer.strategies.obs_map; e.g. Fetch's Reach -> Push "observation[0:3>0:3;...]").
    observation_map: Callable[[str, str], str | None] | None = None

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

    def load(self) -> None:
        """Import the package the env needs (which registers its ids), or say how to install it."""
        if not self.requires:
            return
        try:  # quietly: gymnasium_robotics prints a notice about its Adroit envs on import
            with contextlib.redirect_stderr(io.StringIO()):
                importlib.import_module(self.requires)
        except ImportError:
            hint = f"pip install 'rltransfer[{self.extra}]'" if self.extra else "install it"
            raise MissingDependencyError(
                f"{self.name} environments need the {self.requires} package: {hint}"
            ) from None
        if self.on_load is not None:
            self.on_load()

    def _split(self, params: Mapping[str, float | str]) -> dict[str, dict[str, Any]]:
        """Converted values of `params` grouped by how they reach the env; distributions stay
        as their text (ParamWrapper draws from them)."""
        groups: dict[str, dict[str, Any]] = {via: {} for via in _VIA}
        for name, value in params.items():
            parameter = self.parameter(name)
            if parameter is None:
                raise KeyError(f"{self.name} has no parameter {name!r}")
            # A gym.make argument goes by its keyword (Meta-World's task is env_name).
            key = parameter.attribute if parameter.via == MAKE_KWARG else name
            if isinstance(value, str) and parameter.value_type is not str:
                if not parameter.randomizable:
                    raise ParameterError(randomization.not_randomizable(self, parameter))
                groups[parameter.via][key] = value
            else:
                groups[parameter.via][key] = parameter.convert(value)
        return groups

    def env_id(self, base_id: str, params: Mapping[str, float]) -> str:
        """The registered id to make: `base_id`, unless an "id" parameter picks another."""
        chosen = self._split(params)[ENV_ID]
        if not chosen:
            return base_id
        if self.id_for is not None:
            return self.id_for(base_id, chosen)
        values = {p.name: p.convert(p.default) for p in self.parameters if p.via == ENV_ID}
        values.update(chosen)
        return self.id_template.format(**values)

    def make(self, base_id: str, params: Mapping[str, float], render_mode: str | None = None,
             inner: WrapFn | None = None) -> gym.Env:
        """``gym.make`` the env for `params`: "make" values as kwargs, then the attribute values
        and the family's preprocessing through `ParamWrapper` (so ``gym.make(env.spec)``
        rebuilds it). `params` must already be checked (`Parameter.check`).

        `inner` wraps the env *under* the preprocessing: SB3's ``Monitor`` there records whole
        games with raw scores for Atari (as ``make_atari_env`` does), not clipped lives.
        """
        self.load()
        groups = self._split(params)
        env_id = self.env_id(base_id, params)
        kwargs = {**self.make_kwargs, **groups[MAKE_KWARG]}
        try:
            env = gym.make(env_id, render_mode=render_mode, **kwargs)
        except (RuntimeError, ValueError):  # ALE: RuntimeError('Invalid game mode requested')
            problem = self.diagnose(env_id, kwargs) if self.diagnose else None
            if problem:
                raise ParameterError(problem) from None
            raise
        applied = {**groups[ATTRIBUTE], **groups[DERIVE]}
        if applied or self.wrap is not None or inner is not None:
            env = ParamWrapper(env, family=self.name, params=applied, inner=inner)
        return env

    def apply(self, env: gym.Env, params: Mapping[str, float]) -> None:
        """Set attribute `params` on the unwrapped env and recompute what depends on them
        (`derive`, which also applies the "derive" parameters)."""
        unwrapped = env.unwrapped
        for name, value in params.items():
            parameter = self.parameter(name)
            if parameter is None:
                raise KeyError(f"{self.name} has no parameter {name!r}")
            if parameter.via not in (ATTRIBUTE, DERIVE):
                raise KeyError(f"{self.name}.{name} is a {parameter.via!r} parameter: "
                               f"make the env with it (Family.make), it cannot be set after")
            if parameter.via == ATTRIBUTE:
                setattr(unwrapped, parameter.attribute, parameter.convert(value))
        if self.derive is not None:
            self.derive(unwrapped, params)


_FAMILIES: dict[str, Family] = {}


def add_family(family: Family) -> Family:
    """Add a family to the catalog and register its named variants with Gymnasium.

    A variant is registered as its base env (the one its "id" parameters pick) with its
    "make" values among the kwargs and a `ParamWrapper` that applies the attribute values and
    the family's preprocessing. Variants of families with an optional package are built by
    `registered_env`, which imports the package only when such a variant is made.
    """
    _FAMILIES[family.name] = family
    for variant, params in family.variants.items():
        variant_id = family.variant_id(variant)
        if variant_id in gym.registry:
            continue
        groups = family._split(params)
        base_id = family.env_id(family.base_id, params)
        kwargs = {**family.make_kwargs, **groups[MAKE_KWARG]}
        base = gym.registry.get(base_id)
        if family.requires:
            entry_point = "rltransfer.envs.family:registered_env"
            kwargs = {"family": family.name, "base_id": base_id, **kwargs}
        else:
            assert base is not None, f"{family.name}: {base_id} is not registered"
            entry_point, kwargs = base.entry_point, {**base.kwargs, **kwargs}
        wrappers = ()
        applied = {**groups[ATTRIBUTE], **groups[DERIVE]}
        if applied or family.wrap is not None:
            wrappers = (WrapperSpec(name="ParamWrapper",
                                    entry_point="rltransfer.envs.family:ParamWrapper",
                                    kwargs={"family": family.name, "params": applied}),)
        gym.register(
            id=variant_id,
            entry_point=entry_point,
            kwargs=kwargs,
            max_episode_steps=base.max_episode_steps if base else None,
            reward_threshold=base.reward_threshold if base else None,
            additional_wrappers=wrappers,
        )
    return family


def registered_env(family: str, base_id: str, **kwargs: Any) -> gym.Env:
    """Entry point of variants whose base env is registered by an optional package: import it,
    then build the base env (unwrapped) from its registration with `kwargs` on top."""
    found = get_family(family)
    if found is None:
        raise KeyError(f"unknown environment family {family!r}")
    found.load()
    base = gym.spec(base_id)
    return load_env_creator(base.entry_point)(**{**base.kwargs, **kwargs})


ENTRY_POINT_GROUP = "rltransfer.families"
"""Installed packages declare families under this entry-point group (README, 'Your own
family'): each entry point names a `Family`, a list of them, a function returning either,
or a module that calls `add_family` when imported."""
_plugins_loaded = False


def load_plugins() -> None:
    """Add the families that installed packages declare (`ENTRY_POINT_GROUP`), once per
    process. A plugin that fails to load is named on stderr and skipped, so one broken
    package does not stop studies of other envs."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            _declare(entry.load())
        except Exception as err:  # noqa: BLE001 - a third party's code, any error
            package = entry.dist.name if entry.dist is not None else "an installed package"
            reason = (str(err).strip().splitlines() or [""])[0]
            sys.stderr.write(f"rltransfer: warning: the {ENTRY_POINT_GROUP} entry point "
                             f"{entry.name!r} of {package} ({entry.value}) failed to load "
                             f"({type(err).__name__}: {reason}); its families are left out\n")


def _declare(declared: Any) -> None:
    if isinstance(declared, Family):
        if declared.name not in _FAMILIES:
            add_family(declared)
    elif isinstance(declared, types.ModuleType):
        return  # importing it ran its add_family calls
    elif callable(declared):
        _declare(declared())
    elif isinstance(declared, list | tuple):
        for item in declared:
            _declare(item)
    else:
        raise TypeError(f"{declared!r} is not a Family, a list of them, a function returning "
                        "them, or a module")


def families() -> dict[str, Family]:
    """All families in the catalog (installed packages' included), by name."""
    load_plugins()
    return dict(_FAMILIES)


def get_family(name: str) -> Family | None:
    """A family by name (case-insensitive), or None."""
    load_plugins()
    lowered = {k.lower(): v for k, v in _FAMILIES.items()}
    return lowered.get(name.lower())


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
        return False


def _entry_point(env_id: str) -> str | None:
    """The entry point Gymnasium registers for `env_id`, importing optional packages on a miss
    (they register their ids on import: ALE/..., MiniGrid-...)."""
    if env_id not in gym.registry:
        for family in _FAMILIES.values():
            if family.requires and _installed(family.requires):
                family.load()
    spec = gym.registry.get(env_id)
    if spec is None:
        return None
    entry_point = spec.entry_point
    return entry_point if isinstance(entry_point, str) else None


def family_of(env_id: str) -> tuple[Family, str, dict[str, float]] | None:
    """Resolve an env id to (family, base id, variant parameters), or None if no family fits.

    Named variants resolve to their family's base id and their parameter values; ids a family
    lists resolve to it; any other registered id whose env class belongs to a family resolves
    to that family. Both come with no values. A family whose package is missing raises
    MissingDependencyError with the install command.
    """
    load_plugins()
    for family in _FAMILIES.values():
        for variant, params in family.variants.items():
            if env_id == family.variant_id(variant):
                family.load()
                return family, family.base_id, dict(params)
    for family in _FAMILIES.values():
        if env_id in family.env_ids:
            family.load()
            return family, env_id, {}
    entry_point = _entry_point(env_id)
    for family in _FAMILIES.values():
        if entry_point is not None and entry_point == family.entry_point:
            family.load()
            return family, env_id, {}
    return None


def import_registering_module(env_id: str) -> str:
    """For Gymnasium's ``module:EnvId`` form, import `module` (it registers EnvId), as every
    worker process will; return the registered id (`env_id` itself without a module)."""
    if ":" not in env_id:
        return env_id
    module, name = env_id.split(":", 1)
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise UnknownEnvError(f"cannot import {module!r} for {env_id} ({err}): install it, or "
                              f"add its folder to PYTHONPATH") from None
    return name


def family_for(env_id: str) -> tuple[Family, str, dict[str, float]] | None:
    """`family_of` for an id in any form: for Gymnasium's ``module:EnvId``, the module is
    imported first (it registers EnvId, and may declare its family with `add_family`), then
    EnvId is looked up."""
    return family_of(import_registering_module(env_id))


class ParamWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Applies a family's attribute values and its preprocessing (`Family.wrap`) to an env.

    It records its constructor arguments, so ``gym.make(env.spec)`` rebuilds the variant; the
    preprocessing wrappers it adds are rebuilt by it, so they are left out of the spec.

    Values given as distributions (their text, `rltransfer.envs.randomization`) are drawn
    anew before every reset, from the wrapper's own generator (re-created from the seed of a
    seeded reset), and applied with the fixed values, all of them: derive functions treat an
    absent parameter as its default. The values in effect are ``info["context"]`` in reset's
    and every step's info. Until the first reset the env has each distribution's lowest value.
    """

    def __init__(self, env: gym.Env, family: str, params: Mapping[str, float | str],
                 inner: WrapFn | None = None):
        # `inner` (e.g. a Monitor, see Family.make) is not recorded: a rebuilt env has none.
        gym.utils.RecordConstructorArgs.__init__(self, family=family, params=dict(params))
        found = get_family(family)
        if found is None:
            raise KeyError(f"unknown environment family {family!r}")
        self.fixed = {k: v for k, v in params.items() if not isinstance(v, str)}
        distributions = randomization.distributions(found, params)
        self.randomizer = (randomization.Randomizer(found, distributions)
                           if distributions else None)
        self.context: dict[str, float] = {}
        if distributions:
            randomization.check_spaces(found, env, self.fixed, distributions)
        else:
            found.apply(env, params)
        self._given = env
        wrapped = inner(env) if inner is not None else env
        gym.Wrapper.__init__(self, found.wrap(wrapped) if found.wrap is not None else wrapped)
        self.family = found
        self.params = dict(params)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.randomizer is None:
            return super().reset(seed=seed, options=options)
        if seed is not None:
            self.randomizer.seed(seed)
        self.context = self.randomizer.draw(self._given.unwrapped.np_random)
        self.family.apply(self._given, {**self.fixed, **self.context})
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "context": dict(self.context)}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.randomizer is not None:
            info = {**info, "context": dict(self.context)}
        return obs, reward, terminated, truncated, info

    @property
    def spec(self) -> EnvSpec | None:
        """The given env's spec plus this wrapper (not the preprocessing wrappers inside)."""
        if self._cached_spec is None and self._given.spec is not None:
            spec = deepcopy(self._given.spec)
            spec.additional_wrappers += (self.wrapper_spec(**self._saved_kwargs),)
            self._cached_spec = spec
        return self._cached_spec


def method_copy(env: gym.Env, name: str, constants: Mapping[str, float]) -> types.MethodType:
    """The class's method `name` bound to `env` (unwrapped), reading `constants` as globals:
    how DERIVE parameters replace an env module's constants for one instance only.

    The function shares the class's code and closure (``super()`` keeps working); only its
    globals differ: a copy of the module's namespace with the constants replaced.
    """
    function = getattr(type(env), name)
    namespace = {**function.__globals__, **{key: float(value) for key, value in constants.items()}}
    copy = types.FunctionType(function.__code__, namespace, function.__name__,
                              function.__defaults__, function.__closure__)
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    return types.MethodType(copy, env)
