"""Progress display for a study: one bar for the whole study (runs, env steps, ETA) and one
per run in progress (condition, seed, steps, steps/s), however many run at once.

Where no bar can be drawn (logs, pipes, CI) it prints lines instead: when the first run
starts, when each run ends (with the study's ETA), and, while runs train, a line with the
study's steps and ETA at least every `HEARTBEAT_S` seconds, so a log shows progress within
seconds of the start and never stays silent for long."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

HEARTBEAT_S = 20.0
"""In logs, the longest silence while runs train: then a line with the study's progress."""


def format_duration(seconds: float) -> str:
    """A duration as the logs print it: 45 s, 3 min 5 s, 2 h 10 min."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@dataclass
class _Run:
    label: str
    task: TaskID
    start: float
    resumed: int = 0  # steps trained before a resume
    steps: int = 0  # steps trained in this attempt
    total: int = 0  # the run's budget

    @property
    def steps_per_second(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.steps / elapsed if elapsed > 0 else 0.0


class StudyProgress:
    """Live bars on a terminal; elsewhere (CI, pipes, logs) one line per finished run.

    Runs are named by a key (e.g. "finetune/seed_3"); `start_run`, `advance` and
    `finish_run`/`fail_run` may interleave for any number of runs."""

    def __init__(self, console: Console, total_steps: int, total_runs: int) -> None:
        self.console = console
        self.live = console.is_terminal
        self.total_runs = total_runs
        self.runs_done = 0
        self.runs_failed = 0
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self._total = total_steps
        self._study = self._progress.add_task(self._study_label(), total=total_steps, rate="")
        self._runs: dict[str, _Run] = {}
        self._completed = 0  # the study's steps done: trained, resumed or skipped
        self._trained = 0  # steps trained by this process's runs (the rate behind the ETA)
        self._first_start: float | None = None
        self._last_line = time.perf_counter()

    def _study_label(self) -> str:
        failed = f", {self.runs_failed} failed" if self.runs_failed else ""
        return f"study [{self.runs_done}/{self.total_runs} runs{failed}]"

    def __enter__(self) -> StudyProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def print(self, text: str, style: str | None = None) -> None:
        self._last_line = time.perf_counter()
        self._progress.console.print(text, style=style, highlight=False, markup=False,
                                     soft_wrap=True)

    def _study_advance(self, steps: int) -> None:
        self._completed += steps
        self._progress.update(self._study, advance=steps)

    def eta_seconds(self) -> float | None:
        """Seconds until the study's steps are all done at the rate trained so far; None
        before any step was trained."""
        if self._first_start is None or self._trained <= 0:
            return None
        elapsed = time.perf_counter() - self._first_start
        if elapsed <= 0:
            return None
        return max(self._total - self._completed, 0) / (self._trained / elapsed)

    def _eta_text(self, lead: str = "; study ETA ") -> str:
        eta = self.eta_seconds()
        return "" if eta is None else f"{lead}{format_duration(eta)}"

    def _heartbeat(self) -> None:
        """In logs: the study's progress, when nothing was printed for `HEARTBEAT_S`."""
        if self.live or time.perf_counter() - self._last_line < HEARTBEAT_S:
            return
        training = ", ".join(f"{run.label} {run.resumed + run.steps:,}/{run.total:,}"
                             for run in self._runs.values())
        percent = 100 * self._completed / self._total if self._total else 100.0
        self.print(f"study: {self._completed:,}/{self._total:,} steps ({percent:.0f}%), "
                   f"{self._total_rate():,.0f} steps/s{self._eta_text(', ETA ')}; "
                   f"training: {training}")

    def start_run(self, key: str, label: str, total: int, resumed_from: int = 0) -> None:
        """A run began (in any worker); `resumed_from` steps were trained before."""
        again = self._runs.pop(key, None)
        if again is not None:  # started again (a Ray task whose node was lost): count anew
            self._progress.remove_task(again.task)
            self._progress.update(self._study, advance=-(again.resumed + again.steps))
        task = self._progress.add_task(f"  {escape(label)}", total=total, completed=resumed_from,
                                       rate="")
        self._runs[key] = _Run(label, task, time.perf_counter(), resumed_from, total=total)
        if resumed_from:
            self._study_advance(resumed_from)
        if self._first_start is None:
            self._first_start = time.perf_counter()
            if not self.live:  # the log's first line comes now, not when a run ends
                resumed = f" (from step {resumed_from:,})" if resumed_from else ""
                self.print(f"[started] {label}: {total:,} steps{resumed} (a line per finished "
                           f"run follows, the study's progress at least every "
                           f"{HEARTBEAT_S:.0f} s)")

    def advance(self, key: str, steps: int) -> None:
        run = self._runs.get(key)
        if run is None:
            return
        run.steps += steps
        self._trained += steps
        self._completed += steps
        rate = f"{run.steps_per_second:,.0f} steps/s"
        self._progress.update(run.task, advance=steps, rate=rate)
        self._progress.update(self._study, advance=steps,
                              rate=f"{self._total_rate():,.0f} steps/s")
        self._heartbeat()

    def _total_rate(self) -> float:
        return sum(run.steps_per_second for run in self._runs.values())

    def skip_run(self, label: str, steps: int, note: str) -> None:
        """A run that needs no training (copied from the cache, or done before a resume)."""
        self.runs_done += 1
        self._study_advance(steps)
        self._progress.update(self._study, description=self._study_label())
        self.print(f"[{self.runs_done}/{self.total_runs}] {label}: {note}")

    def _end(self, key: str) -> _Run | None:
        run = self._runs.pop(key, None)
        if run is not None:
            self._progress.remove_task(run.task)
        self._progress.update(self._study, description=self._study_label())
        return run

    def finish_run(self, key: str, run_total: int, note: str = "") -> None:
        """A run is done; the study bar gets any of its steps not reported yet (progress
        events may trail the result)."""
        self.runs_done += 1
        run = self._end(key)
        covered = run.resumed + run.steps if run is not None else 0
        if run_total > covered:
            self._study_advance(run_total - covered)
        eta = self._eta_text() if self.runs_done + self.runs_failed < self.total_runs else ""
        if run is None:
            self.print(f"[{self.runs_done}/{self.total_runs}] {key}: done{note}{eta}")
            return
        elapsed = time.perf_counter() - run.start
        self.print(f"[{self.runs_done}/{self.total_runs}] {run.label}: {run.steps:,} steps in "
                   f"{elapsed:.1f}s ({run.steps_per_second:,.0f} steps/s){note}{eta}")

    def interrupt_run(self, key: str, label: str) -> None:
        """A run stopped by a signal: it is neither done nor failed; resume runs it again."""
        self._end(key)
        self.print(f"[interrupted] {label}", style="yellow")

    def fail_run(self, key: str, label: str, error: str, run_total: int) -> None:
        """A run failed (or could not start): the study goes on; its steps not trained leave
        the study's total."""
        self.runs_failed += 1
        run = self._end(key)
        covered = run.resumed + run.steps if run is not None else 0
        self._total = max(self._total - (run_total - covered), 0)
        self._progress.update(self._study, total=self._total)
        self.print(f"[failed] {label}: {error}", style="red")
