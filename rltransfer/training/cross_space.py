"""Transfer across observation and action spaces: a first layer's columns and a head's rows
mapped from the source's layout onto the target's, instead of re-initialized.

SB3's vector policies flatten the observation without weights (FlattenExtractor; a Dict's
CombinedExtractor concatenates its keys' flattened features in the space's key order), so
the first Linear of every MLP (the actor's and critic's towers, Q-networks, and a head that
reads the features directly) holds one column per observation feature, plus, for SAC/TD3/
TQC critics, one per action dimension after them. A column is the same feature's weight in
source and target once the two layouts agree where it is: Dict keys the two spaces share
(same size) whole, and a key or Box whose size changed as ``obs_map`` says
(`rltransfer.strategies.obs_map`, or the env family's declared map for its two ids).

New inputs (a key only the target has, target features no pair maps, new action dimensions in
a critic's input) start at ZERO weight, so every first layer's output on a state equals the
source's on the features the two share, whatever the new features hold: at step 0 the target
acts as the source does there. Training then moves the new columns like any other weight.
With normalized observations, the source's statistics follow the same map (`Mapping.features`,
`rltransfer.training.vecnorm.apply`), so the shared features reach the copied columns
normalized as the source normalized them.

Grown action spaces keep the leading (shared) actions' rows of each action head. A new Box
action dimension's rows start at zero (its Gaussian mean, or TD3's tanh output, is 0; PPO's
log_std entries are the target's own initial value); a new Discrete action's row is the mean
of the shared rows with its bias ``NEW_ACTION_MARGIN`` below their mean, so its logit or
Q-value is the shared ones' mean minus the margin on every state: it never is the argmax,
which stays the source's, while a softmax still gives it some probability and DQN's
estimate starts near the shared values. (Zero weights would give a constant logit, which no
bias can keep below the shared maximum on every state.)

Not mapped (left to the name-and-shape copy, so re-initialized where shapes differ): image
keys (their CNN), recurrent policies (their LSTM reads the features), QR-DQN's quantile
head, an action space that shrank or changed type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space

from ..errors import ConfigError
from ..strategies import obs_map as maps
from ..strategies.registry import Choice

NEW_ACTION_MARGIN = 1.0
"""How far a new Discrete action's logit (or Q-value) starts below the shared actions' mean."""

# Heads that read an MLP's latent, and that MLP: with no layers it is the identity, so the
# head reads the features (net_arch=[]).
_LATENT = {"action_net": "mlp_extractor.policy_net", "value_net": "mlp_extractor.value_net",
           "mu": "latent_pi", "log_std": "latent_pi"}


@dataclass(frozen=True)
class Layout:
    """The blocks of a flattened observation, in the features extractor's order."""

    blocks: tuple[tuple[str, int], ...]  # (key, width); a Box's one key is obs_map.BOX
    box: bool  # a Box (or Discrete) observation, not a Dict

    @property
    def width(self) -> int:
        return sum(w for _, w in self.blocks)

    def ranges(self) -> dict[str, tuple[int, int]]:
        out, start = {}, 0
        for key, width in self.blocks:
            out[key] = (start, start + width)
            start += width
        return out


def layout(space: spaces.Space) -> Layout | None:
    """The flattened layout of an observation space; None where a key is an image (a CNN,
    not columns) or the space is neither a vector nor a Dict of vectors."""
    if isinstance(space, spaces.Dict):
        blocks = []
        for key, sub in space.spaces.items():
            if isinstance(sub, spaces.Dict) or is_image_space(sub):
                return None
            blocks.append((key, int(get_flattened_obs_dim(sub))))
        return Layout(tuple(blocks), False)
    if is_image_space(space) or not isinstance(space, spaces.Box | spaces.Discrete
                                               | spaces.MultiDiscrete | spaces.MultiBinary):
        return None
    return Layout(((maps.BOX, int(get_flattened_obs_dim(space))),), True)


def _actions(space: spaces.Space) -> tuple[str, int] | None:
    if isinstance(space, spaces.Discrete):
        return "discrete", int(space.n)
    if isinstance(space, spaces.Box):
        return "box", int(np.prod(space.shape))
    return None


