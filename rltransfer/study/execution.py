"""Where runs execute: in this process (`--workers 1`), in worker processes on this machine
(`--workers N`, the default: one per core), or as tasks on a Ray cluster (`--backend ray`,
in `ray_backend`).

Every backend executes the same `Job`s with `execute`, which writes the run's folder (so the
files are the same whatever ran them), reports progress through an event sink ("start", key,
info) and ("advance", key, steps), and returns the run's `Outcome`. A backend's `wait` hands
the study both, an outcome as ("done", key, Outcome).

Worker processes start cheaply: they fork from a server process (multiprocessing's
forkserver) that has imported what a run needs once, instead of each spawning an interpreter
that imports torch and SB3 again (about 3 s of CPU each). The CLI starts that server before
it checks the study (`start_worker_server`), so its imports overlap the checks on another core.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError, StorageError
from ..io_utils import DiskFault, atomic_write_json, disk_fault, read_json
from ..specs import EnvSpec, RunSpec

if TYPE_CHECKING:
    from ..report.summary import StudySummary

BACKENDS = ("local", "ray")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, e.g. a cluster job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Execution:
    """How a study's runs are executed. Not part of the study: any of it may change between
    a start and a resume, and none of it changes the results."""

    workers: int | None = None  # local worker processes; None: one per core
    backend: str = "local"
    address: str | None = None  # Ray: None starts a local instance; "auto" or HOST:PORT
    cpus_per_run: float | None = None  # Ray resources per run (default 1 CPU, 0 GPUs)
    gpus_per_run: float | None = None
    threads: int | None = None  # torch threads per run; None: 1 (Ray: its CPUs)

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown --backend {self.backend!r}: choose local or ray")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads} must be at least 1")
        if self.backend == "local":
            for option, value in (("--address", self.address),
                                  ("--cpus-per-run", self.cpus_per_run),
                                  ("--gpus-per-run", self.gpus_per_run)):
                if value is not None:
                    raise ConfigError(f"{option} applies to --backend ray: add --backend ray, "
                                      f"or drop {option} (local workers share this machine's "
                                      f"cores and GPUs)")
            return
        if self.workers is not None:
            raise ConfigError("--workers applies to the local backend; with --backend ray, "
                              "size runs with --cpus-per-run and --gpus-per-run")
        if self.cpus_per_run is not None and self.cpus_per_run <= 0:
            raise ConfigError(f"--cpus-per-run {self.cpus_per_run:g} must be above 0")
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run {self.gpus_per_run:g} must be 0 or more "
                              f"(fractions such as 0.25 let runs share a GPU)")

    @property
    def n_workers(self) -> int:
        return self.workers or available_cores()

    def torch_threads(self) -> int:
        """Torch threads per run. One by default: concurrent runs then never oversubscribe
        the cores (2 threads in each of 2 workers made runs ~5x slower on 2 cores), a lone
        MLP run is no slower (benchmarks/README.md), and every run computes the same way
        whatever --workers is, so results do not depend on it. (Float sums split over more
        threads round differently, and RL amplifies that.) A Ray run uses its CPUs."""
        if self.threads:
            return self.threads
        if self.backend == "ray":
            return max(1, math.floor(self.cpus_per_run or 1))
        return 1

    def describe(self) -> dict[str, Any]:
        """What study.json records of this execution."""
        record: dict[str, Any] = {"backend": self.backend, "threads_per_run": self.torch_threads()}
        if self.backend == "local":
            record["workers"] = self.n_workers
        else:
            record.update(address=self.address, cpus_per_run=self.cpus_per_run or 1.0,
                          gpus_per_run=self.gpus_per_run or 0.0)
        return record


@dataclass(frozen=True)
class Job:
    """One run to train into `run_dir`, self-contained so any process can execute it."""

    key: str  # e.g. "finetune/seed_3" or "source"
    label: str  # e.g. "finetune seed 3"
    run: RunSpec
    run_dir: str
    source: str | None = None  # the source policy's checkpoint (.zip), for transfer runs
    source_label: str = ""
    resume: bool = False  # continue from the run's checkpoint when it has one
    threads: int | None = None  # torch threads; None leaves the process's setting
    source_env: EnvSpec | None = None  # the study's source env (strategy.Context.source_env)


@dataclass(frozen=True)
class Outcome:
    """What a job reports back: success with its result, or the error it failed with."""

    key: str
    ok: bool
    error: str = ""
    timesteps: int = 0
    final_return: float = math.nan
    transfer: str = ""
    resumed_from: int | None = None
    interrupted: bool = False  # stopped by a signal, not failed: it runs again on resume
    fault: DiskFault | None = None  # its disk failed (full, read-only): the study stops


class EventSink(Protocol):
    def put(self, item: Any) -> None: ...


def execute(job: Job, events: EventSink) -> Outcome:
    """Train one job, reporting to `events`; a failure becomes an Outcome, never an
    exception (an interruption still propagates)."""
    import torch

    from ..training import vecnorm
    from ..training.run import one_line, train_run
    from ..training.transfer import load_checkpoint

    threads = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)

    def notify(kind: str, value: Any) -> None:
        events.put((kind, job.key, value))

    try:
        state = load_checkpoint(job.source).state_dict if job.source else None
        found = vecnorm.source_stats(job.source) if job.source else None
        result = train_run(job.run, Path(job.run_dir), source_state=state,
                           source_label=job.source_label, notify=notify, resume=job.resume,
                           source_stats=found[0] if found else None,
                           source_env=job.source_env)
        summary = "; ".join(filter(None, (result.transfer.summary() if result.transfer else "",
                                          vecnorm.note(result.normalization))))
        outcome = Outcome(job.key, True, timesteps=result.timesteps,
                          final_return=result.final_return, transfer=summary,
                          resumed_from=result.resumed_from)
    except Exception as err:  # noqa: BLE001 - a run's failure must not stop the study
        outcome = Outcome(job.key, False, error=one_line(err), fault=disk_fault(err))
    finally:
        torch.set_num_threads(threads)  # in-process runs leave the caller's setting alone
    return outcome


class Backend(Protocol):
    capacity: int  # jobs in flight at most

    def submit(self, job: Job) -> None: ...

    def wait(self, timeout: float) -> list[tuple[str, str, Any]]:
        """Events since the last call (waiting up to `timeout` for one)."""
        ...

    def close(self, interrupted: bool) -> None: ...


class _Forward:
    """An event sink that hands progress events straight to a callback."""

    def __init__(self, on_event: Any) -> None:
        self.on_event = on_event

    def put(self, item: Any) -> None:
        self.on_event(item)


def freeze_imports() -> None:
    """Leave the objects that exist now (what the imports and the checks made: a study's
    process tracks ~400,000) out of the garbage collector's full passes, so the ones that
    training's fast allocation triggers walk only what training made. They took about 0.1 s
    each, and over a second of a 50,000-step run. Garbage goes first: a frozen object is
    never collected. `gc.unfreeze()` undoes it."""
    gc.collect()
    gc.freeze()


class InlineBackend:
    """Runs each job in this process, one at a time (`--workers 1`)."""

    capacity = 1

    def __init__(self, on_event: Any) -> None:
        self._events = _Forward(on_event)  # progress goes straight to the display
        self.jobs: deque[Job] = deque()
        freeze_imports()  # until close

    def submit(self, job: Job) -> None:
        self.jobs.append(job)

    def wait(self, timeout: float) -> list[tuple[str, str, Any]]:
        if not self.jobs:
            return []
        job = self.jobs.popleft()
        return [("done", job.key, execute(job, self._events))]

    def close(self, interrupted: bool) -> None:
        self.jobs.clear()
        gc.unfreeze()


# --- worker processes on this machine ---------------------------------------------------

_WORKER: dict[str, Any] = {"events": None, "busy": False}


def _stop_worker(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the first
    if _WORKER["busy"]:
        raise KeyboardInterrupt  # the run is marked interrupted, as with Ctrl-C
    os._exit(0)


def _watch_parent() -> None:
    """A worker whose study process died (e.g. kill -9) stops at once, so a resumed study
    never shares a run folder with an orphan. (A forked worker's parent is the fork server,
    so its parent pid says nothing; the pipe from the study closes when the study dies.)"""
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


def _init_worker(events: Any, threads: int) -> None:
    import torch

    events.cancel_join_thread()  # progress events are best effort: never block an exit
    _WORKER["events"] = events
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the study stops its workers with SIGTERM
    signal.signal(signal.SIGTERM, _stop_worker)
    threading.Thread(target=_watch_parent, daemon=True).start()
    gc.freeze()  # a worker lives for its study: see freeze_imports (fresh, it holds no garbage)


# What the fork server imports once for every worker: the training code, torch and SB3, and
# torch._dynamo, which torch imports the first time an optimizer is built (every run builds
# one; alone it takes about 1.3 s). Imports only: nothing here touches CUDA, so each forked
# worker still creates its own CUDA context.
WORKER_PRELOAD = ("rltransfer.cli", "rltransfer.study.execution", "rltransfer.training.run",
                  "torch._dynamo")
# What it imports for the study's report (`summarize_elsewhere`): none of it imports torch.
REPORT_PRELOAD = ("rltransfer.study.execution", "rltransfer.report.build",
                  "rltransfer.report.board",
                  "scipy.stats", "scipy.optimize", "matplotlib.figure",
                  "matplotlib.backends.backend_agg", "matplotlib.backends.backend_svg",
                  "tensorboard.summary.writer.event_file_writer",
                  "tensorboard.plugins.custom_scalar.layout_pb2")
_SERVER: dict[str, Any] = {"preload": WORKER_PRELOAD + REPORT_PRELOAD, "started": False}


def _worker_context() -> Any:
    """Forked from a server that imported its preload (WORKER_PRELOAD and REPORT_PRELOAD
    unless `start_worker_server` chose less) where the platform has one (Linux, macOS);
    spawned otherwise."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_SERVER["preload"]))  # no effect once it runs
    return context


