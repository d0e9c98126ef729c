"""The study folder: its lock (one process writes a study at a time), its study.json
record (`STUDY_FORMAT`; studies written in format 1 still read), the runs' states, and the
check that a resumed study is the one that was started.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from ..errors import OutputError, RLTransferError
from ..io_utils import read_json
from ..report.runfiles import read_status, read_study
from ..specs import RunSpec
from .caches import versions
from .score_scale import RandomScore, ScoreScale
from .study_spec import STUDY_FORMAT, flat_spec

if TYPE_CHECKING:
    from .plan import Plan


LOCK_FILE = ".lock"


class StudyLock:
    """An exclusive lock on a study folder while a process writes it, so a second study
    started on the same folder stops with a clear error instead of interleaving files.

    `filelock`'s native (flock) lock, with its fallback to a soft lock turned off: a flock
    dies with its process (kill -9 included), a soft lock would outlive it. The holder writes
    its pid and host into the lock file (read, never truncated, by a process that fails to
    get the lock), and removes the file before it releases the lock."""

    def __init__(self, study_dir: Path) -> None:
        self.study_dir = study_dir
        self.path = study_dir / LOCK_FILE
        self.created = False
        self._lock: FileLock | None = None

    def __enter__(self) -> StudyLock:
        try:
            self.study_dir.mkdir(parents=True)
            self.created = True
        except FileExistsError:
            pass
        except OSError as err:  # e.g. --out /proc/x, which root may "write" but not fill
            raise OutputError(f"cannot create the study folder {self.study_dir}: "
                              f"{err.strerror or err}; choose an --out folder you can "
                              f"write") from None
        lock = FileLock(self.path, timeout=0, thread_local=False, fallback_to_soft=False,
                        on_acquired=_write_holder)
        try:
            lock.acquire()
        except Timeout:
            try:
                holder = self.path.read_text(encoding="utf-8").strip()
            except OSError:
                holder = ""
            raise OutputError(f"{self.study_dir} is in use by {holder or 'another process'} "
                              f"(lock file {self.path}): wait for that study to finish, or "
                              f"choose another --name") from None
        except OSError as err:  # its disk is read-only, or full (Timeout is one too)
            raise OutputError(f"cannot write the lock file {self.path}: "
                              f"{err.strerror or err}; make the study folder writable (or "
                              f"free space on its disk), then run the command again") from None
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            try:
                self.path.unlink(missing_ok=True)  # while still locked: no one holds it stale
            except OSError:  # its disk turned read-only: the file stays, the lock goes
                pass
            self._lock.release()
            self._lock = None


def _write_holder(fd: int) -> None:
    """Write who holds the lock into the lock file (filelock's on_acquired hook)."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"rltransfer pid {os.getpid()} on {socket.gethostname()} since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())


def run_states(study_dir: Path, runs: list[RunSpec]) -> dict[str, str]:
    """'condition/seed_k' -> state in its status.json ('missing' without one)."""
    states = {}
    for run in runs:
        status = read_status(study_dir / run_key(run) / "status.json")
        states[run_key(run)] = status.get("state", "?") if status else "missing"
    return states


def recorded_progress(study_dir: Path, record: dict[str, Any]) -> tuple[int, int]:
    """(runs done, runs planned) of the study recorded in `record` (its study.json), counted
    on disk: its own conditions and seeds (--seeds auto: the seeds its looks have added so
    far), not those of a new command's options."""
    try:
        spec = flat_spec(record.get("spec") or {})
        conditions = [str(c) for c in spec["conditions"]]
        first, seeds = int(spec["seed"]), int(spec["seeds"])
    except (RLTransferError, TypeError, ValueError, KeyError):  # not a study's spec
        conditions, first, seeds = [], 0, 0
    counts = (record.get("sequential") or {}).get("counts") or {}
    planned = [f"{c}/seed_{first + k}" for c in conditions
               for k in range(int(counts.get(c, seeds)))]
    on_disk = {str(p.parent.relative_to(study_dir))
               for p in study_dir.glob("*/seed_*/status.json")}
    runs = set(planned) | on_disk
    return sum(_state(study_dir / key / "status.json") == "done" for key in runs), len(runs)


def _state(path: Path) -> str | None:
    try:
        return read_json(path).get("state") if path.is_file() else None
    except (OSError, ValueError, AttributeError):  # unreadable: not done
        return None


def run_key(run: RunSpec) -> str:
    return f"{run.condition}/seed_{run.seed}"


def existing_study(study_dir: Path) -> dict[str, Any] | None:
    """study.json of the study already in `study_dir`; None if the folder holds nothing."""
    if (study_dir / "study.json").is_file():
        return read_study(study_dir)
    others = [p.name for p in study_dir.iterdir() if p.name != LOCK_FILE]
    if others:
        raise OutputError(f"{study_dir} exists and is not a study folder (it holds "
                          f"{', '.join(sorted(others)[:3])}): choose another --name")
    return None


_IGNORED_ON_RESUME = ("out", "name", "retrain_source")


def check_same_study(plan_: Plan, record: dict[str, Any], study_dir: Path) -> None:
    # compared flat, so a study.json of any format compares; an option added after the
    # study was started had its default value then (flat_spec)
    from .plan import ENCODER_OPTIONS  # not read by a study without an encoder condition

    ignored = _IGNORED_ON_RESUME + (ENCODER_OPTIONS if plan_.encoder_agent is None else ())
    before = {k: v for k, v in flat_spec(record["spec"]).items() if k not in ignored}
    now = {k: v for k, v in flat_spec(plan_.spec.to_dict()).items() if k not in ignored}
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        key = changed[0]
        raise OutputError(
            f"{study_dir} was started with other options ({key}: {before.get(key)!r} there, "
            f"{now.get(key)!r} now): resume it with 'python -m rltransfer resume {study_dir}', "
            f"or choose another --name for a new study")
    read_status(study_dir / "source" / "status.json")  # a damaged one: named, before the
    run_states(study_dir, plan_.target_runs())  # study writes anything


def load_study(study_dir: Path) -> dict[str, Any]:
    """study.json of a study folder, with a clear error when it is not one (`read_study`)."""
    return read_study(study_dir)


def recorded_random(record: dict[str, Any]) -> RandomScore:
    """The measured random returns of a study.json (a study started before the std was
    recorded has none: its threshold is then checked against the mean only)."""
    mean = record.get("measured_random_return", record["target_random_return"])
    return RandomScore(float(mean), record.get("measured_random_std"),
                       int(record.get("measured_random_episodes", 0)))


def new_record(plan_: Plan, command: str, random: RandomScore,
               known: ScoreScale | None) -> dict[str, Any]:
    """study.json of a new study: the resolved spec (nested, `STUDY_FORMAT`), the command,
    the package versions, the agents, the random policy's score and the score scale."""
    record: dict[str, Any] = {
        "format": STUDY_FORMAT, "spec": plan_.recorded_spec(), "command": command,
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": None,
        "source_agent": plan_.source_agent.to_dict(),
        "target_agent": plan_.target_agent.to_dict(),
        "target_random_return": random.mean,
        "measured_random_return": random.mean, "measured_random_std": random.std,
        "measured_random_episodes": random.episodes,
    }
    if random.success is not None:  # the env reports success (rltransfer.training.success)
        record["measured_random_success"] = random.success
    if known is not None:
        record.update(known.record())
    return record
