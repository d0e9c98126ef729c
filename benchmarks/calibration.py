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

from rltransfer import metrics, verdict  # noqa: E402

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

    def curves(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n runs' normalized score curves, shape (n, len(STEPS))."""
        s0 = rng.normal(self.start, self.start_sd, n)
        plateau = rng.normal(self.plateau, self.plateau_sd, n)
        plateau = np.where(rng.random(n) < self.fail, rng.normal(0.1, 0.05, n), plateau)
        tau = self.tau * np.exp(rng.normal(0.0, self.tau_log_sd, n))
        shape = 1 - np.exp(-STEPS[None, :] / tau[:, None])
        score = s0[:, None] + (plateau - s0)[:, None] * shape
        return score + rng.normal(0.0, self.noise, score.shape)


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
    """`metrics.run_metrics` vectorized over runs (for the truth only; checked against it
    in `check_fast_columns`)."""
    auc = np.trapezoid(scores, STEPS, axis=1) / BUDGET
    hit = scores >= 1.0
    first = np.where(hit.any(axis=1), STEPS[np.argmax(hit, axis=1)], np.inf)
    return {"initial": scores[:, 0], "asymptote": scores[:, -metrics.ASYMPTOTE_WINDOW:].mean(1),
            "auc": auc, "time_to_threshold": first}


def check_fast_columns(rng: np.random.Generator) -> None:
    scores = SCRATCH.curves(rng, 20)
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
        verdict.judge([summary], metrics.DEFAULT_ALPHA)
        labels = [summary["conditions"][f"c{i}"]["verdict"]["label"] for i in range(conditions)]
        null = labels[1:] if effect is not None else labels
        wrong = sum(label != verdict.NO_CLEAR for label in null)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=2000,
                        help="simulated studies per setting (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    args = parser.parse_args(argv)
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
