"""Progress display for a study: one bar for the whole study (runs, env steps, ETA) and one
per run in progress (condition, seed, steps, steps/s), however many run at once."""

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


@dataclass
class _Run:
    label: str
    task: TaskID
    start: float
    resumed: int = 0  # steps trained before a resume
    steps: int = 0  # steps trained in this attempt

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

    def _study_label(self) -> str:
        failed = f", {self.runs_failed} failed" if self.runs_failed else ""
        return f"study [{self.runs_done}/{self.total_runs} runs{failed}]"

    def __enter__(self) -> StudyProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def print(self, text: str, style: str | None = None) -> None:
        self._progress.console.print(text, style=style, highlight=False, markup=False,
                                     soft_wrap=True)

    def start_run(self, key: str, label: str, total: int, resumed_from: int = 0) -> None:
        """A run began (in any worker); `resumed_from` steps were trained before."""
        again = self._runs.pop(key, None)
        if again is not None:  # started again (a Ray task whose node was lost): count anew
            self._progress.remove_task(again.task)
            self._progress.update(self._study, advance=-(again.resumed + again.steps))
        task = self._progress.add_task(f"  {escape(label)}", total=total, completed=resumed_from,
                                       rate="")
        self._runs[key] = _Run(label, task, time.perf_counter(), resumed_from)
        if resumed_from:
            self._progress.update(self._study, advance=resumed_from)

    def advance(self, key: str, steps: int) -> None:
        run = self._runs.get(key)
        if run is None:
            return
        run.steps += steps
        rate = f"{run.steps_per_second:,.0f} steps/s"
        self._progress.update(run.task, advance=steps, rate=rate)
        self._progress.update(self._study, advance=steps,
                              rate=f"{self._total_rate():,.0f} steps/s")

    def _total_rate(self) -> float:
        return sum(run.steps_per_second for run in self._runs.values())

    def skip_run(self, label: str, steps: int, note: str) -> None:
        """A run that needs no training (copied from the cache, or done before a resume)."""
        self.runs_done += 1
        self._progress.update(self._study, advance=steps, description=self._study_label())
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
            self._progress.update(self._study, advance=run_total - covered)
        if run is None:
            self.print(f"[{self.runs_done}/{self.total_runs}] {key}: done{note}")
            return
        elapsed = time.perf_counter() - run.start
        self.print(f"[{self.runs_done}/{self.total_runs}] {run.label}: {run.steps:,} steps in "
                   f"{elapsed:.1f}s ({run.steps_per_second:,.0f} steps/s){note}")

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
