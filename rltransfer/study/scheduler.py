"""The scheduler: one study's jobs on a backend (inline, worker processes, Ray). The source
job goes first; a job that starts from it says so (`Task.after`) and is submitted when it is
done, with its checkpoint. Failures are recorded and the rest carried on.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import ConfigError, RLTransferError, SourceFailedError, StorageError
from ..io_utils import (
    DiskFault,
    atomic_write_json,
    disk_fault,
    read_json,
    remove_stale_temporaries,
)
from ..report.runfiles import read_status
from ..strategies import registry
from .caches import (
    Source,
    copy_atomically,
    reuse_scratch,
    source_from_cache,
    source_record,
    store_scratch,
    store_source,
)
from .execution import Execution, Job, Outcome, make_backend
from .plan import Plan, encoder_note
from .preflight import score_scale
from .progress import StudyProgress
from .score_scale import derived_warning
from .similarity import ensure as ensure_similarity
from .study_folder import recorded_random, run_key


@dataclass(frozen=True)
class Task:
    """The scheduler's record of a job: the job, and the key of the job it starts from (it is
    submitted once that one is done, with what it gives; None: at once)."""

    job: Job
    after: str | None = None


def at_once(tasks: list[Task]) -> int:
    """The most jobs that can run at the same time: those that wait for nothing, or, once the
    jobs the others come after are done, the rest of them and their dependents."""
    first = [task for task in tasks if task.after is None]
    later = [task for task in tasks if task.after is not None]
    awaited = sum(task.job.key in {t.after for t in later} for task in first)
    if later and awaited:
        return max(len(first), len(first) - awaited + len(later))
    return len(first)


class Scheduler:
    """The scheduling of one study: the source first, runs that start from it after it
    (`Task.after`), the others at once; on any backend; failures recorded and the rest
    carried on."""

    def __init__(self, plan_: Plan, record: dict[str, Any], console: Console,
                 execution: Execution, resume: bool,
                 done_note: str = "done before this resume") -> None:
        self.plan, self.record, self.console = plan_, record, console
        self.execution, self.resume = execution, resume
        self.done_note = done_note  # what a run already done is called in the progress
        self.dir = plan_.study_dir.resolve()  # absolute: Ray tasks may run elsewhere
        self.threads = execution.torch_threads()
        self.source_error: str | None = None
        self.threshold_refused = False  # the source trained, but its score set no threshold
        self.fault: DiskFault | None = None  # the study's disk failed: it stops
        self.threshold_warned: bool | None = False  # None: warned, its value not said yet

    def _save(self) -> None:
        atomic_write_json(self.dir / "study.json", self.record)

    def _source(self, external: Source | None) -> tuple[str | None, str, Job | None]:
        """(checkpoint path, label) of a source that is ready, or the job that trains it
        (into the study's source/ folder, from where it is copied into the cache)."""
        if external is not None:
            self.record["source"] = external.record
            atomic_write_json(self.dir / "source" / "source.json", external.record)
            return str(external.record["path"]), external.label, None
        known = self.record.get("source")
        if known and known.get("kind") == "external":
            return str(known["path"]), str(known["path"]), None
        if known and (self.dir / "source" / "model.zip").is_file():
            return str(self.dir / "source" / "model.zip"), f"cache:{known['key']}", None
        if not (self.plan.spec.transfers or "threshold" not in self.record):
            return None, "", None
        status = self.dir / "source" / "status.json"
        if read_status(status).get("state") == "done":  # trained, then cut
            cache = store_source(self.plan, self.dir / "source")
            return self._adopt_source(cache, reused=False), f"cache:{cache.name}", None
        cache = source_from_cache(self.plan)
        if cache is not None:
            self.console.print(f"source: reusing cached policy {cache.name} (0 training steps)",
                               markup=False)
            copy_atomically(cache, self.dir / "source")
            return self._adopt_source(cache, reused=True), f"cache:{cache.name}", None
        run = self.plan.source_run()
        return None, "", Job("source", f"source {run.env} seed {run.seed}", run,
                             str(self.dir / "source"), resume=self.resume, threads=self.threads)

    def _adopt_source(self, cache: Path, reused: bool) -> str:
        """Record the source in study/source (cached as `cache`) and the threshold it sets."""
        source = source_record(self.plan, self.dir / "source", cache, reused)
        atomic_write_json(self.dir / "source" / "source.json", source.record)
        self.record["source"] = source.record
        if "threshold" not in self.record:
            known = score_scale(self.plan, recorded_random(self.record), source, required=True)
            assert known is not None
            self.record.update(known.record())
            self._warn_threshold()
        self._save()
        return str(self.dir / "source" / "model.zip")

    def _target_jobs(self, progress: StudyProgress) -> list[Job]:
        """A job per run not done yet; done runs, runs whose training diverged (outcomes:
        the same seed would diverge again) and cached scratch runs are skipped."""
        jobs = []
        for run in self.plan.target_runs():
            key = run_key(run)
            run_dir = self.dir / key
            status = run_dir / "status.json"
            record = read_status(status)  # a damaged one: a one-line error naming it
            state = record.get("state")
            label = f"{run.condition.label} seed {run.seed}"
            if state == "done":
                progress.skip_run(label, run.timesteps, self.done_note)
                continue
            if state == "failed" and record.get("diverged"):
                progress.skip_run(label, run.timesteps, "diverged: an outcome of its "
                                  "condition, not run again")
                continue
            reference = run.condition.label == registry.REFERENCE
            if reference and (cached := reuse_scratch(self.plan, run, run_dir)):
                progress.skip_run(label, run.timesteps,
                                  f"reused cached run {cached} (0 training steps)")
                continue
            if state is None:
                atomic_write_json(status, {"state": "pending", "run": run.to_dict()})
            elif self.resume and state != "pending":
                progress.print(f"{label}: was {state}; runs again")
            jobs.append(Job(key, label, run, str(run_dir), resume=self.resume,
                            threads=self.threads, source_env=self.plan.spec.env.source))
        return jobs

    def run(self, external: Source | None) -> None:
        """Run the study's jobs; a disk that fails under it (full, read-only) stops it with
        a `StorageError` that names the cause and the resume command."""
        try:
            self._run(external)
        except OSError as err:  # a write of this process (status, study.json, the cache)
            fault = disk_fault(err)
            if fault is None:
                raise
            self.fault = fault
        if self.fault is not None:
            raise StorageError(
                f"the study stopped: its disk failed ({self.fault.reason}); "
                f"{self.fault.fix}, then: python -m rltransfer resume {self.dir}")

    def _run(self, external: Source | None) -> None:
        remove_stale_temporaries(self.dir)  # e.g. study.json's, if a kill cut a write short
        for partial in self.dir.glob("*/.seed_*.copy-*"):  # a cached run's copy, cut short
            shutil.rmtree(partial, ignore_errors=True)
        self.record.setdefault("executions", []).append(
            {**self.execution.describe(), "resume": self.resume,
             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        self.record["ended"] = None
        self._save()
        source_path, source_label, source_job = self._source(external)
        runs = self.plan.target_runs()
        total = sum(r.timesteps for r in runs) + (source_job.run.timesteps if source_job else 0)
        conditions = ", ".join(self.plan.spec.transfer.conditions)
        counts = dict(self.plan.counts)
        seeds = (f"up to {max(counts.values())} seeds, --seeds "
                 f"{self.plan.spec.protocol.sequential}" if counts
                 else f"{self.plan.spec.protocol.seeds} seeds")
        self.console.print(f"study {self.dir}: {len(runs)} target runs ({conditions} x "
                           f"{seeds}) on {self._where()}",
                           markup=False, highlight=False, soft_wrap=True)
        self._warn_threshold()
        note = encoder_note(self.plan)
        if note:
            self.console.print(note, markup=False, highlight=False, soft_wrap=True,
                               style="yellow" if note.startswith("warning") else None)
        if source_job is None:  # the source is ready (or the study has none): measure now
            self._similarity(source_path)
        with StudyProgress(self.console, total, len(runs) + int(source_job is not None)) as bar:
            self.progress = bar
            tasks = [Task(source_job)] if source_job else []
            for job in self._target_jobs(bar):
                if job.run.condition.needs_source and source_path is None:
                    tasks.append(Task(job, after="source"))  # given the source when it is done
                else:
                    tasks.append(Task(dataclasses.replace(job, source=source_path,
                                                          source_label=source_label)))
            self._schedule(tasks)
        if self.fault is not None:
            return
        self.record["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.record["executions"][-1]["ended"] = self.record["ended"]
        self._save()
        if self.source_error is not None:
            then = f"python -m rltransfer resume {shlex.quote(str(self.dir))}"
            if self.threshold_refused:  # resume takes the threshold (runner._new_threshold)
                raise SourceFailedError(
                    f"the source run trained, but its score cannot be the threshold "
                    f"({self.source_error}), so no transfer run could start; give the return "
                    f"that counts as solving {self.plan.spec.env.target}: {then} --threshold R")
            raise SourceFailedError(
                f"the source run failed ({self.source_error}), so no transfer run could start; "
                f"fix the cause, then: {then}")

    def _similarity(self, source_path: str | None) -> None:
        """How similar source and target are (`similarity`): measured once per study with
        the source policy at `source_path` (None: the study has none), then reused."""
        def say(text: str) -> None:
            warning = text.startswith("warning: ")
            self._warn(text.removeprefix("warning: "), prefix="warning: " if warning else "")

        ensure_similarity(self.plan, self.dir, source_path, say, self.threads)

    def _warn(self, text: str, prefix: str = "warning: ") -> None:
        printer = getattr(self, "progress", None)
        style = "yellow" if prefix else None
        if printer is not None:
            printer.print(f"{prefix}{text}", style=style)
        else:
            self.console.print(f"{prefix}{text}", style=style, markup=False,
                               highlight=False, soft_wrap=True)

    def _warn_threshold(self) -> None:
        """Say so, loudly, when the threshold is (or will be) the source's own score."""
        record = self.record
        if record.get("threshold_warning") and self.threshold_warned is False:
            self._warn(f"{record['threshold_warning']} (threshold {record['threshold']:g}, "
                       f"{record['threshold_from']})")
            self.threshold_warned = True
        elif record.get("threshold_warning") and self.threshold_warned is None:
            # warned before the source trained: now only the value it set (said once)
            self._warn(f"threshold {record['threshold']:g} ({record['threshold_from']})",
                       prefix="")
            self.threshold_warned = True
        elif "threshold" not in record and not self.threshold_warned:
            self._warn(derived_warning(self.plan.spec.env.target, self.plan.spec.env.source))
            self.threshold_warned = None  # the warning is out; the value follows
        if record.get("normalization_note"):
            self._warn(record["normalization_note"])

    def _where(self) -> str:
        e = self.execution
        if e.backend == "ray":
            return (f"Ray ({e.address or 'local instance'}, {e.cpus_per_run or 1:g} CPU and "
                    f"{e.gpus_per_run or 0:g} GPU per run)")
        if e.n_workers == 1:
            return f"1 worker (this process), {e.torch_threads()} torch thread(s)"
        return f"{e.n_workers} worker processes, {e.torch_threads()} torch thread(s) each"

    def _schedule(self, tasks: list[Task]) -> None:
        """Submit the tasks that wait for nothing, then each task once the job it comes
        after is done (a failed one fails them; an interrupted one leaves them to resume)."""
        in_flight: dict[str, Job] = {}
        width = at_once(tasks)
        if self.execution.backend == "local" and self.execution.n_workers > 1 and width == 1:
            self.progress.print("one run to train at a time: it trains in this process")
        backend = make_backend(self.execution, lambda event: self._event(event, in_flight),
                               width)
        ready = deque(task.job for task in tasks if task.after is None)
        waiting = [task for task in tasks if task.after is not None]
        finished = False
        try:
            while (ready or in_flight) and self.fault is None:
                while ready and len(in_flight) < backend.capacity:
                    job = ready.popleft()
                    backend.submit(job)
                    in_flight[job.key] = job
                for event in backend.wait(0.25):
                    if event[0] != "done":
                        self._event(event, in_flight)
                        continue
                    job = in_flight.pop(event[1])
                    dependents = [task.job for task in waiting if task.after == job.key]
                    waiting = [task for task in waiting if task.after != job.key]
                    ready.extend(self._finished(job, event[2], dependents))
            finished = self.fault is None
        finally:
            backend.close(interrupted=not finished)
        if self.fault is not None:  # its disk failed: the runs in flight were stopped
            for job in in_flight.values():
                self.progress.interrupt_run(job.key, job.label)

    def _event(self, event: tuple[str, str, Any], in_flight: dict[str, Job]) -> None:
        kind, key, value = event
        if kind == "note":  # a backend's message (Ray: a node was lost)
            self.progress.print(str(value), style="yellow" if str(value).startswith(
                "warning") else None)
            return
        job = in_flight.get(key)
        if job is None:
            return
        if kind == "start":
            self.progress.start_run(key, job.label, value["total"], value["resumed_from"])
            if value.get("note"):
                self.progress.print(f"{job.label}: {value['note']}")
        elif kind == "advance":
            self.progress.advance(key, int(value))

    def _finished(self, job: Job, outcome: Outcome, dependents: list[Job]) -> list[Job]:
        """Record a finished job; return its `dependents`, ready to submit (given the
        source's checkpoint), or none when it failed (they fail with it)."""
        if outcome.ok and job.key == "source":
            try:
                cache = store_source(self.plan, Path(job.run_dir))
                path = self._adopt_source(cache, reused=False)
                self._similarity(path)  # before the runs that start from it
            except (RLTransferError, OSError) as err:  # e.g. its score is not above random
                outcome = dataclasses.replace(outcome, ok=False, error=str(err),
                                              fault=disk_fault(err))
                self.threshold_refused = isinstance(err, ConfigError)
        if outcome.interrupted:
            self.progress.interrupt_run(job.key, job.label)
            return []
        if outcome.fault is not None and self.fault is None:
            self.fault = outcome.fault  # the study stops: every run would fail the same way
        if not outcome.ok:
            self._failed(job, outcome.error)
            if job.key == "source" and self.fault is None:  # (a fault: they never started)
                self.source_error = outcome.error
                for dependent in dependents:
                    self._failed(dependent, f"the source run failed ({outcome.error})")
            return []
        note = f", final return {outcome.final_return:.1f}"
        if outcome.transfer:
            note += f"; {outcome.transfer}"
        self.progress.finish_run(job.key, job.run.timesteps, note)
        if job.key == "source":
            return [dataclasses.replace(d, source=path, source_label=f"cache:{cache.name}")
                    for d in dependents]
        if job.run.condition.label == registry.REFERENCE and outcome.resumed_from is None:
            store_scratch(self.plan, job.run, Path(job.run_dir))  # only uninterrupted runs
        return []

    def _failed(self, job: Job, error: str) -> None:
        status = Path(job.run_dir) / "status.json"
        try:
            current = read_json(status) if status.is_file() else {}
        except ValueError:  # cut short by a full disk: rewritten below
            current = {}
        if current.get("state") != "failed":  # e.g. its worker died, or it never started
            try:
                atomic_write_json(status, {**current, "state": "failed", "error": error,
                                           "run": job.run.to_dict(), "ended": time.time()})
            except OSError as err:  # its disk failed: say so, and stop the study
                if disk_fault(err) is None:
                    raise
                self.fault = self.fault or disk_fault(err)
        self.progress.fail_run(job.key, job.label, error, job.run.timesteps)
