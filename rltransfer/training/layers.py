"""The anatomy of an SB3 policy: which tensors are heads, which are feature layers, and how
deep each feature layer sits from the input (for ``freeze-features:layers=k``).

Heads are the output layers: actions, values, Q-values, quantiles, log std. Everything else
(MLP extractors, hidden layers of Q-networks, critics and actors, a recurrent policy's LSTMs,
batch-renormalization layers) is a feature layer. Names are SB3's and sb3-contrib's module
names, so this holds for every algorithm of `rltransfer.training.algos`.
"""

from __future__ import annotations

import re

import torch

_HEAD_MODULES = {"action_net", "value_net", "mu", "log_std"}
# Sequentials whose last Linear is a head: DQN's Q-values, QR-DQN's quantiles per action,
# SAC/TD3/TQC/CrossQ critics (TQC's: the quantiles), TD3's actor, ARS's policy network.
_HEAD_SEQUENTIALS = re.compile(r"^(q_net|quantile_net|qf\d+|mu|action_net)$")
_RECURRENT = (torch.nn.LSTM, torch.nn.GRU)  # one layer each (all its stacked layers)
_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, *_RECURRENT)


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


def feature_layers(policy: torch.nn.Module) -> dict[str, int]:
    """Each feature layer (a Linear or Conv module that is not a head) of `policy` and its
    depth: 1 for a layer that reads the observation.

    Depth counts along the forward path: a features extractor's layers come first (in the
    order they are registered, which is the order NatureCNN and MLPs apply them), then the
    layers of each MLP that reads its features. Parallel MLPs count separately, so the policy
    and value towers of an actor-critic, Q-networks qf0 and qf1, and target networks each have
    their own layer 1 (after the extractor they read). MultiInputPolicy's CombinedExtractor
    reads each key in parallel: a key's CNN counts from 1 on its own, and the MLPs after the
    extractor start after its deepest key (a flattened vector key has no layer). A recurrent
    policy (RecurrentPPO) has its LSTMs between the extractor and the towers: ``lstm_actor``
    (one layer, however many stacked layers it has) before the policy tower, ``lstm_critic``
    (or the ``critic`` Linear that stands in for it, or the shared ``lstm_actor``) before the
    value tower.
    """
    heads = head_parameters(policy)
    names = {id(module): name for name, module in policy.named_modules()}
    chains: dict[str, list[str]] = {}  # an extractor or an MLP -> its layers, input first
    for name, module in policy.named_modules():
        if isinstance(module, _LAYERS) and f"{name}.weight" not in heads:
            chains.setdefault(_chain(name), []).append(name)
    def offset(chain: str) -> int:  # the layers before `chain`'s first, along its path
        before = _extractor_of(policy, chain, names)
        if before is None or before == chain:
            return 0
        keys = [len(layers) for name, layers in chains.items()
                if name.startswith(f"{before}.extractors.")]  # parallel: the deepest counts
        return offset(before) + max([len(chains.get(before, [])), *keys])

    depths: dict[str, int] = {}
    for chain, layers in chains.items():
        start = offset(chain)
        for index, name in enumerate(layers):
            depths[name] = start + index + 1
    return depths


def parameter_depths(policy: torch.nn.Module) -> dict[str, int]:
    """The depth (`feature_layers`) of each feature parameter of `policy`. A parameter outside
    a layer (e.g. a BatchNorm's) goes with the layer registered before it in its extractor or
    MLP (or is at depth 1)."""
    layers = feature_layers(policy)
    heads = head_parameters(policy)
    last: dict[str, int] = {}
    depths: dict[str, int] = {}
    for name, module in policy.named_modules():
        chain = _chain(name)
        if name in layers:
            last[chain] = layers[name]
        for param_name, _ in module.named_parameters(prefix=name, recurse=False):
            if param_name not in heads:
                depths[param_name] = layers.get(name, last.get(chain, 1))
    return depths


def _chain(module: str) -> str:
    """The features extractor a module is part of, or else its parent (an MLP); a layer of
    the policy itself (a recurrent policy's LSTMs) is a chain of its own."""
    if "." not in module:
        return module
    parts = module.split(".")
    for index, part in enumerate(parts):
        if part.endswith("features_extractor"):
            if parts[index + 1:index + 2] == ["extractors"] and len(parts) > index + 3:
                return ".".join(parts[:index + 3])  # MultiInputPolicy: one chain per key
            return ".".join(parts[:index + 1])
    return module.rpartition(".")[0]


def _extractor_of(policy: torch.nn.Module, chain: str, names: dict[int, str]) -> str | None:
    """The features extractor whose output the MLP `chain` reads (None for an extractor):
    ``mlp_extractor.policy_net`` reads pi_features_extractor (the shared one if it is),
    ``q_net.q_net`` reads ``q_net.features_extractor``, ``critic.qf0`` reads
    ``critic.features_extractor``."""
    if chain.endswith("features_extractor"):
        return None
    owner, _, leaf = chain.rpartition(".")
    root, _, last = owner.rpartition(".")
    if owner == "mlp_extractor" and isinstance(getattr(policy, "lstm_actor", None), _RECURRENT):
        return _recurrent_input(policy, leaf)
    if last == "mlp_extractor" or (not owner and leaf in _TOWERS):
        prefix = f"{root}." if root else ""
        tower = _TOWERS.get(leaf, "")
        candidates = [f"{prefix}{tower}features_extractor", f"{prefix}features_extractor"]
    else:
        candidates = [f"{owner}.features_extractor" if owner else "features_extractor"]
    for path in candidates:
        try:
            module = policy.get_submodule(path)
        except AttributeError:
            continue
        return names.get(id(module))
    return None


# The towers of an actor-critic, and which features extractor each reads when they differ.
_TOWERS = {"policy_net": "pi_", "value_net": "vf_", "lstm_actor": "pi_", "lstm_critic": "vf_",
           "critic": "vf_"}


def _recurrent_input(policy: torch.nn.Module, tower: str) -> str:
    """What a recurrent policy's MLP tower reads: the policy tower ``lstm_actor``; the value
    tower ``lstm_critic``, else the ``critic`` Linear, else the shared ``lstm_actor``."""
    if tower == "value_net":
        for name in ("lstm_critic", "critic"):
            if isinstance(getattr(policy, name, None), torch.nn.Module):
                return name
    return "lstm_actor"
