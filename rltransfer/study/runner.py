"""Run a study, stage by stage: spec -> `plan` (resolved spec, agents) -> pre-flight checks
(`preflight`: every input built once, nothing written) -> study folder (`study_folder`: lock,
study.json) -> `scheduler` (source first, runs that start from it after it, on any backend,
with the `caches`) -> the report stage reads the folder.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from ..errors import ConfigError, OutputError
from ..io_utils import atomic_write_json, read_json
from ..report.sequential import Design, next_counts
from .budgets import Fit
from .caches import Source
from .execution import Execution
from .plan import Plan, plan
from .preflight import check_new_study, check_writable
from .ray_backend import ray_session
from .scheduler import Scheduler
from .score_scale import choose
from .study_folder import (
    StudyLock,
    check_same_study,
    existing_study,
    load_study,
    new_record,
    recorded_progress,
    recorded_random,
    run_key,
    run_states,
)
from .study_spec import StudySpec, flat_spec


def run_study(spec: StudySpec, *, command: str = "", console: Console | None = None,
              execution: Execution | None = None, resume: bool = False,
              resume_command: str | None = None) -> Path:
    """Run a whole study (or, with `resume`, finish one) and return its folder.

    Runs that fail are marked failed and the study goes on; the summary reports them. When it
    is interrupted (Ctrl-C, SIGTERM) after something was written, it says how to finish it:
    `resume_command` (default: ``python -m rltransfer resume STUDY_DIR``)."""
    console = console or Console()
    execution = execution or Execution()
    execution.validate()
    if resume and spec.output.name is None:
        raise ConfigError("--resume needs --name NAME, the study to finish (or run "
                          "'python -m rltransfer resume runs/<study>')")
    plan_ = plan(spec)
    out = Path(plan_.spec.output.out)
    check_writable(out)
    new_out = [folder for folder in (out, *out.parents) if not folder.exists()]
    study_dir = plan_.study_dir
    # Ray: the cluster answers and every node sees --out, before anything is written
    with ray_session(execution, out), StudyLock(study_dir) as lock:
        try:
            _run_locked(plan_, command, console, execution, resume)
        except BaseException:
            states = run_states(study_dir, plan_.target_runs()) if study_dir.is_dir() else {}
            if lock.created and set(states.values()) <= {"missing", "pending"} \
                    and not (study_dir / "source" / "status.json").is_file():
                shutil.rmtree(study_dir, ignore_errors=True)  # nothing trained: no half study
                _remove_if_empty(new_out)  # nor an --out folder made only for it
            elif isinstance(sys.exc_info()[1], KeyboardInterrupt) and study_dir.is_dir():
                how = resume_command or f"python -m rltransfer resume {shlex.quote(str(study_dir))}"
                console.print(f"interrupted: {study_dir} keeps its finished runs; to finish "
                              f"it, run: {how}", markup=False, highlight=False, soft_wrap=True)
            raise
    return study_dir


def resume_study(study_dir: Path, *, console: Console | None = None,
                 execution: Execution | None = None, threshold: float | None = None) -> Path:
    """Finish the study in `study_dir` with the options it was started with; `threshold`
    replaces its threshold while none of its target runs is done (`_new_threshold`)."""
    study_dir = Path(study_dir).resolve()
    record = load_study(study_dir)
    spec = StudySpec.from_dict(record["spec"]).update(out=str(study_dir.parent),
                                                      name=study_dir.name)
    if threshold is not None:
        spec = spec.update(threshold=threshold)
    return run_study(spec, command=record.get("command", ""), console=console,
                     execution=execution, resume=True)


def _run_locked(plan_: Plan, command: str, console: Console, execution: Execution,
                resume: bool) -> None:
    study_dir = plan_.study_dir
    record = existing_study(study_dir)
    if record is not None and not resume:
        done, planned = recorded_progress(study_dir, record)
        raise OutputError(
            f"{study_dir} already holds a study ({done} of {planned} runs done): pass "
            f"--resume to finish it, or choose another --name for a new study")
    external: Source | None = None
    if record is None:
        if resume:
            console.print(f"--resume: {study_dir} has no study yet; starting it", markup=False)
        random, known, external, fits = check_new_study(plan_)
        record = new_record(plan_, command, random, known)
        record["budgets"] = {role: fit.record() for role, fit in fits.items()}
        _say_budgets(fits, console)
    else:
        _new_threshold(plan_, record, study_dir, console)
        check_same_study(plan_, record, study_dir)
        _threshold_from_source(plan_, record)
    design = plan_.spec.protocol.sequential
    if design is None:
        Scheduler(plan_, record, console, execution, resume).run(external)
    else:
        _sequential(plan_, record, console, execution, resume, external, Design.parse(design))


def _say_budgets(fits: dict[str, Fit], console: Console) -> None:
    """What the rollouts make of the budgets, and a warning when the grid is coarse."""
    for fit in fits.values():
        note = fit.note()
        if note:
            console.print(note, markup=False, highlight=False, soft_wrap=True)
        coarse = fit.coarse()
        if coarse:
            console.print(f"warning: {coarse}", style="yellow", markup=False, highlight=False,
                          soft_wrap=True)


_SCORE_SCALE_KEYS = ("threshold", "threshold_from", "normalization", "random_return_from",
                     "threshold_warning", "normalization_note")
"""study.json's keys of the score scale (`ScoreScale.record`), replaced by a new threshold."""


