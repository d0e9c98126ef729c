"""Progress display for a study: one bar for the whole study, one for the run in progress."""

from __future__ import annotations

import time

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


class StudyProgress:
    """Study total (runs done, env steps, ETA) plus the current run's steps and steps/s.

    On a terminal it draws live bars; elsewhere (CI, pipes) it prints one line per run.
    """

    def __init__(self, console: Console, total_steps: int, total_runs: int) -> None:
        self.console = console
        self.live = console.is_terminal
        self.total_runs = total_runs
        self.runs_done = 0
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
        self._study = self._progress.add_task(self._study_label(), total=total_steps, rate="")
        self._run: TaskID | None = None
        self._run_label = ""
        self._run_start = 0.0
        self._run_steps = 0

    def _study_label(self) -> str:
        return f"study [{self.runs_done}/{self.total_runs} runs]"

    def __enter__(self) -> StudyProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start_run(self, label: str, total: int) -> None:
        self._run_label, self._run_start, self._run_steps = label, time.perf_counter(), 0
        self._run = self._progress.add_task(f"  {escape(label)}", total=total, rate="")

    def advance(self, steps: int) -> None:
        self._run_steps += steps
        rate = f"{self.steps_per_second:,.0f} steps/s"
        if self._run is not None:
            self._progress.update(self._run, advance=steps, rate=rate)
        self._progress.update(self._study, advance=steps)

    @property
    def steps_per_second(self) -> float:
        elapsed = time.perf_counter() - self._run_start
        return self._run_steps / elapsed if elapsed > 0 else 0.0

    def reused_run(self, label: str, steps: int, note: str) -> None:
        """A run copied from the cache: counts as done, its steps as covered."""
        self.runs_done += 1
        self._progress.update(self._study, advance=steps, description=self._study_label())
        self._progress.console.print(f"[{self.runs_done}/{self.total_runs}] {label}: {note}",
                                     highlight=False, markup=False)

    def finish_run(self, note: str = "") -> None:
        self.runs_done += 1
        if self._run is not None:
            self._progress.remove_task(self._run)
            self._run = None
        self._progress.update(self._study, description=self._study_label())
        elapsed = time.perf_counter() - self._run_start
        self._progress.console.print(
            f"[{self.runs_done}/{self.total_runs}] {self._run_label}: {self._run_steps:,} steps "
            f"in {elapsed:.1f}s ({self.steps_per_second:,.0f} steps/s){note}",
            highlight=False, markup=False,
        )
