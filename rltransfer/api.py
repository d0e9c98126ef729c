"""The Python API: `run` a study with the options of ``python -m rltransfer run`` as keyword
arguments, `load` a study folder, and read either as a typed `Study`.

`run`'s keyword arguments are the `run` command's options, read from the CLI's own parser
(`cli._build_parser`), never listed here: ``--eval-freq`` is ``eval_freq``. A call is turned
into the command line it stands for, parsed by that parser and run by the CLI's code
(`cli.run_from_args`), so defaults, checks and messages are the CLI's; a mistake raises the
`RLTransferError` whose one line the CLI would print, instead of exiting. The command line is
what study.json records as the command that reproduces the study.

A `Study` reads only files (study.json, each run's status.json and evaluations.csv): its
metrics and verdicts are computed from them by the report stage (`report.study_summary`),
so a finished, interrupted or copied study reads alike, without torch or SB3.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import cli
from .errors import ConfigError, HyperparameterError, MissingDependencyError, OutputError
from .errors import did_you_mean as _did_you_mean
from .io_utils import read_json
from .report.runfiles import read_rows
from .study.study_spec import ResolvedStudySpec, StudySpec

if TYPE_CHECKING:
    import pandas as pd

    from .report.summary import ConditionSummary, StudySummary
    from .specs import EnvSpec

__all__ = ["Estimate", "OptionError", "Run", "Study", "load", "options", "run"]


class OptionError(ConfigError, TypeError):
    """A keyword argument that `rltransfer.run` does not take (a TypeError, as Python raises
    for an unexpected keyword, and an RLTransferError, as every user mistake here is)."""


class _RaisingParser(cli._Parser):
    """The CLI's parser, but a usage mistake raises its message instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


