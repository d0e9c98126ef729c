"""Build Gymnasium environments from `EnvSpec`s, validating ids and parameters first."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from . import envs as catalog
from .envs import randomization
from .errors import MissingDependencyError, ParameterError, UnknownEnvError, did_you_mean
from .pixels import add_pixel_observations, headless_rendering, stack_frames
from .specs import EnvSpec


def resolve(spec: EnvSpec) -> tuple[catalog.Family | None, str, dict[str, float | str]]:
    """Validate `spec` and return (family, base Gymnasium id, full parameter values).

    Raises UnknownEnvError / ParameterError with a message that says how to fix the input.
    """
    found = catalog.family_of(spec.id)
    if found is None:
        registered = _import_registering_module(spec.id)
        if registered not in gym.registry:
            names = list(gym.registry) + [f.name for f in catalog.families().values()]
            hint = did_you_mean(spec.id, names)
            raise UnknownEnvError(
                f"unknown environment {spec.id!r}.{hint or ''} "
                f"'python -m rltransfer envs' lists the families; any registered Gymnasium id works"
            )
        if spec.params:
            families = ", ".join(catalog.families())
            raise ParameterError(
                f"{spec.id} has no parameters in rltransfer's catalog, so "
                f"{','.join(spec.params)} cannot be set: use one of the families ({families}) "
                f"or drop the ':...' part"
            )
        return None, spec.id, {}
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
        if isinstance(value, str):  # a distribution (EnvSpec keeps its canonical text)
            params[name] = _check_distribution(family, parameter, value, spec)
            continue
        problem = parameter.check(value)
        if problem:
            raise ParameterError(f"{problem} in {spec}: pick a value inside the range")
        params[name] = value
    return family, base_id, params


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


def _import_registering_module(env_id: str) -> str:
    """For Gymnasium's ``module:EnvId`` form, import `module` (it registers EnvId), as every
    worker process will; return the registered id."""
    if ":" not in env_id:
        return env_id
    module, name = env_id.split(":", 1)
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise UnknownEnvError(f"cannot import {module!r} for {env_id} ({err}): install it, or "
                              f"add its folder to PYTHONPATH") from None
    return name


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
            env = gym.make(base_id, **({} if render_mode is None else
                                       {"render_mode": render_mode}))
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
