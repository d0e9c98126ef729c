"""Coverage of the matrix's rank-correlation interval (similarity measure vs area difference),
by simulation through the real code (`rltransfer.report.rank_correlation.interval`).

A matrix gives a handful of source -> target pairs, each with a similarity measure (zero-shot
score, classifier accuracy, feature distance) and a measured area difference against scratch.
The synthetic pairs look like that: a latent relatedness per pair drives both, through
monotone but non-linear maps, with measurement noise, ties (a measure that saturates, e.g. a
zero-shot score at the threshold or an accuracy of 1), heavy tails (seeds that fail make the
area difference heavy-tailed), pairs where transfer breaks whatever the measure says, and
crossed designs where pairs share their source or target (and the target's scratch runs).

The truth of each setting is Spearman's r_s of 400,000 independent pairs drawn from it (the
population grade correlation). Reported: the share of simulated matrices whose interval holds
it, and the mean width; "—" where the code gives no interval (fewer than `min_pairs`).

    python benchmarks/similarity_coverage.py                # 4,000 matrices per cell (~1 min)
    python benchmarks/similarity_coverage.py --matrices 500  # quicker, noisier

`tests/test_similarity.py` runs a fast version of the same code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rltransfer.report.rank_correlation import (  # noqa: E402
    STANDARD_ERRORS,
    interval,
    min_pairs,
    spearman,
)

TRUTH_PAIRS = 400_000
Draw = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]


def _copula(rng: np.random.Generator, size: int, n: int,
            rho_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Normal-copula pairs whose Spearman correlation is `rho_s` (Pearson 2 sin(pi rho_s/6))."""
    r = 2 * np.sin(np.pi * rho_s / 6)
    a, b = rng.normal(size=(size, n)), rng.normal(size=(size, n))
    return a, r * a + np.sqrt(1 - r * r) * b


