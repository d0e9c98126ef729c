"""The study spec: what a study compares, in the parts DESIGN.md names.

`StudySpec` = env (source, target, observations) + agent (algorithm, hyperparameters) +
transfer (`TransferSpec`: conditions, the source, the pretrained encoder) + protocol (seeds,
budgets, evaluation, threshold, alpha) + output (name, out). Fields left `None` are resolved
by `rltransfer.study.plan`, which returns a `ResolvedStudySpec`: every budget, the name and the
frame stack set, read through typed properties.

Config files and old study.json files spell the fields flat (``seeds = 3``); the nested
form (``[protocol] seeds = 3``) is read too. study.json records the nested form
(`STUDY_FORMAT`); `flat_spec` reads either as one flat table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, did_you_mean
from ..specs import EnvSpec
from ..strategies import registry
from .similarity import DEFAULT_TRANSITIONS
from .spec_checks import check_study, check_types

STUDY_FORMAT = 2
"""study.json's format: 1 (no "format" key) recorded the spec flat, 2 records it nested."""


@dataclass(frozen=True)
class StudyEnvs:
    """The source and target environments and how the agent observes them."""

    source: EnvSpec
    target: EnvSpec
    pixels: bool = False
    image_size: int = 84
    grayscale: bool = False
    frame_stack: int | None = None  # None: the preset's, else 4 for image observations, else 1


@dataclass(frozen=True)
class StudyAgent:
    """The algorithm and the hyperparameters that override its preset (source and target)."""

    algo: str = "ppo"
    hparams: Mapping[str, Any] = field(default_factory=dict)
    n_envs: int | None = None
    device: str = "auto"
    augment: str | None = None  # random-shift (DrQ) of image observations, every condition


@dataclass(frozen=True)
class TransferSpec:
    """What is compared and what the transfer starts from: the conditions, the source policy
    (trained, cached or --source-model) and the pretrained encoder's configuration."""

    conditions: tuple[str, ...] = ("scratch", "finetune")
    source_model: str | None = None
    retrain_source: bool = False
    encoder: str = "resnet18"  # image encoder of the pretrained-encoder condition
    encoder_weights: str = "imagenet"  # imagenet, none, or a state-dict file
    freeze_encoder: bool = True
    encoder_lr_scale: float = 0.1  # learning-rate factor of a fine-tuned encoder

    def encoder_config(self) -> dict[str, Any]:
        """The pretrained encoder's options as a dict (the plan makes them a
        `specs.EncoderSpec` on the target's images: `plan._pretrained`)."""
        return {"encoder": self.encoder, "weights": self.encoder_weights,
                "freeze": self.freeze_encoder, "lr_scale": self.encoder_lr_scale}


@dataclass(frozen=True)
class Protocol:
    """Seeds, budgets, evaluation, and the verdict's threshold and level."""

    seeds: int = 5
    seed: int = 0
    timesteps: int | None = None
    source_timesteps: int | None = None
    eval_freq: int | None = None
    eval_episodes: int = 10
    threshold: float | None = None
    alpha: float = 0.05  # level of the verdict's test (Holm-corrected) and of every interval
    score: str = "return"  # what the study compares: "return" or "success" (SCORES)
    # --seeds auto's design (rltransfer.report.sequential); seeds = first
    sequential: str | None = None
    # transitions per side of the source/target similarity measures (study.similarity); 0: off
    similarity: int = DEFAULT_TRANSITIONS

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed, self.seed + self.seeds))


@dataclass(frozen=True)
class Output:
    """Where the study is written: out/name."""

    name: str | None = None
    out: str = "runs"


PARTS: dict[str, type] = {"env": StudyEnvs, "agent": StudyAgent, "transfer": TransferSpec,
                          "protocol": Protocol, "output": Output}
FIELDS: dict[str, str] = {f.name: part for part, kind in PARTS.items()
                          for f in dataclasses.fields(kind)}
"""Each flat option name -> the part that holds it (names are unique across parts)."""


