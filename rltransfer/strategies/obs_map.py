"""``obs_map``: which source observation features a target's features are, for transfer across
observation spaces (`rltransfer.training.cross_space` applies it to the first layers).

The syntax has no comma (conditions' options are split on commas): Python's half-open,
0-based slices, a source range ``>`` a target range, pairs joined by ``;``; for a Dict
observation each key's pairs in ``KEY[...]``, several keys joined by ``+``; for a Box
observation no key. ``observation[0:3>0:3;3:5>9:11]``, ``[0:4>0:4]``, ``none`` (no map: a
first layer whose input changed is re-initialized, and a family's map is not used) and
``leading`` (every Box, or Dict key, whose size changed shares its leading features).

Without a map, features are matched only where nothing needs to be assumed: Dict keys the
two spaces share with the same size, whole. A key (or Box) whose size changed is taken to
hold the same leading features only when the user (or the env family) says so, because a
grown observation often inserts features in the middle (FetchReach -> FetchPush).

Torch-free: the registry checks an option's syntax when it parses a condition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import ConfigError

NONE, LEADING, EXPLICIT = "none", "leading", "explicit"
BOX = ""  # the key of a Box observation's one block of features

_KEY = re.compile(r"^([A-Za-z0-9_.-]*)\[([^\[\]]*)\]$")
_PAIR = re.compile(r"^(\d+):(\d+)>(\d+):(\d+)$")


@dataclass(frozen=True)
class Span:
    """Source features [source, source + length) are target features [target, ...)."""

    source: int
    target: int
    length: int

    def __str__(self) -> str:
        return (f"{self.source}:{self.source + self.length}>"
                f"{self.target}:{self.target + self.length}")


@dataclass(frozen=True)
class ObsMap:
    """A parsed ``obs_map``: its mode and, when explicit, each key's spans."""

    mode: str  # NONE, LEADING or EXPLICIT
    keys: dict[str, tuple[Span, ...]] = field(default_factory=dict)  # BOX for a Box's

    def __str__(self) -> str:
        if self.mode != EXPLICIT:
            return self.mode
        return "+".join(f"{key}[{';'.join(str(s) for s in spans)}]"
                        for key, spans in self.keys.items())


def spans(pairs: list[tuple[int, int]]) -> list[Span]:
    """(source, target) feature pairs, in the order given, as runs of consecutive features:
    [(0, 0), (1, 1), (3, 9)] -> [0:2>0:2, 3:4>9:10]. transfer.json's mapped columns and the
    mapped normalization statistics are recorded this way."""
    runs: list[Span] = []
    for source, target in pairs:
        last = runs[-1] if runs else None
        if (last is not None and last.source + last.length == source
                and last.target + last.length == target):
            runs[-1] = Span(last.source, last.target, last.length + 1)
        else:
            runs.append(Span(source, target, 1))
    return runs

def parse(text: str) -> ObsMap:
    """An ``obs_map`` value read (module docstring); ConfigError, one line naming the fix,
    for a syntax error, ranges of unequal length, or ranges that overlap."""
    text = text.strip()
    if text in (NONE, LEADING):
        return ObsMap(text)
    keys: dict[str, tuple[Span, ...]] = {}
    for part in text.split("+"):
        match = _KEY.match(part.strip())
        if match is None:
            raise ConfigError(
                f"obs_map {text!r}: cannot read {part.strip()!r}: write KEY[a:b>c:d;...] per "
                f"Dict key (keys joined by '+'), [a:b>c:d] for a Box, none or leading")
        key, body = match.groups()
        if key in keys:
            raise ConfigError(f"obs_map {text!r}: key {key or '[...]'!r} is given twice: "
                              f"give its ranges once, joined by ';'")
        keys[key] = _spans(text, key, body)
    if BOX in keys and len(keys) > 1:
        raise ConfigError(f"obs_map {text!r}: a Box's [..] has no key, so it cannot join Dict "
                          f"keys: give KEY[...] for each Dict key")
    return ObsMap(EXPLICIT, keys)


def _spans(text: str, key: str, body: str) -> tuple[Span, ...]:
    spans = []
    for raw in body.split(";"):
        match = _PAIR.match(raw.strip())
        if match is None:
            raise ConfigError(f"obs_map {text!r}: cannot read {raw.strip()!r}: a pair is "
                              f"SOURCE>TARGET, half-open 0-based slices such as 0:3>9:12")
        a, b, c, d = (int(g) for g in match.groups())
        if b <= a or d <= c:
            raise ConfigError(f"obs_map {text!r}: {raw.strip()} is an empty range: write "
                              f"start:stop with stop > start")
        if b - a != d - c:
            raise ConfigError(f"obs_map {text!r}: {raw.strip()} maps {b - a} source features "
                              f"onto {d - c} target features: give ranges of equal length")
        spans.append(Span(a, c, b - a))
    for side in ("source", "target"):
        ordered = sorted(spans, key=lambda s: getattr(s, side))
        for left, right in zip(ordered, ordered[1:], strict=False):
            if getattr(left, side) + left.length > getattr(right, side):
                raise ConfigError(f"obs_map {text!r}: {left} and {right} overlap in the "
                                  f"{side}: each {side} feature may appear once")
    return tuple(spans)


def valid(value: str) -> bool:
    """The registry's check of an ``obs_map`` option: True, or ConfigError naming the fix."""
    parse(value)
    return True
