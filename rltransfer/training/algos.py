"""Algorithms by name, their hyperparameter presets (data), and how models are built.

Presets come from RL-Baselines3-Zoo's tuned values (``presets/hyperparams.toml``), keyed by
env id with a per-algorithm default; ``--hparams key=value`` overrides them.

The table of algorithms is `rltransfer.training.algo_registry` (torch-free, for ``--help``);
its names are importable from here too (`ALGORITHMS`, `Algorithm`).
The algorithms of ``sb3-contrib`` (TQC, QR-DQN, CrossQ, TRPO, ARS, RecurrentPPO, MaskablePPO)
are imported only when a study uses one, so SB3's own work without it; `get_algorithm` says in
one line how to install it.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import sys
from importlib import resources
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.utils import LinearSchedule

from ..errors import (
    AlgorithmError,
    ConfigError,
    HyperparameterError,
    MissingDependencyError,
    did_you_mean,
)
from ..specs import EncoderSpec
from .algo_registry import ALGORITHMS, CONTRIB, ZOO_NAMES, Algorithm  # the table (torch-free)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Keys of a preset that are not constructor arguments of the SB3 class.
STUDY_KEYS = ("policy", "n_envs", "n_timesteps", "noise_type", "noise_std", "frame_stack",
              "normalize")  # normalize: VecNormalize around the env (rltransfer.training.vecnorm)

_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU,
                "leaky_relu": torch.nn.LeakyReLU, "silu": torch.nn.SiLU, "gelu": torch.nn.GELU}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called `name` (case-insensitive); AlgorithmError if there is none,
    MissingDependencyError (one line: how to install it) for an sb3-contrib algorithm
    without sb3-contrib."""
    algo = ALGORITHMS.get(name.lower())
    if algo is None:
        zoo = ZOO_NAMES.get(name.lower())
        raise AlgorithmError(
            f"unknown algorithm {name!r}: choose from {', '.join(ALGORITHMS)}."
            + (f" RL-Zoo's {name.lower()} is --algo {zoo}." if zoo
               else did_you_mean(name.lower(), ALGORITHMS))
        )
    if algo.contrib and importlib.util.find_spec(CONTRIB) is None:
        raise MissingDependencyError(
            f"--algo {algo.name} needs sb3-contrib, which is not installed: "
            f"pip install 'rltransfer[contrib]'")
    return algo


def check_action_space(algo: Algorithm, action_space: spaces.Space, env_label: str) -> None:
    """Raise AlgorithmError when `algo` cannot act in `action_space`."""
    if not isinstance(action_space, algo.space_types):
        fits = [a.name for a in ALGORITHMS.values() if isinstance(action_space, a.space_types)
                and a.name != "maskableppo"]  # it needs more than the space: action masks
        raise AlgorithmError(
            f"{algo.name} needs {algo.space_names} actions, but {env_label} has "
            f"{type(action_space).__name__} actions: use --algo {' or '.join(fits)}"
        )


@functools.cache
def load_presets() -> dict[str, dict[str, dict[str, Any]]]:
    """The preset file: {algo: {env id or 'default': {key: value}}}."""
    text = resources.files("rltransfer").joinpath("presets/hyperparams.toml").read_text()
    return tomllib.loads(text)


def preset(algo: str, env_ids: list[str]) -> dict[str, Any]:
    """The first preset found among `env_ids` (most specific first), else the default."""
    table = load_presets().get(algo, {})
    for env_id in env_ids:
        if env_id in table:
            return {**table.get("default", {}), **table[env_id]}
    return dict(table.get("default", {}))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are TOML literals (numbers, true, [64, 64], {...})
    and anything else is taken as a string."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise HyperparameterError(
                f"cannot read --hparams {item!r}: write key=value, e.g. learning_rate=3e-4"
            )
        try:
            overrides[key] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = raw.strip()
    return overrides


def constructor_keys(algo: Algorithm) -> list[str]:
    """Keyword arguments the SB3 class accepts (besides policy and env)."""
    params = inspect.signature(algo.cls.__init__).parameters
    return [p for p in params if p not in ("self", "policy", "env", "_init_setup_model")]


# Constructor arguments rltransfer sets itself, and the option that sets them.
RESERVED = {"seed": "--seed", "device": "--device", "verbose": None, "tensorboard_log": None}


def validate_hparams(algo: Algorithm, hparams: dict[str, Any]) -> None:
    """Raise HyperparameterError for keys the algorithm does not take and for values of the
    study keys that cannot work (the SB3 constructor checks the rest; see runner.probe)."""
    keys = constructor_keys(algo)
    valid = (set(keys) | set(STUDY_KEYS)) - set(RESERVED)
    if "action_noise" not in keys:
        valid -= {"noise_type", "noise_std"}
    for key, value in hparams.items():
        if key in RESERVED:
            option = RESERVED[key]
            raise HyperparameterError(
                f"--hparams {key} is set by rltransfer"
                + (f": use {option} instead" if option else ": remove it")
            )
        if key not in valid:
            raise HyperparameterError(
                f"{algo.name} has no hyperparameter {key!r}.{did_you_mean(key, valid)} "
                f"Valid: {', '.join(sorted(valid))}"
            )
        if key in ("n_envs", "n_timesteps") and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise HyperparameterError(f"--hparams {key} must be a positive integer, got {value!r}")
        if key == "normalize":
            from .vecnorm import config

            config(hparams)  # HyperparameterError for a value VecNormalize cannot take
        if key == "replay_buffer_class" and value != "none":
            _replay_buffer_class(value)  # HyperparameterError for a class it cannot name
        if key == "policy_kwargs" and not isinstance(value, dict):
            raise HyperparameterError(
                "--hparams policy_kwargs must be a table, e.g. "
                f"'policy_kwargs={{net_arch=[64,64]}}', got {value!r}"
            )


