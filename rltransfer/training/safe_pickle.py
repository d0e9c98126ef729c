"""Read a pickled SB3 ``VecNormalize`` (RL-Zoo's ``vecnormalize.pkl``, Hugging Face's
``vec_normalize.pkl``) without executing anything it names.

`pickle.Unpickler.find_class` is the only way a pickle reaches code; here it answers from an
explicit allowlist: numpy's array and scalar reconstruction functions and ``numpy.dtype``,
and, for SB3's ``VecNormalize`` and ``RunningMeanStd`` and the Gymnasium spaces a
VecNormalize holds (and the numpy random generator a seeded space keeps), inert stand-in
records of this module (SB3's, Gymnasium's and numpy.random's classes are never imported or
called). Any other global is refused with a one-line `CheckpointError` naming the file and
the global. What comes back is plain: `read_vecnormalize` returns a dict
of numpy arrays and numbers.

SB3's ``VecNormalize.__getstate__`` drops ``venv``, ``class_attributes`` and ``returns``, so a
saved one holds its statistics (``obs_rms``, ``ret_rms``), its options (``norm_obs``,
``clip_obs``, ``gamma``...) and the spaces, nothing of the environment.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError


class Record:
    """An inert stand-in for an allowed class: it only keeps the pickled state."""

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Record:  # pickle's NEWOBJ calls only this
        record = super().__new__(cls)
        record.args, record.state = args, {}
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if (isinstance(state, tuple) and len(state) == 2
                and all(isinstance(part, dict | None) for part in state)):  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"value": state}


def _record(qualname: str) -> type[Record]:
    return type(qualname.rsplit(".", 1)[-1], (Record,), {"qualname": qualname})


VECNORMALIZE = "stable_baselines3.common.vec_env.vec_normalize.VecNormalize"
RUNNING_MEAN_STD = "stable_baselines3.common.running_mean_std.RunningMeanStd"
_SPACES = [f"{package}.spaces.{module}.{name}" for package in ("gymnasium", "gym")
           for module, name in (("box", "Box"), ("discrete", "Discrete"), ("dict", "Dict"),
                                ("multi_discrete", "MultiDiscrete"),
                                ("multi_binary", "MultiBinary"))]
# A seeded space holds its numpy Generator; it is recorded, never rebuilt.
_RANDOM = [f"numpy.random._pickle.{name}" for name in
           ("__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor")] + [
    "numpy.random._pcg64.PCG64", "numpy.random._pcg64.PCG64DXSM", "numpy.random._sfc64.SFC64",
    "numpy.random._mt19937.MT19937", "numpy.random._philox.Philox",
    "numpy.random._generator.Generator", "numpy.random.mtrand.RandomState",
    "numpy.random.bit_generator.SeedSequence",
    "numpy.random.bit_generator.__pyx_unpickle_SeedSequence"]
_RECORDS = {name: _record(name) for name in (VECNORMALIZE, RUNNING_MEAN_STD, *_SPACES,
                                             *_RANDOM)}


def _numpy_globals() -> dict[str, Any]:
    """numpy's reconstruction functions, under the module names old and new numpy pickle
    them with (``numpy.core`` before 2.0, ``numpy._core`` since)."""
    core = np._core if hasattr(np, "_core") else np.core  # type: ignore[attr-defined]
    found: dict[str, Any] = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for package in ("numpy.core", "numpy._core"):
        found[f"{package}.multiarray._reconstruct"] = core.multiarray._reconstruct
        found[f"{package}.multiarray.scalar"] = core.multiarray.scalar
        found[f"{package}.numeric._frombuffer"] = core.numeric._frombuffer
    return found


_ALLOWED: dict[str, Any] = {**_numpy_globals(), **_RECORDS,
                            "collections.OrderedDict": dict, "builtins.dict": dict,
                            # protocol 2 spells bytes as _codecs.encode(text, "latin1")
                            "_codecs.encode": codecs.encode}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get(f"{module}.{name}")
        if found is None:
            raise CheckpointError(
                f"{self.path}: refused to unpickle global {module}.{name} (only numpy arrays "
                f"and SB3's VecNormalize statistics are read from this file): give a "
                f"vecnormalize.pkl written by SB3's VecNormalize.save")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self.path}: refused a persistent id in the pickle: give a "
                              f"vecnormalize.pkl written by SB3's VecNormalize.save")


def load(path: str | Path) -> Any:
    """Unpickle `path` through the allowlist; CheckpointError for anything else in it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return _Unpickler(data, path).load()
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated or corrupt data, odd opcodes
        raise CheckpointError(f"{path} is not a readable pickle ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}): give a "
                              f"vecnormalize.pkl written by SB3's VecNormalize.save") from None


def _rms(value: Any, path: Path, field: str) -> dict[str, Any]:
    if not (isinstance(value, Record) and value.qualname == RUNNING_MEAN_STD):
        raise CheckpointError(f"{path}: {field} is not a RunningMeanStd: give a "
                              f"vecnormalize.pkl written by SB3's VecNormalize.save")
    out: dict[str, Any] = {}
    for key in ("mean", "var"):
        array = np.asarray(value.state.get(key))
        if array.dtype.kind not in "fiu":
            raise CheckpointError(f"{path}: {field}.{key} is not a numeric array")
        out[key] = array.astype(np.float64)
    out["count"] = float(value.state.get("count", 0.0))
    return out


OPTIONS = ("norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon")


def read_vecnormalize(path: str | Path) -> dict[str, Any]:
    """The statistics and options of a pickled SB3 VecNormalize, as plain data:
    ``{"obs_rms": {"mean", "var", "count"} or {key: {...}} for dict observations or None,
    "ret_rms": {...} or None, "norm_obs": bool, ..., "clip_obs": float, ...}``."""
    path = Path(path)
    obj = load(path)
    if not (isinstance(obj, Record) and obj.qualname == VECNORMALIZE):
        raise CheckpointError(f"{path} does not hold a VecNormalize: give a vecnormalize.pkl "
                              f"written by SB3's VecNormalize.save")
    state = obj.state
    out: dict[str, Any] = {key: _plain(state[key]) for key in OPTIONS if key in state}
    obs = state.get("obs_rms")
    if isinstance(obs, dict):
        out["obs_rms"] = {str(k): _rms(v, path, f"obs_rms[{k!r}]") for k, v in obs.items()}
    else:
        out["obs_rms"] = _rms(obs, path, "obs_rms") if obs is not None else None
    ret = state.get("ret_rms")
    out["ret_rms"] = _rms(ret, path, "ret_rms") if ret is not None else None
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return None  # not an option rltransfer reads
