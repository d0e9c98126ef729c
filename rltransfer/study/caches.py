"""The caches under OUT/.cache: source policies (trained once, reused by every study with the
same source run spec) and finished scratch runs (reused by studies with the same target).
A cache entry is named by `source_key`: the run spec's hash and the versions that shape it.
"""

from __future__ import annotations

import os
import platform
import shutil
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..io_utils import atomic_write_json, read_json
from ..report.runfiles import has_success
from ..specs import RunSpec, stable_hash
from ..training.run import read_evaluations
from ..training.transfer import load_checkpoint
from .score_scale import source_score as evaluations_score

if TYPE_CHECKING:
    from .plan import Plan


CACHE_DIR = ".cache/sources"
RUN_CACHE_DIR = ".cache/scratch"  # finished scratch runs, reused by studies with the same target


def versions() -> dict[str, str]:
    """The versions of Python and the packages that shape a result."""
    return dict(_versions())


@lru_cache(maxsize=1)
def _versions() -> tuple[tuple[str, str], ...]:
    # Asked once per process: every cache key needs them, and each lookup scans sys.path.
    names = ["rltransfer", "gymnasium", "stable-baselines3", "torch", "numpy", "scipy"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return tuple(found.items())


@dataclass
class Source:
    """The source policy's weights and where they came from."""

    state_dict: dict[str, torch.Tensor]
    label: str
    record: dict[str, Any]


def source_key(run: RunSpec) -> str:
    """Cache key of a source policy: its run spec plus the versions that shape the result."""
    pinned = {k: v for k, v in versions().items()
              if k in ("rltransfer", "stable-baselines3", "torch", "gymnasium")}
    return stable_hash({"run": run.cache_key, "versions": pinned})


def scratch_cache(plan_: Plan, run: RunSpec) -> Path:
    return Path(plan_.spec.output.out) / RUN_CACHE_DIR / source_key(run)


def reuse_scratch(plan_: Plan, run: RunSpec, run_dir: Path) -> str | None:
    """Copy a finished identical scratch run instead of training it again; its cache key.
    Under ``--score success``, only a run that recorded success rates (one cached before
    they were recorded is trained again: its curve has no success column)."""
    cache = scratch_cache(plan_, run)
    status = cache / "status.json"
    if not status.is_file() or read_json(status).get("state") != "done":
        return None
    if plan_.spec.protocol.score == "success" and not has_success(cache / "evaluations.csv"):
        return None
    copy_atomically(cache, run_dir)
    return cache.name


def copy_atomically(folder: Path, to: Path) -> None:
    """Replace `to` with a copy of `folder`; an interruption leaves the old `to` or the new
    one whole, never a "done" status.json without the files it vouches for."""
    tmp = to.with_name(f".{to.name}.copy-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    shutil.rmtree(to, ignore_errors=True)
    tmp.rename(to)


def store_scratch(plan_: Plan, run: RunSpec, run_dir: Path) -> None:
    cache = scratch_cache(plan_, run)
    if cache.exists():
        return
    tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir, tmp)
    try:
        tmp.rename(cache)
    except OSError:  # another study stored the same run meanwhile
        shutil.rmtree(tmp, ignore_errors=True)


def source_from_cache(plan_: Plan) -> Path | None:
    """The cached source policy's folder, when there is one to reuse."""
    cache = Path(plan_.spec.output.out) / CACHE_DIR / source_key(plan_.source_run())
    if (cache / "model.zip").is_file() and not plan_.spec.transfer.retrain_source:
        return cache
    return None


def store_source(plan_: Plan, trained: Path) -> Path:
    """Copy a source policy trained in a study into the cache; return the cache folder."""
    run = plan_.source_run()
    key = source_key(run)
    cache = Path(plan_.spec.output.out) / CACHE_DIR / key
    atomic_write_json(trained / "spec.json", run.to_dict())
    if cache.exists() and not plan_.spec.transfer.retrain_source:
        return cache  # another study cached the same source meanwhile: keep that one
    tmp = cache.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(trained, tmp, ignore=shutil.ignore_patterns("source.json"))
    if cache.exists():  # --retrain-source: swap in the new policy
        old = cache.with_name(f"{key}.old-{os.getpid()}")
        cache.rename(old)
        shutil.rmtree(old)
    try:
        tmp.rename(cache)
    except OSError:  # another study stored it between our check and now
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def source_record(plan_: Plan, folder: Path, cache: Path, reused: bool) -> Source:
    """The source policy in `folder` (the study's source/), cached as `cache`."""
    checkpoint = load_checkpoint(folder / "model.zip")
    steps, returns = read_evaluations(folder / "evaluations.csv")
    score, used = evaluations_score(steps, returns)
    status = read_json(folder / "status.json") if (folder / "status.json").is_file() else {}
    record = {"kind": "cache", "cache": str(cache.resolve()), "key": cache.name,
              "reused": reused, "trained_steps": 0 if reused else status.get("timesteps", 0),
              "final_return": float(returns[-1]), "score": score,
              "score_from": f"source's mean return over its last {used} evaluation"
                            f"{'s' if used != 1 else ''} on {plan_.spec.env.source}",
              "run": plan_.source_run().to_dict()}
    return Source(checkpoint.state_dict, f"cache:{cache.name}", record)
