"""The verdict: one pre-specified primary claim per condition, Holm-corrected.

The primary claim is the difference in mean normalized area under the learning curve,
condition - scratch (``auc_difference`` in `metrics.summarize`), tested with Welch's t test.
The p-values of every condition of a study (or every condition x cell of a matrix) are
Holm-adjusted together, and a condition is called positive or negative transfer only when
its adjusted p-value is at most ``alpha`` and both it and scratch have at least
`MIN_CLAIM_RUNS` runs (failed runs count: they are outcomes). A claim whose curves disagree
with it (area above scratch's, but the condition ends significantly lower or reaches the
threshold in fewer runs; or the reverse) is "mixed", with both facts. A difference that is
not clear while runs failed (diverged) more often in the arm whose area is lower is "failed
runs", not "no clear difference": those failures are a harm the test had too few seeds to
show, not evidence of none. Everything else in the
summary is descriptive; `reading` puts the descriptive effects into words beside the claim.

With ``--seeds auto`` (`rltransfer.report.sequential`) a comparison's p-value is its repeated
p-value over the looks so far, and a comparison not decided before the last look is
"undecided" until the study has taken its last look.

Pure functions on typed summaries (`rltransfer.report.summary`); no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import metrics
from .metrics import Difference, Record, Speedup
from .summary import ConditionSummary, MetricsSummary, SequentialComparison, Verdict

POSITIVE, NEGATIVE, NO_CLEAR = "positive transfer", "negative transfer", "no clear difference"
MIXED, TOO_FEW, NO_TEST = "mixed", "too few seeds to test", "no test"
UNDECIDED = "undecided"
FAILED_RUNS = "failed runs"
REFERENCE = "reference"
CLAIMS = (POSITIVE, NEGATIVE, MIXED)
"""Labels that assert an area difference (the calibration counts them all)."""
MIN_CLAIM_RUNS = 5
"""Runs per condition below which no claim is made (see `too_few_runs_reason`)."""
RECOMMENDED_SEEDS = 10


def rule(alpha: float = metrics.DEFAULT_ALPHA) -> str:
    """The verdict rule in words, as every report states it."""
    return (
        "The primary claim, fixed before the study, is the difference in mean normalized area "
        "under the learning curve (condition − scratch; 0 = random, 1 = threshold), with a "
        f"{metrics.percent(1 - alpha)} Welch t interval and a two-sided Welch t test checked "
        "against its skewness-corrected version (Hall 1992): the p-value is the larger of "
        "the two. The p-values of all planned "
        "comparisons of the study (all conditions × cells of a matrix) are Holm-corrected "
        f"together. A condition is called positive (negative) transfer when its Holm-adjusted "
        f"p-value is at most α = {alpha:g} and the difference is above (below) 0; otherwise "
        f"there is no clear difference. When the claim holds but the condition ends "
        "significantly lower or reaches the threshold in fewer runs than scratch (or the "
        "mirror), it is mixed. Runs that diverged count at the worst their score allows; "
        "when the difference is not clear but runs failed more often in the arm whose area "
        "is lower, the label is failed runs, not no clear difference. "
        f"With fewer than {MIN_CLAIM_RUNS} runs in the condition or in scratch there are too "
        "few seeds to test. With --seeds auto the p-value is the repeated p-value of a "
        "group-sequential design (README). Jumpstart, time to threshold, speedup, "
        "asymptote, P(improve) and the transfer ratio are descriptive effects with their "
        "own intervals; they never decide the verdict."
    )


def short_rule(alpha: float = metrics.DEFAULT_ALPHA) -> str:
    """The rule in one line, for the terminal."""
    return (f"verdict = Holm-corrected Welch t test (skew-checked) of the area difference vs "
            f"scratch at "
            f"α = {alpha:g}, with at least {MIN_CLAIM_RUNS} runs each; every other column is "
            "descriptive (full rule in report.md)")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given), monotone and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


smallest_permutation_p = metrics.smallest_permutation_p


def too_few_runs_reason(n: int, m: int, alpha: float) -> str:
    """Why no claim is made with n runs of the condition and m of scratch."""
    smallest = smallest_permutation_p(n, m)
    if smallest > alpha:
        why = (f"no claim is possible at the {alpha:g} level (with {n} vs {m} runs the "
               f"smallest exact two-sided permutation p is {smallest:.2g}, and a t test's "
               "normality cannot be relied on)")
    else:
        why = (f"no claim is made: with {n} vs {m} runs a t test's normality cannot be relied "
               f"on, and an exact permutation test leaves little room (its smallest two-sided "
               f"p is {smallest:.2g}; 0.10 at 3 vs 3)")
    return (f"Only {n} vs {m} runs: {why}. A claim needs at least {MIN_CLAIM_RUNS} runs per "
            f"condition; run {RECOMMENDED_SEEDS} seeds for claims.")


def judge(families: Sequence[MetricsSummary], alpha: float, planned: int | None = None,
          final: bool = True) -> list[dict[str, Verdict]]:
    """The verdict of every condition of every summary in `families` (one Holm family across
    all of them), per summary: condition -> `Verdict`, in the summary's order.

    Conditions equal to a summary's reference get the reference label, and a summary without
    a reference marks its conditions as unjudged. Every planned comparison is in the family:
    one without a test enters with p = 1, and so do the `planned` comparisons without
    results yet (a matrix's unfinished cells or cells without scratch runs, a study's
    conditions without runs), so that m is the planned family's size (at least the
    comparisons present). A comparison with ``--seeds auto``'s looks (its `sequential`) is
    judged on its repeated p-value; `final` False: the study will take more looks, so an
    undecided comparison is "undecided", not "no clear difference". The summaries are not
    changed (`MetricsSummary.with_verdicts` makes the judged one).
    """
    found: list[dict[str, Verdict]] = [{} for _ in families]
    tested = []  # (family, condition, entry, reference entry) of every comparison
    for index, summary in enumerate(families):
        for name, entry in summary.conditions.items():
            if summary.reference is None:
                found[index][name] = Verdict(NO_TEST, "No finished scratch runs: there is "
                                             "nothing to compare against.")
            elif name == summary.reference:
                found[index][name] = Verdict(REFERENCE, "The baseline the other conditions "
                                             "are compared against.")
            else:
                tested.append((index, name, entry, summary.conditions[summary.reference]))
    p_values = [primary_p(entry) for _, _, entry, _ in tested]
    missing = max((planned or 0) - len(tested), 0)
    m = len(tested) + missing
    adjusted = holm([1.0 if p is None else p for p in p_values] + [1.0] * missing)
    for i, (index, name, entry, ref) in enumerate(tested):
        p_holm = adjusted[i] if p_values[i] is not None else None
        found[index][name] = _verdict(entry, ref, p_holm, m, alpha, final)
    return [{name: verdicts[name] for name in summary.conditions}
            for summary, verdicts in zip(families, found, strict=True)]


def primary_p(entry: ConditionSummary) -> float | None:
    """The p-value the verdict rests on: the repeated p-value of a sequential comparison,
    else the Welch p of the area difference (None: no test)."""
    diff = _claim(entry)
    if entry.sequential is not None and diff.p_value is not None:
        return float(entry.sequential.p_value)
    return diff.p_value


def _claim(entry: ConditionSummary) -> Difference:
    """The primary claim of a compared condition (every compared condition has one)."""
    diff = entry.auc_difference
    assert diff is not None, "a compared condition has an area difference"
    return diff


def _verdict(entry: ConditionSummary, ref: ConditionSummary, p_holm: float | None, m: int,
             alpha: float, final: bool = True) -> Verdict:
    diff = _claim(entry)
    n, n_ref = entry.n_runs, ref.n_runs
    sequential = entry.sequential
    claim = _claim_text(diff, p_holm, m, sequential)
    facts: list[str] = []
    if diff.p_value is None or p_holm is None or diff.point is None:
        label, reason = NO_TEST, f"No test of the area difference ({diff.note})."
    elif min(n, n_ref) < MIN_CLAIM_RUNS:
        label, reason = TOO_FEW, too_few_runs_reason(n, n_ref, alpha)
    elif p_holm <= alpha:
        up = diff.point > 0
        facts = conflicts(entry, ref, up)
        reason = (f"Area under the curve {'above' if up else 'below'} scratch's: {claim}, at "
                  f"most α = {alpha:g}.")
        if facts:
            label = MIXED
            reason += f" But it {' and '.join(facts)}."
        else:
            label = POSITIVE if up else NEGATIVE
    elif sequential is not None and not final:
        label = UNDECIDED
        reason = (f"Not decided after {n} vs {n_ref} runs ({claim}); the study adds seeds up "
                  f"to {sequential.max} per condition.")
    elif failure_side(entry, ref) * diff.point < 0:
        label = FAILED_RUNS
        which = "the condition's" if diff.point < 0 else "scratch's"
        reason = (f"The area difference is not clear at α = {alpha:g} ({claim}), but "
                  f"{entry.failed_runs}/{n} of the condition's runs failed vs "
                  f"{ref.failed_runs}/{n_ref} of scratch's, and they pull "
                  f"{which} area down: too few seeds to show the harm, not evidence of "
                  "none. More seeds (--seeds auto) decide it.")
    else:
        label = NO_CLEAR
        reason = f"The area difference is not clear at α = {alpha:g}: {claim}."
    return Verdict(label, reason, reading(entry, ref, claim), p_holm, m, tuple(facts))


def failure_side(entry: ConditionSummary, ref: ConditionSummary) -> int:
    """+1 when a larger share of the condition's runs failed (diverged) than of scratch's,
    -1 for the reverse, 0 when the shares are equal."""
    share = entry.failed_runs * ref.n_runs
    ref_share = ref.failed_runs * entry.n_runs
    return (share > ref_share) - (share < ref_share)


def conflicts(entry: ConditionSummary, ref: ConditionSummary, up: bool) -> list[str]:
    """What the end of the curves says against an area claim (`up`: the area is above
    scratch's): the condition ends significantly lower (its asymptote gain's interval below
    0), or reaches the threshold in fewer runs than scratch; the mirror for `up` False."""
    facts = []
    gain = entry.asymptote_gain
    if gain is not None and _side(gain, 0.0) == (-1 if up else 1):
        facts.append(f"ends {'lower' if up else 'higher'} (asymptote "
                     f"{metrics.format_estimate(gain, signed=True)})")
    ttt, ref_ttt = entry.time_to_threshold, ref.time_to_threshold
    share, ref_share = ttt.reached / ttt.n, ref_ttt.reached / ref_ttt.n
    if (share < ref_share) if up else (share > ref_share):
        facts.append(f"reaches the threshold in {'fewer' if up else 'more'} runs "
                     f"({ttt.reached}/{ttt.n} vs scratch's {ref_ttt.reached}/{ref_ttt.n})")
    return facts


def _claim_text(diff: Difference, p_holm: float | None, m: int,
                sequential: SequentialComparison | None = None) -> str:
    text = f"area {metrics.format_estimate(diff, signed=True)}"
    if p_holm is None:
        return text + ", no test"
    raw = metrics.format_p(diff.p_value)
    if diff.method == "exact permutation":
        raw += " (exact permutation test: no variability within either arm)"
    if sequential is not None:
        looks = len(sequential.looks)
        raw += (f", repeated {metrics.format_p(sequential.p_value)} over "
                f"{looks} look{'s' if looks != 1 else ''}")
    adjusted = metrics.format_p(p_holm).replace("p", "Holm p", 1)
    return f"{text}, {raw}, {adjusted} ({m} comparison{'s' if m != 1 else ''})"


def reading(entry: ConditionSummary, ref: ConditionSummary, claim: str) -> str:
    """One line combining the descriptive effects with the claim, e.g. "starts worse, reaches
    the threshold sooner; area +0.42 [0.18, 0.66], p = 0.004, Holm p = 0.008 (2 ...)". An
    effect is named only when its interval excludes no change."""
    parts = []
    jump = _side(entry.jumpstart, 0.0)
    if jump:
        parts.append("starts better" if jump > 0 else "starts worse")
    ttt, ref_ttt = entry.time_to_threshold, ref.time_to_threshold
    # the speedup interval's level is the product of two medians' levels: too low to name
    # an effect below MIN_CLAIM_RUNS runs (0.25 at 2 vs 2, 0.56 at 3 vs 3)
    enough = min(entry.n_runs, ref.n_runs) >= MIN_CLAIM_RUNS
    speed = _speed_side(entry.speedup) if enough else 0
    if speed:
        parts.append("reaches the threshold sooner" if speed > 0 else
                     "reaches the threshold later")
    if ttt.reached * ref_ttt.n != ref_ttt.reached * ttt.n:
        parts.append(f"reaches it in {ttt.reached}/{ttt.n} runs vs scratch's "
                     f"{ref_ttt.reached}/{ref_ttt.n}")
    end = _side(entry.asymptote_gain, 0.0)
    if end:
        parts.append("ends higher" if end > 0 else "ends lower")
    failed, failed_ref = entry.failed_runs, ref.failed_runs
    if failed or failed_ref:
        parts.append(f"{failed}/{entry.n_runs} runs failed vs scratch's "
                     f"{failed_ref}/{ref.n_runs} (counted at the worst their score allows)")
    head = ", ".join(parts) if parts else "no descriptive effect stands out"
    return f"{head}; {claim}"


SIDE_TOLERANCE = 1e-9  # rounding noise (e.g. means over 2 vs 3 identical curves) is no effect


def _side(est: Record | None, reference: float) -> int:
    """+1 when the interval lies entirely above `reference`, -1 below, else 0."""
    if est is None or est.low is None or est.high is None:
        return 0
    if est.low > reference + SIDE_TOLERANCE:
        return 1
    return -1 if est.high < reference - SIDE_TOLERANCE else 0


def _speed_side(sp: Speedup | None) -> int:
    """+1 when the speedup interval lies above 1 (its low end exact or a lower bound), -1
    when below 1 (its high end exact or an upper bound)."""
    if sp is None:
        return 0
    if sp.low is not None and sp.low > 1 and sp.low_bound in (metrics.EXACT, metrics.ABOVE):
        return 1
    if sp.high is not None and sp.high < 1 and sp.high_bound in (metrics.EXACT, metrics.BELOW):
        return -1
    return 0
