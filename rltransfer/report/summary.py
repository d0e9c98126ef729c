"""A study's summary as a typed record, built once by the report stage (`build.study_summary`)
from the study's files, and read by every reader of it: the tables, pages, figures and
TensorBoard views, the matrix, `compare`, the runner's ``--seeds auto`` looks, the API and
the CLI.

`StudySummary.to_dict` is summary.json, key for key and in its order; `from_dict` reads it
back. The records nest as summary.json does:

* `StudySummary`: the study-level facts (pair, algorithm, score scale, budgets, evaluation
  grid, warnings, the verdict rule, the seed note, ``--seeds auto``'s design, how similar
  source and target are: `Similarity`), each condition's runs (`RunRecord`), the per-run
  metrics, and
* `MetricsSummary` (``metrics``): the score scale the metrics used (`Scale`), the reference,
  alpha, the performance profiles (`Profile`) and, per condition, a `ConditionSummary`: its
  run counts, its metrics with their intervals (typed records of `metrics.REGISTRY`),
  ``--seeds auto``'s looks at it (`SequentialComparison`) and its `Verdict`.

Nothing here computes: `metrics` and `verdict` do, `build` assembles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from .metrics import (
    REGISTRY,
    Difference,
    Interval,
    ProbImprovement,
    Record,
    Speedup,
    TimeToThreshold,
    TransferRatio,
)

# --------------------------------------------------------------------------- a condition


@dataclass(frozen=True)
class Verdict:
    """A condition's verdict (`rltransfer.report.verdict`): its label, the reason, the
    one-line reading of the descriptive effects with the claim, the Holm-adjusted p and the
    size of its Holm family (None without a test), and what the end of the curves says
    against the claim (`conflicts`; None for a condition that was not compared)."""

    label: str
    reason: str
    reading: str = ""
    p_holm: float | None = None
    m: int | None = None
    conflicts: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"label": self.label, "reason": self.reason,
                                "reading": self.reading, "p_holm": self.p_holm, "m": self.m}
        if self.conflicts is not None:
            data["conflicts"] = list(self.conflicts)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        conflicts = data.get("conflicts")
        return cls(data["label"], data.get("reason", ""), data.get("reading", ""),
                   data.get("p_holm"), data.get("m"),
                   None if conflicts is None else tuple(conflicts))


@dataclass(frozen=True)
class Look:
    """One look of ``--seeds auto`` at a comparison (`sequential.look`)."""

    n: int
    difference: float
    p_value: float | None
    z: float
    level: float
    disagreement: str | None
    counts: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Look:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class SequentialComparison:
    """``--seeds auto``'s looks at a comparison so far (`sequential.analyze`): the repeated
    p-value over them, the design's maximum seeds and whether its last look is taken."""

    looks: tuple[Look, ...]
    p_value: float
    max: int
    last_look: bool

    def to_dict(self) -> dict[str, Any]:
        return {"looks": [look.to_dict() for look in self.looks], "p_value": self.p_value,
                "max": self.max, "last_look": self.last_look}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequentialComparison:
        return cls(tuple(Look.from_dict(look) for look in data["looks"]), data["p_value"],
                   data["max"], data["last_look"])


