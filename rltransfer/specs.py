"""Specs: frozen, JSON-round-trippable descriptions of environments, agents and runs
(the study spec, made of these, is `rltransfer.study.study_spec`).

A spec's `stable_hash` names its cache entry, so the same source policy is trained once.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ParameterError
from .strategies import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Value = float | int | bool | str
"""A parameter value: a number or switch, a quoted string's TOML text (``'"hard"'``), or a
distribution's canonical text (``'uniform(0.5,2)'``)."""

CONDITIONS = tuple(registry.CONDITIONS)
"""Transfer conditions (DESIGN.md), by name: `rltransfer.strategies.registry` says what
each does."""

AUGMENTATIONS = ("random-shift",)
"""An image encoder's augmentations (`EncoderSpec.augment`, --augment)."""

MAX_SEED = 2**31 - 1_000_000  # room for the evaluation seed offset below 2**32
MAX_SLUG = 80  # an env's part of a default study name: two of them fit a 255-byte name

# Names may be dotted: MuJoCo's per-body parameters are mass.<body> (e.g. mass.torso=1.5).
_PARAM_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*=\s*(\S(?:.*\S)?)\s*$")
_GRID_RE = re.compile(r"^grid\s*\(")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# A registered id after "module:": versioned (CartPole-v1) or not (Meta-World/MT1); no "=",
# so "Id:name=value" is never read as "module:Id".
_ENV_ID_RE = re.compile(r"^[A-Za-z0-9_/.-]+(-v\d+)?$")


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split `text` at `sep` outside parentheses: 'a=1,b=uniform(0,1)' -> ['a=1',
    'b=uniform(0,1)'] (distributions and grids carry commas inside their parentheses)."""
    pieces, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == sep and depth == 0:
            pieces.append(text[start:index])
            start = index + 1
    pieces.append(text[start:])
    return pieces


def stable_hash(data: Any) -> str:
    """A short hash of JSON-able `data` that does not depend on key order."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EnvSpec:
    """An environment: a Gymnasium id plus parameter values.

    On the command line: ``CartPole-v1:length=1.0,force_mag=5``. A value is a TOML literal
    (``8``, ``0.2``, ``true``, ``"hard"``) or a distribution resampled at every reset
    (``length=uniform(0.25,1)``, see `rltransfer.envs.randomization`), stored as its
    canonical text. A catalog family's values are floats (`canonical`), so they hash as they
    always did; an env outside the catalog keeps the literal's type, since its values are
    its constructor's keyword arguments. A quoted string is kept as its TOML text
    (``'"hard"'``), which tells it from a distribution's. A family's name-valued parameter
    also takes a bare word (``Meta-World/MT1:task=push-v3``), stored as the quoted form.
    """

    id: str
    params: Mapping[str, Value] = field(default_factory=dict)
    pixels: bool = False  # observe rendered rgb_array frames instead of the env's state
    image_size: int = 84  # rendered frames are resized to image_size x image_size
    grayscale: bool = False
    frame_stack: int = 1  # consecutive observations stacked along channels

    @classmethod
    def parse(cls, text: str) -> EnvSpec:
        """Parse ``ID[:name=value,...]``; ID may be Gymnasium's ``module:EnvId-v0``, which
        imports `module` (where the env is registered) in every process that makes it."""
        text = text.strip()
        env_id, colon, rest = text.partition(":")
        first, second, after = rest.partition(":")
        if _MODULE_RE.match(env_id) and _ENV_ID_RE.match(first):
            env_id, colon, rest = f"{env_id}:{first}", second, after
        if not env_id:
            raise ParameterError(f"empty environment in {text!r}: write ID or ID:name=value")
        if colon and not rest.strip():
            raise ParameterError(f"nothing after ':' in {text!r}: write {env_id}:name=value, "
                                 f"or just {env_id}")
        items = [s.strip() for s in split_top_level(rest)] if rest else []
        if "" in items:
            raise ParameterError(f"an empty parameter in {text!r} (a ',' with nothing on one "
                                 f"side): remove the extra ','")
        params: dict[str, Value] = {}
        for item in items:
            match = _PARAM_RE.match(item)
            if not match:
                raise ParameterError(
                    f"cannot read {item!r} in {text!r}: parameters are name=value, "
                    f"e.g. CartPole-v1:length=1.0,force_mag=5"
                )
            name, raw = match.groups()
            value = _parse_value(name, raw, text)
            if name in params:
                raise ParameterError(f"{name} is given twice in {text!r}: give it once")
            params[name] = value
        return cls(env_id, canonical(env_id, params, text))

    def __str__(self) -> str:
        text = self.id
        if self.params:
            text += ":" + ",".join(f"{k}={format_value(v)}" for k, v in sorted(self.params.items()))
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
        """Also a config file's table, whose name-valued parameters may be plain TOML
        strings (``params = {task = "push-v3"}``): they are stored quoted, as parsed."""
        extra = {name: data[name] for name in _OBSERVATION_FIELDS if name in data}
        params = {k: _stored_value(k, v) for k, v in dict(data.get("params", {})).items()}
        if any(isinstance(v, _Bare) for v in params.values()):  # never in a study.json
            params = canonical(str(data["id"]), params, f"{data['id']} with params {params}")
        return cls(str(data["id"]), params, **extra)

    @property
    def slug(self) -> str:
        """A file-name-safe form of the spec, at most `MAX_SLUG` characters: a longer one is
        cut, with a hash of the whole spec, so study names stay below the file system's limit
        (255 bytes) and two long specs still differ."""
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", str(self)).strip("_")
        if len(slug) <= MAX_SLUG:
            return slug
        digest = hashlib.sha256(str(self).encode()).hexdigest()[:8]
        return f"{slug[:MAX_SLUG - 9].rstrip('_.-')}-{digest}"


