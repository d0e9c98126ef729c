"""Specs: frozen, JSON-round-trippable descriptions of environments, agents, runs and studies.

A spec's `stable_hash` names its cache entry, so the same source policy is trained once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import conditions as registry
from .errors import ConfigError, ParameterError, did_you_mean

CONDITIONS = tuple(registry.CONDITIONS)
"""Transfer conditions (DESIGN.md), by name: `rltransfer.conditions` says what each does."""

AUGMENTATIONS = ("random-shift",)

MAX_SEED = 2**31 - 1_000_000  # room for the evaluation seed offset below 2**32

_PARAM_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(\S+)\s*$")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ENV_ID_RE = re.compile(r"^[A-Za-z0-9_/.-]+-v\d+$")


def stable_hash(data: Any) -> str:
    """A short hash of JSON-able `data` that does not depend on key order."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EnvSpec:
    """An environment: a Gymnasium id plus family parameter values.

    On the command line: ``CartPole-v1:length=1.0,force_mag=5``.
    """

    id: str
    params: Mapping[str, float] = field(default_factory=dict)
    pixels: bool = False  # observe rendered rgb_array frames instead of the env's state
    image_size: int = 84  # rendered frames are resized to image_size x image_size
    grayscale: bool = False
    frame_stack: int = 1  # consecutive observations stacked along channels

    @classmethod
    def parse(cls, text: str) -> EnvSpec:
        """Parse ``ID[:name=value,...]``; ID may be Gymnasium's ``module:EnvId-v0``, which
        imports `module` (where the env is registered) in every process that makes it."""
        text = text.strip()
        env_id, _, rest = text.partition(":")
        first, _, after = rest.partition(":")
        if _MODULE_RE.match(env_id) and _ENV_ID_RE.match(first):
            env_id, rest = f"{env_id}:{first}", after
        if not env_id:
            raise ParameterError(f"empty environment in {text!r}: write ID or ID:name=value")
        params: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in rest.split(","))) if rest else ():
            match = _PARAM_RE.match(item)
            if not match:
                raise ParameterError(
                    f"cannot read {item!r} in {text!r}: parameters are name=value, "
                    f"e.g. CartPole-v1:length=1.0,force_mag=5"
                )
            name, raw = match.groups()
            try:
                value = float(raw)
            except ValueError:
                raise ParameterError(
                    f"{name}={raw!r} in {text!r} is not a number: give a value like {name}=1.0"
                ) from None
            if name in params:
                raise ParameterError(f"{name} is given twice in {text!r}: give it once")
            params[name] = value
        if rest and not params:
            raise ParameterError(
                f"no parameters after ':' in {text!r}: write {env_id}:name=value or just {env_id}"
            )
        return cls(env_id, params)

    def __str__(self) -> str:
        text = self.id
        if self.params:
            text += ":" + ",".join(f"{k}={v:g}" for k, v in sorted(self.params.items()))
        return text + self.observation_label

    @property
    def observation_label(self) -> str:
        """' [pixels 84px gray x4]'-style suffix; '' for the env's own observations."""
        parts = []
        if self.pixels:
            parts.append(f"pixels {self.image_size}px" + (" gray" if self.grayscale else ""))
        if self.frame_stack > 1:
            parts.append(f"x{self.frame_stack}")
        return f" [{' '.join(parts)}]" if parts else ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "params": dict(sorted(self.params.items()))}
        for name in _OBSERVATION_FIELDS:  # only when set, so state-based hashes stay as they were
            if getattr(self, name) != _ENV_DEFAULTS[name]:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EnvSpec:
        extra = {name: data[name] for name in _OBSERVATION_FIELDS if name in data}
        return cls(str(data["id"]), {k: float(v) for k, v in dict(data.get("params", {})).items()},
                   **extra)

    @property
    def slug(self) -> str:
        """A file-name-safe form of the spec."""
        return re.sub(r"[^A-Za-z0-9.-]+", "_", str(self)).strip("_")


