"""The report's figures: learning curves, performance profiles, the metrics panel, the
transfer matrix's heatmaps and the comparison of studies, as PNG/SVG bytes.

The only module that imports a plotting library (with `sweep_figure`, which draws the
matrix's sweep panels into the figure made here): matplotlib, through
`matplotlib.figure.Figure` (no pyplot state; PNG/SVG canvases are non-interactive), imported
inside the functions that draw, so that importing the report stage never loads it.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io_utils import atomic_write_bytes, read_json
from ..strategies import registry
from ..study.study_spec import flat_spec
from . import metrics
from .curves import AggregateCurve, aggregate_curves
from .metrics import MATRIX_METRICS
from .runfiles import collect_runs
from .summary import MetricsSummary, Scale, StudySummary

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

    from .sweep_figure import Sweep

FIGURE_DPI = 150
CURVES_SIZE = (12.0, 4.5)  # inches
_SCRATCH_COLOR = "#3c3c3c"
_FIXED_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
# the registry's first conditions after the reference (finetune, freeze-features,
# reinit-head, pretrained-encoder) keep these colours in every figure
_KNOWN_COLORS = dict(zip([c for c in registry.CONDITIONS if c != registry.REFERENCE],
                         _FIXED_COLORS, strict=False))
_OTHER_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728", "#7f7f7f")


def condition_colors(conditions: Sequence[str]) -> dict[str, str]:
    """A colour per condition, the same in every figure: scratch dark grey, the built-in
    conditions fixed colours, any other the next free one."""
    free = iter(_OTHER_COLORS)
    colors = {}
    for name in conditions:
        if name == registry.REFERENCE:
            colors[name] = _SCRATCH_COLOR
        else:
            colors[name] = _KNOWN_COLORS.get(name) or next(free, "#7f7f7f")
    return colors


def format_steps(value: float, _position: Any = None) -> str:
    """Tick label for env steps: 0, 500, 1.5k, 10k, 2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def seed_band(runs: Sequence[tuple[Any, Any]], level: float = 0.95) -> AggregateCurve:
    """The mean over seeds of `runs` ([(timesteps, values), ...]) with its `level` t band,
    the band cut at each step to the range the seeds' own values span there.

    A t band over few seeds runs far past anything the runs did (2 seeds: ±6.4 standard
    deviations; CartPole's band reached −150 and 650 where a return lies in [0, 500]), and
    past the score's physical range. Cut to the seeds' range it never claims a mean no seed
    reached, so it stays inside whatever range the env's returns have, declared or not; where
    the t band is narrower it is drawn as it is. NaN (no band) with fewer than 2 runs."""
    curve = aggregate_curves(runs, confidence_level=level)
    values = np.stack([np.interp(curve.steps, np.asarray(t, dtype=float),
                                 np.asarray(r, dtype=float)) for t, r in runs])
    low, high = values.min(axis=0), values.max(axis=0)
    return AggregateCurve(curve.steps, curve.mean, np.clip(curve.low, low, high),
                          np.clip(curve.high, low, high))