def format_value(value: Value) -> str:
    """A parameter value as written: a float with ``:g``, an int as is, a switch as ``true``
    or ``false``, a string or a distribution as its text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int):
        return str(value)
    return f"{value:g}"


def is_distribution(value: Value) -> bool:
    """Whether a stored value is a distribution's text (drawn per episode), not a number,
    switch or quoted string."""
    return isinstance(value, str) and value[:1] not in ('"', "'")


def literal(value: Value) -> Any:
    """The Python value a parameter's stored form stands for: a quoted string's text without
    its quotes; anything else as stored."""
    if isinstance(value, _Bare):
        return str(value)
    if isinstance(value, str) and not is_distribution(value):
        return tomllib.loads(f"v = {value}")["v"]
    return value


def canonical(env_id: str, params: Mapping[str, Value], text: str = "") -> dict[str, Value]:
    """`params` as stored: for an env of a catalog family (`rltransfer.envs`, which imports
    the module of a ``module:EnvId`` first, as a family it declares is then known), numbers
    and switches become floats, so ``length=1`` hashes as ``length=1.0`` always has; a
    name-valued parameter's value (a bare word or quoted) becomes its canonical name quoted
    (`Parameter.canonical_name`); an env outside the catalog keeps the literals' types (its
    constructor's arguments). A bare word anywhere else is an error naming `text`."""
    if not params or all(isinstance(v, str) and is_distribution(v) and not isinstance(v, _Bare)
                         for v in params.values()):
        return dict(params)
    from .envs.family import family_for  # the env catalog (no SB3, no torch), when needed

    found = family_for(env_id)
    family = found[0] if found is not None else None

    def stored(name: str, value: Value) -> Value:
        parameter = family.parameter(name) if family is not None else None
        if parameter is not None and parameter.value_type is str and (
                isinstance(value, _Bare) or (isinstance(value, str)
                                             and not is_distribution(value))):
            return json.dumps(parameter.canonical_name(literal(value)))
        if isinstance(value, _Bare):
            raise ParameterError(_not_a_value(name, value, text))
        if family is None:
            return value
        if isinstance(value, str) or (isinstance(value, bool) and (
                parameter is None or parameter.value_type is not bool)):
            return value  # resolve() says what is wrong with it
        if parameter is not None and parameter.value_type is str:
            return value  # a number for a name: resolve() says so
        return float(value)

    return {k: stored(k, v) for k, v in params.items()}