_OBSERVATION_FIELDS = ("pixels", "image_size", "grayscale", "frame_stack")
_ENV_DEFAULTS = {"pixels": False, "image_size": 84, "grayscale": False, "frame_stack": 1}


@dataclass(frozen=True)
class AgentSpec:
    """An algorithm with its resolved hyperparameters (preset merged with overrides)."""

    algo: str
    hparams: Mapping[str, Any]
    n_envs: int
    device: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, "hparams": dict(self.hparams), "n_envs": self.n_envs,
                "device": self.device}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentSpec:
        return cls(data["algo"], dict(data["hparams"]), int(data["n_envs"]),
                   data.get("device", "auto"))


@dataclass(frozen=True)
class RunSpec:
    """One training run: an agent on an env from an initialization, for a budget and seed."""

    env: EnvSpec
    agent: AgentSpec
    condition: str
    seed: int
    timesteps: int
    eval_freq: int
    eval_episodes: int

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env.to_dict(), "agent": self.agent.to_dict(),
                "condition": self.condition, "seed": self.seed, "timesteps": self.timesteps,
                "eval_freq": self.eval_freq, "eval_episodes": self.eval_episodes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        return cls(EnvSpec.from_dict(data["env"]), AgentSpec.from_dict(data["agent"]),
                   data["condition"], int(data["seed"]), int(data["timesteps"]),
                   int(data["eval_freq"]), int(data["eval_episodes"]))

    @property
    def cache_key(self) -> str:
        """Names the cache entry of a source policy; the device does not change the result."""
        data = self.to_dict()
        data["agent"].pop("device")
        return stable_hash(data)


