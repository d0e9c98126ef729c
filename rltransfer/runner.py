"""Run a study, stage by stage: spec -> `plan` (resolved spec, agents) -> pre-flight checks
(`preflight`: every input built once, nothing written) -> study folder (`study_folder`: lock,
study.json) -> `scheduler` (source first, runs that start from it after it, on any backend,
with the `caches`) -> the report stage reads the folder.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console

from .caches import Source
from .errors import ConfigError, OutputError
from .execution import Execution
from .io_utils import atomic_write_json, read_json
from .plan import Plan, plan
from .preflight import check_new_study, check_writable
from .ray_backend import ray_session
from .scheduler import Scheduler
from .sequential import Design, next_counts
from .study_folder import (
    StudyLock,
    check_same_study,
    existing_study,
    load_study,
    new_record,
    run_key,
    run_states,
)
from .study_spec import StudySpec


def run_study(spec: StudySpec, *, command: str = "", console: Console | None = None,
              execution: Execution | None = None, resume: bool = False) -> Path:
    """Run a whole study (or, with `resume`, finish one) and return its folder.

    Runs that fail are marked failed and the study goes on; the summary reports them."""
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
            raise
    return study_dir


def resume_study(study_dir: Path, *, console: Console | None = None,
                 execution: Execution | None = None) -> Path:
    """Finish the study in `study_dir` with the options it was started with."""
    study_dir = Path(study_dir).resolve()
    record = load_study(study_dir)
    spec = StudySpec.from_dict(record["spec"]).update(out=str(study_dir.parent),
                                                      name=study_dir.name)
    return run_study(spec, command=record.get("command", ""), console=console,
                     execution=execution, resume=True)


def _run_locked(plan_: Plan, command: str, console: Console, execution: Execution,
                resume: bool) -> None:
    study_dir = plan_.study_dir
    record = existing_study(study_dir)
    if record is not None and not resume:
        states = run_states(study_dir, plan_.target_runs())
        done = sum(state == "done" for state in states.values())
        raise OutputError(
            f"{study_dir} already holds a study ({done} of {len(states)} runs done): pass "
            f"--resume to finish it, or choose another --name for a new study")
    external: Source | None = None
    if record is None:
        if resume:
            console.print(f"--resume: {study_dir} has no study yet; starting it", markup=False)
        random, known, external = check_new_study(plan_)
        record = new_record(plan_, command, random, known)
    else:
        check_same_study(plan_, record, study_dir)
    design = plan_.spec.protocol.sequential
    if design is None:
        Scheduler(plan_, record, console, execution, resume).run(external)
    else:
        _sequential(plan_, record, console, execution, resume, external, Design.parse(design))


def _sequential(plan_: Plan, record: dict, console: Console, execution: Execution,
                resume: bool, external: Source | None, design: Design) -> None:
    """``--seeds auto``: run a batch, look (`report.study_summary` judges every comparison on
    its repeated p-value), and add the next batch of seeds for the undecided conditions and
    scratch, until every verdict is decided or the design's last look is taken. Each look is
    recorded in study.json's ``sequential``, so `resume` goes on from the last batch."""
    from .report import study_summary
    from .verdict import CLAIMS

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
        labels = {name: data["verdict"]["label"]
                  for name, data in result["metrics"]["conditions"].items()
                  if data.get("verdict", {}).get("label") not in (None, "reference")}
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