@dataclass(frozen=True)
class StudySpec:
    """A whole study, as given: `None` fields are resolved by `rltransfer.plan.plan`."""

    env: StudyEnvs
    agent: StudyAgent = field(default_factory=StudyAgent)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    protocol: Protocol = field(default_factory=Protocol)
    output: Output = field(default_factory=Output)

    @classmethod
    def build(cls, source: EnvSpec, target: EnvSpec, **values: Any) -> StudySpec:
        """A spec from flat option values, e.g. ``build(src, tgt, seeds=3, algo="sac")``."""
        return cls.from_dict({"source": source, "target": target, **values})

    def update(self, **values: Any) -> StudySpec:
        """This spec (of the same type) with flat options replaced."""
        parts: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name not in FIELDS:
                raise TypeError(f"StudySpec has no option {name!r}")
            parts.setdefault(FIELDS[name], {})[name] = value
        return dataclasses.replace(self, **{
            part: dataclasses.replace(getattr(self, part), **changed)
            for part, changed in parts.items()})

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name (the spelling of --config and the CLI)."""
        return {name: getattr(getattr(self, part), name) for name, part in FIELDS.items()}

    @property
    def transfers(self) -> bool:
        """Whether any condition needs the source policy."""
        return registry.needs_source(self.transfer.conditions)

    def validate(self) -> None:
        """Check the values that need no environment or library; raise ConfigError."""
        check_study(self)

    def to_dict(self) -> dict[str, Any]:
        """The nested, JSON-able form (study.json's "spec" since STUDY_FORMAT 2)."""
        data = {part: dataclasses.asdict(getattr(self, part)) for part in PARTS}
        data["env"]["source"] = self.env.source.to_dict()
        data["env"]["target"] = self.env.target.to_dict()
        data["agent"]["hparams"] = dict(self.agent.hparams)
        data["transfer"]["conditions"] = list(self.transfer.conditions)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        """Build from a dict (study.json of any format, a config file): flat option names,
        part tables, or both; unknown keys are an error."""
        values = flat_values(data)
        for key in ("source", "target"):
            if key in values and not isinstance(values[key], EnvSpec):
                value = values[key]
                try:
                    values[key] = (EnvSpec.parse(value) if isinstance(value, str)
                                   else EnvSpec.from_dict(value))
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise ConfigError(
                        f"{key} must be an environment like 'CartPole-v1:length=1.0', "
                        f"got {value!r}"
                    ) from None
        if isinstance(values.get("seeds"), str):  # --seeds auto[:first=..,step=..,max=..]
            values.update(_seeds(values["seeds"]))
        if "conditions" in values:
            conditions = values["conditions"]
            if isinstance(conditions, str):
                conditions = registry.split(conditions)  # "a:x=1,y=2,b" is two
            values["conditions"] = tuple(conditions)
        if "source" not in values or "target" not in values:
            raise ConfigError("a study needs a source and a target environment")
        parts: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
        for name, value in values.items():
            parts[FIELDS[name]][name] = value
        spec = cls(**{part: PARTS[part](**given) for part, given in parts.items()})
        check_types(spec)
        return spec


def _seeds(text: str) -> dict[str, Any]:
    """``--seeds N`` or ``--seeds auto...``: the seeds of the first batch and the design."""
    text = text.strip()
    if text.isdigit():
        return {"seeds": int(text), "sequential": None}
    from ..report.sequential import Design

    design = Design.parse(text)
    return {"seeds": design.first, "sequential": design.text()}


@dataclass(frozen=True)
class ResolvedStudySpec(StudySpec):
    """A study spec with every default filled in (what `plan` returns and study.json
    records): budgets, evaluation frequency, n_envs, frame stack and name are set."""

    def __post_init__(self) -> None:
        unset = [name for name in _RESOLVED if getattr(getattr(self, FIELDS[name]), name) is None]
        if unset:
            raise ValueError(f"a resolved study spec needs {', '.join(unset)}")

    @property
    def timesteps(self) -> int:
        return int(self.protocol.timesteps)  # type: ignore[arg-type]

    @property
    def source_timesteps(self) -> int:
        return int(self.protocol.source_timesteps)  # type: ignore[arg-type]

    @property
    def eval_freq(self) -> int:
        return int(self.protocol.eval_freq)  # type: ignore[arg-type]

    @property
    def n_envs(self) -> int:
        return int(self.agent.n_envs)  # type: ignore[arg-type]

    @property
    def frame_stack(self) -> int:
        return int(self.env.frame_stack)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return str(self.output.name)

    @property
    def study_dir(self) -> Path:
        return Path(self.output.out) / self.name


_RESOLVED = ("timesteps", "source_timesteps", "eval_freq", "n_envs", "frame_stack", "name")


def flat_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """Flat option values from a dict that spells them flat, in part tables, or both."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in PARTS and isinstance(value, Mapping):
            items = list(value.items())
            known = {f.name for f in dataclasses.fields(PARTS[key])}
            for name, _ in items:
                if name not in known:
                    raise ConfigError(
                        f"unknown option {name!r} in [{key}]." + did_you_mean(name, known)
                        + f" Valid options there: {', '.join(sorted(known))}")
        elif key in FIELDS:
            items = [(key, value)]
        else:
            names = set(FIELDS) | set(PARTS)
            raise ConfigError(
                f"unknown study option {key!r}." + did_you_mean(key, names)
                + f" Valid options: {', '.join(sorted(names))}"
            )
        for name, item in items:
            if name in values:
                raise ConfigError(f"{name} is given twice (flat and in [{FIELDS[name]}]): "
                                  f"give it once")
            values[name] = item
    return values


def flat_spec(data: Mapping[str, Any]) -> dict[str, Any]:
    """study.json's "spec" (any format) as one flat JSON table with every option (one added
    after a study was started had its default then): what the report stage reads."""
    return {**DEFAULTS, **flat_values(data)}


DEFAULTS: dict[str, Any] = {
    f.name: list(default) if isinstance(default, tuple) else default
    for kind in PARTS.values() for f in dataclasses.fields(kind)
    if (default := f.default_factory() if f.default_factory is not dataclasses.MISSING
        else f.default) is not dataclasses.MISSING}
"""The JSON value of every option that has a default (all but source and target)."""