@dataclass
class Mapping:
    """How a source's features and actions lie in the target's (see the module docstring)."""

    source: Layout
    target: Layout
    columns: list[tuple[int, int]]  # (source column, target column) of shared features
    blocks: list[dict[str, Any]]  # per key: its source and target columns, spans, or why not
    origin: str  # "option", "family", "dict keys" or "none"
    text: str  # the obs_map as applied ("" without one)
    actions: tuple[str, int, int] | None  # (kind, source count, target count)
    unmapped: str = ""  # why the features cannot be mapped (first layers re-initialized)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # tensor -> provenance
    # per key both observations have (obs_map.BOX for a Box): its spans, in its own features
    spans: dict[str, list[maps.Span]] = field(default_factory=dict)

    def features(self) -> dict[str, list[tuple[int, int]]]:
        """Per key both observations have ("" for a Box): its (source, target) feature
        pairs, counted within the key, as the first layers' columns map them; empty when
        the features are not mapped. The normalization statistics follow this map
        (`rltransfer.training.vecnorm.apply`)."""
        if self.unmapped:
            return {}
        return {key: [(span.source + i, span.target + i) for span in spans
                      for i in range(span.length)] for key, spans in self.spans.items()}

    def record(self) -> dict[str, Any]:
        """transfer.json's "spaces": the map's origin, both layouts, each key's fate."""
        data: dict[str, Any] = {
            "obs_map": self.text or None, "origin": self.origin,
            "source_layout": {k or "box": list(v) for k, v in self.source.ranges().items()},
            "target_layout": {k or "box": list(v) for k, v in self.target.ranges().items()},
            "keys": self.blocks}
        if self.actions is not None:
            kind, n_source, n_target = self.actions
            data["actions"] = {"kind": kind, "source": n_source, "target": n_target,
                               "shared": min(n_source, n_target)}
        if self.unmapped:
            data["unmapped"] = self.unmapped
        return data


def plan(model: BaseAlgorithm, choice: Choice, source_spaces: tuple[Any, Any] | None,
         family_map: str | None) -> Mapping | None:
    """The mapping from a source with `source_spaces` onto `model`, with `choice`'s
    ``obs_map`` (else `family_map`, the env family's); None when there is nothing to map (the
    same spaces, no map given). ConfigError (one line) when the map does not fit the spaces."""
    text = choice.get("obs_map")
    origin = "option" if text is not None else "family" if family_map else "none"
    text = text if text is not None else family_map or ""
    if source_spaces is None:
        source_spaces = (model.observation_space, model.action_space)
    same = (source_spaces[0] == model.observation_space
            and source_spaces[1] == model.action_space)
    if same and origin != "option":
        return None
    target, source = layout(model.observation_space), layout(source_spaces[0])
    label = choice.label
    if target is None or source is None:
        if origin == "option" and text != maps.NONE:
            raise ConfigError(f"condition {label!r}: obs_map maps vector features, but the "
                              f"{'target' if target is None else 'source'} observes images "
                              f"(a CNN reads them): drop obs_map")
        return None
    parsed = maps.parse(text) if text else None
    spans: dict[str, list[maps.Span]] = {}
    columns, blocks, unmapped = _columns(source, target, parsed, label, spans)
    if not text and not unmapped and source != target:
        origin = "dict keys"
    acts_s, acts_t = _actions(source_spaces[1]), _actions(model.action_space)
    actions = None
    if acts_s and acts_t and acts_s[0] == acts_t[0] and acts_s[1] != acts_t[1]:
        actions = (acts_t[0], acts_s[1], acts_t[1])
    return Mapping(source, target, columns, blocks, origin, text, actions, unmapped,
                   spans=spans)


def _columns(source: Layout, target: Layout, parsed: maps.ObsMap | None, label: str,
             found: dict[str, list[maps.Span]],
             ) -> tuple[list[tuple[int, int]], list[dict[str, Any]], str]:
    """(shared columns, each key's record, why not mapped or ""); each shared key's spans
    go into `found`."""
    if parsed is not None and parsed.mode == maps.NONE:
        return [], [], "obs_map=none: the first layers start fresh"
    if source.box != target.box:
        if parsed is not None and parsed.mode == maps.EXPLICIT:
            raise ConfigError(f"condition {label!r}: one observation is a Dict and the "
                              f"other a Box, so obs_map cannot map them: drop obs_map")
        return [], [], "one observation is a Dict, the other a Box"
    ranges_s, ranges_t = source.ranges(), target.ranges()
    explicit = parsed.keys if parsed is not None and parsed.mode == maps.EXPLICIT else {}
    _check_keys(explicit, target, ranges_s, ranges_t, label)
    columns: list[tuple[int, int]] = []
    blocks: list[dict[str, Any]] = []
    for key, (t0, t1) in ranges_t.items():
        name = key or "box"
        if key not in ranges_s:
            blocks.append({"key": name, "source": None, "target": [t0, t1], "spans": [],
                           "new": "only in the target: zero columns"})
            continue
        s0, s1 = ranges_s[key]
        spans = _spans_of(key, s1 - s0, t1 - t0, explicit, parsed, label)
        if isinstance(spans, str):
            found.clear()
            return [], [], spans
        found[key] = spans
        for span in spans:
            columns.extend((s0 + span.source + i, t0 + span.target + i)
                           for i in range(span.length))
        covered = sum(s.length for s in spans)
        blocks.append({"key": name, "source": [s0, s1], "target": [t0, t1],
                       "spans": [str(s) for s in spans],
                       "new": f"{t1 - t0 - covered} target features at zero weight"
                              if covered < t1 - t0 else ""})
    for key, (s0, s1) in ranges_s.items():
        if key not in ranges_t:
            blocks.append({"key": key, "source": [s0, s1], "target": None, "spans": [],
                           "new": "only in the source: dropped"})
    return columns, blocks, ""


