"""Observation (and reward) normalization statistics: SB3's ``VecNormalize`` in runs and
across transfer.

A run normalizes when its ``normalize`` hyperparameter says so (RL-Zoo's key: ``true``, or
the zoo's dict string such as ``"{'norm_obs': False, 'norm_reward': True}"`` or
``"dict(norm_obs=False, norm_reward=True)"``, read with `ast`, never `eval`; ``--hparams
normalize=false`` turns it off). Its statistics are saved as plain arrays, never pickled:
``vecnormalize.npz`` beside model.zip, and inside checkpoint.pt (as tensors) for resume.
Evaluation normalizes observations with the training env's statistics (synced before each
evaluation) and reports raw returns.

A transferred run takes the source's statistics as its condition's ``norm`` option says:
``freeze`` (the source's, never updated), ``update`` (start from the source's, keep
updating) or ``reset`` (fresh). The source's statistics are found beside its checkpoint:
rltransfer's ``vecnormalize.npz``, RL-Zoo's ``<env>/vecnormalize.pkl`` for ``<env>.zip``, or
Hugging Face's ``vec_normalize.pkl``; the pickles are read by `safe_pickle`.
"""

from __future__ import annotations

import ast
import inspect
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from ..errors import HyperparameterError
from ..io_utils import atomic_write_bytes

NPZ = "vecnormalize.npz"
FREEZE, UPDATE, RESET = "freeze", "update", "reset"
MODES = (FREEZE, UPDATE, RESET)
Stats = dict[str, np.ndarray]  # "obs_rms.mean", "obs_rms.var", "obs_rms.count", "ret_rms.*";
# dict observations: "obs_rms/<key>.mean" ...

_KWARGS = [p for p in inspect.signature(VecNormalize.__init__).parameters
           if p not in ("self", "venv", "training")]


def config(hparams: dict[str, Any]) -> dict[str, Any] | None:
    """VecNormalize's keyword arguments from a run's ``normalize`` hyperparameter, or None
    when the run does not normalize. As RL-Zoo does, its gamma is the algorithm's unless the
    dict sets one."""
    value = hparams.get("normalize", False)
    if isinstance(value, str):
        try:
            value = _literal(value.strip())
        except (ValueError, SyntaxError):
            raise HyperparameterError(
                f"cannot read normalize={value!r}: write true, false or a dict such as "
                f"\"{{'norm_obs': False, 'norm_reward': True}}\"") from None
    if value is False or value is None:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise HyperparameterError(f"normalize must be true, false or a dict of VecNormalize "
                                  f"options, got {value!r}")
    unknown = sorted(set(value) - set(_KWARGS))
    if unknown:
        raise HyperparameterError(f"normalize has no option {unknown[0]!r}: VecNormalize takes "
                                  f"{', '.join(_KWARGS)}")
    kwargs = dict(value)
    if "gamma" in hparams and "gamma" not in kwargs:
        kwargs["gamma"] = float(hparams["gamma"])
    return kwargs


def _literal(text: str) -> Any:
    """A Python literal, or RL-Zoo's ``dict(key=literal, ...)`` spelling of a dict; nothing is
    evaluated (`ast.literal_eval` on each value)."""
    tree = ast.parse(text, mode="eval").body
    if (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "dict"
            and not tree.args and all(k.arg for k in tree.keywords)):
        return {k.arg: ast.literal_eval(k.value) for k in tree.keywords}
    return ast.literal_eval(tree)


def wrap(venv: VecEnv, kwargs: dict[str, Any] | None, *, evaluation: bool = False) -> VecEnv:
    """`venv` under VecNormalize (fresh statistics) when `kwargs` is not None. An evaluation
    env neither updates its statistics nor scales rewards (SB3's EvalCallback convention).
    Image observations are never normalized (only rewards, if asked)."""
    if kwargs is None:
        return venv
    if is_image_space(venv.observation_space):
        # Images are scaled by the policy (SB3's normalize_images), never by running
        # statistics; rewards may still be normalized (RL-Zoo's CarRacing).
        kwargs = {**kwargs, "norm_obs": False}
    if evaluation:
        return VecNormalize(venv, **{**kwargs, "training": False, "norm_reward": False})
    return VecNormalize(venv, **kwargs)