def write_figures(study_dir: Path, result: StudySummary,
                  curves: Mapping[str, list]) -> dict[str, bytes]:
    """Write curves.png, curves.svg, profiles.png and metrics.png; return the PNG bytes by
    file name."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        curves_fig = curves_figure(result, curves)
        images = {"curves.png": _render(curves_fig, "png"),
                  "profiles.png": _render(profiles_figure(result), "png"),
                  "metrics.png": _render(metrics_figure(result), "png")}
        svg = _render(curves_fig, "svg")
    for name, data in images.items():
        atomic_write_bytes(study_dir / name, data)
    atomic_write_bytes(study_dir / "curves.svg", svg)
    return images


_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
       "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 13,
       "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "rltransfer"}


def _render(fig: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else None
    fig.savefig(buffer, format=fmt, dpi=FIGURE_DPI, metadata=metadata)
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # non-interactive; savefig still picks the SVG backend for .svg
    return fig


def curves_figure(result: StudySummary, curves: Mapping[str, list]) -> Figure:
    """Normalized (left) and raw (right) evaluation return vs target env steps: the mean over
    seeds per condition with a shaded 1 - alpha t band cut to the seeds' range (`seed_band`),
    threshold and random policy lines."""
    from matplotlib.ticker import FuncFormatter

    scale = result.metrics.scale
    assert scale is not None, "a study's summary has its score scale"
    colors = condition_colors(list(curves))
    fig = _new_figure(*CURVES_SIZE)
    ax_score, ax_raw = fig.subplots(1, 2)
    for name, runs in curves.items():
        scores = [(t, metrics.normalize(r, scale.random_return, scale.threshold))
                  for t, r in runs]
        label = f"{name} (n={len(runs)})"
        level = 1 - result.alpha
        _plot_band(ax_score, seed_band(scores, level), colors[name], label)
        _plot_band(ax_raw, seed_band(runs, level), colors[name], label)
    _reference_lines(ax_score, 1.0, 0.0, scale)
    _reference_lines(ax_raw, scale.threshold, scale.random_return, scale)
    if result.score == "success":  # --score success: the curves are success rates
        ax_score.set(title="normalized score", ylabel="normalized success rate\n(0 = random, "
                     "1 = 100% success)")
        ax_raw.set(title="success rate", ylabel="evaluation success rate")
    else:
        ax_score.set(title="normalized score", ylabel="normalized return\n(0 = random, "
                     "1 = threshold)")
        ax_raw.set(title="raw return", ylabel="mean evaluation return")
    for ax in (ax_score, ax_raw):
        ax.set_xlabel(_steps_label(result))
        ax.xaxis.set_major_formatter(FuncFormatter(format_steps))
        ax.set_xlim(left=0)
        ax.grid(alpha=0.25)
    fig.suptitle(f"{result.source} → {result.target} ({result.algo})\nmean over "
                 f"seeds, shaded {_level(result)} t interval (cut to the seeds' range)")
    _legend_below(fig, *ax_score.get_legend_handles_labels())
    return fig


def _steps_label(result: StudySummary) -> str:
    """The x axis: target env steps, with the steps each run really trained and how many
    evaluations it really had (`report.evaluation_grid`)."""
    grid = result.evaluations
    if not grid.per_run:
        return "target env steps"
    low, high = grid.per_run
    times = f"{low}" if low == high else f"{low}–{high}"
    return f"target env steps (each run {grid.steps:,} steps, {times} evaluations)"


def _level(result: StudySummary) -> str:
    return metrics.percent(1 - result.alpha)


def profiles_figure(result: StudySummary) -> Figure:
    """Performance profiles (rliable's score distributions): for each normalized score tau,
    the fraction of a condition's runs whose final score (mean of the last 3 evaluations)
    exceeds tau, as a step function with its exact (Clopper-Pearson) pointwise band."""
    from matplotlib.ticker import PercentFormatter

    profile = result.metrics.profile
    assert profile is not None, "a study's summary has its performance profiles"
    taus = np.asarray(profile.taus)
    colors = condition_colors(list(profile.conditions))
    fig = _new_figure(7.0, 5.2)
    ax = fig.subplots()
    for name, data in profile.conditions.items():
        ax.fill_between(taus, data.low, data.high, step="post", color=colors[name],
                        alpha=0.15, lw=0)
        ax.step(taus, data.fraction, where="post", color=colors[name], lw=2,
                label=f"{name} (n={data.n})")
    ax.axvline(1.0, color="black", ls="--", lw=1.2, label="threshold (1)")
    ax.axvline(0.0, color="black", ls=":", lw=1.2, label="random policy (0)")
    ax.set(xlabel="normalized final score τ (mean of the last 3 evaluations)",
           ylabel="fraction of runs with score > τ", ylim=(-0.02, 1.02))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.25)
    ax.set_title(f"performance profiles: {result.target}\nshaded: exact {_level(result)} "
                 "pointwise band (Clopper-Pearson)", fontsize=11)
    _legend_below(fig, *ax.get_legend_handles_labels())  # outside the data: never on a band
    return fig


def _legend_below(fig: Figure, handles: list, labels: list[str]) -> None:
    """One legend under the panels, in as few rows as fit the figure's width."""
    renderer = fig.canvas.get_renderer()
    for ncols in range(len(labels), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncols=ncols,
                            frameon=False)
        if ncols == 1 or legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


def _plot_band(ax: Axes, curve: AggregateCurve, color: str, label: str) -> None:
    ax.fill_between(curve.steps, curve.low, curve.high, color=color, alpha=0.18, lw=0)
    ax.plot(curve.steps, curve.mean, color=color, lw=2, label=label)


def _reference_lines(ax: Axes, threshold: float, random: float, scale: Scale) -> None:
    ax.axhline(threshold, color="black", ls="--", lw=1.2,
               label=f"threshold: {scale.threshold:g} (normalized 1)")
    ax.axhline(random, color="black", ls=":", lw=1.2,
               label=f"random policy: {scale.random_return:.4g} (normalized 0)")


@dataclass(frozen=True)
class _Panel:
    key: str
    title: str
    line: float  # vertical reference line
    line_label: str


_PANELS = (
    _Panel("auc_difference", "PRIMARY: area vs scratch\n(mean normalized area, Welch t)", 0.0,
           "no change"),
    _Panel("jumpstart", "jumpstart\n(initial score − scratch's)", 0.0, "no change"),
    _Panel("speedup", "speedup to threshold\n(scratch's median time / its)", 1.0, "as fast"),
    _Panel("asymptote_gain", "asymptote gain\n(last 3 evaluations − scratch's)", 0.0,
           "no change"),
    _Panel("prob_improvement", "P(improve)\nP(area > scratch's), Newcombe", 0.5, "even"),
)

_METRICS_CAPTION = (
    "● point estimate (hollow: no interval, < 2 runs)     ▬ {level} interval over seeds\n"
    "▶ / ◀ the value is only a lower / upper bound (a censored time: the threshold was not "
    "reached)     → ← an interval end that is only a bound"
)


def metrics_figure(result: StudySummary) -> Figure:
    """Interval estimates in the style of rliable: a panel per metric (the primary claim
    first), a row per condition, the point estimate and its interval; censored values and
    bounds drawn as bounds (arrows), never as measured bars."""
    summary = result.metrics
    names = list(summary.conditions)
    colors = condition_colors(names)
    rows = {name: len(names) - 1 - i for i, name in enumerate(names)}
    fig = _new_figure(14.0, 2.1 + 0.55 * len(names))
    axes = fig.subplots(1, len(_PANELS), sharey=True)
    for ax, panel in zip(axes, _PANELS, strict=True):
        _metric_panel(ax, panel, summary, rows, colors)
    labels = [textwrap.fill(name, 16, break_on_hyphens=True) for name in rows]
    axes[0].set_yticks(list(rows.values()), labels=labels)
    for tick, name in zip(axes[0].get_yticklabels(), rows, strict=True):
        tick.set_color(colors[name])
        tick.set_fontweight("bold")
    axes[0].set_ylim(-0.6, len(names) - 0.4)
    fig.suptitle(f"{result.source} → {result.target}: transfer metrics vs "
                 f"{summary.reference or 'no reference'}")
    level = metrics.percent(1 - summary.alpha)
    fig.supxlabel(_METRICS_CAPTION.format(level=level), fontsize=9, color="#444444")
    return fig


def _metric_panel(ax: Axes, panel: _Panel, summary: MetricsSummary, rows: Mapping[str, int],
                  colors: Mapping[str, str]) -> None:
    drawn: list[float] = [panel.line]
    for name, y in rows.items():
        est = summary.conditions[name].estimates.get(panel.key)
        if est is None:
            _row_text(ax, y, "reference" if name == summary.reference else "no reference")
            continue
        drawn += _draw_interval(ax, y, est.to_dict(), colors[name])
    ax.axvline(panel.line, color="#888888", ls="--", lw=1, zorder=0)
    ax.text(panel.line, 1.0, f" {panel.line_label}", transform=ax.get_xaxis_transform(),
            ha="left", va="top", fontsize=8, color="#666666")
    ax.set_title(panel.title, fontsize=11, fontweight="bold" if panel.key == "auc_difference"
                 else "normal")
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", alpha=0.25)
    low, high = min(drawn), max(drawn)
    pad = 0.15 * (high - low or 1.0)
    ax.set_xlim(low - pad, high + pad)


def _draw_interval(ax: Axes, y: float, est: Mapping[str, Any], color: str) -> list[float]:
    """Draw one estimate on row `y`; return the numbers drawn (for the axis limits).

    An interval end that is only a bound (``low_bound``/``high_bound`` ">" or "<") is drawn
    as a dashed arrow running off in the direction the truth may lie, and a point that is
    only a bound as a triangle pointing that way."""
    point, low, high = est.get("point"), est.get("low"), est.get("high")
    if point is None:  # undefined or censored: say so, draw nothing that reads as a value
        _row_text(ax, y, (est.get("note") or "n/a").split(":")[0], color="#b22222")
        return []
    exact = (None, metrics.EXACT)
    solid_low = low if est.get("low_bound") in exact else point
    solid_high = high if est.get("high_bound") in exact else point
    if low is not None and high is not None:
        ax.plot([solid_low, solid_high], [y, y], color=color, lw=8, alpha=0.35,
                solid_capstyle="butt")
    for end, kind in ((low, est.get("low_bound")), (high, est.get("high_bound"))):
        if end is None or kind in exact:
            continue
        edge = 1.0 if kind == metrics.ABOVE else 0.0  # the axis edge the truth runs towards
        ax.plot([end], [y], marker="|", ms=12, color=color)
        ax.annotate("", xy=(edge, y), xycoords=ax.get_yaxis_transform(), xytext=(end, y),
                    textcoords="data", arrowprops={"arrowstyle": "-|>", "color": color,
                                                   "lw": 1.5, "linestyle": (0, (4, 2))})
    kind = est.get("point_bound")
    marker = {metrics.ABOVE: ">", metrics.BELOW: "<"}.get(kind, "o")
    has_ci = low is not None and high is not None
    ax.plot([point], [y], marker=marker, ms=9, ls="none", color=color,
            mfc=color if has_ci else "white", mew=1.8, zorder=3)
    return [v for v in (point, low, high) if v is not None]


def _row_text(ax: Axes, y: float, text: str, color: str = "#666666") -> None:
    ax.text(0.5, y, textwrap.fill(text, 22), transform=ax.get_yaxis_transform(), ha="center",
            va="center", fontsize=10, style="italic", color=color,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})


