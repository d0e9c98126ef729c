"""Progressive networks (Rusu et al. 2016, "Progressive Neural Networks"): the source's hidden
layers are kept as a frozen column, and a new column of the same shape learns the target beside
it, reading the source's layers through lateral adapters, so nothing the source learned is
overwritten. PPO, A2C and SAC with MLP policies on vector observations.

Each tower of the policy becomes a pair of columns (`Columns`): PPO's and A2C's policy and value
networks (``mlp_extractor.policy_net``, ``mlp_extractor.value_net``), SAC's actor
(``actor.latent_pi``) and each of its Q-networks (``critic.qf<i>``, and their target copies).
With s_i the source column's hidden layer i and h_i the new column's (s_0 = h_0 = the tower's
input: the observation, for a Q-network the observation and the action)::

    h_i = f(W_i h_{i-1} + U_i a_i(s_{i-1}))     a_i(s) = f(V_i (alpha_i s))

the paper's non-linear adapter: alpha_i a learned scalar that adjusts the source layer's scale
(initialized to a small random value, uniform in [0.01, 0.1]), V_i a learned projection of the
source layer, f the network's activation, U_i the lateral weights. The output layer gets its
lateral too: the heads (PPO/A2C: action and value; SAC: mu, log_std and each Q-value) read
``[h_L, a_L(s_L)]``, so the heads' last columns are that layer's U. The heads are fresh.

The source column is held as buffers, not parameters (`FrozenLinear`): it has no gradient, is in
no optimizer, never takes part in SAC's Polyak averaging, and no SB3 code can train it, in a
run or after SB3's own ``PPO.load``/``SAC.load`` of its model.zip; its module stays in eval mode.

SB3 builds the policy (``ProgressiveMlpPolicy``, registered in PPO's, A2C's and SAC's own
policy aliases), so SB3's ``load()`` reads a run's model.zip where rltransfer is installed. The
policy is first built exactly as scratch's (SB3's own construction and initialization, on the
same random stream), then the columns are added on a separate random stream. The U of every
adapter (the heads' columns on the adapters included) starts at zero, so at step 0 a
progressive run is its scratch twin: the same new column, heads and random stream, hence the
same first evaluation and rollout (up to float rounding in the wider heads); what it adds over
scratch is what the lateral connections learn. Under gSDE (``use_sde``) the exploration noise
reads the widened latent, so its random draws differ from scratch's.

The source's weights are loaded after construction (SB3's ``_build()`` re-initializes every
layer), in `Hooks.initialize`. SAC's target networks get the source's online Q-networks as their
frozen column, the same column as the online critic.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy, ContinuousCritic
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn

from ..errors import ConfigError
from ..training import optim_groups
from ..training.transfer import TensorRecord, TransferReport
from . import registry
from .hooks import Context, Strategy

ALIAS = "ProgressiveMlpPolicy"
ALPHA_INIT = (0.01, 0.1)  # the adapters' scale starts uniform in this range (small, random)
SOURCE, NEW, ADAPTER, HEAD = "source column", "new column", "adapter", "head"


class FrozenLinear(nn.Module):
    """A Linear layer of the source column: weight and bias are buffers (saved in the state
    dict, loaded by SB3, never trained)."""

    def __init__(self, in_features: int, out_features: int,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Adapter(nn.Module):
    """Rusu et al.'s non-linear lateral connection: ``U f(V (alpha s))``; without U for the
    output layer, whose U is the heads' last columns."""

    def __init__(self, source_width: int, into: int | None, activation: nn.Module,
                 ortho_init: bool) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(()).uniform_(*ALPHA_INIT))
        self.v = nn.Linear(source_width, source_width)
        if ortho_init:  # as SB3 initializes an actor-critic's hidden layers
            ActorCriticPolicy.init_weights(self.v, gain=np.sqrt(2))
        self.activation = copy.deepcopy(activation)
        self.u = nn.Linear(source_width, into, bias=False) if into is not None else None
        if self.u is not None:
            nn.init.zeros_(self.u.weight)  # step 0: no lateral input yet (scratch's twin)

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        lateral = self.activation(self.v(self.alpha * source))
        return self.u(lateral) if self.u is not None else lateral


