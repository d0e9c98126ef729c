"""Transfer: read source weights safely, map them onto a target policy, freeze what must stay.

Source weights are read from ``policy.pth`` inside an SB3 ``.zip`` with
``torch.load(weights_only=True)``: no pickled code from a checkpoint is ever executed. The
target architecture is always rebuilt from rltransfer's own spec; only tensors move.
"""

from __future__ import annotations

import io
import json
import types
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from ..errors import CheckpointError, ConfigError, TransferError
from ..strategies import registry as conditions
from . import contrib, cross_space, optim_groups
from .layers import feature_layers, head_parameters, parameter_depths

if TYPE_CHECKING:
    from ..strategies.hooks import Context

# The module of a checkpoint's policy class, as "data" writes it readably (its "__module__"),
# for the algorithms whose policy class is their own.
_POLICY_MODULES = {
    "stable_baselines3.dqn.policies": "dqn", "stable_baselines3.sac.policies": "sac",
    "stable_baselines3.td3.policies": "td3", "sb3_contrib.tqc.policies": "tqc",
    "sb3_contrib.qrdqn.policies": "qrdqn", "sb3_contrib.crossq.policies": "crossq",
    "sb3_contrib.ars.policies": "ars", "sb3_contrib.common.recurrent.policies": "recurrentppo",
    "sb3_contrib.common.maskable.policies": "maskableppo",
}
# Keys in an SB3 checkpoint's "data" JSON that only one algorithm writes (PPO, A2C and TRPO
# share SB3's ActorCriticPolicy; and a checkpoint whose policy class is not readable).
_ALGO_SIGNATURES = (
    ("tqc", "top_quantiles_to_drop_per_net"),
    ("qrdqn", "n_quantiles"),
    ("trpo", "cg_damping"),
    ("ars", "n_delta"),
    ("td3", "policy_delay"),
    ("sac", "target_entropy"),
    ("dqn", "exploration_final_eps"),
    ("ppo", "clip_range"),
    ("a2c", "n_steps"),  # A2C has n_steps but not clip_range (checked after ppo)
)


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
    broken = [name for name, tensor in state.items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:  # a policy with them computes NaN actions: its training diverged, or damage
        raise CheckpointError(f"{path} has NaN or infinite weights ({', '.join(broken[:3])}"
                              f"{', ...' if len(broken) > 3 else ''}): its training diverged or "
                              f"the file is damaged; give another checkpoint")
    try:
        metadata = json.loads(data_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        metadata = {}
    if not isinstance(metadata, dict):
        metadata = {}
    return SourceCheckpoint(str(path), state, _detect_algo(metadata), metadata)


def _detect_algo(metadata: dict[str, Any]) -> str | None:
    policy_class = metadata.get("policy_class")
    module = policy_class.get("__module__") if isinstance(policy_class, dict) else None
    if module in _POLICY_MODULES:
        return _POLICY_MODULES[module]
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


@dataclass
class TensorRecord:
    """What happened to one target tensor."""

    name: str
    shape: list[int]
    status: str  # "copied" or "reinitialized"
    reason: str  # why re-initialized: missing / shape mismatch / fresh head; "" when copied
    frozen: bool
    role: str  # "features" or "head"
    # the factor on the schedule's learning rate it trains at (lr_scale for copied tensors
    # of a condition given one); None when no optimizer trains it: frozen, a target network,
    # a buffer
    lr_scale: float | None = None
    # copied across spaces (`rltransfer.training.cross_space`): which source columns/rows
    # went where, which start at zero; None for a tensor copied whole
    mapping: dict[str, Any] | None = None


@dataclass
class TransferReport:
    """The outcome of mapping source weights onto a target policy (written as transfer.json)."""

    condition: str
    source: str
    tensors: list[TensorRecord]
    options: dict[str, Any] = field(default_factory=dict)  # the condition's, as spelled
    # the frozen feature layers: [{"layer": module name, "depth": 1 for the input layer}]
    frozen_layers: list[dict[str, Any]] = field(default_factory=list)
    # (online, target-network copy) of frozen layers, kept equal by SyncFrozenTargets
    frozen_targets: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # transfer across observation/action spaces: the map, its origin, both layouts
    spaces: dict[str, Any] | None = None

    @property
    def copied(self) -> int:
        return sum(t.status == "copied" for t in self.tensors)

    def summary(self) -> str:
        """One line: 'copied 6/8 tensors, 2 re-initialized: action_net.* shape (2,64)→(3,64)'."""
        line = f"copied {self.copied}/{len(self.tensors)} tensors"
        mapped = sum(t.mapping is not None for t in self.tensors)
        if mapped:
            origin = (self.spaces or {}).get("origin", "")
            line += f" ({mapped} mapped across spaces, map: {origin})"
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
        scaled: dict[float, int] = {}
        for t in self.tensors:
            if t.lr_scale is not None and t.lr_scale != 1:
                scaled[t.lr_scale] = scaled.get(t.lr_scale, 0) + 1
        for factor, n in scaled.items():
            line += f"; {n} at {factor:g}x the learning rate"
        return line

    def to_dict(self) -> dict[str, Any]:
        data = {"condition": self.condition, "source": self.source, "options": self.options,
                "copied": self.copied, "total": len(self.tensors), "summary": self.summary(),
                "tensors": [_tensor_record(t) for t in self.tensors]}
        if self.frozen_layers:
            data["frozen_layers"] = self.frozen_layers
        if self.spaces is not None:
            data["spaces"] = self.spaces
        return data


def _tensor_record(tensor: TensorRecord) -> dict[str, Any]:
    """A tensor's entry in transfer.json: "mapping" only for one mapped across spaces."""
    data = asdict(tensor)
    if data["mapping"] is None:
        del data["mapping"]
    return data


def _shape(shape: torch.Size) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def apply_transfer(model: BaseAlgorithm, source_state: dict[str, torch.Tensor],
                   condition: str | conditions.Choice, source_label: str = "",
                   context: Context | None = None) -> TransferReport:
    """Initialize `model`'s policy from `source_state` according to `condition`.

    What is copied and frozen is the condition's registry entry (`rltransfer.strategies.registry`):
    finetune copies every tensor whose name and shape match and trains all; freeze-features
    copies likewise and freezes the feature layers (no grad, out of the optimizer, eval
    mode); reinit-head copies feature layers only, heads stay fresh. A condition with an
    ``init`` option (replay:init=finetune) copies as that condition does.
    Options: ``layers=k`` freezes only the feature layers of depth <= k (`feature_layers`);
    ``lr_scale=S`` trains the copied tensors that are not frozen in their own optimizer
    group at S x the schedule's rate (`rltransfer.training.optim_groups`).
    ``obs_map`` (and grown action spaces): first layers and action heads are mapped across
    observation and action spaces (`rltransfer.training.cross_space`), new inputs at zero
    weight; `context` gives the source's spaces (its ``source_spaces``, else its
    ``source_env``, built) and the env family's map (``source_env``/``target_env``).
    Must be called after model construction: SB3's `_build()` re-initializes weights.
    `condition` is a parsed condition, or its spelling.
    """
    spelled = conditions.choice_of(condition)
    choice = spelled.weights  # replay:init=finetune copies as finetune does
    if choice is None:
        raise ValueError(f"condition {spelled.label} takes no source weights")
    entry = choice.condition
    policy = model.policy
    limit = _frozen_depth(policy, spelled.label, choice.get("layers"))  # before anything changes
    target_state = policy.state_dict()
    heads = head_parameters(policy)
    mapping = across_spaces(model, source_state, choice, context)
    mapped = cross_space.map_tensors(policy, heads, source_state, mapping) if mapping else {}
    unmapped = f": {mapping.unmapped}" if mapping is not None and mapping.unmapped else ""
    records: list[TensorRecord] = []
    for name, tensor in target_state.items():
        role = "head" if name in heads else "features"
        source = source_state.get(name)
        if entry.copies == conditions.FEATURES and role == "head":
            status, reason = "reinitialized", f"fresh head ({entry.name})"
        elif name in mapped:
            status, reason = "copied", ""
        elif source is None:
            status, reason = "reinitialized", "missing in source"
        elif source.shape != tensor.shape:
            status = "reinitialized"
            reason = f"shape {_shape(source.shape)}→{_shape(tensor.shape)}{unmapped}"
        else:
            status, reason = "copied", ""
        records.append(TensorRecord(name, list(tensor.shape), status, reason, False, role,
                                    mapping=mapping.layers.get(name) if mapping else None))
    _whole_layers(records)
    new_state = {r.name: mapped[r.name] if r.name in mapped else source_state[r.name].to(
        target_state[r.name].device, target_state[r.name].dtype)
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
    contrib.sync_weights(model)  # ARS searches from its own copy of the weights
    report = TransferReport(spelled.label, source_label, records, dict(spelled.options),
                            spaces=mapping.record() if mapping is not None else None)
    params = dict(policy.named_parameters())
    frozen: set[str] = set()
    if entry.freezes == conditions.FEATURES:
        # Only copied layers are frozen: a layer that could not be copied (e.g. the input
        # layer when observation sizes differ) stays trainable instead of frozen at random.
        depth = parameter_depths(policy)
        # A mapped first layer with new (zero) inputs trains: frozen, the target could
        # never read its new features.
        frozen = {r.name for r in records if r.role == "features" and r.status == "copied"
                  and r.name in learnable and depth.get(r.name, 1) <= limit
                  and not _grown(r.mapping)}
        freeze(model, frozen)
        report.frozen_targets = target_copies(policy, frozen)
        _sync(report.frozen_targets)
        report.frozen_layers = [  # a Linear/Conv layer's weight, an LSTM's every tensor
            {"layer": name, "depth": d} for name, d in feature_layers(policy).items()
            if {f"{name}.{p}" for p, _ in policy.get_submodule(name).named_parameters()}
            <= frozen]
    factor = choice.get("lr_scale")
    if factor is not None and factor != 1:
        optim_groups.scale(policy, [params[r.name] for r in records if r.status == "copied"
                                    and r.name in params and r.name not in frozen], factor)
    # A shared features extractor has several names in the state dict: one Parameter.
    tensors = policy.state_dict(keep_vars=True)
    frozen_ids = {id(params[name]) for name in frozen}
    factors = optim_groups.policy_lr_factors(policy)
    for record in records:
        record.frozen = id(tensors[record.name]) in frozen_ids
        record.lr_scale = factors.get(id(tensors[record.name]))
    return report


def _grown(mapping: dict[str, Any] | None) -> bool:
    """Whether a mapped tensor has new inputs or outputs (at zero weight, or new actions)."""
    return mapping is not None and bool(mapping.get("zero_columns") or mapping.get("new_rows"))


def across_spaces(model: BaseAlgorithm, source_state: dict[str, torch.Tensor],
                  choice: conditions.Choice, context: Context | None,
                  ) -> cross_space.Mapping | None:
    """How the source's observation and action spaces map onto `model`'s
    (`cross_space.plan`); None when nothing needs mapping: no obs_map given and every source
    tensor has its target's shape. ConfigError when obs_map does not fit the spaces."""
    target_state = model.policy.state_dict()
    differ = any(name in target_state and tensor.shape != target_state[name].shape
                 for name, tensor in source_state.items())
    if not differ and choice.get("obs_map") is None and (
            context is None or context.source_spaces is None):
        return None
    spaces = source_spaces(context)
    return cross_space.plan(model, choice, spaces, family_map(context))


def normalization_features(model: BaseAlgorithm, choice: conditions.Choice,
                           context: Context | None) -> dict[str, list[tuple[int, int]]] | None:
    """Which source observation features the target's are, per Dict key ("" for a Box), for
    the source's normalization statistics (`vecnorm.apply`): the map `apply_transfer` gives
    the first layers (`across_spaces`), so a shared feature is normalized as the source
    normalized it. None when the condition copies no weights or nothing needs mapping."""
    weights = choice.weights
    if weights is None or context is None or context.source_state is None:
        return None
    mapping = across_spaces(model, context.source_state, weights, context)
    return mapping.features() if mapping is not None else None


def check_spaces(model: BaseAlgorithm, choice: str | conditions.Choice,
                 context: Context | None) -> None:
    """The pre-flight check of ``obs_map`` against the source's and `model`'s spaces (the
    source env is built to read its spaces): ConfigError, one line, before anything is
    written. A condition without obs_map has nothing to check."""
    parsed = conditions.choice_of(choice)
    weights = parsed.weights
    if weights is None or weights.get("obs_map") is None:
        return
    cross_space.plan(model, weights, source_spaces(context), None)


def source_spaces(context: Context | None) -> tuple[Any, Any] | None:
    """The source policy's (observation, action) spaces: the context's, else its source
    env's (built once to read them); None when unknown or the target's own env."""
    if context is None:
        return None
    if context.source_spaces is not None:
        return context.source_spaces
    if context.source_env is None or context.source_env == context.target_env:
        return None
    from ..env_factory import make_vec

    env = make_vec(context.source_env, 1, seed=0)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def family_map(context: Context | None) -> str | None:
    """The obs_map the env family declares for the study's source and target ids (its
    ``observation_map``), or None."""
    if context is None or context.source_env is None or context.target_env is None:
        return None
    from ..env_factory import resolve

    (family, base_s, params_s), (other, base_t, params_t) = (
        resolve(context.source_env), resolve(context.target_env))
    if family is None or other is None or family.name != other.name:
        return None
    declared = getattr(family, "observation_map", None)
    if declared is None:
        return None  # the ids it registers (a parameter may pick another, Fetch's task)
    return declared(family.env_id(base_s, params_s), other.env_id(base_t, params_t))


def check_options(policy: torch.nn.Module, condition: str | conditions.Choice) -> None:
    """ConfigError (one line) when `condition`'s options do not fit `policy`, e.g.
    ``freeze-features:layers=3`` for a policy with two feature layers, or reinit-head for a
    policy that is all head (ARS's LinearPolicy, ``net_arch=[]``)."""
    choice = conditions.choice_of(condition)
    label = choice.label
    entry = choice.weights.condition if choice.weights is not None else choice.condition
    if _on_features(entry) and not feature_layers(policy):
        raise ConfigError(
            f"condition {label!r}: the policy has no feature layers (its observation goes "
            f"straight into its heads, e.g. ARS's LinearPolicy or net_arch=[]), so "
            f"{entry.name} would {'freeze' if entry.freezes != conditions.NONE else 'copy'} "
            f"nothing: use finetune, or a network with hidden layers (--hparams "
            f"policy=MlpPolicy 'policy_kwargs={{net_arch=[64,64]}}')")
    _frozen_depth(policy, label, choice.get("layers"))


def _on_features(entry: conditions.Condition) -> bool:
    """Whether a condition's effect is on feature layers only (reinit-head, freeze-features)."""
    return entry.copies == conditions.FEATURES or entry.freezes == conditions.FEATURES


def _frozen_depth(policy: torch.nn.Module, condition: str, layers: int | None) -> float:
    """The depth up to which feature layers are frozen: `layers`, or all of them."""
    if layers is None:
        return float("inf")
    count = max(feature_layers(policy).values(), default=0)
    if layers > count:
        raise ConfigError(
            f"condition {condition!r}: the policy has {count} feature layer"
            f"{'' if count == 1 else 's'} from the input to its heads, so layers must be "
            f"1..{count} (or left out, to freeze them all)")
    return layers


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
    contrib.list_trainable(model)  # TRPO differentiates every parameter it is given
    frozen_ids = {id(p) for p in frozen_params}
    optim_groups.remove(policy, frozen_params)  # saved as SB3 lays it out: SB3's load() reads it
    for _, module in policy.named_modules():
        params = list(module.parameters(recurse=True))
        if params and all(id(p) in frozen_ids for p in params):
            _pin_eval(module)


def _pin_eval(module: torch.nn.Module) -> None:
    module.eval()

    def train(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
        return self  # stays in eval mode: its parameters are frozen

    module.train = types.MethodType(train, module)  # type: ignore[method-assign]

