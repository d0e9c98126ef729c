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

Across observation spaces (`rltransfer.training.cross_space`), a Dict key or Box whose
features the weights map (``obs_map``, the family's map, ``leading``) has its statistics
mapped the same way (`apply`'s ``features``): a shared feature takes the source's mean, var
and count, so its normalized value is the source's and the target acts as the source at step
0; a new feature starts as fresh statistics do (mean 0, var 1, count ``EPSILON``). Each
feature then keeps its own count (`FeatureCounts`): under ``update`` a new feature learns the
data's statistics at its first step while a shared one moves as slowly as the source's count
says; under ``freeze`` nothing moves, so a new feature stays at mean 0, var 1 (its raw value,
clipped at ``clip_obs``, reaches the network).
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
from ..strategies.obs_map import spans

NPZ = "vecnormalize.npz"
FREEZE, UPDATE, RESET = "freeze", "update", "reset"
MODES = (FREEZE, UPDATE, RESET)
Stats = dict[str, np.ndarray]  # "obs_rms.mean", "obs_rms.var", "obs_rms.count", "ret_rms.*";
# dict observations: "obs_rms/<key>.mean" ...

_KWARGS = [p for p in inspect.signature(VecNormalize.__init__).parameters
           if p not in ("self", "venv", "training")]
EPSILON = 1e-4  # RunningMeanStd's count of fresh statistics


class FeatureCounts(RunningMeanStd):
    """Running statistics with one count per feature (an array shaped like `mean`): mapped
    across spaces, shared features carry the source's count and new ones a fresh one.
    SB3's update arithmetic is elementwise, so only `copy` (which casts the count to a float)
    needs its own."""

    def copy(self) -> FeatureCounts:
        new = FeatureCounts(shape=self.mean.shape)
        new.mean, new.var = self.mean.copy(), self.var.copy()
        new.count = np.array(self.count, np.float64)
        return new


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
    count = np.asarray(stats[f"{name}.count"], np.float64)
    shape = stats[f"{name}.mean"].shape
    rms = RunningMeanStd(shape=shape) if count.size == 1 else FeatureCounts(shape=shape)
    rms.mean = stats[f"{name}.mean"].copy()
    rms.var = stats[f"{name}.var"].copy()
    rms.count = float(count) if count.size == 1 else count.reshape(shape).copy()
    return rms


def _mapped(stats: Stats, name: str, shape: tuple[int, ...],
            pairs: list[tuple[int, int]]) -> Stats:
    """The statistics `name` for a target of `shape`: flattened target feature t takes the
    source's feature s for each (s, t) in `pairs`; the others are fresh (mean 0, var 1,
    count EPSILON). Flattened in C order, as SB3's Flatten reads them."""
    size = int(np.prod(shape))
    mean, var, count = np.zeros(size), np.ones(size), np.full(size, EPSILON)
    counted = np.asarray(stats[f"{name}.count"], np.float64).reshape(-1)  # one, or per feature
    src_count = np.broadcast_to(counted, (int(np.size(stats[f"{name}.mean"])),))
    s = np.array([a for a, _ in pairs], dtype=np.int64)
    t = np.array([b for _, b in pairs], dtype=np.int64)
    mean[t] = stats[f"{name}.mean"].reshape(-1)[s]
    var[t] = stats[f"{name}.var"].reshape(-1)[s]
    count[t] = src_count[s]
    return {f"{name}.mean": mean.reshape(shape), f"{name}.var": var.reshape(shape),
            f"{name}.count": count.reshape(shape)}


def _describe(pairs: list[tuple[int, int]], size: int) -> str:
    """'0:2>0:2; 3 new at mean 0, var 1': the pairs as runs of source>target slices."""
    text = ";".join(str(run) for run in spans(sorted(pairs, key=lambda p: p[1])))
    new = size - len(pairs)
    return f"{text}; {new} new at mean 0, var 1" if new else text


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


def apply(venv: VecEnv, stats: Stats | None, mode: str, source: str = "",
          features: dict[str, list[tuple[int, int]]] | None = None) -> dict[str, Any]:
    """Initialize the target env's statistics from the source's as `mode` says, after the
    model is built; what transfer.json records. A source without statistics transferred into
    a normalized target (or statistics that do not fit) warns: the target starts fresh.
    `features` maps observations across spaces as the weights are (Dict key, or "" for a
    Box -> its (source feature, target feature) pairs, flattened): the statistics of a key
    whose shape changed, or whose features moved, are mapped (the module's docstring) and
    recorded under "mapped"; a key shared whole keeps the source's ("copied")."""
    target = find(venv)
    record: dict[str, Any] = {"mode": mode, "source": source or None, "copied": [],
                              "mapped": {}, "fresh": {}, "updated": True}
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
    mapped: Stats = {}
    for name in wanted:
        why = _fits(target, stats, name)
        pairs = _pairs(features, name)
        shape = tuple(np.shape(_current(target, name).mean))  # type: ignore[union-attr]
        moved = pairs is not None and (why is not None or pairs != _identity(shape))
        if moved and f"{name}.mean" in stats:
            assert pairs is not None
            size_s = int(np.size(stats[f"{name}.mean"]))
            if all(a < size_s for a, _ in pairs) and all(b < np.prod(shape) for _, b in pairs):
                mapped.update(_mapped(stats, name, shape, pairs))
                record["mapped"][name] = _describe(pairs, int(np.prod(shape)))
                continue
            why = f"the map's features are outside its {size_s} source features"
        if why is None:
            record["copied"].append(name)
        else:
            record["fresh"][name] = why
    load_into(target, {k: v for k, v in stats.items() if k.rsplit(".", 1)[0]
                       in record["copied"]})
    load_into(target, mapped)
    if mode == FREEZE and (record["copied"] or record["mapped"]):
        target.training = False  # the statistics stay the source's throughout (fresh ones too)
        record["updated"] = False
    if record["fresh"]:
        missing = "; ".join(f"{name}: {why}" for name, why in record["fresh"].items())
        record["note"] = (f"norm={mode}: fresh normalization statistics for what the source "
                          f"cannot give ({missing})")
        warnings.warn(record["note"], stacklevel=2)
    return record


def _pairs(features: dict[str, list[tuple[int, int]]] | None,
           name: str) -> list[tuple[int, int]] | None:
    """The feature pairs `features` gives the observation statistics `name`, if any."""
    prefix, _, key = name.partition("/")
    if features is None or prefix != "obs_rms":
        return None
    return features.get(key)


def _identity(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(i, i) for i in range(int(np.prod(shape)))]


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
    if record.get("copied") or record.get("mapped"):
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