def find(venv: VecEnv | None) -> VecNormalize | None:
    """The VecNormalize among `venv`'s wrappers, if any."""
    return unwrap_vec_normalize(venv) if venv is not None else None


def sync(training_env: VecEnv | None, eval_env: VecEnv) -> None:
    """Give the evaluation env the training env's observation statistics (a copy)."""
    source, target = find(training_env), find(eval_env)
    if source is not None and target is not None and source.norm_obs:
        target.obs_rms = _copy(source.obs_rms)


def _copy(rms: Any) -> Any:
    return {k: v.copy() for k, v in rms.items()} if isinstance(rms, dict) else rms.copy()


def arrays(venv: VecNormalize) -> Stats:
    """The statistics of `venv` as plain float64 arrays."""
    out: Stats = {}
    if venv.norm_obs:
        _put(out, "obs_rms", venv.obs_rms)
    _put(out, "ret_rms", venv.ret_rms)
    return out


def _put(out: Stats, prefix: str, rms: Any) -> None:
    if isinstance(rms, dict):
        for key, value in rms.items():
            _put(out, f"{prefix}/{key}", value)
        return
    out[f"{prefix}.mean"] = np.asarray(rms.mean, np.float64)
    out[f"{prefix}.var"] = np.asarray(rms.var, np.float64)
    out[f"{prefix}.count"] = np.asarray(rms.count, np.float64)


def from_nested(data: dict[str, Any]) -> Stats:
    """`arrays`' layout from `safe_pickle.read_vecnormalize`'s nested dicts."""
    out: Stats = {}
    for prefix in ("obs_rms", "ret_rms"):
        value = data.get(prefix)
        if value is None:
            continue
        items = value.items() if "mean" not in value else [(None, value)]
        for key, rms in items:
            name = prefix if key is None else f"{prefix}/{key}"
            for part in ("mean", "var", "count"):
                out[f"{name}.{part}"] = np.asarray(rms[part], np.float64)
    return out


def _rms(stats: Stats, name: str) -> RunningMeanStd:
    rms = RunningMeanStd(shape=stats[f"{name}.mean"].shape)
    rms.mean = stats[f"{name}.mean"].copy()
    rms.var = stats[f"{name}.var"].copy()
    rms.count = float(stats[f"{name}.count"])
    return rms


def _fits(venv: VecNormalize, stats: Stats, name: str) -> str | None:
    """Why the statistics `name` cannot go into `venv`, or None when they can."""
    current = _current(venv, name)
    if current is None:
        return "the target does not normalize them"
    if f"{name}.mean" not in stats:
        return "the source has none"
    if stats[f"{name}.mean"].shape != np.shape(current.mean):
        return (f"shape {stats[f'{name}.mean'].shape} in the source, "
                f"{np.shape(current.mean)} in the target")
    return None


def _current(venv: VecNormalize, name: str) -> RunningMeanStd | None:
    prefix, _, key = name.partition("/")
    if prefix == "ret_rms":
        return venv.ret_rms
    if not venv.norm_obs:
        return None
    return venv.obs_rms.get(key) if key else venv.obs_rms  # type: ignore[union-attr]


def _names(stats: Stats) -> list[str]:
    return sorted({k.rsplit(".", 1)[0] for k in stats})


def load_into(venv: VecNormalize, stats: Stats) -> None:
    """Set `venv`'s statistics to `stats` (every one whose name and shape fit)."""
    for name in _names(stats):
        if _fits(venv, stats, name) is None:
            prefix, _, key = name.partition("/")
            if prefix == "ret_rms":
                venv.ret_rms = _rms(stats, name)
            elif key:
                venv.obs_rms[key] = _rms(stats, name)  # type: ignore[index]
            else:
                venv.obs_rms = _rms(stats, name)