def start_worker_server(workers: bool = True) -> None:
    """Start the server that worker processes fork from, now: it imports its preload on a
    core of its own while this process checks the study (and trains its run), so workers
    start at once and the report's libraries are ready at the end. Without `workers` it
    imports only what the report needs. A study with worker processes starts it anyway,
    when it starts its first worker."""
    if not workers and not _SERVER["started"]:
        _SERVER["preload"] = REPORT_PRELOAD
    context = _worker_context()
    if context.get_start_method() != "forkserver":  # pragma: no cover
        return
    from multiprocessing import forkserver

    _SERVER["started"] = True
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        forkserver.ensure_running()  # (only the main thread may set signal handlers)
        return
    # Ctrl-C reaches the whole process group; the study stops its workers itself. Started
    # with SIGINT ignored, the server (and every worker it forks) ignores it from its first
    # import on, instead of printing a KeyboardInterrupt traceback.
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)


def _summarize(study_dir: str) -> StudySummary:
    from ..report.build import summarize_study

    return summarize_study(Path(study_dir))


def summarize_elsewhere(study_dir: Path) -> StudySummary:
    """`report.summarize_study(study_dir)`, computed in a process forked from the worker
    server when one runs: it imported SciPy, matplotlib, Jinja2 and TensorBoard's writer
    (about 1 s) on another core while the study trained, and this process never imports
    them. Without a server (or should its process die), in this process."""
    try:
        if _SERVER["started"]:
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures.process import BrokenProcessPool

            try:
                with ProcessPoolExecutor(1, mp_context=_worker_context()) as pool:
                    return pool.submit(_summarize, str(study_dir)).result()
            except BrokenProcessPool:  # pragma: no cover - e.g. killed by the OOM killer
                pass
        return _summarize(str(study_dir))
    except OSError as err:  # its disk filled up (or turned read-only) after its runs
        fault = disk_fault(err)
        if fault is None:
            raise
        raise StorageError(f"the study's runs are finished, but its report could not be "
                           f"written ({fault.reason}); {fault.fix}, then: python -m rltransfer "
                           f"report {study_dir}") from None


