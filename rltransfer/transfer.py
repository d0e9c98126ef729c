"""Transfer: read source weights safely, map them onto a target policy, freeze what must stay.

Source weights are read from ``policy.pth`` inside an SB3 ``.zip`` with
``torch.load(weights_only=True)``: no pickled code from a checkpoint is ever executed. The
target architecture is always rebuilt from rltransfer's own spec; only tensors move.
"""

from __future__ import annotations

import io
import json
import re
import types
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from . import conditions
from .errors import CheckpointError, TransferError

# Keys in an SB3 checkpoint's "data" JSON that only one algorithm writes.
_ALGO_SIGNATURES = (
    ("td3", "policy_delay"),
    ("sac", "target_entropy"),
    ("dqn", "exploration_final_eps"),
    ("ppo", "clip_range"),
    ("a2c", "n_steps"),  # A2C has n_steps but not clip_range (checked after ppo)
)
_HEAD_MODULES = {"action_net", "value_net", "mu", "log_std"}
_HEAD_SEQUENTIALS = re.compile(r"^(q_net|qf\d+|mu)$")


@dataclass
class SourceCheckpoint:
    """Weights read from an SB3 checkpoint, plus what its metadata tells without unpickling."""

    path: str
    state_dict: dict[str, torch.Tensor]
    algo: str | None
    metadata: dict[str, Any]


