"""The condition registry: how each transfer condition initializes and trains a target run.

A condition is one `Condition` entry in `CONDITIONS`. It declares what it takes from the
source (nothing, its weights, its policy at train time, or its transitions), which target
tensors it copies, which it freezes, and the options it accepts. The rest of the engine asks
the registry instead of testing names: `transfer.apply_transfer` copies and freezes as the
entry says, the runner plans a source only for conditions that take one, and training writes
`transfer.json` for every condition that takes something.

On the command line a condition is ``name`` or ``name:key=value,...`` (like env variants).
`parse` checks a spelling against the registry and returns its canonical form, which names
the condition's run folders. No option is registered yet: the spelling is in place for the
strategies of issue 11 (``finetune:lr_scale=0.1``, ``freeze-features:layers=1``, ...).

Torch-free, so the report stage can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, did_you_mean

NOTHING, WEIGHTS = "nothing", "weights"
"""What a condition takes from the source (more kinds come with kickstart and replay)."""
ALL, FEATURES, NONE = "all", "features", "none"
"""Which matching target tensors it copies / which copied tensors it freezes."""


@dataclass(frozen=True)
class Option:
    """An option of a condition: ``name:key=value``."""

    key: str
    kind: type
    default: Any
    doc: str


@dataclass(frozen=True)
class Condition:
    """One transfer condition (DESIGN.md's table)."""

    name: str
    doc: str  # one line: --help and the README's table
    takes: str = NOTHING  # from the source: NOTHING or WEIGHTS
    copies: str = NONE  # source tensors copied by name and shape: ALL, FEATURES or NONE
    freezes: str = NONE  # copied tensors frozen: FEATURES or NONE
    image_encoder: bool = False  # a pretrained image encoder instead of source weights
    options: tuple[Option, ...] = field(default_factory=tuple)

    @property
    def needs_source(self) -> bool:
        """Whether the study must train or load a source policy for this condition."""
        return self.takes != NOTHING


CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("scratch", "the reference: trained from a fresh initialization"),
    Condition("finetune", "every source tensor that matches by name and shape is copied; "
                          "all are trained", takes=WEIGHTS, copies=ALL),
    Condition("freeze-features", "copied like finetune; feature layers frozen (no gradient, "
                                 "out of the optimizer, eval mode), heads trained",
              takes=WEIGHTS, copies=ALL, freezes=FEATURES),
    Condition("reinit-head", "feature layers copied, action/value heads fresh; all trained",
              takes=WEIGHTS, copies=FEATURES),
    Condition("pretrained-encoder", "pixels: a pretrained image encoder (--encoder, "
                                    "--encoder-weights), frozen or fine-tuned, fresh heads",
              image_encoder=True),
)}
"""Every condition, in the order `--help` lists them."""

REFERENCE = "scratch"


@dataclass(frozen=True)
class Choice:
    """A condition as a study uses it: the registry entry and its option values."""

    condition: Condition
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The canonical spelling (options sorted, defaults left out): the run folder name."""
        given = {k: v for k, v in sorted(self.options.items())
                 if v != _option(self.condition, k).default}
        if not given:
            return self.condition.name
        return self.condition.name + ":" + ",".join(f"{k}={_text(v)}" for k, v in given.items())


def parse(text: str) -> Choice:
    """``name`` or ``name:key=value,...`` checked against the registry; ConfigError (one
    line, naming the fix) for an unknown condition, option or value."""
    name, _, rest = text.strip().partition(":")
    if name not in CONDITIONS:
        raise ConfigError(f"unknown condition {name!r}: choose from {', '.join(CONDITIONS)}."
                          + did_you_mean(name, list(CONDITIONS)))
    condition = CONDITIONS[name]
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"condition {text!r}: options are key=value, e.g. {name}:key=1")
        if not condition.options:
            raise ConfigError(f"condition {name!r} takes no options (got {key!r}): write "
                              f"{name}")
        option = _option(condition, key)
        try:
            values[key] = option.kind(raw.strip())
        except ValueError:
            raise ConfigError(f"condition {text!r}: {key} must be {option.kind.__name__}, got "
                              f"{raw.strip()!r}") from None
    return Choice(condition, values)


def get(text: str) -> Condition:
    """The registry entry of a spelled condition."""
    return parse(text).condition


def needs_source(conditions: tuple[str, ...] | list[str]) -> bool:
    """Whether any of the spelled conditions takes something from a source policy."""
    return any(get(c).needs_source for c in conditions)


def _option(condition: Condition, key: str) -> Option:
    for option in condition.options:
        if option.key == key:
            return option
    keys = [o.key for o in condition.options]
    raise ConfigError(f"condition {condition.name!r} has no option {key!r}: valid options "
                      f"are {', '.join(keys)}." + did_you_mean(key, keys))


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