# --------------------------------------------------------------------------- collections of studies


MATRIX_MAX_WIDTH = 24.0  # inches


def matrix_figure(result: Mapping[str, Any], sweep: Sweep | None = None) -> Figure:
    """Heatmaps per condition of the area difference and jumpstart: rows are sources, columns
    targets; colour is the point estimate (diverging at 0) and each cell prints the estimate
    with its 95% interval, so the interval width is visible next to the colour. A matrix whose
    targets (or sources) sweep a parameter gets the sweep's line plots below the heatmaps
    (`rltransfer.report.sweep_figure`)."""
    from .sweep_figure import draw_sweep

    conditions, sources, targets = list(result["cells"]), result["sources"], result["targets"]
    # 2.4 in per target and panel, up to 24 in in all (a sweep of 8 or more targets would
    # otherwise draw a 40 in wide figure whose line plots below are stretched flat)
    width = min(max(8.0, 2.4 * len(targets) * 2 + 3), MATRIX_MAX_WIDTH)
    height = 1.0 + max(2.0, 1.0 * len(sources)) * max(1, len(conditions))
    sweep_height = 1.5 + 3.2 * max(1, len(conditions)) if sweep and sweep.series else 0.0
    fig = _new_figure(width, height + sweep_height)
    heat: Any = fig
    if sweep_height:
        heat, lines = fig.subfigures(2, 1, height_ratios=[height, sweep_height])
        draw_sweep(lines, sweep)
    axes = heat.subplots(max(1, len(conditions)), 2, squeeze=False)
    for row, condition in enumerate(conditions):
        for col, (key, title) in enumerate(MATRIX_METRICS):
            _matrix_panel(heat, axes[row][col], result["cells"][condition], sources, targets,
                          key)
            axes[row][col].set_title(f"{condition}: {title}")
    heat.suptitle("transfer matrix: point estimate [interval] per source → target pair; "
                  "verdicts Holm-corrected across every cell")
    return fig