def _pairs(tower: nn.Sequential) -> list[tuple[nn.Linear, nn.Module]]:
    """The (Linear, activation) layers of an SB3 MLP tower (MlpExtractor, create_mlp)."""
    modules = list(tower)
    pairs = list(zip(modules[0::2], modules[1::2], strict=False))
    if len(modules) % 2 or not all(isinstance(lin, nn.Linear) and not list(act.parameters())
                                   for lin, act in pairs):
        raise ValueError(f"progressive: not an MLP of Linear and activation layers: {tower}")
    return pairs


class Columns(nn.Module):
    """One tower as two columns: ``source`` (frozen, the source's layers), ``new`` (the
    target's, trained) and ``lateral`` (one adapter per source layer, into the next new layer;
    the last one's output goes to the heads beside the new column's last layer)."""

    def __init__(self, new: nn.Sequential, ortho_init: bool) -> None:
        super().__init__()
        pairs = _pairs(new)
        device = pairs[0][0].weight.device
        self.new = new
        self.source = nn.Sequential(*[
            FrozenLinear(m.in_features, m.out_features, device) if isinstance(m, nn.Linear)
            else copy.deepcopy(m) for m in new])
        widths = [lin.out_features for lin, _ in pairs]
        self.lateral = nn.ModuleList(
            Adapter(width, widths[k + 1] if k + 1 < len(widths) else None, pairs[k][1],
                    ortho_init) for k, width in enumerate(widths)).to(device)
        self.source.eval()
        self.extra = widths[-1]  # what the heads read beside the new column's last layer

    def train(self, mode: bool = True) -> Columns:
        super().train(mode)
        self.source.eval()  # frozen: always in eval mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source, new = x, x
        for k in range(len(self.lateral)):
            pre = self.new[2 * k](new)
            if k:
                pre = pre + self.lateral[k - 1](source)
            source = self.source[2 * k + 1](self.source[2 * k](source))
            new = self.new[2 * k + 1](pre)
        return torch.cat([new, self.lateral[-1](source)], dim=-1)


def _graft(owner: nn.Module, name: str, ortho_init: bool) -> int:
    """Replace the MLP tower `owner.<name>` by its `Columns`; the width the heads gain (0 for
    a tower without hidden layers, left as it is: `Hooks.check` refuses it)."""
    tower = getattr(owner, name)
    if not isinstance(tower, nn.Sequential) or not len(tower):
        return 0
    columns = Columns(tower, ortho_init)
    setattr(owner, name, columns)
    return columns.extra


def _widen(head: nn.Linear, extra: int) -> nn.Linear:
    """`head` reading `extra` more inputs (the output layer's lateral), whose weights start at
    0: the same outputs as before."""
    wide = nn.Linear(head.in_features + extra, head.out_features, bias=head.bias is not None)
    wide = wide.to(head.weight.device)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :head.in_features] = head.weight
        if head.bias is not None:
            wide.bias.copy_(head.bias)
    return wide


def _widen_sde(log_std: nn.Parameter, extra: int, init: float,
               distribution: StateDependentNoiseDistribution) -> nn.Parameter:
    """gSDE's log std, one row per latent feature: rows for the added features at `init`."""
    rows = torch.full((extra, log_std.shape[1]), init, device=log_std.device)
    distribution.latent_sde_dim = log_std.shape[0] + extra
    return nn.Parameter(torch.cat([log_std.data, rows]), requires_grad=log_std.requires_grad)


class _OwnStream:
    """The columns' random numbers come from a stream of their own, seeded from the run's
    without consuming it: the run's stream stays scratch's."""

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        # the CPU generator only (layers are built there): a GPU's stream is left as it is
        torch.default_generator.manual_seed(int(torch.randint(2**62, ())) ^ 0x5EED_C01)

    def __exit__(self, *args: object) -> None:
        self._fork.__exit__(*args)


