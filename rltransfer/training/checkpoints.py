"""What an SB3 checkpoint says about its network, read without unpickling, adopted by a study;
and ``hf://ORG/REPO`` resolved to a checkpoint in huggingface_hub's cache.

SB3 writes a model's attributes into the zip's ``data`` file as JSON. A value that JSON cannot
hold (a ``policy_kwargs`` dict with a class in it, spaces, schedules) is stored as
``{":type:": ..., ":serialized:": <base64 cloudpickle>, <its readable attributes>}``. Only the
plain JSON is read here; a serialized blob is never unpickled. The one thing only a blob may
hold, ``activation_fn``, is read statically from its pickle opcodes (``pickletools.genops``:
the module and name a GLOBAL / STACK_GLOBAL opcode would import, looked up in an allowlist of
torch activations; nothing is imported or executed). What the metadata does not say, the
tensor shapes of ``policy.pth`` do: the layer widths (``net_arch``), the number of critics,
and whether the policy uses gSDE.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import inspect
import os
import pickletools
import re
import warnings
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, MissingDependencyError
from ..io_utils import file_sha256
from .algos import Algorithm, constructor_keys, validate_hparams
from .transfer import SourceCheckpoint, check_algorithm, load_checkpoint

HUB_PREFIX = "hf://"

# policy_kwargs that shape the network (or its initialization) and that a study adopts; the
# second line: sb3-contrib's (TQC/QR-DQN quantiles, RecurrentPPO's LSTMs, ARS's bias, CrossQ's
# batch renormalization). A policy class that does not take a key does not get it.
ADOPTED_POLICY_KWARGS = ("net_arch", "activation_fn", "log_std_init", "ortho_init", "full_std",
                         "use_expln", "squash_output", "share_features_extractor", "n_critics",
                         "clip_mean",
                         "n_quantiles", "lstm_hidden_size", "n_lstm_layers", "shared_lstm",
                         "enable_critic_lstm", "with_bias", "batch_norm", "batch_norm_momentum",
                         "batch_norm_eps", "renorm_warmup_steps")
# The activations rltransfer can rebuild, by the module and name a pickle imports them from
# (rltransfer.training.algos spells them as these keys).
ACTIVATIONS = {("torch.nn.modules.activation", cls): name
               for cls, name in (("ReLU", "relu"), ("Tanh", "tanh"), ("ELU", "elu"),
                                 ("LeakyReLU", "leaky_relu"), ("SiLU", "silu"),
                                 ("GELU", "gelu"))}
_CLASS_TEXT = re.compile(r"<class '([\w.]+)\.(\w+)'>")  # how SB3 writes a class readably
_HUB_FILES = ["*.zip", "*.yml", "*.yaml", "*.pkl", "*.json"]  # an RL-Zoo agent's files


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A checkpoint's network in --hparams form, and where each value was read."""

    checkpoint: str
    policy_kwargs: dict[str, Any]
    use_sde: bool | None
    read_from: dict[str, str] = field(default_factory=dict)  # key -> "data" | "policy.pth shapes"
    # whether data lists the checkpoint's policy_kwargs whole: a key it leaves out had SB3's
    # default, so a preset's value for it is dropped too
    complete: bool = False

    def record(self) -> dict[str, Any]:
        """What was adopted and from where (source.json / study.json's `adopted`)."""
        adopted: dict[str, Any] = {"policy_kwargs": self.policy_kwargs}
        if self.use_sde is not None:
            adopted["use_sde"] = self.use_sde
        return {**adopted, "read_from": self.read_from, "others_at_sb3_defaults": self.complete,
                "checkpoint": self.checkpoint}