@dataclass(frozen=True)
class ConditionSummary:
    """One condition's metrics over its runs: the runs counted and how many failed
    (diverged), every metric's record (`metrics.REGISTRY` key -> record, in summary.json's
    order; the comparisons against the reference only for the other conditions), and, once
    judged, its verdict."""

    n_runs: int
    failed_runs: int
    estimates: dict[str, Record]
    sequential: SequentialComparison | None = None
    verdict: Verdict | None = None

    @property
    def initial(self) -> Interval:
        return cast(Interval, self.estimates["initial"])

    @property
    def asymptote(self) -> Interval:
        return cast(Interval, self.estimates["asymptote"])

    @property
    def auc(self) -> Interval:
        return cast(Interval, self.estimates["auc"])

    @property
    def iqm(self) -> Interval:
        return cast(Interval, self.estimates["iqm"])

    @property
    def time_to_threshold(self) -> TimeToThreshold:
        return cast(TimeToThreshold, self.estimates["time_to_threshold"])

    @property
    def auc_difference(self) -> Difference | None:
        """The primary claim (None for the reference, or without one)."""
        return cast("Difference | None", self.estimates.get("auc_difference"))

    @property
    def jumpstart(self) -> Difference | None:
        return cast("Difference | None", self.estimates.get("jumpstart"))

    @property
    def asymptote_gain(self) -> Difference | None:
        return cast("Difference | None", self.estimates.get("asymptote_gain"))

    @property
    def speedup(self) -> Speedup | None:
        return cast("Speedup | None", self.estimates.get("speedup"))

    @property
    def prob_improvement(self) -> ProbImprovement | None:
        return cast("ProbImprovement | None", self.estimates.get("prob_improvement"))

    @property
    def transfer_ratio(self) -> TransferRatio | None:
        return cast("TransferRatio | None", self.estimates.get("transfer_ratio"))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"n_runs": self.n_runs, "failed_runs": self.failed_runs,
                                **{key: record.to_dict()
                                   for key, record in self.estimates.items()}}
        if self.sequential is not None:
            data["sequential"] = self.sequential.to_dict()
        if self.verdict is not None:
            data["verdict"] = self.verdict.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConditionSummary:
        """A condition of `metrics.summarize`'s output or of summary.json (a metric this
        version does not know is left out)."""
        sequential, verdict = data.get("sequential"), data.get("verdict")
        return cls(int(data["n_runs"]), int(data.get("failed_runs", 0)),
                   {key: REGISTRY[key].record.from_dict(value) for key, value in data.items()
                    if key in REGISTRY},
                   None if sequential is None else SequentialComparison.from_dict(sequential),
                   None if verdict is None else Verdict.from_dict(verdict))


# --------------------------------------------------------------------------- the conditions


@dataclass(frozen=True)
class Scale:
    """The normalized score's 0 (`random_return`) and 1 (`threshold`), and the budget the
    metrics were computed over (summary.json's ``metrics.normalization``)."""

    random_return: float
    threshold: float
    budget: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ProfileCurve:
    """A condition's performance profile: the fraction of runs above each score, its exact
    pointwise band, the runs."""

    fraction: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": list(self.fraction), "low": list(self.low),
                "high": list(self.high), "n": self.n}