class ProgressiveActorCriticPolicy(ActorCriticPolicy):
    """PPO's and A2C's MLP policy with progressive columns in each tower."""

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)  # scratch's policy, on scratch's random stream
        extractor = self.mlp_extractor
        with _OwnStream():
            extra_pi = _graft(extractor, "policy_net", self.ortho_init)
            extra_vf = _graft(extractor, "value_net", self.ortho_init)
            extractor.latent_dim_pi += extra_pi
            extractor.latent_dim_vf += extra_vf
            self.action_net = _widen(self.action_net, extra_pi)
            self.value_net = _widen(self.value_net, extra_vf)
            if isinstance(self.action_dist, StateDependentNoiseDistribution) and extra_pi:
                self.log_std = _widen_sde(self.log_std, extra_pi, self.log_std_init,
                                          self.action_dist)
        # as SB3's _build makes it, over the parameters as they are now
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),  # type: ignore[call-arg]
                                              **self.optimizer_kwargs)


class ProgressiveSACPolicy(SACPolicy):
    """SAC's MLP policy with progressive columns in the actor and each Q-network."""

    def make_actor(self, features_extractor: Any = None) -> Actor:
        actor = super().make_actor(features_extractor)
        with _OwnStream():
            extra = _graft(actor, "latent_pi", False)
            if extra:
                mu = actor.mu[0] if isinstance(actor.mu, nn.Sequential) else actor.mu
                wide = _widen(mu, extra)
                if isinstance(actor.mu, nn.Sequential):  # gSDE's clipped mean
                    actor.mu[0] = wide
                else:
                    actor.mu = wide
                if isinstance(actor.log_std, nn.Linear):
                    actor.log_std = _widen(actor.log_std, extra)
                else:
                    actor.log_std = _widen_sde(actor.log_std, extra,
                                               self.actor_kwargs["log_std_init"],
                                               actor.action_dist)  # type: ignore[arg-type]
        return actor

    def make_critic(self, features_extractor: Any = None) -> ContinuousCritic:
        critic = super().make_critic(features_extractor)
        with _OwnStream():
            for index, q_net in enumerate(critic.q_networks):
                layers = list(q_net)
                if len(layers) < 3:  # no hidden layer: refused by Hooks.check
                    continue
                columns = Columns(nn.Sequential(*layers[:-1]), False)
                grafted = nn.Sequential(columns, _widen(layers[-1], columns.extra))
                critic.add_module(f"qf{index}", grafted)
                critic.q_networks[index] = grafted
        return critic


POLICIES: dict[type[BaseAlgorithm], type[BasePolicy]] = {
    PPO: ProgressiveActorCriticPolicy, A2C: ProgressiveActorCriticPolicy,
    SAC: ProgressiveSACPolicy}
for _algorithm, _policy in POLICIES.items():  # SB3's own registry of policy names
    _algorithm.policy_aliases = {**_algorithm.policy_aliases, ALIAS: _policy}


@dataclass(frozen=True)
class Tower:
    """A tower of the policy: where its columns are, where the source keeps its layers, and
    what errors call it."""

    path: str  # its module in the target policy, e.g. "critic.qf0.0"
    source: str  # the source's tower, e.g. "critic.qf0"
    what: str  # e.g. "Q-network critic.qf0"
    reads: str  # "observation" or "observation and action"
    columns: Columns | None  # None: no hidden layer


def towers(policy: BasePolicy) -> list[Tower]:
    """The towers of a progressive policy, in the order its state dict lists them."""
    if isinstance(policy, ProgressiveActorCriticPolicy):
        extractor = policy.mlp_extractor
        return [Tower(f"mlp_extractor.{name}", f"mlp_extractor.{name}", what, "observation",
                      _columns(getattr(extractor, name)))
                for name, what in (("policy_net", "policy network"),
                                   ("value_net", "value network"))]
    if isinstance(policy, ProgressiveSACPolicy):
        found = [Tower("actor.latent_pi", "actor.latent_pi", "actor (actor.latent_pi)",
                       "observation", _columns(policy.actor.latent_pi))]
        for critic in ("critic", "critic_target"):
            for index, q_net in enumerate(getattr(policy, critic).q_networks):
                found.append(Tower(f"{critic}.qf{index}.0", f"critic.qf{index}",
                                   f"Q-network critic.qf{index}", "observation and action",
                                   _columns(q_net[0])))
        return found
    raise TypeError(f"not a progressive policy: {type(policy).__name__}")


def _columns(module: nn.Module) -> Columns | None:
    return module if isinstance(module, Columns) else None