def _related(rho_s: float) -> Draw:
    def draw(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        u, v = _copula(rng, size, n, rho_s)
        return 1 / (1 + np.exp(-2 * u)), np.tanh(v) * 0.8  # accuracy-like, area-like
    return draw


def _saturated(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A zero-shot score that reaches the threshold for many pairs (ties at 1, and rounded
    to 0.1), and an area difference rounded to 0.05: heavy ties on both sides."""
    u = rng.normal(size=(size, n))
    x = np.minimum(1.0, np.round(0.8 + 0.4 * u + 0.2 * rng.normal(size=u.shape), 1))
    y = np.round(0.3 * np.tanh(u) + 0.15 * rng.normal(size=u.shape), 2) // 0.05 * 0.05
    return x, y


def _heavy(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A distance that falls with relatedness; an area difference with Student-t(2) noise
    (seeds that fail), so the dependence has heavy tails."""
    u = rng.normal(size=(size, n))
    x = np.exp(-u) * (1 + 0.3 * rng.normal(size=u.shape) ** 2)
    y = np.tanh(u) + 0.4 * rng.standard_t(2, size=u.shape)
    return x, y


def _t_copula(pearson: float) -> Draw:
    def draw(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = rng.normal(size=(size, n)), rng.normal(size=(size, n))
        w = np.sqrt(rng.chisquare(2, size=(size, n)) / 2)
        return a / w, (pearson * a + np.sqrt(1 - pearson ** 2) * b) / w
    return draw


def _broken(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A quarter of the pairs where transfer breaks (a negative area difference with a heavy
    tail) whatever the measure says."""
    u, v = _copula(rng, size, n, 0.8)
    broken = rng.random((size, n)) < 0.25
    return u, np.where(broken, -1.5 + 0.5 * rng.standard_t(2, size=(size, n)), v)


def crossed(sources: int, targets: int, shared: float = 0.7) -> Draw:
    """An S x T matrix: relatedness = source effect + target effect + the pair's own; the
    area difference shares its target's scratch noise (sd `shared`). The pairs are not
    independent; with `n` left to `sources * targets`. Truth: independent pairs."""
    def draw(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n == TRUTH_PAIRS:  # the population: every pair its own source and target
            s, t, g = (rng.normal(size=(size, n)) for _ in range(3))
            shape: tuple[int, ...] = (size, n)
        else:
            s = np.repeat(rng.normal(size=(size, sources, 1)), targets, axis=2)
            t = np.repeat(rng.normal(size=(size, 1, targets)), sources, axis=1)
            g = np.repeat(rng.normal(size=(size, 1, targets)), sources, axis=1)
            shape = (size, sources, targets)
        u = s + t + 0.7 * rng.normal(size=shape)
        x = u + 0.6 * rng.normal(size=shape)
        y = np.tanh(u) + shared * g + 0.3 * rng.normal(size=shape)
        return x.reshape(size, -1), y.reshape(size, -1)
    return draw


@dataclass(frozen=True)
class Setting:
    name: str
    draw: Draw


INDEPENDENT = [
    Setting("no relation (r_s 0)", _related(0.0)),
    Setting("moderate (normal copula, 0.5)", _related(0.5)),
    Setting("strong (0.9)", _related(0.9)),
    Setting("near perfect (0.97)", _related(0.97)),
    Setting("negative, heavy tails", _heavy),
    Setting("heavy-tailed copula (t2, 0.6)", _t_copula(0.6)),
    Setting("heavy-tailed copula (t2, 0.9)", _t_copula(0.9)),
    Setting("saturated measure, ties", _saturated),
    Setting("a quarter of pairs break", _broken),
]
CROSSED = [(2, 3), (2, 4), (3, 3), (3, 4), (4, 4)]


def truth(setting: Setting) -> float:
    x, y = setting.draw(np.random.default_rng(12345), 1, TRUTH_PAIRS)
    return float(spearman(x, y)[0])


def coverage(setting: Setting, n: int, matrices: int, rng: np.random.Generator,
             true: float, confidence: float = 0.95,
             standard_error: str = "larger") -> tuple[float, float] | None:
    """(coverage, mean width) of the interval over `matrices` simulated matrices of `n`
    pairs; None below `min_pairs` (no interval is given). A matrix whose r_s is undefined
    (a side that does not vary) gives no interval and is left out."""
    if n < min_pairs(confidence):
        return None
    x, y = setting.draw(rng, matrices, n)
    r, low, high = interval(x, y, confidence, standard_error)
    ok = np.isfinite(r)
    hit = (low[ok] <= true) & (true <= high[ok])
    return float(hit.mean()), float((high[ok] - low[ok]).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrices", type=int, default=4000,
                        help="simulated matrices per cell (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    parser.add_argument("--pairs", default="4,5,6,7,8,10,12,16,20,30",
                        help="pair counts of the independent-pairs table")
    parser.add_argument("--standard-error", default="larger", choices=STANDARD_ERRORS,
                        help="the report's (larger: of Bonett-Wright's and the jackknife's), "
                             "or one alone, for comparison")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    sizes = [int(n) for n in args.pairs.split(",")]
    start = time.perf_counter()
    se = args.standard_error
    print(f"95% intervals, standard error: {se}; coverage over {args.matrices} matrices per "
          f"cell (mean width); no interval below {min_pairs(0.95)} pairs\n")
    print("| independent pairs | truth | " + " | ".join(f"n={n}" for n in sizes) + " |")
    print("|---|---:|" + "---:|" * len(sizes))
    for setting in INDEPENDENT:
        true = truth(setting)
        cells = []
        for n in sizes:
            found = coverage(setting, n, args.matrices, rng, true, standard_error=se)
            cells.append("—" if found is None else f"{found[0]:.1%} ({found[1]:.2f})")
        print(f"| {setting.name} | {true:+.2f} | " + " | ".join(cells) + " |")
    print("\n| crossed matrix (shared source, target and scratch) | truth | coverage (width) |")
    print("|---|---:|---:|")
    for shared in (0.7, 1.5):
        for sources, targets in CROSSED:
            setting = Setting(f"{sources} x {targets}, scratch noise sd {shared}",
                              crossed(sources, targets, shared))
            true = truth(setting)
            found = coverage(setting, sources * targets, args.matrices, rng, true,
                             standard_error=se)
            cell = "—" if found is None else f"{found[0]:.1%} ({found[1]:.2f})"
            print(f"| {setting.name} | {true:+.2f} | {cell} |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
