"""The condition registry: how each transfer condition initializes and trains a target run.

A condition is one `Condition` entry in `CONDITIONS`. It declares what it takes from the
source (nothing, its weights, its policy at train time, or its transitions), which target
tensors it copies, which it freezes, and the options it accepts. The rest of the engine asks
the registry instead of testing names: `transfer.apply_transfer` copies and freezes as the
entry says, the runner plans a source only for conditions that take one, and training writes
`transfer.json` for every condition that takes something.

On the command line a condition is ``name`` or ``name:key=value,...`` (like env variants).
`parse` checks a spelling against the registry, its option values against their ranges, and
returns its canonical form, which names the condition's run folders. Options so far:
``lr_scale`` (finetune, freeze-features, reinit-head: the copied parameters' own optimizer
group trains at that factor of the schedule's rate) and ``layers`` (freeze-features: only the
first k feature layers, counted from the input, are frozen) and ``norm`` (the conditions
that take weights: what the target does with the source's VecNormalize statistics,
`rltransfer.vecnorm`).

Torch-free, so the report stage can use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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
    default: Any  # what leaving the option out means; never written in a label
    doc: str  # one line, as the README's table of options says it
    valid: str = ""  # the values allowed, for errors and docs: "a number in (0, 1]"
    check: Callable[[Any], bool] | None = None  # whether a parsed value is allowed


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


def _scale_ok(value: float) -> bool:
    return math.isfinite(value) and 0 < value <= 1


LR_SCALE = Option(
    "lr_scale", float, 1.0,
    "copied tensors that train get their own optimizer group at lr_scale x the schedule's "
    "learning rate; fresh ones train at the full rate (1: one rate for all)",
    valid="a number in (0, 1]", check=_scale_ok)
LAYERS = Option(
    "layers", int, None,
    "freeze only the first k feature layers (Linear/Conv), counted from the input along each "
    "path (a features extractor's layers first; the policy and value towers' first layers "
    "are both layer 1 after it); left out: all feature layers",
    valid="an integer >= 1", check=lambda value: value >= 1)

_NORM_DOC = ("the source's VecNormalize statistics (when the target normalizes): freeze: the "
             "source's throughout; update: start from them, keep updating; reset: fresh")
_NORM_VALID = "freeze, update or reset"


def _norm(default: str) -> Option:
    return Option("norm", str, default, _NORM_DOC + f" (default {default})", valid=_NORM_VALID,
                  check=lambda value: value in ("freeze", "update", "reset"))


# Frozen feature layers were trained on inputs scaled by the source's statistics, so
# freeze-features keeps them by default; conditions that train every layer follow the target.
NORM_UPDATE, NORM_FREEZE = _norm("update"), _norm("freeze")

CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    Condition("scratch", "the reference: trained from a fresh initialization"),
    Condition("finetune", "every source tensor that matches by name and shape is copied; "
                          "all are trained", takes=WEIGHTS, copies=ALL,
              options=(LR_SCALE, NORM_UPDATE)),
    Condition("freeze-features", "copied like finetune; feature layers frozen (no gradient, "
                                 "out of the optimizer, eval mode), heads trained",
              takes=WEIGHTS, copies=ALL, freezes=FEATURES,
              options=(LAYERS, LR_SCALE, NORM_FREEZE)),
    Condition("reinit-head", "feature layers copied, action/value heads fresh; all trained",
              takes=WEIGHTS, copies=FEATURES, options=(LR_SCALE, NORM_UPDATE)),
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

    def get(self, key: str) -> Any:
        """The value of option `key`: as given, else its default; None for an option the
        condition does not have."""
        for option in self.condition.options:
            if option.key == key:
                return self.options.get(key, option.default)
        return None


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
            value = option.kind(raw.strip())
        except ValueError:
            raise ConfigError(f"condition {text!r}: {key} must be {option.kind.__name__}, got "
                              f"{raw.strip()!r}") from None
        if option.check is not None and not option.check(value):
            raise ConfigError(f"condition {text!r}: {key} must be {option.valid}, got "
                              f"{raw.strip()}")
        values[key] = value
    return Choice(condition, values)


def split(text: str) -> list[str]:
    """Split a comma-separated list of conditions: ``scratch,freeze-features:layers=1,
    lr_scale=0.5`` is two conditions, since a ``key=value`` piece continues the condition
    before it (as in env lists)."""
    pieces: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if "=" in token and ":" not in token and pieces and ":" in pieces[-1]:
            pieces[-1] += "," + token
        else:
            pieces.append(token)
    return pieces


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
