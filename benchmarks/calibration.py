"""Calibration of rltransfer's statistics, by simulation through the real code.

Synthetic learning curves (known truth) go through `metrics.summarize` and `verdict.judge`,
exactly as a study's evaluations.csv files do. Reported:

- interval coverage at 3 / 5 / 10 seeds for every interval the report prints;
- the false-verdict rate under the null (conditions identical in distribution to scratch),
  per comparison and per study of 4 conditions (Holm);
- the power to detect a medium and a large area difference at 5 and 10 seeds.

    python benchmarks/calibration.py                 # ~2,000 studies per setting (minutes)
    python benchmarks/calibration.py --studies 300   # quicker, noisier

`tests/test_calibration.py` runs a fast version of the same code (300 studies; coverage
>= 90% and <= 6% of null studies with a false verdict, binomial slack around the goals of
>= 93% coverage at 5 seeds and <= 5% false verdicts per study).

The curve model, per run: score(t) = s0 + (plateau - s0) (1 - exp(-t / tau)) plus evaluation
noise, with s0, plateau and log tau drawn per seed, and a share of seeds that fail to learn
(plateau near 0), so areas are skewed and bimodal rather than normal. Scores are mapped to
raw returns with random = -50 and threshold = 200 and normalized back by the real code.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rltransfer.report import (
    metrics,  # noqa: E402
    sequential,
    verdict,
)
from rltransfer.report.summary import MetricsSummary  # noqa: E402

RANDOM, THRESHOLD = -50.0, 200.0
BUDGET, EVAL_EVERY = 20_000, 1_000
STEPS = np.arange(0, BUDGET + 1, EVAL_EVERY, dtype=float)
TRUTH_RUNS = 200_000  # runs drawn to compute each model's true values


@dataclass(frozen=True)
class Model:
    """A condition's distribution of learning curves (normalized scores)."""

    start: float = 0.05          # mean initial score
    start_sd: float = 0.05
    plateau: float = 1.2         # mean final score of seeds that learn
    plateau_sd: float = 0.15
    tau: float = 6_000.0         # median learning time constant (steps)
    tau_log_sd: float = 0.5
    fail: float = 0.0            # share of seeds that do not learn
    noise: float = 0.05          # evaluation noise (normalized)
    plateau_df: float = 0.0      # > 0: plateau has Student-t(df) tails (heavy-tailed)
    diverge: float = 0.0         # share of runs that diverge (NaN from a random evaluation on)
    shift: float = 0.0           # added to every score (a shift of the area)

    def curves(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n runs' normalized score curves, shape (n, len(STEPS)); NaN where diverged."""
        s0 = rng.normal(self.start, self.start_sd, n)
        if self.plateau_df:
            plateau = self.plateau + self.plateau_sd * rng.standard_t(self.plateau_df, n)
        else:
            plateau = rng.normal(self.plateau, self.plateau_sd, n)
        plateau = np.where(rng.random(n) < self.fail, rng.normal(0.1, 0.05, n), plateau)
        tau = self.tau * np.exp(rng.normal(0.0, self.tau_log_sd, n))
        shape = 1 - np.exp(-STEPS[None, :] / tau[:, None])
        score = s0[:, None] + (plateau - s0)[:, None] * shape + self.shift
        score = score + rng.normal(0.0, self.noise, score.shape)
        if self.diverge:
            at = rng.integers(1, STEPS.size, n)  # the evaluation from which it is NaN
            gone = (rng.random(n) < self.diverge)[:, None] & (np.arange(STEPS.size) >= at[:, None])
            score = np.where(gone, np.nan, score)
        return score


SCRATCH = Model()
FAILING = replace(SCRATCH, fail=0.2)
"""A harder scratch: one seed in five does not learn (areas bimodal)."""
# Transfer with a real effect: starts higher and learns faster. Cohen's d of the area on
# SCRATCH (see `effect_sizes`): medium 0.5, large 0.8, strong 1.7.
EFFECTS = {"medium": replace(SCRATCH, tau=4_500.0, start=0.08),
           "large": replace(SCRATCH, tau=3_500.0, start=0.10),
           "strong": replace(SCRATCH, tau=1_500.0, start=0.30)}
SCENARIOS = {"smooth (every seed learns)": (EFFECTS["medium"], SCRATCH),
             "1 in 5 seeds fails to learn": (replace(EFFECTS["medium"], fail=0.2), FAILING)}


def _raw(scores: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    returns = RANDOM + scores * (THRESHOLD - RANDOM)
    return [(STEPS, row) for row in returns]


def _per_run(scores: np.ndarray) -> dict[str, np.ndarray]:
    runs = [metrics.run_metrics(t, r, random_return=RANDOM, threshold=THRESHOLD, budget=BUDGET)
            for t, r in _raw(scores)]
    return {key: np.array([run[key] for run in runs]) for key in runs[0]}


def truth(model: Model, ref: Model, seed: int = 12345) -> dict[str, float]:
    """The quantities the intervals estimate, from TRUTH_RUNS runs of each model."""
    rng = np.random.default_rng(seed)
    a = _fast_columns(model.curves(rng, TRUTH_RUNS))
    b = _fast_columns(ref.curves(rng, TRUTH_RUNS))
    half = TRUTH_RUNS // 2  # P(X > Y) from independent pairs
    return {
        "auc": float(a["auc"].mean()),
        "initial": float(a["initial"].mean()),
        "asymptote": float(a["asymptote"].mean()),
        "auc_difference": float(a["auc"].mean() - b["auc"].mean()),
        "jumpstart": float(a["initial"].mean() - b["initial"].mean()),
        "asymptote_gain": float(a["asymptote"].mean() - b["asymptote"].mean()),
        "prob_improvement": float(np.mean(a["auc"][:half] > b["auc"][half:2 * half])),
        "transfer_ratio": float((a["auc"].mean() - b["auc"].mean()) / b["auc"].mean()),
        "time_to_threshold": float(np.median(a["time_to_threshold"])),
        "speedup": float(np.median(b["time_to_threshold"]) / np.median(a["time_to_threshold"])),
    }


def _fast_columns(scores: np.ndarray) -> dict[str, np.ndarray]:
    """`metrics.run_metrics` vectorized over runs, failed (NaN) runs included: checked
    against it in `check_fast_columns` (and in make test)."""
    scores = np.array(scores, dtype=float)
    bad = ~np.isfinite(scores)
    failed = bad.any(axis=1)
    if failed.any():
        cut = np.argmax(bad, axis=1)
        rows = np.flatnonzero(failed)
        before = scores[rows, np.maximum(cut[rows] - 1, 0)]
        worst = np.where(cut[rows] > 0, np.minimum(0.0, before), 0.0)
        later = np.arange(scores.shape[1])[None, :] >= cut[rows][:, None]
        scores[rows] = np.where(later, worst[:, None], scores[rows])
    auc = np.trapezoid(scores, STEPS, axis=1) / BUDGET
    above = scores >= 1.0
    hit = above.copy()  # stays >= 1 for SUSTAIN evaluations in a row
    for k in range(1, metrics.SUSTAIN):
        hit[:, :-k] &= above[:, k:]
        hit[:, -k] = False  # the run ended before it showed the score stays
    first = np.where(hit.any(axis=1), STEPS[np.argmax(hit, axis=1)], np.inf)
    asymptote = np.where(failed, scores[:, -1], scores[:, -metrics.ASYMPTOTE_WINDOW:].mean(1))
    return {"initial": scores[:, 0], "asymptote": asymptote, "auc": auc,
            "time_to_threshold": first, "failed": failed.astype(float)}


def check_fast_columns(rng: np.random.Generator) -> None:
    scores = np.vstack([SCRATCH.curves(rng, 20), replace(SCRATCH, diverge=1.0).curves(rng, 20),
                        replace(SCRATCH, start=-0.3, plateau=-0.2, diverge=1.0).curves(rng, 5)])
    scores[-1, 0] = np.nan  # diverged before its first evaluation
    slow, fast = _per_run(scores), _fast_columns(scores)
    for key in slow:
        np.testing.assert_allclose(slow[key], fast[key], rtol=1e-9, atol=1e-9)


def _covers(est: dict, value: float) -> bool | None:
    low, high = est.get("low"), est.get("high")
    if low is None or high is None:
        return None
    return low - 1e-12 <= value <= high + 1e-12


def _covers_time(est: dict, value: float, budget: int) -> bool | None:
    """Order-statistic interval of the median time, with censored bounds (> budget)."""
    if est.get("low") is None and not est.get("low_censored"):
        return None
    low = math.inf if est.get("low_censored") else est["low"]
    high = math.inf if est.get("high_censored") else est["high"]
    if math.isinf(value):
        return math.isinf(high)
    return low <= value <= high


def _covers_speedup(sp: dict, value: float) -> bool | None:
    low, high = sp.get("low"), sp.get("high")
    if sp.get("point") is None or (low is None and high is None):
        return None
    # A bound that is only a bound covers every value on its open side.
    low_ok = low is None or sp.get("low_bound") == metrics.BELOW or value >= low - 1e-12
    high_ok = high is None or sp.get("high_bound") == metrics.ABOVE or value <= high + 1e-12
    return low_ok and high_ok


INTERVALS = ("auc", "initial", "asymptote", "auc_difference", "jumpstart", "asymptote_gain",
             "prob_improvement", "transfer_ratio", "time_to_threshold", "speedup",
             "speedup_exact")
"""speedup: every reported interval (an end that is only a bound covers its open side by
construction); speedup_exact: only the intervals whose two ends are both exact numbers."""


def coverage(seeds: int, studies: int, rng: np.random.Generator,
             model: Model = EFFECTS["medium"], ref: Model = SCRATCH,
             true: dict[str, float] | None = None) -> dict[str, tuple[float, int]]:
    """Share of studies whose interval covers the truth, and how many studies had one."""
    true = true or truth(model, ref)
    hits: dict[str, list[bool]] = {key: [] for key in INTERVALS}
    for _ in range(studies):
        summary = metrics.summarize({"scratch": _raw(ref.curves(rng, seeds)),
                                     "transfer": _raw(model.curves(rng, seeds))},
                                    random_return=RANDOM, threshold=THRESHOLD, budget=BUDGET)
        entry = summary["conditions"]["transfer"]
        for key in INTERVALS:
            if key == "time_to_threshold":
                ok = _covers_time(entry[key], true[key], BUDGET)
            elif key == "speedup":
                ok = _covers_speedup(entry[key], true[key])
            elif key == "speedup_exact":
                sp = entry["speedup"]
                exact = sp.get("low_bound") == sp.get("high_bound") == metrics.EXACT
                ok = _covers(sp, true["speedup"]) if exact else None
            else:
                ok = _covers(entry[key], true[key])
            if ok is not None:
                hits[key].append(ok)
    return {key: (float(np.mean(v)) if v else math.nan, len(v)) for key, v in hits.items()}


def verdict_rates(seeds: int, studies: int, rng: np.random.Generator, conditions: int,
                  effect: Model | None = None, ref: Model = SCRATCH) -> dict[str, float]:
    """Studies of `conditions` conditions against scratch, all null except the first when
    `effect` is given. Returns the share of studies with any false verdict (a verdict on a
    null condition), the share of null comparisons with a false verdict, and the power
    (share of studies calling the effect condition positive)."""
    false_studies = false_comparisons = comparisons = detected = 0
    for _ in range(studies):
        curves = {"scratch": _raw(ref.curves(rng, seeds))}
        for index in range(conditions):
            model = effect if (effect is not None and index == 0) else ref
            curves[f"c{index}"] = _raw(model.curves(rng, seeds))
        summary = metrics.summarize(curves, random_return=RANDOM, threshold=THRESHOLD,
                                    budget=BUDGET)
        found = _labels(summary)
        labels = [found[f"c{i}"] for i in range(conditions)]
        null = labels[1:] if effect is not None else labels
        wrong = sum(label in verdict.CLAIMS for label in null)
        false_studies += wrong > 0
        false_comparisons += wrong
        comparisons += len(null)
        detected += effect is not None and labels[0] == verdict.POSITIVE
    return {"false_per_study": false_studies / studies,
            "false_per_comparison": false_comparisons / max(comparisons, 1),
            "power": detected / studies if effect is not None else math.nan}


def effect_sizes() -> dict[str, float]:
    """Standardized area difference (Cohen's d on the AUC) of each effect model."""
    rng = np.random.default_rng(7)
    base = _fast_columns(SCRATCH.curves(rng, TRUTH_RUNS))["auc"]
    out = {}
    for name, model in EFFECTS.items():
        auc = _fast_columns(model.curves(rng, TRUTH_RUNS))["auc"]
        pooled = math.sqrt((auc.var() + base.var()) / 2)
        out[name] = float((auc.mean() - base.mean()) / pooled)
    return out


def matched(model: Model, ref: Model = SCRATCH) -> Model:
    """`model` with its plateau set so that its mean area equals `ref`'s (the area is linear
    in the plateau): a null with the same mean and a different shape."""
    rng = np.random.default_rng(11)

    def area(m: Model) -> float:
        return float(_fast_columns(m.curves(rng, TRUTH_RUNS))["auc"].mean())

    low, high = area(replace(model, plateau=1.0)), area(replace(model, plateau=2.0))
    return replace(model, plateau=1.0 + (area(ref) - low) / (high - low))


def families() -> dict[str, tuple[Model, Model]]:
    """The null families of issue 18: (condition, scratch), equal mean area."""
    return {
        "smooth": (SCRATCH, SCRATCH),
        "bimodal p=0.2": (FAILING, FAILING),
        "bimodal p=0.4": (replace(SCRATCH, fail=0.4), replace(SCRATCH, fail=0.4)),
        "heavy-tailed (t2 plateau)": (replace(SCRATCH, plateau_df=2), replace(SCRATCH,
                                                                            plateau_df=2)),
        "heteroscedastic (plateau SD x3)": (replace(SCRATCH, plateau_sd=0.45), SCRATCH),
        "condition fails in 20%, higher plateau": (matched(FAILING), SCRATCH),
        "condition fails in 40%, higher plateau": (matched(replace(SCRATCH, fail=0.4)),
                                                   SCRATCH),
        "scratch fails in 20% (mirror)": (SCRATCH, matched(FAILING)),
        "scratch fails in 40% (mirror)": (SCRATCH, matched(replace(SCRATCH, fail=0.4))),
    }


def traps() -> dict[str, tuple[Model, Model, str]]:
    """Non-null cases and the label each must never get."""
    return {
        "starts better (+0.5), ends at 0.9 of the threshold: never positive":
            (replace(SCRATCH, start=0.55, plateau=0.9, plateau_sd=0.03, tau=3_000.0), SCRATCH,
             verdict.POSITIVE),
        "starts worse, learns faster, ends higher: never negative":
            (replace(SCRATCH, start=-0.3, tau=2_000.0, plateau=1.5), SCRATCH, verdict.NEGATIVE),
        "30% of the condition's runs diverge: never no clear difference":
            (replace(SCRATCH, diverge=0.3), SCRATCH, verdict.NO_CLEAR),
    }


def _labels(summary: dict, final: bool = True) -> dict[str, str]:
    """Each condition's verdict label (`verdict.judge`) of a `metrics.summarize` result."""
    (verdicts,) = verdict.judge([MetricsSummary.from_dict(summary)], metrics.DEFAULT_ALPHA,
                                final=final)
    return {name: judged.label for name, judged in verdicts.items()}


def simulate(conditions: list[Model], ref: Model, seeds: int | sequential.Design,
             rng: np.random.Generator, last: dict | None = None) -> tuple[list[str], float]:
    """One study through the real summary (`metrics.summarize_columns`), sequential
    analysis and verdict: the conditions' labels and the mean seeds per arm it used. With a
    design, batches are added as the runner adds them (`sequential.next_counts`). `last`,
    if given, receives the final summary (``last["summary"]``)."""
    most = seeds.max if isinstance(seeds, sequential.Design) else seeds
    arms = {"scratch": _fast_columns(ref.curves(rng, most))}
    for index, model in enumerate(conditions):
        arms[f"c{index}"] = _fast_columns(model.curves(rng, most))
    names = [f"c{i}" for i in range(len(conditions))]
    if not isinstance(seeds, sequential.Design):
        summary = metrics.summarize_columns(arms, budget=BUDGET, verdict_only=True)
        found = _labels(summary)
        if last is not None:
            last["summary"] = summary
        return [found[c] for c in names], float(most)
    counts = {name: seeds.first for name in arms}
    while True:
        cols = {c: {k: v[:counts[c]] for k, v in arms[c].items()} for c in arms}
        summary = metrics.summarize_columns(cols, budget=BUDGET, verdict_only=True)
        for c in names:
            summary["conditions"][c]["sequential"] = sequential.analyze(cols[c],
                                                                       cols["scratch"], seeds)
        found = _labels(summary, final=False)
        labels = {c: found[c] for c in names}
        after = sequential.next_counts(seeds, counts, labels, verdict.CLAIMS)
        if after is None:  # the last look: judged as final, as the report does
            found = _labels(summary, final=True)
            if last is not None:
                last["summary"] = summary
            used = float(np.mean(list(counts.values())))
            return [found[c] for c in names], used
        counts = after


def rates(conditions: list[Model], ref: Model, seeds: int | sequential.Design, studies: int,
          rng: np.random.Generator) -> dict[str, float]:
    """Over `studies` simulated studies: the share with any claim (positive, negative or
    mixed) on a condition (on null conditions: false verdicts per study), the share with a
    positive or negative one, claims per comparison, the share of the first condition
    labelled positive (power), and the mean seeds per arm."""
    claim = strict = positive = claims = 0
    seeds_used = 0.0
    for _ in range(studies):
        labels, used = simulate(conditions, ref, seeds, rng)
        claimed = [label in verdict.CLAIMS for label in labels]
        claim += any(claimed)
        claims += sum(claimed)
        strict += any(label in (verdict.POSITIVE, verdict.NEGATIVE) for label in labels)
        positive += labels[0] == verdict.POSITIVE
        seeds_used += used
    return {"claim": claim / studies, "strict": strict / studies,
            "per_comparison": claims / (studies * len(conditions)),
            "positive": positive / studies, "seeds": seeds_used / studies}


AUTO = sequential.Design()  # --seeds auto: 5, 10, 15, 20
DESIGNS: tuple[int | sequential.Design, ...] = (5, 10, 20, AUTO)
PARTS = ("nulls", "traps", "power", "coverage")


def _name(design: int | sequential.Design) -> str:
    return "auto (5..20)" if isinstance(design, sequential.Design) else f"{design} seeds"


def null_table(studies: int, rng: np.random.Generator, only: str = "",
               designs: tuple = DESIGNS) -> None:
    """False verdicts per study (and per comparison with 4 conditions) over the null
    families whose name contains one of the comma-separated texts in `only` (all: "")."""
    print(f"false verdicts (any positive, negative or mixed label on a null condition), "
          f"{studies} studies per cell: per study; with 4 conditions also per comparison; "
          "for auto the mean seeds per arm")
    print("| null family | conditions | " + " | ".join(_name(d) for d in designs) + " |")
    print("|---|---|" + "---|" * len(designs))
    for family, (model, ref) in families().items():
        if not any(text in family for text in only.split(",")):
            continue
        for k in (1, 4):
            cells = []
            for d in designs:
                r = rates([model] * k, ref, d, studies, rng)
                cell = f"{r['claim']:.1%}"
                if k > 1:
                    cell += f" / {r['per_comparison']:.1%}"
                if isinstance(d, sequential.Design):
                    cell += f" ({r['seeds']:.1f})"
                cells.append(cell)
            print(f"| {family} | {k} | " + " | ".join(cells) + " |", flush=True)


def trap_table(studies: int, rng: np.random.Generator, designs: tuple = DESIGNS) -> None:
    """Per trap and design: the share of studies with the forbidden label, and in brackets
    the share among the studies whose sample shows the trap: for the diverging trap, a
    diverged condition run and a lower mean area (a sample without one cannot show it); for
    the others, all studies. Then the labels of each trap at each design."""
    print(f"\ntraps: share of {studies} studies with the forbidden label (1 condition); in "
          "brackets: among the studies whose sample shows the trap")
    print("| trap | " + " | ".join(_name(d) for d in designs) + " |\n|---|"
          + "---|" * len(designs))
    spread = []
    for trap, (model, ref, forbidden) in traps().items():
        cells = []
        for d in designs:
            labels, shown, hits = {}, 0, 0
            for _ in range(studies):
                last: dict = {}
                label = simulate([model], ref, d, rng, last)[0][0]
                labels[label] = labels.get(label, 0) + 1
                entry = last["summary"]["conditions"]["c0"]
                show = model.diverge == 0 or (entry.get("failed_runs", 0) > 0
                                              and entry["auc_difference"]["point"] < 0)
                shown += show
                hits += show and label == forbidden
            cell = f"{labels.get(forbidden, 0) / studies:.1%}"
            if model.diverge:
                cell += f" ({hits / max(shown, 1):.1%} of {shown})"
            cells.append(cell)
            spread.append(f"| {trap.split(':')[0]} | {_name(d)} | " + ", ".join(
                f"{k} {v / studies:.1%}" for k, v in sorted(labels.items(),
                                                            key=lambda kv: -kv[1])) + " |")
        print(f"| {trap} | " + " | ".join(cells) + " |", flush=True)
    print("\n| trap | design | labels |\n|---|---|---|\n" + "\n".join(spread))


def power_table(studies: int, rng: np.random.Generator, designs: tuple = DESIGNS) -> None:
    sd = float(_fast_columns(SCRATCH.curves(np.random.default_rng(5), TRUTH_RUNS))["auc"].std())
    shifted = replace(SCRATCH, shift=1.5 * sd)
    print(f"\npower: a shift of 1.5 scratch-SDs of the area (+{1.5 * sd:.3f}), 1 condition, "
          f"{studies} studies")
    print("| design | positive | mean seeds per arm |\n|---|---|---|")
    for d in (*designs, 8, 9, 12, 16):
        r = rates([shifted], SCRATCH, d, studies, rng)
        print(f"| {_name(d)} | {r['positive']:.1%} | {r['seeds']:.1f} |", flush=True)


def shape_coverage_table(studies: int, rng: np.random.Generator) -> None:
    """Coverage of the area difference and the asymptote gain where the two arms' shapes
    differ (equal mean area), at fixed seed counts."""
    keys = ("auc_difference", "asymptote_gain", "asymptote")
    print(f"\ncoverage, nominal 95%, shape-differing nulls ({studies} studies per cell)")
    print("| family | interval | 3 seeds | 5 seeds | 10 seeds | auto |\n|---|---|---|---|---|---|")
    for family, (model, ref) in families().items():
        if "higher plateau" not in family and "mirror" not in family:
            continue
        true = truth(model, ref)
        table = {n: coverage(n, studies, rng, model, ref, true) for n in (3, 5, 10)}
        auto = auto_coverage(model, ref, studies, rng, true, keys)
        for key in keys:
            print(f"| {family} | {key} | "
                  + " | ".join(f"{table[n][key][0]:.1%}" for n in (3, 5, 10))
                  + f" | {auto[key]:.1%} |", flush=True)


def auto_coverage(model: Model, ref: Model, studies: int, rng: np.random.Generator,
                  true: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    """Coverage of the intervals an auto study reports when it stops (its seeds depend on
    the data, so this is not the fixed-n coverage)."""
    hits = {key: 0 for key in keys}
    for _ in range(studies):
        last: dict = {}
        simulate([model], ref, AUTO, rng, last)
        entry = last["summary"]["conditions"]["c0"]
        for key in keys:
            hits[key] += bool(_covers(entry[key], true[key]))
    return {key: hits[key] / studies for key in keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=2000,
                        help="simulated studies per setting (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--realistic", action="store_true",
                        help="only issue 18's tables: realistic nulls, traps, power and "
                             "seeds of --seeds auto, coverage where shapes differ")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"with --realistic: which tables ({','.join(PARTS)})")
    parser.add_argument("--designs", default="5,10,20,auto",
                        help="with --realistic: fixed seed counts and/or auto (default "
                             "5,10,20,auto)")
    parser.add_argument("--families", default="",
                        help="with --realistic: only the null families whose name contains "
                             "one of these comma-separated texts (to split the run over "
                             "processes)")
    args = parser.parse_args(argv)
    if args.realistic:
        started = time.perf_counter()
        rng = np.random.default_rng(args.seed)
        designs = tuple(AUTO if d == "auto" else int(d) for d in args.designs.split(","))
        tables = {"nulls": lambda: null_table(args.studies, rng, args.families, designs),
                  "traps": lambda: trap_table(args.studies, rng, designs),
                  "power": lambda: power_table(args.studies, rng, designs),
                  "coverage": lambda: shape_coverage_table(args.studies, rng)}
        for part in args.parts.split(","):
            tables[part]()
        print(f"\n{time.perf_counter() - started:.0f} s")
        return 0
    rng = np.random.default_rng(args.seed)
    check_fast_columns(rng)
    started = time.perf_counter()
    d = effect_sizes()
    print("effect sizes (Cohen's d of the area): "
          + ", ".join(f"{name} {value:.2f}" for name, value in d.items()) + "\n")
    for scenario, (model, ref) in SCENARIOS.items():
        true = truth(model, ref)
        print(f"interval coverage, nominal 95%, {scenario}: medium effect vs scratch "
              f"({args.studies} studies per seed count; in brackets: studies where the "
              "interval was reported)")
        table = {seeds: coverage(seeds, args.studies, rng, model, ref, true)
                 for seeds in (3, 5, 10)}
        print("| interval | 3 seeds | 5 seeds | 10 seeds |\n|---|---|---|---|")
        for key in INTERVALS:
            cells = [f"{table[s][key][0]:.1%} ({table[s][key][1]})" for s in (3, 5, 10)]
            print(f"| {key} | " + " | ".join(cells) + " |")
        print()
    print("false verdicts under the null (Holm across the conditions of a study)")
    print("| scratch | seeds | 1 condition: per comparison | 4 conditions: per comparison | "
          "4 conditions: per study |\n|---|---|---|---|---|")
    for scenario, (_, ref) in SCENARIOS.items():
        for seeds in (3, 5, 10):
            one = verdict_rates(seeds, args.studies, rng, 1, ref=ref)
            four = verdict_rates(seeds, args.studies, rng, 4, ref=ref)
            print(f"| {scenario} | {seeds} | {one['false_per_comparison']:.1%} | "
                  f"{four['false_per_comparison']:.1%} | {four['false_per_study']:.1%} |")
    print("\npower: share of studies calling the effect condition positive transfer "
          "(smooth scratch)")
    print("| effect (d) | seeds | alone | with 3 null conditions (Holm over 4) |"
          "\n|---|---|---|---|")
    for name, effect in EFFECTS.items():
        for seeds in (5, 10):
            cells = [verdict_rates(seeds, args.studies, rng, k, effect)["power"] for k in (1, 4)]
            print(f"| {name} ({d[name]:.1f}) | {seeds} | " + " | ".join(f"{c:.1%}" for c in cells)
                  + " |")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