def read_architecture(checkpoint: SourceCheckpoint) -> Architecture:
    """The network of `checkpoint`: the plain-JSON values of its ``data``, then its shapes."""
    kwargs, read_from, complete = _from_data(checkpoint.metadata)
    use_sde = checkpoint.metadata.get("use_sde")
    if isinstance(use_sde, bool):
        read_from["use_sde"] = "data"
    else:
        use_sde = None
    shapes = _from_shapes(checkpoint.state_dict, checkpoint.algo)
    quantiles = checkpoint.metadata.get("n_quantiles")  # QR-DQN's, beside its policy_kwargs
    if "n_quantiles" not in kwargs and isinstance(quantiles, int) and quantiles > 0:
        kwargs["n_quantiles"], read_from["n_quantiles"] = quantiles, "data"
    for key, value in shapes.items():
        if key == "use_sde":
            if use_sde is None:
                use_sde, read_from[key] = value, "policy.pth shapes"
        elif key not in kwargs:
            kwargs[key], read_from[key] = value, "policy.pth shapes"
    return Architecture(checkpoint.path, kwargs, use_sde, read_from, complete)


def _from_data(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], bool]:
    """The adopted policy_kwargs that ``data`` holds as JSON (or a readable attribute), and
    whether it lists them whole (plain JSON, or a blob with SB3's readable attributes)."""
    raw = metadata.get("policy_kwargs")
    if not isinstance(raw, dict):
        return {}, {}, False
    complete = bool(set(raw) - {":type:", ":serialized:"}) or ":serialized:" not in raw
    kwargs: dict[str, Any] = {}
    read_from: dict[str, str] = {}
    for key in ADOPTED_POLICY_KWARGS:
        if key not in raw:
            continue
        value = raw[key]
        if key == "activation_fn":
            value = _activation_from_text(value)
            if value is None:
                warnings.warn(f"the checkpoint's activation_fn {str(raw[key])[:80]} is not one "
                              f"rltransfer rebuilds ({', '.join(ACTIVATIONS.values())}): the "
                              f"study's network uses the preset's or SB3's default", stacklevel=2)
                continue
        elif key == "net_arch":
            if not _is_net_arch(value):
                continue
        elif isinstance(value, str) or not isinstance(value, (bool, int, float)):
            continue  # the text of a value JSON could not hold: not a usable value
        kwargs[key] = value
        read_from[key] = "data"
    blob = raw.get(":serialized:")
    if "activation_fn" not in kwargs and isinstance(blob, str):
        found = activations_in_pickle(blob)
        if len(found) == 1:
            kwargs["activation_fn"] = found.pop()
            read_from["activation_fn"] = "data (pickle opcodes, read without unpickling)"
    return kwargs, read_from, complete


def _activation_from_text(value: Any) -> str | None:
    match = _CLASS_TEXT.fullmatch(value) if isinstance(value, str) else None
    return ACTIVATIONS.get((match.group(1), match.group(2))) if match else None


def _is_net_arch(value: Any) -> bool:
    def widths(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(w, int) and w > 0 for w in v)
    return widths(value) or (isinstance(value, dict) and bool(value)
                             and all(isinstance(k, str) and widths(v) for k, v in value.items()))


def activations_in_pickle(blob: str) -> set[str]:
    """The allowlisted activations a base64 pickle refers to, read from its opcodes alone.

    GLOBAL carries "module name" as its argument; STACK_GLOBAL takes the two strings pushed
    before it (directly or from the memo). Nothing is imported, nothing is executed; a blob
    that is not a readable pickle gives nothing."""
    try:
        data = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return set()
    found: set[str] = set()
    strings: list[Any] = []  # what was pushed, as far as strings matter here
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = strings[-1] if strings else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                strings.append(memo.get(int(arg)))
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                found.add(ACTIVATIONS.get((module, attr), ""))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.add(ACTIVATIONS.get((str(strings[-2]), str(strings[-1])), ""))
            elif opcode.stack_after:
                strings.append(None)  # any other push breaks a (module, name) pair
    except (ValueError, EOFError):  # truncated or not a pickle: what was read so far stands
        pass
    found.discard("")
    return found