def load_checkpoint(path: str | Path) -> SourceCheckpoint:
    """Read an SB3 `.zip` checkpoint's policy weights without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"source model {path} does not exist: give the path of an SB3 .zip")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "policy.pth" not in names:
                raise CheckpointError(
                    f"{path} is not a Stable-Baselines3 checkpoint (no policy.pth inside): "
                    f"give a .zip written by model.save()"
                )
            weights = archive.read("policy.pth")
            data_bytes = archive.read("data") if "data" in names else b"{}"
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
        raise CheckpointError(
            f"{path} is not a readable zip archive (corrupt or not an SB3 checkpoint): "
            f"give a .zip written by model.save()"
        ) from None
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses anything that is not plain tensors
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: policy.pth is not a plain weights file, so it was not loaded "
            f"(it may contain code; rltransfer only reads weights): {reason}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: policy.pth does not hold a state dict of tensors")
    try:
        metadata = json.loads(data_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {}
    return SourceCheckpoint(str(path), state, _detect_algo(metadata), metadata)


def _detect_algo(metadata: dict[str, Any]) -> str | None:
    for algo, key in _ALGO_SIGNATURES:
        if key in metadata:
            return algo
    return None


def check_algorithm(checkpoint: SourceCheckpoint, algo: str) -> None:
    """Raise CheckpointError when the checkpoint was written by another algorithm."""
    if checkpoint.algo is not None and checkpoint.algo != algo:
        raise CheckpointError(
            f"{checkpoint.path} is a {checkpoint.algo} checkpoint but the study uses {algo}: "
            f"pass --algo {checkpoint.algo} or a {algo} checkpoint"
        )


def head_parameters(policy: torch.nn.Module) -> set[str]:
    """Names of the parameters of the output heads (actions, values, Q-values, log std).

    Everything else (MLP extractors, hidden layers of Q-networks and actors) is a feature layer.
    """
    heads: set[str] = set()
    for name, module in policy.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in _HEAD_MODULES and isinstance(module, torch.nn.Linear):
            heads.update(f"{name}.{p}" for p, _ in module.named_parameters())
        elif _HEAD_SEQUENTIALS.match(leaf) and isinstance(module, torch.nn.Sequential):
            linears = [(i, m) for i, m in module.named_children()
                       if isinstance(m, torch.nn.Linear)]
            if linears:
                index, last = linears[-1]
                heads.update(f"{name}.{index}.{p}" for p, _ in last.named_parameters())
    heads.update(n for n, _ in policy.named_parameters() if n.rsplit(".", 1)[-1] == "log_std")
    return heads


@dataclass
class TensorRecord:
    """What happened to one target tensor."""

    name: str
    shape: list[int]
    status: str  # "copied" or "reinitialized"
    reason: str  # why re-initialized: missing / shape mismatch / fresh head; "" when copied
    frozen: bool
    role: str  # "features" or "head"


@dataclass
class TransferReport:
    """The outcome of mapping source weights onto a target policy (written as transfer.json)."""

    condition: str
    source: str
    tensors: list[TensorRecord]
    # (online, target-network copy) of frozen layers, kept equal by SyncFrozenTargets
    frozen_targets: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def copied(self) -> int:
        return sum(t.status == "copied" for t in self.tensors)

    def summary(self) -> str:
        """One line: 'copied 6/8 tensors, 2 re-initialized: action_net.* shape (2,64)→(3,64)'."""
        line = f"copied {self.copied}/{len(self.tensors)} tensors"
        fresh = [t for t in self.tensors if t.status != "copied"]
        if fresh:
            reasons: dict[str, str] = {}  # layer -> its own reason (not the "layer ..." echo)
            for t in fresh:
                layer = t.name.rsplit(".", 1)[0] + ".*"
                if layer not in reasons or reasons[layer].startswith("layer "):
                    reasons[layer] = t.reason
            parts = [f"{layer} {reason}" for layer, reason in reasons.items()]
            line += f", {len(fresh)} re-initialized: " + "; ".join(parts)
        frozen = sum(t.frozen for t in self.tensors)
        if frozen:
            line += f"; {frozen} frozen"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "source": self.source,
                "copied": self.copied, "total": len(self.tensors), "summary": self.summary(),
                "tensors": [asdict(t) for t in self.tensors]}


def _shape(shape: torch.Size) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def apply_transfer(model: BaseAlgorithm, source_state: dict[str, torch.Tensor],
                   condition: str, source_label: str = "") -> TransferReport:
    """Initialize `model`'s policy from `source_state` according to `condition`.

    What is copied and frozen is the condition's registry entry (`rltransfer.conditions`):
    finetune copies every tensor whose name and shape match and trains all; freeze-features
    copies likewise and freezes the feature layers (no grad, out of the optimizer, eval
    mode); reinit-head copies feature layers only, heads stay fresh.
    Must be called after model construction: SB3's `_build()` re-initializes weights.
    """
    entry = conditions.get(condition)
    if entry.takes != conditions.WEIGHTS:
        raise ValueError(f"condition {condition} takes no source weights")
    policy = model.policy
    target_state = policy.state_dict()
    heads = head_parameters(policy)
    records: list[TensorRecord] = []
    for name, tensor in target_state.items():
        role = "head" if name in heads else "features"
        source = source_state.get(name)
        if entry.copies == conditions.FEATURES and role == "head":
            status, reason = "reinitialized", f"fresh head ({entry.name})"
        elif source is None:
            status, reason = "reinitialized", "missing in source"
        elif source.shape != tensor.shape:
            status = "reinitialized"
            reason = f"shape {_shape(source.shape)}→{_shape(tensor.shape)}"
        else:
            status, reason = "copied", ""
        records.append(TensorRecord(name, list(tensor.shape), status, reason, False, role))
    _whole_layers(records)
    new_state = {r.name: source_state[r.name].to(target_state[r.name].device,
                                                  target_state[r.name].dtype)
                 for r in records if r.status == "copied"}
    learnable = {n for n, _ in policy.named_parameters()}
    # Transfer is about feature layers: a stray matching bias (e.g. the 1-unit value head)
    # from a differently sized network is not a transfer.
    features = [r for r in records if r.name in learnable and r.role == "features"]
    if not any(r.status == "copied" for r in features or records):
        overlap = sorted(set(source_state) & set(target_state))
        why = ("no tensor names match: the source is a different policy architecture"
               if not overlap else "no feature layer matches in shape (the networks differ)")
        raise TransferError(
            f"nothing transfers from {source_label or 'the source'} to the target: {why}. "
            f"Use the same --algo and network (--hparams policy_kwargs=...) for source and target"
        )
    policy.load_state_dict(new_state, strict=False)
    report = TransferReport(condition, source_label, records)
    if entry.freezes == conditions.FEATURES:
        # Only copied layers are frozen: a layer that could not be copied (e.g. the input
        # layer when observation sizes differ) stays trainable instead of frozen at random.
        frozen = {r.name for r in records
                  if r.role == "features" and r.status == "copied" and r.name in learnable}
        freeze(model, frozen)
        for record in records:
            record.frozen = record.name in frozen
        report.frozen_targets = target_copies(policy, frozen)
        _sync(report.frozen_targets)
    return report


def _whole_layers(records: list[TensorRecord]) -> None:
    """A layer moves as a whole: if its weight cannot be copied, its bias is not copied
    either (a source bias on a fresh random weight would be neither source nor fresh)."""
    by_layer: dict[str, list[TensorRecord]] = {}
    for record in records:
        by_layer.setdefault(record.name.rsplit(".", 1)[0], []).append(record)
    for layer in by_layer.values():
        fresh = next((r for r in layer if r.status != "copied"), None)
        if fresh is None:
            continue
        for record in layer:
            if record.status == "copied":
                record.status, record.reason = "reinitialized", f"layer {fresh.reason}"


def target_copies(policy: torch.nn.Module,
                  names: set[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(online, target) parameter pairs for frozen layers of target networks
    (q_net_target, critic_target, actor_target)."""
    params = dict(policy.named_parameters())
    pairs = []
    for name in sorted(names):
        head, sep, tail = name.partition("_target.")
        online = f"{head}.{tail}"
        if sep and online in params:
            pairs.append((params[online], params[name]))
    return pairs