class _Bare(str):
    """A bare word on the command line (``task=push-v3``): a name, if the family has a
    name-valued parameter of that name (`canonical` decides), else an error."""


def _not_a_value(name: str, raw: str, text: str) -> str:
    return (f"{name}={raw!r} in {text!r} is not a number: give a value like {name}=1.0, a "
            f"switch ({name}=true), a string in double quotes ({name}=\"{raw}\"), or a "
            f"distribution like {name}=uniform(0.5,2)")


def _parse_value(name: str, raw: str, text: str) -> Value:
    """A TOML literal (a quoted string as its TOML text), or a distribution's canonical
    text."""
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        try:  # what TOML does not read but a float does (.5, 1., 1E5) stays a float
            value = float(raw)
        except ValueError:
            value = None
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return json.dumps(value)  # a quoted string, as TOML reads it back
    if _GRID_RE.match(raw):
        raise ParameterError(
            f"{name}=grid(...) in {text!r} is a sweep of several envs: give it to matrix "
            f"--sources/--targets, which expand it")
    from .envs.randomization import parse_distribution  # the env catalog, only when needed

    distribution = parse_distribution(raw, where=f"{name}={raw} in {text!r}")
    if distribution is None:
        return _Bare(raw)  # a name, if the env's family takes one (canonical)
    return distribution.text


def _stored_value(name: str, value: Any) -> Value:
    """A value read back from JSON: a number or switch (its type kept), a quoted string, or
    a distribution's text (made canonical)."""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and not is_distribution(value):
        return value  # a quoted string's TOML text
    if isinstance(value, str):
        from .envs.randomization import parse_distribution

        distribution = parse_distribution(value)
        if distribution is None:
            return _Bare(value)  # a name, if the env's family takes one (from_dict)
        return distribution.text
    raise ParameterError(f"parameter {name}={value!r} is neither a number nor a distribution")


_OBSERVATION_FIELDS = ("pixels", "image_size", "grayscale", "frame_stack")
_ENV_DEFAULTS = {"pixels": False, "image_size": 84, "grayscale": False, "frame_stack": 1}


NATURE_CNN = "nature-cnn"


@dataclass(frozen=True)
class EncoderSpec:
    """The image encoder of a pixel policy: its features extractor
    (`rltransfer.training.encoders.PixelEncoder`), as data.

    An image policy is built with a fresh NatureCNN (the defaults); the pretrained-encoder
    condition's agent with the encoder the study's options name (--encoder, --encoder-weights,
    --freeze-encoder/--finetune-encoder, --encoder-lr-scale). A frozen encoder without
    augmentation is computed once per observation (`rltransfer.training.features`).
    """

    name: str = NATURE_CNN  # nature-cnn, or a torchvision classification model (trunk only)
    weights: str = "none"  # none (random), imagenet, or the path of a state-dict file
    freeze: bool = False  # the trunk is not trained (no gradient, in no optimizer)
    lr_scale: float = 1.0  # a trained trunk's learning-rate factor on the schedule's rate
    augment: str | None = None  # random-shift (DrQ), in training only; None for none
    frame_stack: int = 1  # frames stacked along the image channels

    @property
    def extractor_kwargs(self) -> dict[str, Any]:
        """`PixelEncoder`'s keyword arguments (the learning-rate factor is the optimizer's:
        `rltransfer.training.encoders.scale_encoder_lr`)."""
        return {"encoder": self.name, "weights": self.weights, "freeze": self.freeze,
                "augment": self.augment, "frame_stack": self.frame_stack}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "freeze": self.freeze,
                "lr_scale": self.lr_scale, "augment": self.augment,
                "frame_stack": self.frame_stack}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderSpec:
        """Also the dict of study folders written before this type (the encoder's name under
        "encoder", keys left out at their defaults)."""
        values = {k: v for k, v in data.items() if k in _ENCODER_FIELDS}
        if "encoder" in data and "name" not in data:
            values["name"] = data["encoder"]
        return cls(**values)


_ENCODER_FIELDS = ("name", "weights", "freeze", "lr_scale", "augment", "frame_stack")
_OLD_ENCODER_KEY = "features_extractor"  # where study folders before EncoderSpec kept it