def _check_keys(explicit: dict[str, tuple[maps.Span, ...]], target: Layout,
                ranges_s: dict[str, tuple[int, int]], ranges_t: dict[str, tuple[int, int]],
                label: str) -> None:
    """ConfigError unless every key an explicit map names is in both observations."""
    for key in explicit:
        if key == maps.BOX and not target.box:
            raise ConfigError(f"condition {label!r}: the observations are Dicts (keys "
                              f"{', '.join(ranges_t)}): write KEY[a:b>c:d] for each key")
        if key != maps.BOX and target.box:
            raise ConfigError(f"condition {label!r}: obs_map names key {key!r} but the "
                              f"observations are Boxes: write [a:b>c:d] without a key")
        for side, ranges in (("source", ranges_s), ("target", ranges_t)):
            if key not in ranges:
                raise ConfigError(f"condition {label!r}: obs_map's key {key!r} is not in the "
                                  f"{side}'s observation (keys {', '.join(ranges)}): name a "
                                  f"key both have")


def _spans_of(key: str, width_s: int, width_t: int, explicit: dict[str, tuple[maps.Span, ...]],
              parsed: maps.ObsMap | None, label: str) -> list[maps.Span] | str:
    """A key's (or Box's) spans: the map's (checked against its sizes), the whole key when
    its size is unchanged, the leading features with obs_map=leading; else why not."""
    name, shared = key or "box", min(width_s, width_t)
    if key in explicit:
        for span in explicit[key]:
            if span.source + span.length > width_s or span.target + span.length > width_t:
                raise ConfigError(
                    f"condition {label!r}: obs_map's {name} range {span} is outside its "
                    f"{width_s} source and {width_t} target features: give ranges within "
                    f"0:{width_s} > 0:{width_t}")
        return list(explicit[key])
    if width_s == width_t:
        return [maps.Span(0, 0, width_t)]
    if parsed is not None and parsed.mode == maps.LEADING:
        return [maps.Span(0, 0, shared)]
    return (f"{name} has {width_s} source and {width_t} target features: give "
            f"obs_map={key}[0:{shared}>0:{shared}] (which features coincide) or "
            f"obs_map=leading")


def input_modules(policy: torch.nn.Module) -> set[str]:
    """The Linear modules that read the (flattened) features: each MLP's first Linear, and a
    head whose MLP has no layers. Empty for a recurrent policy (its LSTM reads them)."""
    if any(isinstance(m, torch.nn.LSTM | torch.nn.GRU) for m in policy.modules()):
        return set()
    found = set()
    for name, module in policy.named_modules():
        if not isinstance(module, torch.nn.Linear) or "features_extractor" in name:
            continue
        parent, _, leaf = name.rpartition(".")
        owner = policy.get_submodule(parent) if parent else policy
        if isinstance(owner, torch.nn.Sequential):
            first = next(n for n, m in owner.named_children() if isinstance(m, torch.nn.Linear))
            if first == leaf:
                found.add(name)
        elif leaf in _LATENT:
            path = f"{parent}.{_LATENT[leaf]}" if parent else _LATENT[leaf]
            try:
                latent = policy.get_submodule(path)
            except AttributeError:
                continue
            if not any(isinstance(m, torch.nn.Linear) for m in latent.modules()):
                found.add(name)
    return found