def _matrix_panel(fig: Figure | SubFigure, ax: Any, cells: Mapping[str, Any],
                  sources: list[str], targets: list[str], key: str) -> None:
    values = np.full((len(sources), len(targets)), np.nan)
    labels = [["n/a"] * len(targets) for _ in sources]
    for i, source in enumerate(sources):
        for j, target in enumerate(targets):
            estimate = (cells.get(source, {}).get(target) or {}).get(key)
            if estimate and estimate.get("point") is not None:
                values[i, j] = estimate["point"]
                labels[i][j] = metrics.format_estimate(estimate).replace(" [", "\n[")
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    limit = limit or 1.0
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i in range(len(sources)):
        for j in range(len(targets)):
            dark = np.isfinite(values[i, j]) and abs(values[i, j]) > 0.6 * limit
            ax.text(j, i, labels[i][j], ha="center", va="center",
                    fontsize=9 if len(targets) <= 6 else 7, color="white" if dark else "black")
    ax.set_xticks(range(len(targets)), labels=[textwrap.fill(t, 20 if len(targets) <= 6 else 16)
                                               for t in targets],
                  fontsize=None if len(targets) <= 6 else 7)
    ax.set_yticks(range(len(sources)), labels=[textwrap.fill(s, 24) for s in sources])
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    fig.colorbar(image, ax=ax, shrink=0.8)