@functools.lru_cache(maxsize=1)
def _run_actions() -> dict[str, tuple[argparse.Action, ...]]:
    """The `run` command's options by keyword (argparse's dest), from the CLI's parser."""
    parser = cli._build_parser(_RaisingParser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions: dict[str, tuple[argparse.Action, ...]] = {}
    for action in sub.choices["run"]._actions:
        if action.option_strings and action.dest != "help":
            actions[action.dest] = (*actions.get(action.dest, ()), action)
    return actions


def options() -> dict[str, str]:
    """The keyword arguments of `run` and the help of the CLI option each stands for (the
    ``python -m rltransfer run --help`` text), e.g. ``options()["eval_freq"]``."""
    return {name: " / ".join(f"{a.option_strings[0]}: {a.help}" for a in group)
            for name, group in _run_actions().items()}


def run(source: str | EnvSpec | None = None, target: str | EnvSpec | None = None,
        **options: Any) -> Study:
    """Run a transfer study from `source` to `target` and return its `Study`.

    `options` are those of ``python -m rltransfer run`` (`options()` lists them with their
    help) and have its defaults; an option left out or None takes its default. E.g.
    ``seeds=10`` (or ``"auto"``), ``timesteps=50_000``, ``eval_freq=2_500``,
    ``conditions=["scratch", "finetune:lr_scale=0.1"]`` (or the CLI's comma-separated
    text), ``hparams={"learning_rate": 3e-4}`` (or ``["learning_rate=3e-4"]``),
    ``pixels=True``, ``config="study.toml"``, ``workers=1``, ``out="runs"``.

    Progress is printed as the CLI prints it, then the summary table. A bad input raises the
    `RLTransferError` whose message the CLI prints (e.g. `ParameterError`), before anything
    is written; an unknown keyword raises `OptionError`. Target runs that fail do not raise,
    even all of them: they are in `Study.failed_runs` (a failed source raises
    `SourceFailedError`, as the CLI stops)."""
    _refuse_in_a_worker_importing_main()
    argv, explicit = command_line(source, target, options)
    args = cli._build_parser(_RaisingParser).parse_args(argv)
    for name, value in explicit.items():  # False where the CLI has no flag, and the envs
        setattr(args, name, value)
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # as the CLI: notebooks and logs get one line per run
        console = Console(width=160)
    study_dir = cli.run_from_args(args, argv, console)
    from .report.tables import terminal_table
    from .study.execution import summarize_elsewhere

    try:
        result = summarize_elsewhere(study_dir)
    except OutputError as err:  # every target run failed: the Study names them
        console.print(f"rltransfer: {err}", style="red", markup=False, highlight=False,
                      soft_wrap=True)
    else:
        cli._print_summary(result, study_dir, console, terminal_table)
    return load(study_dir)


def _refuse_in_a_worker_importing_main() -> None:
    """A study's worker processes start by importing the script that started the study
    (multiprocessing's forkserver and spawn do), so a script that calls `run` at its top
    level would start the study again in each: refuse, with the fix."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_fixup_main_from_path" and "multiprocessing" in code.co_filename:
            script = frame.f_locals.get("main_path", "the script")
            raise ConfigError(f"rltransfer.run() ran again as a worker process imported "
                              f"{script}: in a script, call it under "
                              f"'if __name__ == \"__main__\":' (a notebook needs nothing)")
        frame = frame.f_back


def command_line(source: Any, target: Any,
                 options: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The `run` command line that `run(source, target, **options)` stands for, and the
    values the command line cannot carry, set on the parsed arguments after parsing: the
    environments (so an `EnvSpec` or a wrong type reaches the spec's own check) and a False
    switch that has no flag (it overrides a --config file's true)."""
    actions = _run_actions()
    for name in options:
        if name not in actions:
            raise OptionError(f"rltransfer.run() has no option {name!r}."
                              + _did_you_mean(name, actions)
                              + f" Options: {', '.join(sorted(actions))}")
    if source is None and target is not None:
        raise ConfigError("give the source with the target: rltransfer.run(source, target, "
                          "...), or both in config")
    argv = ["run", *(str(env) for env in (source, target) if env is not None)]
    explicit = {name: env for name, env in (("source", source), ("target", target))
                if env is not None}
    for name, value in options.items():
        if value is None:
            continue
        group = actions[name]
        if group[0].nargs == 0:  # a switch: --pixels, --freeze-encoder/--finetune-encoder
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
            flags = [a.option_strings[0] for a in group if a.const is value]
            if flags:
                argv.append(flags[0])
            else:
                explicit[name] = value
        elif group[0].nargs == "+":  # --hparams KEY=VALUE ...
            argv += _option(group[0].option_strings[0], *_hparams(value))
        else:
            argv += _option(group[0].option_strings[0], _single(name, value))
    return argv, explicit


def _option(flag: str, *values: str) -> list[str]:
    if any(value.startswith("-") for value in values):  # a value argparse would take for
        return [f"{flag}={value}" for value in values]  # an option (e.g. --threshold -100)
    return [flag, *values]


def _single(name: str, value: Any) -> str:
    if name == "conditions" and isinstance(value, list | tuple) \
            and all(isinstance(c, str) for c in value):
        return ",".join(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str | int | float):
        return str(value)
    raise ConfigError(f"{name} must be a single value, got {value!r}")


def _hparams(value: Any) -> list[str]:
    """--hparams' KEY=VALUE items from a dict (values written as TOML literals, which the
    CLI reads back as they were) or from the items themselves."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return list(value)
    if isinstance(value, Mapping):
        return [f"{key}={_toml(value[key], key)}" for key in value]
    raise HyperparameterError(f"hparams must be a dict, e.g. {{'learning_rate': 3e-4}}, or "
                              f"KEY=VALUE strings, got {value!r}")


def _toml(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else str(value)  # TOML has inf, nan
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item, key) for item in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(
            f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', str(k)) else json.dumps(str(k))} = "
            f"{_toml(v, key)}" for k, v in value.items()) + "}"
    raise HyperparameterError(f"hparams {key}={value!r}: a value is a number, string, bool, "
                              f"list or dict (leave a key out for the preset's value)")


@dataclass(frozen=True)
class Estimate:
    """A metric's point estimate and its 1 - alpha interval, as summary.json holds it.

    None where a value is undefined or censored (`note` and `details` say why, e.g. time to
    threshold's ``point_censored``); `p_value` for the differences against scratch."""

    point: float | None
    low: float | None
    high: float | None
    p_value: float | None = None
    note: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_summary(cls, data: Mapping[str, Any]) -> Estimate:
        known = ("point", "low", "high", "p_value", "note")
        return cls(*(data.get(key) for key in known),
                   details={k: v for k, v in data.items() if k not in known})

    def __str__(self) -> str:
        from .report.metrics import format_estimate

        return format_estimate({"point": self.point, "low": self.low, "high": self.high,
                                "note": self.note})


@dataclass(frozen=True)
class Run:
    """One planned target run: its state (done, diverged, failed, interrupted, running,
    pending, or missing: no status.json or no evaluations.csv) and a failed run's error."""

    condition: str
    seed: int
    state: str
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.condition}/seed_{self.seed}"

    @property
    def is_outcome(self) -> bool:
        """Whether the summary counts it: finished, or diverged in training."""
        return self.state in ("done", "diverged")


CURVE_COLUMNS = ("condition", "seed", "timesteps", "mean_return", "std_return", "n_episodes",
                 "wall_time", "success_rate", "score")


class Study:
    """The results of a study folder: `verdicts`, `metrics`, `curves`, its `runs`.

    Built by `run` and `load`; everything is read from the folder's files when it is built
    (`curves` when it is read)."""

    def __init__(self, path: Path, record: dict[str, Any], spec: StudySpec,
                 result: StudySummary | None, runs: tuple[Run, ...],
                 note: str | None = None) -> None:
        self.path = path
        self.record = record  # study.json
        self.spec = spec  # the study's options as it was run (study.json's resolved spec)
        self.result = result  # the typed summary, from the files; None: nothing yet
        self.runs = runs
        self.note = note  # why there is no summary yet

    @property
    def summary(self) -> dict[str, Any] | None:
        """summary.json's content (`result.to_dict()`); None before any run finished."""
        return self.result.to_dict() if self.result is not None else None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def conditions(self) -> list[str]:
        return list(self.spec.transfer.conditions)

    @property
    def verdicts(self) -> dict[str, str]:
        """Condition -> verdict label (scratch: "reference"), e.g. "positive transfer"."""
        return {name: data.verdict.label for name, data in self._conditions().items()
                if data.verdict is not None}

    @property
    def readings(self) -> dict[str, str]:
        """Condition -> the verdict's one-line reading, as the CLI prints it."""
        return {name: data.verdict.reading for name, data in self._conditions().items()
                if data.verdict is not None}

    @property
    def metrics(self) -> dict[str, dict[str, Estimate]]:
        """Condition -> metric -> `Estimate`: initial, asymptote, auc, iqm, time_to_threshold,
        and against scratch auc_difference (the primary claim), jumpstart, asymptote_gain,
        speedup, prob_improvement, transfer_ratio (README, 'Metrics and the verdict')."""
        return {name: {key: Estimate.from_summary(record.to_dict())
                       for key, record in data.estimates.items()}
                for name, data in self._conditions().items()}

    @property
    def n_runs(self) -> dict[str, int]:
        """Condition -> the runs its metrics are computed on."""
        return {name: data.n_runs for name, data in self._conditions().items()}

    @property
    def failed_runs(self) -> dict[str, str]:
        """'condition/seed_k' -> the error of each run that failed (not diverged)."""
        return {r.key: r.error or "no error recorded" for r in self.runs if r.state == "failed"}

    @property
    def missing_runs(self) -> list[str]:
        """'condition/seed_k (state)' of each planned run without a result that did not fail:
        interrupted, running, pending, or missing (`resume` trains them)."""
        return [f"{r.key} ({r.state})" for r in self.runs
                if not r.is_outcome and r.state != "failed"]

    @property
    def curves(self) -> pd.DataFrame:
        """Every evaluation of the runs the summary counts, long format: one row per row of
        their evaluations.csv, with its condition and seed, its `success_rate` (NaN where the
        env reports no success) and `score`, the study's score (the return, or with
        ``score="success"`` the success rate) normalized as the metrics are (0 = random
        policy, 1 = threshold)."""
        try:
            import pandas as pd
        except ImportError:
            raise MissingDependencyError("Study.curves needs pandas: pip install "
                                         "'rltransfer[notebook]'") from None
        rows = [{"condition": r.condition, "seed": r.seed, **row}
                for r in self.runs if r.is_outcome
                for row in read_rows(self.path / r.condition / f"seed_{r.seed}"
                                     / "evaluations.csv")]
        frame = pd.DataFrame(rows, columns=list(CURVE_COLUMNS[:-1]))
        scale = self.result.metrics.scale if self.result is not None else None
        if scale is not None:
            span = scale.threshold - scale.random_return
            column = "success_rate" if self.result.score == "success" else "mean_return"
            frame["score"] = (frame[column].astype(float) - scale.random_return) / span
        else:
            frame["score"] = float("nan")
        return frame

    def report(self) -> Path:
        """Write the report again from the files (summary.json/csv, report.md/html, figures)
        and return report.html's path."""
        from .report.build import summarize_study

        summarize_study(self.path)
        return self.path / "report.html"

    def _conditions(self) -> dict[str, ConditionSummary]:
        return self.result.conditions if self.result is not None else {}

    def __repr__(self) -> str:
        spec = self.spec
        seeds = (f"seeds {spec.protocol.sequential}" if spec.protocol.sequential
                 else f"{spec.protocol.seeds} seeds")
        text = (f"<Study {self.name}: {spec.env.source} → {spec.env.target} "
                f"({spec.agent.algo}), {seeds}")
        verdicts = [f"{c}: {label}" for c, label in self.verdicts.items() if label != "reference"]
        if verdicts:
            text += "; " + "; ".join(verdicts)
        if self.note and self.result is None:
            text += f"; no results yet ({self.note})"
        if self.failed_runs:
            text += f"; {len(self.failed_runs)} failed: {', '.join(self.failed_runs)}"
        if self.missing_runs:
            text += f"; {len(self.missing_runs)} missing: {', '.join(self.missing_runs)}"
        return text + ">"

    def _repr_markdown_(self) -> str:
        """A notebook shows the one-line summary and the study's table."""
        if self.result is None:
            return repr(self).replace("<", "&lt;").replace(">", "&gt;")
        from .report.tables import markdown_table

        one_line = repr(self)[1:-1]
        return f"**{one_line}**\n\n{markdown_table(self.result)}"


def load(path: str | os.PathLike[str]) -> Study:
    """The `Study` of a study folder, finished or interrupted: what its files hold, with the
    planned runs that have no result named in `missing_runs` and `failed_runs`."""
    study_dir = Path(path)
    if not (study_dir / "study.json").is_file():
        raise OutputError(f"{study_dir} is not a study folder (no study.json): give "
                          f"runs/<study>")
    record = read_json(study_dir / "study.json")
    if not isinstance(record, dict) or not isinstance(record.get("spec"), Mapping):
        raise OutputError(f"{study_dir}/study.json is not a study record (no spec): give "
                          f"runs/<study>")
    from .report.build import study_summary

    result: StudySummary | None
    try:
        result, _, _ = study_summary(study_dir)
        note = None
    except OutputError as err:  # stopped before its first target run, or none finished yet
        result, note = None, str(err)
    try:
        spec: StudySpec = ResolvedStudySpec.from_dict(record["spec"])
    except ValueError:  # a study.json of an older format without every resolved value
        spec = StudySpec.from_dict(record["spec"])
    return Study(study_dir, record, spec, result, _planned_runs(study_dir, spec, record), note)


def _planned_runs(study_dir: Path, spec: StudySpec, record: Mapping[str, Any]
                  ) -> tuple[Run, ...]:
    """Every target run the study plans (an auto study: its batches so far) and any other
    run folder it holds, with its state."""
    counts = (record.get("sequential") or {}).get("counts") or {}
    runs = []
    for condition in spec.transfer.conditions:
        first = spec.protocol.seed
        seeds = set(range(first, first + int(counts.get(condition, spec.protocol.seeds))))
        seeds |= {int(p.name.split("_")[1]) for p in (study_dir / condition).glob("seed_*")
                  if p.name.split("_")[1].isdigit()}
        runs += [_run_state(study_dir, condition, seed) for seed in sorted(seeds)]
    return tuple(runs)


def _run_state(study_dir: Path, condition: str, seed: int) -> Run:
    run_dir = study_dir / condition / f"seed_{seed}"
    status = read_json(run_dir / "status.json") if (run_dir / "status.json").is_file() else {}
    state = str(status.get("state", "missing"))
    if state == "failed" and status.get("diverged"):
        return Run(condition, seed, "diverged")
    if state == "failed":
        return Run(condition, seed, state, str(status.get("error") or "no error recorded"))
    if state == "done" and not (run_dir / "evaluations.csv").is_file():
        state = "missing"
    return Run(condition, seed, state)