def _new_threshold(plan_: Plan, record: dict[str, Any], study_dir: Path,
                   console: Console) -> None:
    """A resume with another --threshold: the threshold sets only the normalized scores (no
    run trains differently), so it may be given while the study has none yet (the source's
    own score could not set one) or none of its target runs is done. Once target runs are
    done under a threshold, it was fixed before their results: refused."""
    given = plan_.spec.protocol.threshold
    spec = record.get("spec") or {}
    before = flat_spec(spec).get("threshold")
    if given is None or given == before:
        return
    done, planned = recorded_progress(study_dir, record)
    if done and "threshold" in record:
        raise OutputError(
            f"{study_dir} has {done} of {planned} target runs done under threshold "
            f"{record['threshold']:g} ({record.get('threshold_from')}): a threshold is fixed "
            f"before the results, so it cannot change now; resume it without --threshold, "
            f"or start a new study with another --name")
    found = choose(plan_.spec.env.target, plan_.spec.env.source, given,
                   recorded_random(record), plan_.spec.protocol.eval_episodes, None)
    assert found is not None  # a given threshold always sets the score scale
    if isinstance(spec.get("protocol"), dict):
        spec["protocol"]["threshold"] = given
    else:  # a study.json of format 1: the spec is flat
        spec["threshold"] = given
    for key in _SCORE_SCALE_KEYS:
        record.pop(key, None)
    record.update(found.record())
    atomic_write_json(study_dir / "study.json", record)
    console.print(f"threshold: {given:g} (--threshold), in place of "
                  f"{'none' if before is None else format(before, 'g')}; no target run was "
                  f"done yet", markup=False, highlight=False, soft_wrap=True)


def _threshold_from_source(plan_: Plan, record: dict[str, Any]) -> None:
    """A study whose source trained but whose threshold was not set (the source's score
    failed the threshold check): set it now, or stop with the same one-line error, before
    any target run trains without one."""
    source = record.get("source")
    if "threshold" in record or not source:
        return
    try:
        found = choose(plan_.spec.env.target, plan_.spec.env.source,
                       plan_.spec.protocol.threshold, recorded_random(record),
                       plan_.spec.protocol.eval_episodes, source, required=True)
    except ConfigError as err:
        raise ConfigError(f"{err}; give it with: python -m rltransfer resume "
                          f"{shlex.quote(str(plan_.study_dir))} --threshold R, with R the "
                          f"return that counts as solving {plan_.spec.env.target}") from None
    assert found is not None
    record.update(found.record())


def _sequential(plan_: Plan, record: dict, console: Console, execution: Execution,
                resume: bool, external: Source | None, design: Design) -> None:
    """``--seeds auto``: run a batch, look (`report.study_summary` judges every comparison on
    its repeated p-value), and add the next batch of seeds for the undecided conditions and
    scratch, until every verdict is decided or the design's last look is taken. Each look is
    recorded in study.json's ``sequential``, so `resume` goes on from the last batch."""
    from ..report.build import study_summary
    from ..report.verdict import CLAIMS, REFERENCE

    conditions = list(plan_.spec.transfer.conditions)
    state = record.setdefault("sequential", {"design": design.to_dict(), "looks": [],
                                             "counts": {c: design.first for c in conditions},
                                             "done": False})
    study_dir = plan_.study_dir
    note = "done before this resume"
    while True:
        plan_ = plan_.with_counts(state["counts"])
        Scheduler(plan_, record, console, execution, resume, note).run(external)
        external, resume, note = None, True, "done at an earlier look"
        if not _all_outcomes(study_dir, plan_):
            return  # runs failed outside training: resume retries them, then looks
        result, _, _ = study_summary(study_dir)
        labels = {name: data.verdict.label for name, data in result.conditions.items()
                  if data.verdict is not None and data.verdict.label != REFERENCE}
        n = max(state["counts"].values())
        after = next_counts(design, state["counts"], labels, CLAIMS)
        if not state["looks"] or state["looks"][-1]["n"] != n:
            state["looks"].append({"n": n, "labels": labels,
                                   "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        state["done"] = after is None
        undecided = [c for c in labels if labels[c] not in CLAIMS]
        atomic_write_json(study_dir / "study.json", record)
        if after is None:
            console.print(f"--seeds auto: look at {n} seeds per condition: "
                          + ("every verdict decided" if not undecided else
                             f"the last look ({design.max} seeds); "
                             f"{', '.join(undecided)} not decided"), markup=False,
                          highlight=False, soft_wrap=True)
            return
        state["counts"] = after
        console.print(f"--seeds auto: look at {n} seeds per condition: "
                      f"{', '.join(undecided)} not decided yet; adding seeds up to "
                      f"{max(after.values())} (at most {design.max})", markup=False,
                      highlight=False, soft_wrap=True)
        atomic_write_json(study_dir / "study.json", record)


def _all_outcomes(study_dir: Path, plan_: Plan) -> bool:
    """Whether every planned run is an outcome: done, or diverged in training."""
    for run in plan_.target_runs():
        path = study_dir / run_key(run) / "status.json"
        status = read_json(path) if path.is_file() else {}
        if status.get("state") != "done" and not status.get("diverged"):
            return False
    return True


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders this study created (innermost first) while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