def write_matrix_figure(folder: Path, result: Mapping[str, Any],
                        sweep: Sweep | None = None) -> None:
    """matrix.png beside matrix.md (with the sweep's panels when there is one)."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        atomic_write_bytes(folder / "matrix.png", _render(matrix_figure(result, sweep), "png"))


_STUDY_STYLES = ("-", "--", ":", "-.")


def compare_figure(studies: Sequence[Path]) -> Figure:
    """Normalized score vs target env steps for every condition of every study: colour is the
    condition, line style the study; mean over seeds with a shaded 95% band (`seed_band`)."""
    fig = _new_figure(*CURVES_SIZE)
    ax = fig.subplots()
    names = {name for study in studies
             for name in flat_spec(read_json(study / "study.json")["spec"])["conditions"]}
    colors = condition_colors(sorted(names, key=lambda c: (c != registry.REFERENCE, c)))
    for index, study in enumerate(studies):
        record = read_json(study / "study.json")
        curves, _, _ = collect_runs(study, list(flat_spec(record["spec"])["conditions"]))
        style = _STUDY_STYLES[index % len(_STUDY_STYLES)]
        for condition, runs in curves.items():
            if not runs:
                continue
            curve = seed_band([(t, metrics.normalize(r, record["target_random_return"],
                                                     record["threshold"])) for t, r in runs])
            ax.plot(curve.steps, curve.mean, style, color=colors[condition],
                    label=f"{study.name}: {condition} (n={len(runs)})")
            ax.fill_between(curve.steps, curve.low, curve.high, color=colors[condition],
                            alpha=0.12)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="threshold (1)")
    ax.axhline(0.0, color="black", linestyle=":", linewidth=1, label="random policy (0)")
    ax.set_xlabel("target env steps")
    ax.set_ylabel("normalized return (0 = random, 1 = threshold)")
    ax.xaxis.set_major_formatter(lambda value, _: format_steps(value))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    ax.set_title("studies compared: mean over seeds, shaded 95% t interval (cut to the seeds' "
                 "range)")
    return fig


def write_compare_figure(out: Path, studies: Sequence[Path]) -> None:
    """compare.png beside compare.md."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        atomic_write_bytes(out / "compare.png", _render(compare_figure(studies), "png"))
