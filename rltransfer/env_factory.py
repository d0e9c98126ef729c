"""Build Gymnasium environments from `EnvSpec`s, validating ids and parameters first."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from . import envs as catalog
from .envs import randomization
from .envs.family import family_for, import_registering_module
from .errors import MissingDependencyError, ParameterError, UnknownEnvError, did_you_mean
from .pixels import add_pixel_observations, headless_rendering, stack_frames
from .specs import EnvSpec, Value, format_value, is_distribution, literal


def resolve(spec: EnvSpec) -> tuple[catalog.Family | None, str, dict[str, Value]]:
    """Validate `spec` and return (family, base Gymnasium id, full parameter values).

    An env outside the catalog takes its parameters as constructor keyword arguments,
    checked against the constructor's signature (`constructor_arguments`).
    Raises UnknownEnvError / ParameterError with a message that says how to fix the input.
    """
    found = family_for(spec.id)
    if found is None:
        registered = import_registering_module(spec.id)
        if registered not in gym.registry:
            names = list(gym.registry) + [f.name for f in catalog.families().values()]
            hint = did_you_mean(spec.id, names)
            raise UnknownEnvError(
                f"unknown environment {spec.id!r}.{hint or ''} "
                f"'python -m rltransfer envs' lists the families; any registered Gymnasium id works"
            )
        _check_arguments(spec, registered)
        return None, spec.id, dict(spec.params)
    family, base_id, params = found
    for name, value in spec.params.items():
        parameter = family.parameter(name)
        if parameter is None:
            problem = family.unknown_parameter(name) if family.unknown_parameter else None
            if problem:
                raise ParameterError(problem)
            hint = did_you_mean(name, family.parameter_names)
            raise ParameterError(
                f"{family.name} has no parameter {name!r}.{hint}"
                f" Valid parameters: {', '.join(family.parameter_names)}"
            )
        if parameter.value_type is str:  # a name (Meta-World's task, a maze's layout)
            params[name] = _check_name(family, parameter, value, spec)
            continue
        if isinstance(value, str):  # a distribution (EnvSpec keeps its canonical text)
            params[name] = _check_distribution(family, parameter, value, spec)
            continue
        if isinstance(value, bool) and parameter.value_type is not bool:
            raise ParameterError(f"{name}={format_value(value)} in {spec} is a switch, but "
                                 f"{family.name}'s {name} is a number: give e.g. "
                                 f"{name}={parameter.default:g}")
        problem = parameter.check(value)
        if problem:
            raise ParameterError(f"{problem} in {spec}: pick a value inside the range")
        params[name] = value
    return family, base_id, params


def constructor_arguments(env_id: str) -> tuple[list[str], bool]:
    """The keyword arguments `env_id`'s registered constructor takes (its signature's named
    parameters and the registration's kwargs, render_mode left out: rltransfer sets it), and
    whether it also takes any other (``**kwargs``)."""
    spec = gym.spec(env_id)
    names = [name for name in spec.kwargs if name != "render_mode"]
    creator = (load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str)
               else spec.entry_point)
    try:
        signature = inspect.signature(creator)
    except (TypeError, ValueError):  # a builtin or C type: nothing to read
        return names, True
    anything = False
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            anything = True
        elif (parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                 inspect.Parameter.KEYWORD_ONLY)
              and name not in ("self", "render_mode") and name not in names):
            names.append(name)
    return names, anything


def _check_arguments(spec: EnvSpec, env_id: str) -> None:
    """A one-line ParameterError for a parameter of an env outside the catalog that its
    constructor does not take, or that is a distribution (fixed at construction)."""
    if not spec.params:
        return
    names, anything = constructor_arguments(env_id)
    takes = ", ".join(names) if names else "no keyword arguments"
    for name, value in spec.params.items():
        if name == "render_mode":
            raise ParameterError(f"render_mode in {spec} is set by rltransfer (rgb_array for "
                                 f"--pixels, none for training): drop it")
        if name not in names and not anything:
            hint = did_you_mean(name, names)
            raise ParameterError(
                f"{env_id} takes no argument {name!r}.{hint} Its constructor takes: {takes} "
                f"(it is not in rltransfer's catalog, so {spec.id}:name=value passes "
                f"keyword arguments to gym.make)")
        if is_distribution(value):
            raise ParameterError(
                f"{name}={value} in {spec}: {env_id} is not in rltransfer's catalog, so "
                f"{name} is a constructor argument, fixed when the env is built, and cannot "
                f"be drawn per episode; give one value, or declare a family with {name} as "
                f"an attribute parameter (README, 'Your own family')")


def _make_outside_catalog(spec: EnvSpec, env_id: str, params: Mapping[str, Value],
                          render_mode: str | None) -> gym.Env:
    """``gym.make`` an env outside the catalog with its parameters as keyword arguments; a
    value its constructor rejects is a one-line ParameterError naming the argument."""
    kwargs: dict[str, Any] = {name: literal(value) for name, value in params.items()}
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled:
        raise
    except Exception as err:
        if not params:
            raise
        raise ParameterError(_rejected(spec, env_id, params, err, render_mode)) from None


def _rejected(spec: EnvSpec, env_id: str, params: Mapping[str, Value], err: Exception,
              render_mode: str | None) -> str:
    """Which argument the constructor rejected: each is tried alone when several were given."""
    culprits = list(params)
    if len(params) > 1:
        culprits = []
        extra = {} if render_mode is None else {"render_mode": render_mode}
        for name, value in params.items():
            try:
                gym.make(env_id, **extra, **{name: literal(value)}).close()
            except Exception:  # noqa: BLE001 - any error the constructor raises
                culprits.append(name)
        culprits = culprits or list(params)
    given = ", ".join(f"{name}={_typed_text(params[name])}" for name in culprits)
    reason = (str(err).strip().splitlines() or [""])[0]
    return (f"{env_id} rejected {given} in {spec}: {type(err).__name__}"
            f"{': ' + reason if reason else ''}; give a value its constructor accepts")


def _typed_text(value: Value) -> str:
    """A value as its type reads: 12.0 for a float, 12 for an int."""
    return repr(value) if isinstance(value, float) else format_value(value)


def _check_name(family: catalog.Family, parameter: catalog.Parameter, value: Value,
                spec: EnvSpec) -> Value:
    """`value` if it is one of a name-valued parameter's names (a set of them, for a
    `separator`); otherwise a one-line ParameterError listing the valid names."""
    if is_distribution(value):
        raise ParameterError(randomization.not_randomizable(family, parameter))
    if not isinstance(value, str):
        names = ", ".join(parameter.valid_names())
        raise ParameterError(f"{parameter.name}={format_value(value)} in {spec}: "
                             f"{family.name}'s {parameter.name} is a name, one of: {names}")
    problem = parameter.check_name(literal(value))
    if problem:
        raise ParameterError(f"{problem} (in {spec})")
    return value


def _check_distribution(family: catalog.Family, parameter: catalog.Parameter, value: str,
                        spec: EnvSpec) -> str:
    """`value` (a distribution's text) if `parameter` can be randomized and its values stay in
    the parameter's valid range; otherwise a one-line ParameterError that says what to give."""
    if not parameter.randomizable:
        raise ParameterError(randomization.not_randomizable(family, parameter))
    distribution = randomization.parse_distribution(value, where=f"{parameter.name}={value}")
    if distribution is None:
        raise ParameterError(f"{parameter.name}={value!r} in {spec} is neither a number nor a "
                             f"distribution: give e.g. {parameter.name}=1.0")
    problem = randomization.check(parameter, distribution, str(spec))
    if problem:
        raise ParameterError(problem)
    return distribution.text


def make_env(spec: EnvSpec, render_mode: str | None = None, monitor: bool = False) -> gym.Env:
    """A single environment for `spec`: its parameters and its family's preprocessing applied
    (`Family.make`: constructor kwargs, attributes, e.g. AtariWrapper for ALE), observing its
    rendered frames when `spec.pixels` (frame stacking is left to the vectorized env).

    `monitor` adds SB3's Monitor *under* the family's preprocessing, so episode returns are
    whole games with raw rewards (Atari's AtariWrapper ends episodes at a lost life and
    clips rewards above it), as SB3's make_atari_env does."""
    family, base_id, params = resolve(spec)
    if spec.pixels:
        if render_mode not in (None, "rgb_array"):
            raise ParameterError(f"{spec} observes rgb_array frames, so it cannot be made with "
                                 f"render_mode={render_mode!r}")
        render_mode = "rgb_array"
    if render_mode == "rgb_array":
        headless_rendering()  # before the env's first render starts pygame's display
    try:
        if family is None:  # an env whose constructor takes no render_mode works too
            env = _make_outside_catalog(spec, base_id, params, render_mode)
            env = Monitor(env) if monitor else env
        else:
            env = family.make(base_id, params, render_mode=render_mode,
                              inner=Monitor if monitor else None)
    except gym.error.DependencyNotInstalled as err:
        raise MissingDependencyError(f"{spec.id} needs a package that is not installed: "
                                     f"{str(err).strip().splitlines()[0]}") from None
    if spec.pixels:
        env = add_pixel_observations(env, spec.image_size, spec.grayscale)
    return env


def make_vec(spec: EnvSpec, n_envs: int, seed: int) -> VecEnv:
    """`n_envs` copies of `spec` in one process, monitored, seeded (copy i with seed + i, as
    SB3's make_vec_env does), with `spec.frame_stack` observations stacked."""
    resolve(spec)  # fail here, with a clear message, not inside a worker

    def factory(rank: int) -> Callable[[], gym.Env]:
        def build() -> gym.Env:
            env = make_env(spec, monitor=True)
            env.action_space.seed(seed + rank)
            return env
        return build

    venv = DummyVecEnv([factory(rank) for rank in range(n_envs)])
    venv.seed(seed)
    return stack_frames(venv, spec.frame_stack)


def reward_threshold(spec: EnvSpec) -> float | None:
    """The reward threshold Gymnasium registers for the spec's base env, if any."""
    _, base_id, _ = resolve(spec)
    return gym.spec(base_id.split(":")[-1]).reward_threshold