def source_names(policy: BasePolicy) -> dict[str, str]:
    """Each source-column tensor of `policy` and the source's tensor it holds."""
    names: dict[str, str] = {}
    for tower in towers(policy):
        if tower.columns is None:
            continue
        for index, module in enumerate(tower.columns.source):
            if isinstance(module, FrozenLinear):
                for tensor in ("weight", "bias"):
                    names[f"{tower.path}.source.{index}.{tensor}"] = (
                        f"{tower.source}.{index}.{tensor}")
    return names


def _hidden(state: dict[str, torch.Tensor], prefix: str, head: bool) -> list[tuple[int, ...]]:
    """The weight shapes of the source's hidden layers under `prefix` (without its last Linear
    when the tower ends in a head, as SAC's Q-networks do)."""
    indices = sorted(int(name[len(prefix) + 1:].split(".")[0]) for name in state
                     if name.startswith(prefix + ".") and name.endswith(".weight")
                     and name[len(prefix) + 1:].split(".")[0].isdigit())
    if head:
        indices = indices[:-1]
    return [tuple(state[f"{prefix}.{i}.weight"].shape) for i in indices]


def check_source(policy: BasePolicy, state: dict[str, torch.Tensor], label: str,
                 source_label: str = "") -> None:
    """ConfigError (one line) unless every tower's source column can hold the source's layers:
    the same hidden sizes (net_arch) and the same input size (observation, and action for a
    Q-network)."""
    who = source_label or "the source policy"
    for tower in towers(policy):
        if tower.columns is None or tower.path.startswith("critic_target."):
            continue
        wanted = [tuple(m.weight.shape) for m in tower.columns.source
                  if isinstance(m, FrozenLinear)]
        given = _hidden(state, tower.source, head=tower.source.startswith("critic."))
        if [s[0] for s in given] != [s[0] for s in wanted]:
            sizes = ", ".join(str(s[0]) for s in wanted)
            raise ConfigError(
                f"condition {label!r}: {who}'s {tower.what} has hidden layers "
                f"{[s[0] for s in given]}, the target's {[s[0] for s in wanted]}: the source "
                f"column keeps the source's layers beside a new column of the same shape, so "
                f"source and target need the same network: give both --hparams "
                f"'policy_kwargs={{net_arch=[{sizes}]}}'")
        if given[0][1] != wanted[0][1]:
            raise ConfigError(
                f"condition {label!r}: {who}'s {tower.what} reads {given[0][1]} inputs "
                f"({tower.reads}), the target's {wanted[0][1]}: the frozen source column "
                f"reads the target's {tower.reads}, so their sizes must be the source's: use "
                f"finetune or reinit-head, which copy what fits")
        missing = [s for s in source_names(policy).values()
                   if s.startswith(tower.source + ".") and s not in state]
        if missing:
            raise ConfigError(f"condition {label!r}: {who} has no {missing[0]} (a network "
                              f"without biases?): give a source trained with the study's "
                              f"--algo and network")