@torch.no_grad()
def _sync(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for online, target in pairs:
        target.copy_(online)


class SyncFrozenTargets(BaseCallback):
    """Keeps frozen layers of target networks equal to the frozen online layers.

    SAC/TD3 move target networks towards the online ones by Polyak averaging after each
    gradient step; for a frozen layer that would only add rounding drift (and pull a lagging
    source target towards the online copy), so the copy is restored after every env step,
    i.e. before the next gradient step uses it.
    """

    def __init__(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.pairs = pairs

    def _on_step(self) -> bool:
        _sync(self.pairs)
        return True

    def _on_training_end(self) -> None:
        _sync(self.pairs)


def freeze(model: BaseAlgorithm, names: set[str]) -> None:
    """Freeze the named policy parameters: no gradient, out of every optimizer, eval mode.

    Modules whose parameters are all frozen are pinned to eval mode, so SB3's
    ``policy.set_training_mode(True)`` cannot switch them back (matters for BatchNorm/Dropout).
    """
    policy = model.policy
    frozen_params = []
    for name, param in policy.named_parameters():
        if name in names:
            param.requires_grad_(False)
            frozen_params.append(param)
    frozen_ids = {id(p) for p in frozen_params}
    for optimizer in _optimizers(policy):
        for group in optimizer.param_groups:
            kept = [p for p in group["params"] if id(p) not in frozen_ids]
            for p in group["params"]:
                if id(p) in frozen_ids:
                    optimizer.state.pop(p, None)
            group["params"] = kept
    for _, module in policy.named_modules():
        params = list(module.parameters(recurse=True))
        if params and all(id(p) in frozen_ids for p in params):
            _pin_eval(module)


def _optimizers(policy: torch.nn.Module) -> list[torch.optim.Optimizer]:
    found = []
    for module in policy.modules():
        optimizer = getattr(module, "optimizer", None)
        if isinstance(optimizer, torch.optim.Optimizer) and optimizer not in found:
            found.append(optimizer)
    return found


def _pin_eval(module: torch.nn.Module) -> None:
    module.eval()

    def train(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
        return self  # stays in eval mode: its parameters are frozen

    module.train = types.MethodType(train, module)  # type: ignore[method-assign]