def _widths(state: Mapping[str, torch.Tensor], prefix: str) -> list[int]:
    """Output widths of the Linear layers ``prefix.<i>.weight``, in the order i runs."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.weight$")
    layers = sorted((int(m.group(1)), tensor) for name, tensor in state.items()
                    if (m := pattern.match(name)) and tensor.dim() == 2)
    return [int(tensor.shape[0]) for _, tensor in layers]


def _same_or_split(pi: list[int], other: list[int], key: str) -> list[int] | dict[str, list[int]]:
    return pi if pi == other else {"pi": pi, key: other}


def _from_shapes(state: Mapping[str, torch.Tensor], algo: str | None = None) -> dict[str, Any]:
    """net_arch, n_critics, use_sde (and sb3-contrib's quantiles, LSTMs, bias) as SB3's and
    sb3-contrib's policies lay out their tensors; `algo`: the checkpoint's, if known."""
    found: dict[str, Any] = {}
    if any(k.startswith("mlp_extractor.") for k in state):  # PPO / A2C / TRPO / Maskable...
        pi = _widths(state, "mlp_extractor.policy_net")
        vf = _widths(state, "mlp_extractor.value_net")
        found["net_arch"] = _same_or_split(pi, vf, "vf")
        if "log_std" in state:  # a vector without gSDE, (latent, actions) with it
            found["use_sde"] = state["log_std"].dim() == 2
        found.update(_lstms(state))
    elif any(k.startswith("critic.qf") for k in state):  # SAC / TD3 / TQC / CrossQ
        critics = sorted({k.split(".")[1] for k in state if re.match(r"^critic\.qf\d+\.", k)})
        qf = _widths(state, f"critic.{critics[0]}")[:-1]  # the last layer is the Q-value
        if any(k.startswith("actor.latent_pi.") for k in state):  # SAC
            pi = _widths(state, "actor.latent_pi")
            found["use_sde"] = "actor.log_std" in state  # gSDE: a matrix, else a Linear layer
            if found["use_sde"] and "actor.mu.weight" in state:
                found["clip_mean"] = 0.0  # else gSDE's mean is clipped in a Sequential: mu.0
        else:  # TD3: the actor's last layer is its action
            pi = _widths(state, "actor.mu")[:-1]
        found["net_arch"] = _same_or_split(pi, qf, "qf")
        found["n_critics"] = len(critics)
        if algo == "tqc":  # each critic's last layer: its quantiles
            found["n_quantiles"] = _widths(state, f"critic.{critics[0]}")[-1]
    elif any(k.startswith("q_net.q_net.") for k in state):  # DQN
        found["net_arch"] = _widths(state, "q_net.q_net")[:-1]
    elif any(k.startswith("quantile_net.quantile_net.") for k in state):  # QR-DQN
        found["net_arch"] = _widths(state, "quantile_net.quantile_net")[:-1]
    elif any(k.startswith("action_net.0.") for k in state):  # ARS: one Sequential, action last
        found["net_arch"] = _widths(state, "action_net")[:-1]
        found["with_bias"] = "action_net.0.bias" in state
    return found


def _lstms(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """RecurrentPPO's LSTMs: hidden size, stacked layers, and the critic's (its own LSTM,
    the actor's shared, or a Linear layer)."""
    if "lstm_actor.weight_hh_l0" not in state:
        return {}
    layers = sum(1 for k in state if re.fullmatch(r"lstm_actor\.weight_ih_l\d+", k))
    own = "lstm_critic.weight_ih_l0" in state
    return {"lstm_hidden_size": int(state["lstm_actor.weight_hh_l0"].shape[1]),
            "n_lstm_layers": layers, "enable_critic_lstm": own,
            "shared_lstm": not own and "critic.weight" not in state}


def adopt(hparams: Mapping[str, Any], architecture: Architecture, explicit: Mapping[str, Any],
          algo: Algorithm) -> dict[str, Any]:
    """`hparams` (a preset with --hparams over it) with `architecture`'s network for `algo`;
    ConfigError when --hparams (`explicit`) gives another."""
    out = dict(hparams)
    given = explicit.get("policy_kwargs")
    given = given if isinstance(given, Mapping) else {}
    kwargs = dict(out.get("policy_kwargs") or {})
    if architecture.complete:  # e.g. a preset's log_std_init the checkpoint did not use
        kwargs = {k: v for k, v in kwargs.items()
                  if k not in ADOPTED_POLICY_KWARGS or k in given}
    for key, value in architecture.policy_kwargs.items():
        if key in given and not _same(key, given[key], value):
            raise _conflict(f"policy_kwargs.{key}", given[key], value, architecture, key)
        kwargs[key] = value
    kwargs.pop("use_sde", None)  # SB3's off-policy classes copy use_sde into policy_kwargs
    if algo.name == "ars" and kwargs.get("net_arch") and out.get("policy") == "LinearPolicy":
        if explicit.get("policy") == "LinearPolicy":
            raise _conflict("policy", "LinearPolicy", "MlpPolicy", architecture, "net_arch")
        out["policy"] = "MlpPolicy"  # hidden layers: ARS's LinearPolicy has none
    taken = _policy_keys(algo, str(out.get("policy", "MlpPolicy")))
    out["policy_kwargs"] = {k: v for k, v in kwargs.items()
                            if taken is None or k in taken or k not in ADOPTED_POLICY_KWARGS}
    if architecture.use_sde is not None and "use_sde" in constructor_keys(algo):
        if "use_sde" in explicit and explicit["use_sde"] != architecture.use_sde:
            raise _conflict("use_sde", explicit["use_sde"], architecture.use_sde, architecture,
                            "use_sde")
        out["use_sde"] = architecture.use_sde
    validate_hparams(algo, out)
    return out


def _policy_keys(algo: Algorithm, policy: str) -> set[str] | None:
    """The keyword arguments of `algo`'s policy class `policy` (None: it takes any)."""
    cls = getattr(algo.cls, "policy_aliases", {}).get(policy)
    if cls is None:
        return None
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def _same(key: str, given: Any, adopted: Any) -> bool:
    if key == "activation_fn" and isinstance(given, str):
        return given.lower() == adopted
    if key == "net_arch" and isinstance(given, list) and isinstance(adopted, dict):
        return all(v == given for v in adopted.values())
    if key == "net_arch" and isinstance(given, dict) and isinstance(adopted, list):
        return all(v == adopted for v in given.values())
    return bool(given == adopted)


def _conflict(option: str, given: Any, adopted: Any, architecture: Architecture,
              key: str) -> ConfigError:
    where = architecture.read_from.get(key, "data")
    return ConfigError(
        f"--hparams {option}={given!r} contradicts --source-model {architecture.checkpoint}, "
        f"whose {key} is {adopted!r} (read from its {where}): drop {option} from --hparams "
        f"to adopt the checkpoint's network, or give a checkpoint with that network")


def adopt_network(source_model: str, algo: Algorithm, explicit: Mapping[str, Any],
                  *hparams: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each of `hparams` (a study's source and target) with the network of --source-model
    (a path or hf://ORG/REPO), after checking that `algo` wrote it."""
    checkpoint = load_checkpoint(resolve_source_model(source_model))
    check_algorithm(checkpoint, algo.name)
    architecture = dataclasses.replace(read_architecture(checkpoint), checkpoint=source_model)
    return [adopt(h, architecture, explicit, algo) for h in hparams]


def source_record(source_model: str, path: Path, checkpoint: SourceCheckpoint) -> dict[str, Any]:
    """What source.json adds for an external checkpoint: the adopted network and, for
    hf://, the repo, its revision (the commit hash) and the file's sha256."""
    adopted = dataclasses.replace(read_architecture(checkpoint), checkpoint=source_model)
    record: dict[str, Any] = {"adopted": adopted.record()}
    if source_model.startswith(HUB_PREFIX):
        repo, _, _ = _parse_hub(source_model)
        snapshot = _snapshot_of(path)
        record["hub"] = {"repo": repo, "revision": snapshot.name,
                         "file": path.relative_to(snapshot).as_posix(),
                         "sha256": file_sha256(path)}
    return record


def _snapshot_of(path: Path) -> Path:
    for parent in path.parents:
        if parent.parent.name == "snapshots":
            return parent
    return path.parent


def hub_cache() -> Path:
    """The hub cache folder, from the environment at call time: HF_HUB_CACHE, else
    HF_HOME/hub, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expanduser(os.environ["HF_HOME"])) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _parse_hub(text: str) -> tuple[str, str | None, str | None]:
    """hf://ORG/REPO[/FILE.zip][@REVISION] -> (repo, file, revision)."""
    rest, _, revision = text[len(HUB_PREFIX):].partition("@")
    parts = rest.strip("/").split("/")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--source-model {text!r}: write hf://ORG/REPO (e.g. "
                          f"hf://sb3/sac-Pendulum-v1), optionally /FILE.zip or @REVISION")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None, revision or None


def resolve_source_model(text: str) -> Path:
    """The local checkpoint --source-model names: a path as given, or for hf://ORG/REPO the
    zip inside its snapshot folder in huggingface_hub's cache (downloaded first only when
    not offline and not cached), beside the repo's other files (vec_normalize.pkl)."""
    if not text.startswith(HUB_PREFIX):
        return Path(text)
    repo, filename, revision = _parse_hub(text)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise MissingDependencyError(
            f"--source-model {text} needs huggingface_hub: pip install rltransfer[hub]"
        ) from None
    cache = hub_cache()
    patterns = [filename] if filename else _HUB_FILES
    try:
        folder = snapshot_download(repo, revision=revision, cache_dir=cache,
                                   local_files_only=True, allow_patterns=patterns)
    except (LocalEntryNotFoundError, OSError, ValueError):
        folder = None
    if folder is None or not _zips(Path(folder), filename):
        if _offline():
            raise CheckpointError(
                f"--source-model {text}: {repo} is not in the Hugging Face cache {cache} and "
                f"HF_HUB_OFFLINE is set: fetch it first with 'hf download {repo} --cache-dir "
                f"{cache}' (where the Hub can be reached)")
        try:
            folder = snapshot_download(repo, revision=revision, cache_dir=cache,
                                       allow_patterns=patterns)
        except Exception as err:  # network, auth, unknown repo: one line either way
            raise CheckpointError(
                f"--source-model {text}: {repo} is not in the Hugging Face cache {cache} and "
                f"could not be downloaded ({type(err).__name__}): check the repo name, or "
                f"fetch it with 'hf download {repo} --cache-dir {cache}'") from None
    return _pick_zip(Path(folder), repo, filename, text)


def _zips(folder: Path, filename: str | None) -> list[Path]:
    if filename:
        return [folder / filename] if (folder / filename).is_file() else []
    return sorted(p for p in folder.glob("*.zip") if p.is_file())


def _pick_zip(folder: Path, repo: str, filename: str | None, text: str) -> Path:
    """`<algo>-<env>.zip` (the repo's name, as RL-Zoo publishes), else the only .zip."""
    zips = _zips(folder, filename)
    named = folder / f"{repo.split('/')[1]}.zip"
    if named in zips:
        return named
    if len(zips) == 1:
        return zips[0]
    if not zips:
        raise CheckpointError(f"--source-model {text}: the snapshot {folder} holds no "
                              f"{filename or '.zip'} checkpoint: give hf://{repo}/FILE.zip")
    raise CheckpointError(
        f"--source-model {text}: {repo} holds several checkpoints "
        f"({', '.join(p.name for p in zips[:4])}): name one, e.g. hf://{repo}/{zips[0].name}")