def will_use_workers(execution: Execution, runs: int) -> bool:
    """Whether a study of `runs` target runs may start worker processes under `execution`
    (a study with one run to train trains it in this process)."""
    return execution.backend == "local" and execution.n_workers > 1 and runs > 1


def _execute_in_worker(job: Job) -> Outcome:
    _WORKER["busy"] = True
    try:
        return execute(job, _WORKER["events"])
    except KeyboardInterrupt:  # stopped (SIGTERM): its run is marked interrupted. A stopped
        _mark_interrupted(job)  # worker takes no other job (it ignores SIGTERM now, so it
        os._exit(0)  # could not be stopped again, and the queue's lock may be held by a
    finally:  # sibling that exited)
        _WORKER["busy"] = False


def _mark_interrupted(job: Job) -> None:
    """Status "interrupted" for a run stopped before it recorded a state of its own (the
    signal came before training began): so the study tells it from a run whose worker died."""
    status = _status(job)
    if status.get("state") not in ("interrupted", "done", "failed"):
        try:
            atomic_write_json(Path(job.run_dir) / "status.json",
                              {**status, "state": "interrupted", "run": job.run.to_dict()})
        except OSError:  # its disk failed: the study stops on it anyway
            pass


def _state(job: Job) -> str | None:
    """The state in a job's status.json (None without a readable one)."""
    return _status(job).get("state")