def apply(venv: VecEnv, stats: Stats | None, mode: str, source: str = "") -> dict[str, Any]:
    """Initialize the target env's statistics from the source's as `mode` says, after the
    model is built; what transfer.json records. A source without statistics transferred into
    a normalized target (or statistics that do not fit) warns: the target starts fresh."""
    target = find(venv)
    record: dict[str, Any] = {"mode": mode, "source": source or None, "copied": [],
                              "fresh": {}, "updated": True}
    if target is None:  # nothing to copy, freeze or update: say so, and only that
        record = {"mode": mode, "source": source or None, "target_normalizes": False}
        if stats and mode != RESET:
            record["note"] = ("the source's normalization statistics are not used: the target "
                              "does not normalize (--hparams normalize=true to use them)")
            warnings.warn(record["note"], stacklevel=2)
        return record
    wanted = _current_names(target)
    if mode == RESET:
        record["fresh"] = {name: f"norm={RESET}" for name in wanted}
        return record
    stats = stats or {}
    for name in wanted:
        why = _fits(target, stats, name)
        if why is None:
            record["copied"].append(name)
        else:
            record["fresh"][name] = why
    load_into(target, {k: v for k, v in stats.items() if k.rsplit(".", 1)[0]
                       in record["copied"]})
    if mode == FREEZE and record["copied"]:
        target.training = False  # the statistics stay the source's throughout (fresh ones too)
        record["updated"] = False
    if record["fresh"]:
        missing = "; ".join(f"{name}: {why}" for name, why in record["fresh"].items())
        record["note"] = (f"norm={mode}: fresh normalization statistics for what the source "
                          f"cannot give ({missing})")
        warnings.warn(record["note"], stacklevel=2)
    return record


def _current_names(venv: VecNormalize) -> list[str]:
    names = ["ret_rms"] if venv.norm_reward else []
    if venv.norm_obs:
        names += ([f"obs_rms/{k}" for k in venv.obs_rms] if isinstance(venv.obs_rms, dict)
                  else ["obs_rms"])
    return sorted(names)


def note(record: dict[str, Any] | None) -> str:
    """One line for the run's terminal report: what the statistics did."""
    if not record:
        return ""
    if "note" in record:
        return f"warning: {record['note']}"
    if record.get("copied"):
        return (f"normalization statistics: the source's, "
                f"{'updated' if record['updated'] else 'frozen'} (norm={record['mode']})")
    return ""


def evaluation_env(venv: VecEnv, stats: Stats | None, hparams: dict[str, Any]) -> VecEnv:
    """`venv` for evaluating a policy trained with `stats`: its observations normalized with
    them (frozen), rewards raw; `venv` itself when `stats` hold no observation statistics."""
    if not stats or not any(k.startswith("obs_rms") for k in stats):
        return venv
    wrapped = wrap(venv, config(hparams) or {}, evaluation=True)
    normalizer = find(wrapped)
    if normalizer is None or not normalizer.norm_obs:
        return venv
    load_into(normalizer, stats)
    return wrapped


def save_npz(path: Path, venv: VecEnv) -> None:
    """Write the statistics of `venv`'s VecNormalize to `path` (atomically), if it has one."""
    target = find(venv)
    if target is None:
        return
    buffer = io.BytesIO()
    np.savez(buffer, **arrays(target))
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: Path) -> Stats:
    """Statistics written by `save_npz` (plain arrays: read with allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: np.asarray(data[key], np.float64) for key in data.files}


def source_paths(model_zip: str | Path) -> list[Path]:
    """Where a checkpoint's statistics may be, in the order they are looked for: rltransfer's
    run folder, RL-Zoo's ``<env>/vecnormalize.pkl`` beside ``<env>.zip``, Hugging Face's
    ``vec_normalize.pkl`` beside the zip."""
    model_zip = Path(model_zip)
    folder = model_zip.parent
    return [folder / NPZ, folder / model_zip.stem / "vecnormalize.pkl",
            folder / "vecnormalize.pkl", folder / "vec_normalize.pkl"]


def source_stats(model_zip: str | Path) -> tuple[Stats, Path] | None:
    """The statistics that go with a source checkpoint, and the file they came from; None
    when it has none. Pickles are read through `safe_pickle` (numpy arrays and SB3's
    VecNormalize fields only)."""
    for path in source_paths(model_zip):
        if not path.is_file():
            continue
        if path.suffix == ".npz":
            return load_npz(path), path
        from .safe_pickle import read_vecnormalize

        return from_nested(read_vecnormalize(path)), path
    return None