def _schedule(value: Any) -> Any:
    # RL-Zoo writes linear schedules as "lin_<initial>", decaying to 0 over training.
    if isinstance(value, str) and value.startswith("lin_"):
        try:
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
        except ValueError:
            raise HyperparameterError(
                f"cannot read schedule {value!r}: write lin_<number>, e.g. lin_1e-3"
            ) from None
    return value


def _optimizers() -> dict[str, type[torch.optim.Optimizer]]:
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    return {"RMSpropTFLike": RMSpropTFLike, "adam": torch.optim.Adam,
            "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}


def _policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(raw)
    optimizer = kwargs.get("optimizer_class")
    if isinstance(optimizer, str):
        known = _optimizers()
        if optimizer not in known:
            raise HyperparameterError(
                f"unknown optimizer_class {optimizer!r}: choose from {', '.join(known)}"
            )
        kwargs["optimizer_class"] = known[optimizer]
    activation = kwargs.get("activation_fn")
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise HyperparameterError(
                f"unknown activation_fn {activation!r}: choose from {', '.join(_ACTIVATIONS)}"
            )
        kwargs["activation_fn"] = _ACTIVATIONS[activation]
    return kwargs


HER = "HerReplayBuffer"
"""The replay buffer class that relabels goals (SB3's), named as RL-Zoo's presets name it."""

HER_DEFAULTS = {"n_sampled_goal": 4, "goal_selection_strategy": "future"}
"""RL-Zoo's HER setting for every robotics goal env (rl-baselines3-zoo 2.9.0a2
hyperparams/sac.yml and tqc.yml, FetchReach-v1 ... PandaStack-v1): 4 relabelled goals per
real one, drawn from the same episode's future ("future")."""


def is_goal_env(space: spaces.Space, env: Any) -> bool:
    """Whether `env` is a goal env HER can relabel: a Dict observation with
    ``achieved_goal`` and ``desired_goal`` keys and a ``compute_reward`` method."""
    keys = set(space.spaces) if isinstance(space, spaces.Dict) else set()
    return {"achieved_goal", "desired_goal"} <= keys and callable(
        getattr(env.unwrapped, "compute_reward", None))


def takes_replay_buffer(algo: Algorithm) -> bool:
    """Whether `algo` is off-policy with SB3's replay buffer seam (DQN, SAC, TD3, DDPG, TQC,
    QR-DQN, CrossQ), so HerReplayBuffer can replace its buffer."""
    return "replay_buffer_class" in constructor_keys(algo)


def _replay_buffer_class(name: Any) -> Any:
    """``replay_buffer_class`` in data form (RL-Zoo's class name) as SB3's class."""
    from stable_baselines3 import HerReplayBuffer
    from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer

    known = {HER: HerReplayBuffer, "DictReplayBuffer": DictReplayBuffer,
             "ReplayBuffer": ReplayBuffer}
    if not isinstance(name, str):
        return name
    if name not in known:
        raise HyperparameterError(
            f"unknown --hparams replay_buffer_class={name!r}: choose {', '.join(known)}, or "
            f"none (the algorithm's own buffer; on a goal env: no HER)")
    return known[name]


def _action_noise(kind: str, std: float, action_space: spaces.Space) -> Any:
    size = int(np.prod(action_space.shape))
    mean, sigma = np.zeros(size), std * np.ones(size)
    if kind == "normal":
        return NormalActionNoise(mean, sigma)
    if kind == "ornstein-uhlenbeck":
        return OrnsteinUhlenbeckActionNoise(mean, sigma)
    raise HyperparameterError(
        f"unknown noise_type {kind!r}: choose normal or ornstein-uhlenbeck"
    )


def model_kwargs(hparams: dict[str, Any], action_space: spaces.Space,
                 encoder: EncoderSpec | None = None) -> dict[str, Any]:
    """Turn data-form hyperparameters into SB3 constructor arguments; with `encoder`, the
    policy's features extractor is that `PixelEncoder`."""
    kwargs = {k: _schedule(v) for k, v in hparams.items() if k not in STUDY_KEYS}
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = _policy_kwargs(kwargs["policy_kwargs"])
    if encoder is not None:
        from .encoders import pixel_policy_kwargs  # torchvision only for pixel policies

        kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}),
                                   **pixel_policy_kwargs(**encoder.extractor_kwargs)}
    if "replay_buffer_class" in kwargs:
        kwargs["replay_buffer_class"] = _replay_buffer_class(kwargs["replay_buffer_class"])
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    if "noise_type" in hparams:
        kwargs["action_noise"] = _action_noise(
            hparams["noise_type"], float(hparams.get("noise_std", 0.1)), action_space
        )
    return kwargs


def resolve_device(device: str, policy: str) -> str:
    """`auto` means CPU for MLP policies (as SB3 advises) and CUDA for CNN ones if present."""
    if device == "auto":
        return "cuda" if policy.startswith("Cnn") and torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: no CUDA device is available here; use --device cpu or auto"
        )
    return device