@dataclass(frozen=True)
class StudySpec:
    """A whole study: a source, a target, the conditions compared, and the protocol.

    `None` means "resolve from the preset / target" (see `runner.resolve`); a resolved spec
    has every field set and is what `study.json` records.
    """

    source: EnvSpec
    target: EnvSpec
    algo: str = "ppo"
    hparams: Mapping[str, Any] = field(default_factory=dict)
    conditions: tuple[str, ...] = ("scratch", "finetune")
    seeds: int = 5
    seed: int = 0
    timesteps: int | None = None
    source_timesteps: int | None = None
    eval_freq: int | None = None
    eval_episodes: int = 10
    threshold: float | None = None
    n_envs: int | None = None
    device: str = "auto"
    name: str | None = None
    out: str = "runs"
    source_model: str | None = None
    retrain_source: bool = False
    pixels: bool = False
    image_size: int = 84
    grayscale: bool = False
    frame_stack: int | None = None  # None: the preset's, else 4 for image observations, else 1
    encoder: str = "resnet18"  # image encoder of the pretrained-encoder condition
    encoder_weights: str = "imagenet"  # imagenet, none, or a state-dict file
    freeze_encoder: bool = True
    encoder_lr_scale: float = 0.1  # learning-rate factor of a fine-tuned encoder
    augment: str | None = None  # random-shift (DrQ), for every condition
    alpha: float = 0.05  # level of the verdict's test (Holm-corrected) and of every interval

    def validate(self) -> None:
        """Check the values that need no environment or library; raise ConfigError."""
        self._check_types()
        self._check_conditions()
        self._check_numbers()
        self._check_pixels()

    def _check_conditions(self) -> None:
        labels = [registry.parse(condition).label for condition in self.conditions]
        if not self.conditions:
            raise ConfigError("--conditions is empty: give at least one, e.g. scratch,finetune")
        if labels != list(self.conditions):
            raise ConfigError(f"--conditions: write {','.join(labels)} (each condition in its "
                              f"canonical form)")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"--conditions lists a condition twice: {','.join(self.conditions)}")
        for condition in self.conditions:  # e.g. replay needs an off-policy algorithm
            registry.check_algorithm(condition, self.algo)

    def _check_numbers(self) -> None:
        for option, value in (("--seeds", self.seeds), ("--timesteps", self.timesteps),
                              ("--source-timesteps", self.source_timesteps),
                              ("--eval-freq", self.eval_freq),
                              ("--eval-episodes", self.eval_episodes),
                              ("--n-envs", self.n_envs)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{option} must be a positive integer, got {value!r}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be 0 or more, got {self.seed}")
        if self.seed + self.seeds > MAX_SEED:
            raise ConfigError(f"--seed {self.seed} is too large: seeds must stay below {MAX_SEED}")
        if isinstance(self.alpha, bool) or not 0.0001 <= self.alpha <= 0.5:
            raise ConfigError(f"--alpha must be a level between 0.0001 and 0.5 (e.g. 0.05), "
                              f"got {self.alpha!r}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ConfigError(f"--threshold must be a finite number, got {self.threshold}")
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"--device {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if self.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ConfigError(
                f"--name {self.name!r} must be a folder name: letters, digits, '.', '_', '-'"
            )

    def _check_pixels(self) -> None:
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise ConfigError(
                f"--augment {self.augment!r} is not one of {', '.join(AUGMENTATIONS)}")
        if not 36 <= self.image_size <= 1024:
            raise ConfigError(f"--image-size must be between 36 (the smallest input NatureCNN "
                              f"takes) and 1024, got {self.image_size}")
        if self.frame_stack is not None and not 1 <= self.frame_stack <= 64:
            raise ConfigError(f"--frame-stack must be between 1 and 64, got {self.frame_stack}")
        if not (math.isfinite(self.encoder_lr_scale) and self.encoder_lr_scale > 0):
            raise ConfigError(f"--encoder-lr-scale must be a positive number, "
                              f"got {self.encoder_lr_scale}")

    def _check_types(self) -> None:
        for name, kinds in _FIELD_TYPES.items():
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                wanted = " or ".join(_TYPE_NAMES[k] for k in kinds)
                raise ConfigError(f"{name} must be {wanted}, got {value!r}")
        for item in self.conditions:
            if not isinstance(item, str):
                raise ConfigError(f"conditions must be names, got {item!r}")
        if not isinstance(self.hparams, Mapping):
            raise ConfigError(f"hparams must be a table of key = value, got {self.hparams!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))

    @property
    def transfers(self) -> bool:
        """Whether any condition needs the source policy."""
        return registry.needs_source(self.conditions)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["source"] = self.source.to_dict()
        data["target"] = self.target.to_dict()
        data["conditions"] = list(self.conditions)
        data["hparams"] = dict(self.hparams)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        """Build from a dict (study.json, a config file); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"unknown study option {key!r}." + did_you_mean(key, known)
                    + f" Valid options: {', '.join(sorted(known))}"
                )
        values = dict(data)
        for key in ("source", "target"):
            if key in values:
                value = values[key]
                try:
                    values[key] = (EnvSpec.parse(value) if isinstance(value, str)
                                   else EnvSpec.from_dict(value))
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise ConfigError(
                        f"{key} must be an environment like 'CartPole-v1:length=1.0', "
                        f"got {value!r}"
                    ) from None
        if "conditions" in values:
            conditions = values["conditions"]
            if isinstance(conditions, str):
                conditions = registry.split(conditions)  # "a:x=1,y=2,b" is two
            values["conditions"] = tuple(conditions)
        if "source" not in values or "target" not in values:
            raise ConfigError("a study needs a source and a target environment")
        spec = cls(**values)
        spec._check_types()
        return spec


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "algo": (str,), "seeds": (int,), "seed": (int,), "timesteps": (int,),
    "source_timesteps": (int,), "eval_freq": (int,), "eval_episodes": (int,),
    "threshold": (int, float), "n_envs": (int,), "device": (str,), "name": (str,),
    "out": (str,), "source_model": (str,), "retrain_source": (bool,), "pixels": (bool,),
    "image_size": (int,), "grayscale": (bool,), "frame_stack": (int,), "encoder": (str,),
    "encoder_weights": (str,), "freeze_encoder": (bool,), "encoder_lr_scale": (int, float),
    "augment": (str,), "alpha": (int, float),
}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_OPTIONAL = {"timesteps", "source_timesteps", "eval_freq", "threshold", "n_envs", "name",
             "source_model", "frame_stack", "augment"}
