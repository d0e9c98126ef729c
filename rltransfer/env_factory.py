"""Build Gymnasium environments from `EnvSpec`s, validating ids and parameters first."""

from __future__ import annotations

import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from . import envs as catalog
from .errors import MissingDependencyError, ParameterError, UnknownEnvError, did_you_mean
from .specs import EnvSpec


def resolve(spec: EnvSpec) -> tuple[catalog.Family | None, str, dict[str, float]]:
    """Validate `spec` and return (family, base Gymnasium id, full parameter values).

    Raises UnknownEnvError / ParameterError with a message that says how to fix the input.
    """
    found = catalog.family_of(spec.id)
    if found is None:
        if spec.id not in gym.registry:
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
            hint = did_you_mean(name, family.parameter_names)
            raise ParameterError(
                f"{family.name} has no parameter {name!r}.{hint}"
                f" Valid parameters: {', '.join(family.parameter_names)}"
            )
        problem = parameter.check(value)
        if problem:
            raise ParameterError(f"{problem} in {spec}: pick a value inside the range")
        params[name] = value
    return family, base_id, params


def make_env(spec: EnvSpec, render_mode: str | None = None) -> gym.Env:
    """A single environment for `spec`, with its parameters applied."""
    family, base_id, params = resolve(spec)
    try:
        env = gym.make(base_id, render_mode=render_mode)
    except gym.error.DependencyNotInstalled as err:
        raise MissingDependencyError(f"{spec.id} needs a package that is not installed: "
                                     f"{str(err).strip().splitlines()[0]}") from None
    if family is not None and params:
        env = catalog.ParamWrapper(env, family=family.name, params=params)
    return env


def make_vec(spec: EnvSpec, n_envs: int, seed: int) -> VecEnv:
    """`n_envs` copies of `spec` in one process, each wrapped in SB3's Monitor, seeded."""
    resolve(spec)  # fail here, with a clear message, not inside a worker
    return make_vec_env(lambda: make_env(spec), n_envs=n_envs, seed=seed,
                        vec_env_cls=DummyVecEnv)


def reward_threshold(spec: EnvSpec) -> float | None:
    """The reward threshold Gymnasium registers for the spec's base env, if any."""
    _, base_id, _ = resolve(spec)
    return gym.spec(base_id).reward_threshold