def _status(job: Job) -> dict[str, Any]:
    try:
        status = read_json(Path(job.run_dir) / "status.json")
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


SETTLE_SECONDS = 5.0
"""How long the study waits, after a worker died, for the runs of its siblings (which the
broken pool stops with SIGTERM) to write that they were interrupted."""


def _settled_status(job: Job, deadline: float) -> dict[str, Any]:
    """`job`'s status once it no longer says "running", or at `deadline`: a sibling stopped
    by the broken pool writes "interrupted" a moment after the pool reports it broken, while
    the run whose worker died never writes again."""
    status = _status(job)
    while status.get("state") == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        status = _status(job)
    return status


class ProcessBackend:
    """`workers` processes (forked from the fork server, which never touches CUDA, or
    spawned: each has its own CUDA context when it uses a GPU, and runs share one GPU), each
    with `threads` torch threads.

    Outcomes come back as the futures' results; the event queue only carries progress. When
    a worker dies hard (killed, out of memory), Python stops the whole pool: the run that was
    in the dead worker fails, and the runs its siblings were interrupted in are resubmitted
    to a fresh pool, continuing from their checkpoints."""

    def __init__(self, workers: int, threads: int) -> None:
        self.capacity = workers
        self._threads = threads
        self._context = _worker_context()
        start_worker_server()  # unless the CLI has already
        self._futures: dict[Future, tuple[Job, ProcessPoolExecutor]] = {}
        self._new_pool()

    def _new_pool(self) -> None:
        self._events = self._context.Queue()  # a killed writer may hold the old one's lock
        self._pool = ProcessPoolExecutor(self.capacity, mp_context=self._context,
                                         initializer=_init_worker,
                                         initargs=(self._events, self._threads))

    def submit(self, job: Job) -> None:
        try:
            future = self._pool.submit(_execute_in_worker, job)
        except BrokenProcessPool:  # a worker died since the last wait (which reports it)
            self._replace_broken_pool()
            future = self._pool.submit(_execute_in_worker, job)
        self._futures[future] = (job, self._pool)

    def _replace_broken_pool(self) -> None:
        """A fresh pool for the jobs to come. Python fails the broken pool's futures, then
        stops its surviving workers; wait for them to write their runs' status
        ("interrupted") before `_finished` tells which run died."""
        broken = self._pool
        self._new_pool()
        broken.shutdown(wait=True, cancel_futures=True)

    def wait(self, timeout: float) -> list[tuple[str, str, Any]]:
        # Wait on the runs, not on their progress: a finished run is handled (and its worker
        # given the next job) at once, not at the next progress event up to `timeout` later.
        if self._futures:
            wait_futures(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED)
        else:  # pragma: no cover - the study only waits with runs in flight
            time.sleep(timeout)
        items: list[tuple[str, str, Any]] = []
        try:
            while True:
                items.append(self._events.get_nowait())
        except (queue_module.Empty, OSError, ValueError):
            pass
        return items + self._finished()  # outcomes come with the futures

    def _finished(self) -> list[tuple[str, str, Any]]:
        done, _ = wait_futures(list(self._futures), timeout=0, return_when=FIRST_COMPLETED)
        if any(self._futures[f][1] is self._pool and isinstance(f.exception(), BrokenProcessPool)
               for f in done if not f.cancelled()):
            self._replace_broken_pool()
            done, _ = wait_futures(list(self._futures), timeout=0,
                                   return_when=FIRST_COMPLETED)
        found: list[tuple[str, str, Any]] = []
        retry: list[Job] = []
        deadline = time.monotonic() + SETTLE_SECONDS
        for future in done:
            job, _ = self._futures.pop(future)
            if future.cancelled():
                retry.append(job)
                continue
            error = future.exception()
            if error is None:
                found.append(("done", job.key, future.result()))
            elif isinstance(error, BrokenProcessPool):
                status = _settled_status(job, deadline)
                if status.get("state") == "interrupted":  # stopped because a sibling died
                    retry.append(dataclasses.replace(job, resume=True))
                elif status.get("state") == "done":  # stopped as it returned: it is done
                    found.append(("done", job.key, Outcome(
                        job.key, True, timesteps=int(status.get("timesteps", 0)),
                        final_return=float(status.get("final_return", math.nan)),
                        resumed_from=status.get("resumed_from"))))
                else:
                    found.append(("done", job.key, Outcome(
                        job.key, False, error="its worker process died (killed, or out of "
                                              "memory?)")))
            elif isinstance(error, KeyboardInterrupt):
                found.append(("done", job.key, Outcome(job.key, False, interrupted=True,
                                                       error="interrupted")))
            else:
                found.append(("done", job.key, Outcome(job.key, False,
                                                       error=f"{type(error).__name__}: {error}")))
        for job in retry:
            self.submit(job)
        return found

    def close(self, interrupted: bool) -> None:
        if interrupted:  # ask running runs to stop (they mark themselves interrupted)
            processes = list(getattr(self._pool, "_processes", {}).values())
            for process in processes:
                if process.is_alive():
                    process.terminate()
            _join_or_kill(processes, STOP_GRACE)
        self._pool.shutdown(wait=True, cancel_futures=True)


STOP_GRACE = 15.0  # seconds a stopped worker has to mark its run interrupted and exit


def _join_or_kill(processes: list[Any], grace: float) -> None:
    """Wait up to `grace` seconds for `processes` to exit, then kill the ones left (e.g. one
    stuck on a full disk), so that a study never waits for a worker forever."""
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()


def make_backend(execution: Execution, on_event: Any, at_once: int | None = None) -> Backend:
    """The backend for `execution`; `on_event` receives progress events of in-process runs.
    `at_once`: the most jobs that can ever run at the same time; with one, a local study
    trains it in this process, which has imported everything already (a worker process would
    import it all again, for no parallelism)."""
    if execution.backend == "ray":
        from .ray_backend import RayBackend  # imports Ray only when it is used

        return RayBackend(execution)
    if execution.n_workers == 1 or (at_once is not None and at_once <= 1):
        return InlineBackend(on_event)
    return ProcessBackend(execution.n_workers, execution.torch_threads())
