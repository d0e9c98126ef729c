"""The checks of a study spec that need no environment or library: each raises a one-line
ConfigError naming the option (as the CLI spells it) and the fix."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..specs import AUGMENTATIONS, MAX_SEED
from ..strategies import registry

SCORES = ("return", "success")
"""--score: what a study compares (the evaluation return, or the success rate where the env
reports success: `rltransfer.training.success`)."""

if TYPE_CHECKING:
    from .study_spec import StudySpec


def check_study(spec: StudySpec) -> None:
    """Every check below, types first."""
    check_types(spec)
    for choice in _check_conditions(spec.transfer.conditions):  # e.g. replay: off-policy
        registry.check_algorithm(choice, spec.agent.algo)
    _check_numbers(spec)
    _check_pixels(spec)


def check_types(spec: StudySpec) -> None:
    """Each option has the type its option takes (a config file can give any)."""
    values = spec.flat()
    for name, kinds in _FIELD_TYPES.items():
        value = values[name]
        if value is None and name in _OPTIONAL:
            continue
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            wanted = " or ".join(_TYPE_NAMES[k] for k in kinds)
            raise ConfigError(f"{name} must be {wanted}, got {value!r}")
    for item in spec.transfer.conditions:
        if not isinstance(item, str):
            raise ConfigError(f"conditions must be names, got {item!r}")
    if not isinstance(spec.agent.hparams, Mapping):
        raise ConfigError(f"hparams must be a table of key = value, got {spec.agent.hparams!r}")


def _check_conditions(conditions: tuple[str, ...]) -> list[registry.Choice]:
    """The conditions, parsed: each spelled canonically, none twice."""
    choices = [registry.parse(condition) for condition in conditions]
    labels = [choice.label for choice in choices]
    if not conditions:
        raise ConfigError("--conditions is empty: give at least one, e.g. scratch,finetune")
    if labels != list(conditions):
        raise ConfigError(f"--conditions: write {','.join(labels)} (each condition in its "
                          f"canonical form)")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--conditions lists a condition twice: {','.join(conditions)}")
    return choices


def _check_counts(spec: StudySpec) -> None:
    """Counts are positive integers, within their `_LIMITS`."""
    protocol = spec.protocol
    for option, value in (("--seeds", protocol.seeds), ("--timesteps", protocol.timesteps),
                          ("--source-timesteps", protocol.source_timesteps),
                          ("--eval-freq", protocol.eval_freq),
                          ("--eval-episodes", protocol.eval_episodes),
                          ("--n-envs", spec.agent.n_envs)):
        if value is None:
            continue
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{option} must be a positive integer, got {value!r}")
        most, why = _LIMITS.get(option, (value, ""))
        if value > most:
            raise ConfigError(f"{option} {value} is more than {most:,}, {why}")


def _check_score(score: str, threshold: float | None) -> None:
    if score not in SCORES:
        raise ConfigError(f"--score {score!r} is not one of {', '.join(SCORES)}")
    if score == "success" and threshold is not None:
        raise ConfigError(f"--threshold {threshold:g} is a return, and --score success "
                          f"compares success rates (normalized 1 = 100% success): leave "
                          f"--threshold out, or use --score return")


def _check_numbers(spec: StudySpec) -> None:
    protocol, agent, name = spec.protocol, spec.agent, spec.output.name
    _check_counts(spec)
    if protocol.seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {protocol.seed}")
    if protocol.sequential is not None:
        from ..report.sequential import Design

        design = Design.parse(protocol.sequential)
        if design.first != protocol.seeds:
            raise ConfigError(f"--seeds {protocol.sequential}: its first batch is "
                              f"{design.first} seeds, not {protocol.seeds}")
    most = Design.parse(protocol.sequential).max if protocol.sequential else protocol.seeds
    if most > _LIMITS["--seeds"][0]:
        raise ConfigError(f"--seeds {protocol.sequential}: max={most} is more than "
                          f"{_LIMITS['--seeds'][0]:,}, {_LIMITS['--seeds'][1]}")
    if protocol.seed + most > MAX_SEED:
        raise ConfigError(f"--seed {protocol.seed} is too large: seeds must stay below "
                          f"{MAX_SEED}")
    if isinstance(protocol.alpha, bool) or not 0.0001 <= protocol.alpha <= 0.5:
        raise ConfigError(f"--alpha must be a level between 0.0001 and 0.5 (e.g. 0.05), "
                          f"got {protocol.alpha!r}")
    if protocol.similarity != 0 and not MIN_SIMILARITY <= protocol.similarity <= MAX_SIMILARITY:
        raise ConfigError(f"--similarity must be 0 (off) or a number of transitions per side "
                          f"from {MIN_SIMILARITY} to {MAX_SIMILARITY:,}, got "
                          f"{protocol.similarity}")
    if protocol.threshold is not None and not math.isfinite(protocol.threshold):
        raise ConfigError(f"--threshold must be a finite number, got {protocol.threshold}")
    _check_score(protocol.score, protocol.threshold)
    if agent.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", agent.device):
        raise ConfigError(f"--device {agent.device!r} is not one of auto, cpu, cuda, cuda:N")
    if name is not None:
        _check_name(name)
    _check_net_arch(agent.hparams.get("policy_kwargs"))


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"--name {name!r} must be a folder name that starts with a letter "
                          f"or a digit (names that start with '.' are hidden, and .cache holds "
                          f"the cache), then letters, digits, '.', '_' or '-'")
    if len(name) > MAX_NAME:
        raise ConfigError(f"--name is {len(name)} characters long: give at most {MAX_NAME}")


MAX_NAME = 200  # a study folder's name; the file system's limit is 255 bytes
MIN_SIMILARITY = 16  # --similarity: transitions per side (8 episodes side by side, 2 held out)
MAX_SIMILARITY = 100_000
_LIMITS: dict[str, tuple[int, str]] = {
    "--seeds": (1000, "the most a study takes: each seed is a run (and a folder) per "
                      "condition, and intervals narrow little past a few dozen; split a "
                      "larger design into several studies"),
    "--timesteps": (10**10, "the most env steps a run takes"),
    "--source-timesteps": (10**10, "the most env steps a run takes"),
    "--n-envs": (1024, "the most parallel envs a run takes (each is a live env in the "
                       "run's process)"),
}
"""Options' upper limits, and why: a value past them is a typo (e.g. 10000 for 1000) that
would otherwise write thousands of folders, or fail hours later."""


def _check_net_arch(policy_kwargs: object) -> None:
    """`--hparams policy_kwargs={net_arch=...}`: every layer size a positive integer (SB3
    builds a zero-width layer without complaint, and the policy learns nothing)."""
    if not isinstance(policy_kwargs, Mapping) or "net_arch" not in policy_kwargs:
        return
    arch = policy_kwargs["net_arch"]
    sizes: list[object] = []
    for part in arch.values() if isinstance(arch, Mapping) else (
            arch if isinstance(arch, list | tuple) else [arch]):
        if isinstance(part, Mapping):  # SB3's older [64, {pi=[..], vf=[..]}] form
            sizes += [s for value in part.values() for s in (
                value if isinstance(value, list | tuple) else [value])]
        elif isinstance(part, list | tuple):
            sizes += list(part)
        else:
            sizes.append(part)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"--hparams policy_kwargs: net_arch={arch!r} has a layer of "
                              f"size {size!r}: layer sizes are positive integers, e.g. "
                              f"net_arch=[64,64]")


def _check_pixels(spec: StudySpec) -> None:
    env, augment = spec.env, spec.agent.augment
    if augment is not None and augment not in AUGMENTATIONS:
        raise ConfigError(f"--augment {augment!r} is not one of {', '.join(AUGMENTATIONS)}")
    if not 36 <= env.image_size <= 1024:
        raise ConfigError(f"--image-size must be between 36 (the smallest input NatureCNN "
                          f"takes) and 1024, got {env.image_size}")
    if env.frame_stack is not None and not 1 <= env.frame_stack <= 64:
        raise ConfigError(f"--frame-stack must be between 1 and 64, got {env.frame_stack}")
    scale = spec.transfer.encoder_lr_scale
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"--encoder-lr-scale must be a positive number, got {scale}")


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "algo": (str,), "seeds": (int,), "seed": (int,), "timesteps": (int,),
    "source_timesteps": (int,), "eval_freq": (int,), "eval_episodes": (int,),
    "threshold": (int, float), "n_envs": (int,), "device": (str,), "name": (str,),
    "out": (str,), "source_model": (str,), "retrain_source": (bool,), "pixels": (bool,),
    "image_size": (int,), "grayscale": (bool,), "frame_stack": (int,), "encoder": (str,),
    "encoder_weights": (str,), "freeze_encoder": (bool,), "encoder_lr_scale": (int, float),
    "augment": (str,), "alpha": (int, float), "sequential": (str,), "similarity": (int,),
    "score": (str,),
}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_OPTIONAL = {"timesteps", "source_timesteps", "eval_freq", "threshold", "n_envs", "name",
             "source_model", "frame_stack", "augment", "sequential"}