@torch.no_grad()
def map_tensors(policy: torch.nn.Module, heads: set[str], source_state: dict[str, torch.Tensor],
                mapping: Mapping) -> dict[str, torch.Tensor]:
    """The target tensors built from the source's through `mapping` (module docstring), by
    name; each one's provenance in ``mapping.layers``. Tensors it cannot place are absent."""
    target_state = policy.state_dict()
    acts = mapping.actions
    own = _actions(policy.action_space)  # type: ignore[arg-type]
    box = own is not None and own[0] == "box"  # critics read [features, action]
    n_s, n_t = (acts[1], acts[2]) if acts is not None else (own[1], own[1]) if own else (0, 0)
    out: dict[str, torch.Tensor] = {}
    inputs = set() if mapping.unmapped else input_modules(policy)
    for name, tensor in target_state.items():
        source = source_state.get(name)
        if source is None:
            continue
        module, _, kind = name.rpartition(".")
        columns = rows = None
        if module in inputs and kind == "weight" and source.dim() == 2:
            columns = _input_columns(mapping, source.shape[1], tensor.shape[1], n_s, n_t, box)
        if acts is not None and name in heads and source.shape[0] == n_s \
                and tensor.shape[0] == n_t:
            rows = min(n_s, n_t)
        if columns is None and rows is None:
            continue
        built, record = _build(tensor, source, columns, rows, acts, name)
        if built is not None:
            out[name] = built.to(tensor.device, tensor.dtype)
            mapping.layers[name] = record
    return out


def _input_columns(mapping: Mapping, in_s: int, in_t: int, n_s: int, n_t: int,
                   box: bool) -> list[tuple[int, int]] | None:
    """A first layer's (source column, target column) pairs: the shared features', then a
    critic's shared action dimensions' after them; None when its input is something else."""
    f_s, f_t = mapping.source.width, mapping.target.width
    if (in_s, in_t) == (f_s, f_t):
        return list(mapping.columns)
    if box and (in_s, in_t) == (f_s + n_s, f_t + n_t):
        return list(mapping.columns) + [(f_s + a, f_t + a) for a in range(min(n_s, n_t))]
    return None


def _build(tensor: torch.Tensor, source: torch.Tensor, columns: list[tuple[int, int]] | None,
           rows: int | None, acts: tuple[str, int, int] | None, name: str,
           ) -> tuple[torch.Tensor | None, dict[str, Any]]:
    source = source.to(tensor.dtype)
    record: dict[str, Any] = {}
    if name.endswith("log_std") and source.dim() == 1 and rows is not None:
        built = tensor.detach().clone()  # PPO's log_std: new entries keep the target's own
        built[:rows] = source[:rows]
        return built, {"rows": {"source": [0, rows], "target": [0, rows]},
                       "new_rows": [rows, tensor.shape[0]], "new_rows_init": "the target's own"}
    built = torch.zeros_like(tensor)
    if rows is None and source.shape[0] != tensor.shape[0]:
        return None, {}  # its outputs changed too, and are not actions
    src_rows = slice(0, rows) if rows is not None else slice(None)
    if columns is not None and tensor.dim() == 2:
        if columns:
            s_idx = torch.tensor([s for s, _ in columns], dtype=torch.long)
            t_idx = torch.tensor([t for _, t in columns], dtype=torch.long)
            built[src_rows, t_idx] = source[src_rows][:, s_idx]
        record["columns"] = _runs(columns)
        taken = {t for _, t in columns}
        record["zero_columns"] = _ranges([c for c in range(tensor.shape[1]) if c not in taken])
    elif rows is not None:
        if source.shape[1:] != tensor.shape[1:]:
            return None, {}
        built[:rows] = source[:rows]
    else:
        return None, {}
    if rows is not None:
        record["rows"] = {"source": [0, rows], "target": [0, rows]}
        record["new_rows"] = [rows, tensor.shape[0]]
        assert acts is not None
        if acts[0] == "discrete":
            shared = built[:rows]
            built[rows:] = shared.mean(dim=0, keepdim=True)
            if tensor.dim() == 1:
                built[rows:] -= NEW_ACTION_MARGIN
            record["new_rows_init"] = (f"mean of the shared rows, bias {NEW_ACTION_MARGIN:g} "
                                       f"below their mean")
        else:
            record["new_rows_init"] = "zero"
    return built, record


def _runs(pairs: list[tuple[int, int]]) -> list[dict[str, list[int]]]:
    """Consecutive (source, target) pairs as ranges: [{"source": [a, b], "target": [c, d]}]."""
    return [{"source": [r.source, r.source + r.length], "target": [r.target, r.target + r.length]}
            for r in maps.spans(pairs)]


def _ranges(indices: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][1] == i:
            out[-1][1] += 1
        else:
            out.append([i, i + 1])
    return out