def load_source(policy: BasePolicy, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Copy the source's layers into every source column of `policy` (SAC's target networks
    get the online Q-networks'); the names copied, target: source."""
    names = source_names(policy)
    buffers = dict(policy.named_buffers())
    with torch.no_grad():
        for name, source in names.items():
            buffers[name].copy_(state[source].to(buffers[name].device, buffers[name].dtype))
    return names


def _column(name: str) -> str:
    if ".source." in name:
        return SOURCE
    if ".lateral." in name:
        return ADAPTER
    if ".new." in name:
        return NEW
    return HEAD


class ProgressiveReport(TransferReport):
    """transfer.json's tensor records, with a summary in the columns' terms."""

    def summary(self) -> str:
        counts = {c: sum(_column(t.name) == c for t in self.tensors)
                  for c in (SOURCE, NEW, ADAPTER, HEAD)}
        return (f"progressive: source column {counts[SOURCE]} tensors copied and frozen; new "
                f"column {counts[NEW]}, adapters {counts[ADAPTER]}, fresh heads "
                f"{counts[HEAD]} tensors trained")


_FRESH = {SOURCE: "not in the source", NEW: "new column (progressive)",
          ADAPTER: "lateral adapter (progressive)", HEAD: "fresh head (progressive)"}


def report(model: BaseAlgorithm, copied: dict[str, str], label: str, source_label: str,
           options: dict[str, Any]) -> ProgressiveReport:
    """Every tensor of `model`'s policy: its column, whether it came from the source, whether
    it trains (and at what factor of the learning rate)."""
    policy = model.policy
    factors = optim_groups.policy_lr_factors(policy)
    params = {name: id(p) for name, p in policy.named_parameters()}
    records = []
    for name, tensor in policy.state_dict().items():
        column = _column(name)
        status, reason = ("copied", "") if name in copied else ("reinitialized", _FRESH[column])
        role = {SOURCE: "features", NEW: "features", ADAPTER: "adapter", HEAD: "head"}[column]
        records.append(TensorRecord(name, list(tensor.shape), status, reason,
                                    column == SOURCE, role,
                                    factors.get(params[name]) if name in params else None))
    return ProgressiveReport(label, source_label, records, options)


def record(model: BaseAlgorithm, result: ProgressiveReport,
           copied: dict[str, str]) -> dict[str, Any]:
    """transfer.json: the tensor records, and the columns: which tensors are the source's
    (frozen), the new column's, the adapters' and the fresh heads'."""
    data = result.to_dict()
    columns: dict[str, list[str]] = {SOURCE: [], NEW: [], ADAPTER: [], HEAD: []}
    for tensor in result.tensors:
        columns[_column(tensor.name)].append(tensor.name)
    data["progressive"] = {
        "towers": [{"tower": t.path, "source": t.source,
                    "hidden": [m.out_features for m in t.columns.source
                               if isinstance(m, FrozenLinear)] if t.columns else []}
                   for t in towers(model.policy)],
        "columns": {"source": columns[SOURCE], "new": columns[NEW],
                    "adapters": columns[ADAPTER], "heads": columns[HEAD]},
        "copied_from": copied,
        "lateral": "h_i = f(W_i h_{i-1} + U_i f(V_i (alpha_i s_{i-1}))); the heads read "
                   "[h_L, f(V_L (alpha_L s_L))]",
        "frozen": "the source column is buffers: no gradient, in no optimizer, eval mode",
        "start": "U (and the heads' columns on the adapters) at 0, alpha uniform in "
                 f"[{ALPHA_INIT[0]}, {ALPHA_INIT[1]}]: step 0 acts as scratch does",
    }
    return data


class Hooks(Strategy):
    """progressive's hooks (`rltransfer.strategies.hooks`)."""

    def configure(self, hparams: dict[str, Any], choice: registry.Choice) -> dict[str, Any]:
        policy = hparams.get("policy", "MlpPolicy")
        if policy != "MlpPolicy":  # plan gives image observations a CnnPolicy
            what, fix = ((f"a {policy} on images", "use vector observations (no --pixels)")
                         if policy == "CnnPolicy" else
                         (f"a {policy} on a Dict observation", "use an env that observes a "
                          "vector") if policy == "MultiInputPolicy" else
                         (f"a {policy}", "use --hparams policy=MlpPolicy on vector observations"))
            raise ConfigError(
                f"condition {choice.label!r} builds its columns from MLP layers on vector "
                f"observations, but this study's policy is {what}: {fix}, or finetune, "
                f"freeze-features or reinit-head")
        return {**hparams, "policy": ALIAS}

    def check(self, target: BaseAlgorithm, choice: registry.Choice, context: Context) -> None:
        empty = [t for t in towers(target.policy) if t.columns is None]
        if empty:
            raise ConfigError(
                f"condition {choice.label!r}: the target's {empty[0].what} has no hidden layer "
                f"(net_arch), so there is no source layer to keep as a column: give it hidden "
                f"layers (--hparams 'policy_kwargs={{net_arch=[64,64]}}'), or use finetune")
        if context.source_state is not None:
            check_source(target.policy, context.source_state, choice.label,
                         context.source_label)

    def initialize(self, model: BaseAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[ProgressiveReport, dict[str, Any]]:
        if context.source_state is None:
            raise ValueError(f"condition {choice.label} needs the source policy's weights")
        self.check(model, choice, context)
        copied = load_source(model.policy, context.source_state)
        result = report(model, copied, choice.label, context.source_label,
                        dict(choice.options))
        return result, record(model, result, copied)


HOOKS = Hooks()