@dataclass(frozen=True)
class AgentSpec:
    """An algorithm with its resolved hyperparameters (preset merged with overrides), and
    for an image policy its encoder."""

    algo: str
    hparams: Mapping[str, Any]
    n_envs: int
    device: str = "auto"
    encoder: EncoderSpec | None = None  # an image policy's features extractor

    def to_dict(self) -> dict[str, Any]:
        data = {"algo": self.algo, "hparams": dict(self.hparams), "n_envs": self.n_envs,
                "device": self.device}
        if self.encoder is not None:  # only then, so other agents hash as they always did
            data["encoder"] = self.encoder.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AgentSpec:
        """Also an agent of a study folder written before `EncoderSpec`, whose encoder was
        ``hparams.policy_kwargs.features_extractor``."""
        hparams = dict(data["hparams"])
        encoder = data.get("encoder")
        policy_kwargs = hparams.get("policy_kwargs")
        if isinstance(policy_kwargs, Mapping) and _OLD_ENCODER_KEY in policy_kwargs:
            encoder = encoder or policy_kwargs[_OLD_ENCODER_KEY]
            rest = {k: v for k, v in policy_kwargs.items() if k != _OLD_ENCODER_KEY}
            if rest:
                hparams["policy_kwargs"] = rest
            else:
                hparams.pop("policy_kwargs")
        return cls(data["algo"], hparams, int(data["n_envs"]), data.get("device", "auto"),
                   EncoderSpec.from_dict(encoder) if encoder is not None else None)


@dataclass(frozen=True)
class RunSpec:
    """One training run: an agent on an env from an initialization, for a budget and seed.

    `condition` is the parsed condition (`registry.Choice`: its registry entry and options);
    a spelled one (``"finetune:lr_scale=0.1"``) is parsed when the spec is made. On disk
    (status.json's "run", the caches' spec.json) it is its canonical spelling."""

    env: EnvSpec
    agent: AgentSpec
    condition: registry.Choice
    seed: int
    timesteps: int
    eval_freq: int
    eval_episodes: int

    def __post_init__(self) -> None:
        if not isinstance(self.condition, registry.Choice):
            object.__setattr__(self, "condition", registry.parse(self.condition))

    def to_dict(self) -> dict[str, Any]:
        return {"env": self.env.to_dict(), "agent": self.agent.to_dict(),
                "condition": self.condition.label, "seed": self.seed,
                "timesteps": self.timesteps, "eval_freq": self.eval_freq,
                "eval_episodes": self.eval_episodes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        return cls(EnvSpec.from_dict(data["env"]), AgentSpec.from_dict(data["agent"]),
                   registry.parse(data["condition"]), int(data["seed"]),
                   int(data["timesteps"]), int(data["eval_freq"]), int(data["eval_episodes"]))

    @property
    def cache_key(self) -> str:
        """Names the cache entry of a source policy (or a scratch run); the device does not
        change the result. The agent is hashed as study folders wrote it before
        `EncoderSpec` (`_hashed_agent`), so cache entries keep their names."""
        data = self.to_dict()
        data["agent"] = _hashed_agent(self.agent)
        return stable_hash(data)


def _hashed_agent(agent: AgentSpec) -> dict[str, Any]:
    """`agent` as its cache key hashes it: without the device, and an image policy's encoder
    where it used to be, ``hparams.policy_kwargs.features_extractor``, under its old keys (a
    fresh NatureCNN's name, frame_stack and augment; any other encoder's every option)."""
    data = agent.to_dict()
    data.pop("device")
    encoder = data.pop("encoder", None)
    if agent.encoder is not None and encoder is not None:
        old = {"encoder": encoder.pop("name"), **encoder}
        if agent.encoder == EncoderSpec(augment=agent.encoder.augment,
                                        frame_stack=agent.encoder.frame_stack):
            old = {k: old[k] for k in ("encoder", "frame_stack", "augment")}
        hparams = data["hparams"]
        hparams["policy_kwargs"] = {**(hparams.get("policy_kwargs") or {}),
                                    _OLD_ENCODER_KEY: old}
    return data
