"""Calibration for a bounded score (``--score success``), by simulation through the real code.

Success-rate curves are not the smooth, roughly normal returns `calibration.py` simulates:
each evaluation is k successes out of ``--eval-episodes`` episodes (discrete, in [0, 1]),
curves pile up at 0 (seeds that never succeed) and at 1 (seeds that saturate), and a seed
fails completely in one arm and not in the other. This script simulates studies of that kind
and passes them through what a study's files go through under ``--score success``: the
random policy's success rate measured on the target (the 0 of the normalized score, 1 being
100% success), the per-run metrics (`metrics.run_metrics`, vectorized in
`calibration._fast_columns` and checked against it here), `metrics.summarize_columns`, and
the verdict with Holm's correction (`verdict.judge`). Reported:

- false verdicts under nulls (condition and scratch equal in mean success area), per study
  of 1 and of 4 conditions (Holm), at 3, 5 and 10 seeds (the goal: <= alpha = 5%);
- coverage of the primary claim's interval and of the final success rate's, at 3, 5, 10;
- coverage of Continual World's forward transfer interval (`report.success`): Fieller's, as
  the report uses, against a percentile bootstrap of the same ratio.

    python benchmarks/success_calibration.py                 # 2,000 studies per cell
    python benchmarks/success_calibration.py --studies 300   # quicker, noisier

`tests/test_calibration.py` runs a fast version (a few hundred studies per check).

The curve model, per seed: success probability p(t) = p0 + (plateau - p0)(1 - exp(-t/tau))
with plateau ~ N(mean, sd) cut to [0, 1] (so many seeds sit at 1), log tau ~ N, and a share
`fail` of seeds that never leave p0; each of the 21 evaluations is Binomial(10, p(t)) / 10.
The random policy's rate is Binomial(100, p0) / 100 once per study.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import calibration as base  # noqa: E402  (the vectorized per-run metrics, the labels)

from rltransfer.report import metrics, verdict  # noqa: E402
from rltransfer.report.success import success_columns, success_summary  # noqa: E402

STEPS, BUDGET = base.STEPS, base.BUDGET
EPISODES = 10  # --eval-episodes' default
RANDOM_EPISODES = 100  # preflight.RANDOM_EPISODES
TRUTH_RUNS = 100_000


@dataclass(frozen=True)
class SuccessModel:
    """A condition's distribution of success-rate curves."""

    p0: float = 0.02            # the random (untrained) policy's success probability
    plateau: float = 0.9        # mean final success probability of seeds that learn (cut at 1)
    plateau_sd: float = 0.15
    tau: float = 6_000.0        # median learning time constant (steps)
    tau_log_sd: float = 0.5
    fail: float = 0.0           # share of seeds that never succeed more than p0

    def probabilities(self, rng: np.random.Generator, n: int) -> np.ndarray:
        plateau = np.clip(rng.normal(self.plateau, self.plateau_sd, n), 0.0, 1.0)
        plateau = np.where(rng.random(n) < self.fail, self.p0, plateau)
        tau = self.tau * np.exp(rng.normal(0.0, self.tau_log_sd, n))
        shape = 1 - np.exp(-STEPS[None, :] / tau[:, None])
        return self.p0 + (plateau - self.p0)[:, None] * shape

    def rates(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n runs' evaluated success rates, shape (n, len(STEPS)): k / EPISODES."""
        return rng.binomial(EPISODES, self.probabilities(rng, n)) / EPISODES


SCRATCH = SuccessModel()


@cache
def truth(model: SuccessModel) -> tuple[float, float]:
    """(mean success area over the budget, mean final success rate) of TRUTH_RUNS runs."""
    rates = model.rates(np.random.default_rng(12345), TRUTH_RUNS)
    return (float(np.trapezoid(rates, STEPS, axis=1).mean() / BUDGET),
            float(rates[:, -metrics.ASYMPTOTE_WINDOW:].mean()))


def matched(model: SuccessModel, ref: SuccessModel) -> SuccessModel:
    """`model` with its tau set (bisection on log tau) so its mean success area is `ref`'s."""
    goal = truth(ref)[0]
    low, high = math.log(200.0), math.log(200_000.0)
    for _ in range(30):
        mid = (low + high) / 2
        if truth(replace(model, tau=math.exp(mid)))[0] > goal:
            low = mid  # learns too fast: slower
        else:
            high = mid
    return replace(model, tau=math.exp((low + high) / 2))


@lru_cache(maxsize=1)
def families() -> dict[str, tuple[SuccessModel, SuccessModel]]:
    """Null families: (condition, scratch) with equal mean success area."""
    slow = replace(SCRATCH, tau=9_000.0)
    return {
        "identical, most seeds saturate at 100%": (replace(SCRATCH, plateau=1.0),
                                                   replace(SCRATCH, plateau=1.0)),
        "identical, 40% of seeds never succeed": (replace(SCRATCH, fail=0.4),
                                                  replace(SCRATCH, fail=0.4)),
        "identical, hard: 80% of seeds never succeed": (replace(SCRATCH, fail=0.8),
                                                        replace(SCRATCH, fail=0.8)),
        "condition fails in 20%, learns faster": (matched(replace(slow, fail=0.2), slow), slow),
        "scratch fails in 20% (mirror)": (slow, matched(replace(slow, fail=0.2), slow)),
        "impossible task: no seed ever succeeds": (replace(SCRATCH, fail=1.0),
                                                   replace(SCRATCH, fail=1.0)),
    }


EFFECT = (replace(SCRATCH, tau=2_500.0), SCRATCH)
"""A real effect for the coverage and power rows: transfer learns faster."""


def normalized(rates: np.ndarray, random: float) -> np.ndarray:
    return (rates - random) / (1.0 - random)


def random_rate(model: SuccessModel, rng: np.random.Generator) -> float:
    """The random policy's measured success rate (preflight: 100 episodes on the target)."""
    return float(rng.binomial(RANDOM_EPISODES, model.p0) / RANDOM_EPISODES)


class Arm:
    """A model as `calibration.simulate` draws arms (``curves(rng, n)``: normalized scores),
    on a study's own measured random rate: scratch's draw (simulate draws it first) measures
    it anew, and the conditions' draws share it."""

    def __init__(self, model: SuccessModel, scale: dict[str, float], measures: bool) -> None:
        self.model, self.scale, self.measures = model, scale, measures

    def curves(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.measures:
            self.scale["random"] = random_rate(self.model, rng)
        return normalized(self.model.rates(rng, n), self.scale["random"])


def auto_claims(model: SuccessModel, ref: SuccessModel, conditions: int, studies: int,
                rng: np.random.Generator) -> tuple[float, float]:
    """--seeds auto (5, 10, 15, 20 per arm) through `calibration.simulate` (the real
    sequential analysis and verdict): (share of studies with any claim, mean seeds per arm)."""
    scale: dict[str, float] = {}
    arms = [Arm(model, scale, False)] * conditions
    claims, seeds = 0, 0.0
    for _ in range(studies):
        labels, used = base.simulate(arms, Arm(ref, scale, True), base.AUTO, rng)
        claims += any(label in verdict.CLAIMS for label in labels)
        seeds += used
    return claims / studies, seeds / studies


def check_fast_columns(rng: np.random.Generator) -> None:
    """The vectorized per-run metrics equal `metrics.run_metrics` on success curves."""
    rates = np.vstack([SCRATCH.rates(rng, 20), replace(SCRATCH, fail=1.0).rates(rng, 5),
                       replace(SCRATCH, plateau=1.0, plateau_sd=0.0, tau=300.0).rates(rng, 5)])
    random = 0.03
    fast = base._fast_columns(normalized(rates, random))
    runs = [metrics.run_metrics(STEPS, r, random_return=random, threshold=1.0, budget=BUDGET)
            for r in rates]
    for key in fast:
        np.testing.assert_allclose([run[key] for run in runs], fast[key], rtol=1e-9, atol=1e-9)


def study(models: list[SuccessModel], ref: SuccessModel, seeds: int,
          rng: np.random.Generator) -> tuple[list[str], dict, float, dict[str, np.ndarray]]:
    """One simulated study: (each condition's label, the summary, the random rate, each
    arm's raw success-rate curves)."""
    random = random_rate(ref, rng)
    raw = {"scratch": ref.rates(rng, seeds)}
    raw.update({f"c{i}": model.rates(rng, seeds) for i, model in enumerate(models)})
    arms = {name: base._fast_columns(normalized(r, random)) for name, r in raw.items()}
    summary = metrics.summarize_columns(arms, budget=BUDGET, verdict_only=True)
    labels = base._labels(summary)
    return [labels[f"c{i}"] for i in range(len(models))], summary, random, raw


def false_verdicts(model: SuccessModel, ref: SuccessModel, seeds: int, conditions: int,
                   studies: int, rng: np.random.Generator) -> float:
    """Share of studies with any claim (positive, negative, mixed) on a null condition."""
    wrong = 0
    for _ in range(studies):
        labels, *_ = study([model] * conditions, ref, seeds, rng)
        wrong += any(label in verdict.CLAIMS for label in labels)
    return wrong / studies


def percentile_bootstrap_ft(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
                            draws: int = 1_000) -> tuple[float, float] | None:
    """A percentile bootstrap of FT (resampling runs within each arm): what the report does
    not use, measured for comparison."""
    bx = x[rng.integers(0, x.size, (draws, x.size))].mean(1)
    by = y[rng.integers(0, y.size, (draws, y.size))].mean(1)
    ok = by < 1.0
    if ok.mean() < 0.99:
        return None
    ft = (bx[ok] - by[ok]) / (1.0 - by[ok])
    return float(np.quantile(ft, 0.025)), float(np.quantile(ft, 0.975))


def coverage(model: SuccessModel, ref: SuccessModel, seeds: int, studies: int,
             rng: np.random.Generator) -> dict[str, tuple[float, int]]:
    """Coverage (share, studies with the interval) of the primary claim's interval, the final
    success rate's (model's arm) and FT's: Fieller (the report's) and a percentile bootstrap."""
    (a_model, final_truth), (a_ref, _) = truth(model), truth(ref)
    true_ft = (a_model - a_ref) / (1.0 - a_ref)
    hits: dict[str, list[bool]] = {k: [] for k in ("auc_difference", "success", "ft_fieller",
                                                   "ft_bootstrap")}
    for _ in range(studies):
        _, summary, random, raw = study([model], ref, seeds, rng)
        # the report's success metrics (report.success), on the study's curves
        found = success_summary({name: [(STEPS, row) for row in rates]
                                 for name, rates in raw.items()}, BUDGET, "scratch", 0.95)
        areas = {name: success_columns([(STEPS, row) for row in rates], BUDGET)["auc"]
                 for name, rates in raw.items()}
        diff = summary["conditions"]["c0"]["auc_difference"]
        target = (a_model - a_ref) / (1.0 - random)  # on this study's normalized scale
        if diff["low"] is not None:
            hits["auc_difference"].append(diff["low"] - 1e-12 <= target <= diff["high"] + 1e-12)
        final = found["c0"]["success"]
        if final["low"] is not None:
            hits["success"].append(final["low"] <= final_truth <= final["high"])
        ft = found["c0"]["forward_transfer"]
        if ft["low"] is not None:
            hits["ft_fieller"].append(ft["low"] - 1e-12 <= true_ft <= ft["high"] + 1e-12)
        boot = percentile_bootstrap_ft(areas["c0"], areas["scratch"], rng)
        if boot is not None:
            hits["ft_bootstrap"].append(boot[0] <= true_ft <= boot[1])
    return {k: (float(np.mean(v)) if v else math.nan, len(v)) for k, v in hits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=2000,
                        help="simulated studies per cell (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--parts", default="nulls,coverage,auto",
                        help="which tables: nulls (fixed seeds), coverage, auto (--seeds auto "
                             "on the shape-differing nulls) (default: all)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    check_fast_columns(rng)
    started = time.perf_counter()
    parts = args.parts.split(",")
    if "nulls" in parts:
        null_table(args.studies, rng)
    if "coverage" in parts:
        coverage_table(args.studies, rng)
    if "auto" in parts:
        print(f"\n--seeds auto (5..20) on the shape-differing nulls ({args.studies} studies per "
              "cell): studies with any claim (mean seeds per arm); 1 / 4 conditions (Holm)")
        print("| null family | 1 condition | 4 conditions |\n|---|---|---|")
        for family, (model, ref) in families().items():
            if "20%" not in family:
                continue
            cells = [auto_claims(model, ref, k, args.studies, rng) for k in (1, 4)]
            print(f"| {family} | " + " | ".join(f"{c:.1%} ({n:.1f})" for c, n in cells)
                  + " |", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


def null_table(studies: int, rng: np.random.Generator) -> None:
    print(f"false verdicts under bounded-score nulls ({studies} studies per cell): share "
          "of studies with any positive, negative or mixed label; 1 / 4 conditions (Holm)")
    print("| null family | 3 seeds | 5 seeds | 10 seeds |\n|---|---|---|---|")
    for family, (model, ref) in families().items():
        cells = [" / ".join(f"{false_verdicts(model, ref, n, k, studies, rng):.1%}"
                            for k in (1, 4)) for n in (3, 5, 10)]
        print(f"| {family} | " + " | ".join(cells) + " |", flush=True)


def coverage_table(studies: int, rng: np.random.Generator) -> None:
    print(f"\ncoverage, nominal 95% ({studies} studies per cell; in brackets: studies "
          "where the interval was reported)")
    cases = {"transfer learns faster (tau 2,500 vs 6,000)": EFFECT,
             "null: 40% of seeds never succeed": families()[
                 "identical, 40% of seeds never succeed"],
             "null: condition fails in 20%, learns faster": families()[
                 "condition fails in 20%, learns faster"]}
    print("| case | interval | 3 seeds | 5 seeds | 10 seeds |\n|---|---|---|---|---|")
    for case, (model, ref) in cases.items():
        table = {n: coverage(model, ref, n, studies, rng) for n in (3, 5, 10)}
        for key in ("auc_difference", "success", "ft_fieller", "ft_bootstrap"):
            print(f"| {case} | {key} | " + " | ".join(
                f"{table[n][key][0]:.1%} ({table[n][key][1]})" for n in (3, 5, 10)) + " |",
                flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