@dataclass(frozen=True)
class Profile:
    """The performance profiles of the runs' asymptotes (`intervals.performance_profile`)."""

    taus: tuple[float, ...]
    conditions: dict[str, ProfileCurve]

    def to_dict(self) -> dict[str, Any]:
        return {"taus": list(self.taus),
                "conditions": {name: curve.to_dict() for name, curve in self.conditions.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        return cls(tuple(data["taus"]), {
            name: ProfileCurve(tuple(c["fraction"]), tuple(c["low"]), tuple(c["high"]),
                               c["n"]) for name, c in data["conditions"].items()})


@dataclass(frozen=True)
class MetricsSummary:
    """Every condition's metrics and their comparison with the `reference` (None: no
    reference had finished runs), at `alpha` (summary.json's ``metrics``; `metrics.summarize`
    computes it). `scale` and `profile` are None in a verdict-only summary (the calibration
    benchmark's)."""

    reference: str | None
    alpha: float
    conditions: dict[str, ConditionSummary]
    scale: Scale | None = None
    profile: Profile | None = None

    def with_verdicts(self, verdicts: Mapping[str, Verdict]) -> MetricsSummary:
        """This summary with each condition of `verdicts` judged (`verdict.judge`)."""
        return dataclasses.replace(self, conditions={
            name: dataclasses.replace(entry, verdict=verdicts.get(name, entry.verdict))
            for name, entry in self.conditions.items()})

    def with_sequential(self, looks: Mapping[str, SequentialComparison]) -> MetricsSummary:
        """This summary with ``--seeds auto``'s looks at each comparison of `looks`."""
        return dataclasses.replace(self, conditions={
            name: dataclasses.replace(entry, sequential=looks.get(name, entry.sequential))
            for name, entry in self.conditions.items()})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.scale is not None:
            data["normalization"] = self.scale.to_dict()
        data.update(reference=self.reference, alpha=self.alpha, conditions={
            name: entry.to_dict() for name, entry in self.conditions.items()})
        if self.profile is not None:
            data["profile"] = self.profile.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricsSummary:
        """`metrics.summarize`'s output, or summary.json's ``metrics``."""
        scale, profile = data.get("normalization"), data.get("profile")
        return cls(data.get("reference"), float(data["alpha"]),
                   {name: ConditionSummary.from_dict(entry)
                    for name, entry in data["conditions"].items()},
                   None if scale is None else Scale(**scale),
                   None if profile is None else Profile.from_dict(profile))


# --------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class FailedRun:
    """A run that failed outside training's divergence (killed, an error): not an outcome."""

    run: str
    error: str


@dataclass(frozen=True)
class DivergedRun:
    """A run whose training diverged: an outcome, held at `held_at` from step `at`."""

    run: str
    at: int
    held_at: str | None


@dataclass(frozen=True)
class RunRecord:
    """A condition's runs: how many finished (diverged runs included: they are outcomes),
    which failed and why, which diverged, which were not finished (``"seed_2 (running)"``)."""

    finished: int
    failed: tuple[FailedRun, ...] = ()
    diverged: tuple[DivergedRun, ...] = ()
    left_out: tuple[str, ...] = ()
    # env steps the finished runs took besides the target budget: (env, fewest, most)
    outside_budget: tuple[tuple[str, int, int], ...] = ()

    @property
    def total(self) -> int:
        """Every run of the condition the study has."""
        return self.finished + len(self.failed) + len(self.left_out)

    def to_dict(self) -> dict[str, Any]:
        return {"finished": self.finished,
                "failed": [dataclasses.asdict(run) for run in self.failed],
                "diverged": [dataclasses.asdict(run) for run in self.diverged],
                "left_out": list(self.left_out),
                **({"outside_budget": {env: [low, high] for env, low, high
                                       in self.outside_budget}} if self.outside_budget else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        return cls(int(data["finished"]), tuple(FailedRun(**run) for run in data["failed"]),
                   tuple(DivergedRun(**run) for run in data.get("diverged", [])),
                   tuple(data["left_out"]),
                   tuple((env, int(low), int(high)) for env, (low, high)
                         in data.get("outside_budget", {}).items()))


@dataclass(frozen=True)
class EvaluationGrid:
    """The steps the runs really trained and where they were evaluated (`build.
    evaluation_grid`): `steps` (the metrics' budget), `requested` (--timesteps), `trained`
    (fewest, most steps a run trained), `per_run` (fewest, most evaluations up to `steps`),
    `spacing` (smallest, largest gap) and `grid` (the steps, when every run shares them).
    The pairs are empty without runs."""

    steps: int
    requested: int
    trained: tuple[int, ...] = ()
    per_run: tuple[int, ...] = ()
    spacing: tuple[int, ...] = ()
    grid: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "requested": self.requested,
                "trained": list(self.trained), "per_run": list(self.per_run),
                "spacing": list(self.spacing),
                "grid": None if self.grid is None else list(self.grid)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationGrid:
        grid = data.get("grid")
        return cls(data["steps"], data["requested"], tuple(data.get("trained", ())),
                   tuple(data.get("per_run", ())), tuple(data.get("spacing", ())),
                   None if grid is None else tuple(grid))


@dataclass(frozen=True)
class SequentialDesign:
    """``--seeds auto``'s design (`sequential.Design`), its looks and whether the study has
    taken its last look (`done`)."""

    first: int
    step: int
    max: int
    looks: tuple[int, ...]
    done: bool

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "step": self.step, "max": self.max,
                "looks": list(self.looks), "done": self.done}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequentialDesign:
        return cls(data["first"], data["step"], data["max"], tuple(data["looks"]),
                   bool(data["done"]))


@dataclass(frozen=True)
class Similarity:
    """How similar source and target are (`rltransfer.study.similarity`, the study's
    similarity.json): the source policy's zero-shot return on the target and its normalized
    score on the study's scale, the held-out balanced accuracy of a classifier that tells
    the policy's source transitions from its target ones (0.5: indistinguishable), and the
    distance between its features of source and target observations (0: the same). None
    where not measured: `skipped` says why nothing was, `notes` why a measure is missing.
    (How long it took is in similarity.json only: a summary holds results.)"""

    transitions: int  # per side (--similarity; 0: off)
    zero_shot: float | None = None
    zero_shot_normalized: float | None = None
    zero_shot_episodes: int | None = None
    classifier_accuracy: float | None = None
    classifier_held_out: int | None = None  # held-out transitions per side
    classifier_rows: str | None = None  # what a row holds
    feature_distance: float | None = None
    skipped: str | None = None
    notes: tuple[str, ...] = ()

    MEASURES = (("zero_shot_normalized", "zero-shot score (normalized)"),
                ("classifier_accuracy", "transition classifier accuracy"),
                ("feature_distance", "feature distance (MMD²)"))
    """The measures a matrix ranks against the area difference: key, title."""

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Similarity:
        return cls(**{**{f.name: data.get(f.name) for f in dataclasses.fields(cls)},
                      "transitions": int(data["transitions"]),
                      "notes": tuple(data.get("notes") or ())})


PerRun = dict[str, dict[str, dict[str, float | None]]]
"""Condition -> run folder -> its `metrics.run_metrics` (None where not finite)."""


@dataclass(frozen=True)
class StudySummary:
    """A study's summary (summary.json): what was compared, on which score scale and budget,
    each condition's runs, its metrics and verdict, and what the report warns about."""

    study: str
    source: str
    target: str
    algo: str
    threshold: float
    threshold_from: str | None
    random_return: float
    budget: int
    requested_budget: int
    evaluations: EvaluationGrid
    runs: dict[str, RunRecord]
    warnings: tuple[str, ...]
    metrics: MetricsSummary
    alpha: float
    verdict_rule: str
    seed_note: str | None
    per_run: PerRun = field(default_factory=dict)
    sequential: SequentialDesign | None = None
    source_steps: int | None = None
    similarity: Similarity | None = None  # None: the study has no similarity.json
    score: str = "return"  # --score: what the curves, the metrics and the verdict read

    @property
    def conditions(self) -> dict[str, ConditionSummary]:
        """The conditions with metrics (finished runs), in the study's order."""
        return self.metrics.conditions

    @property
    def reference(self) -> str | None:
        return self.metrics.reference

    def to_dict(self) -> dict[str, Any]:
        """summary.json's content."""
        return {
            "study": self.study, "source": self.source, "target": self.target,
            "algo": self.algo, "threshold": self.threshold,
            "threshold_from": self.threshold_from, "random_return": self.random_return,
            "budget": self.budget, "requested_budget": self.requested_budget,
            "evaluations": self.evaluations.to_dict(),
            "runs": {name: record.to_dict() for name, record in self.runs.items()},
            "warnings": list(self.warnings), "metrics": self.metrics.to_dict(),
            "alpha": self.alpha, "verdict_rule": self.verdict_rule,
            "seed_note": self.seed_note, "per_run": self.per_run,
            "sequential": None if self.sequential is None else self.sequential.to_dict(),
            "source_steps": self.source_steps,
            "similarity": None if self.similarity is None else self.similarity.to_dict(),
            "score": self.score,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySummary:
        """A summary.json's content."""
        sequential, similarity = data.get("sequential"), data.get("similarity")
        return cls(
            data["study"], data["source"], data["target"], data["algo"], data["threshold"],
            data.get("threshold_from"), data["random_return"], data["budget"],
            data.get("requested_budget", data["budget"]),
            EvaluationGrid.from_dict(data.get("evaluations") or {
                "steps": data["budget"], "requested": data["budget"]}),
            {name: RunRecord.from_dict(record) for name, record in data["runs"].items()},
            tuple(data.get("warnings", ())), MetricsSummary.from_dict(data["metrics"]),
            float(data["alpha"]), data.get("verdict_rule", ""), data.get("seed_note"),
            data.get("per_run", {}),
            None if sequential is None else SequentialDesign.from_dict(sequential),
            data.get("source_steps"),
            None if similarity is None else Similarity.from_dict(similarity),
            data.get("score", "return"))
