"""Study report: read a study folder, compute the metrics and a verdict per condition, and
write summary.json, summary.csv, the figures (curves.png/.svg, metrics.png), report.md and a
self-contained report.html; render the terminal table.

Reads only files, so it works on a finished, interrupted or copied study alike. This is the
only module that imports a plotting library: matplotlib, through `matplotlib.figure.Figure`
(no pyplot state; PNG/SVG canvases are non-interactive), imported lazily so that
`aggregate_curves` works without it. The verdict rule lives in `verdict`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from rich.markup import escape
from rich.table import Table
from scipy import stats

from . import metrics
from . import verdict as verdicts
from .errors import OutputError, RLTransferError
from .io_utils import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from .runfiles import read_evaluations

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POSITIVE, NEGATIVE, NO_CLEAR, REFERENCE = (verdicts.POSITIVE, verdicts.NEGATIVE,
                                          verdicts.NO_CLEAR, verdicts.REFERENCE)


def format_claim(diff: Mapping[str, Any]) -> str:
    """The primary claim's cell: "+0.42 [+0.18, +0.66], p = 0.004"."""
    if diff.get("point") is None:
        return "n/a"
    return f"{metrics.format_estimate(diff, signed=True)}, {metrics.format_p(diff.get('p_value'))}"


def format_signed(est: Mapping[str, Any]) -> str:
    return metrics.format_estimate(est, signed=True)


@dataclass(frozen=True)
class Metric:
    """One entry of the metric registry: summary key, column title, cell formatter, and
    whether it is the primary claim (every other metric is descriptive)."""

    key: str
    title: str
    formatter: Any
    primary: bool = False


METRICS = (
    Metric("auc_difference", "area vs scratch (primary; Welch)", format_claim, primary=True),
    Metric("jumpstart", "jumpstart", format_signed),
    Metric("time_to_threshold", "time to threshold (steps)", metrics.format_time_to_threshold),
    Metric("speedup", "speedup vs scratch", metrics.format_speedup),
    Metric("asymptote", "asymptote", metrics.format_estimate),
    Metric("prob_improvement", "P(improve)", metrics.format_estimate),
    Metric("transfer_ratio", "transfer ratio (area)", format_signed),
)
"""The metrics every table shows, in order (terminal, summary.csv, report.md/html, compare)."""
FORMATTERS = {m.key: m.formatter for m in METRICS}

FIGURE_DPI = 150
CURVES_SIZE = (12.0, 4.5)  # inches
_SCRATCH_COLOR = "#3c3c3c"
_KNOWN_COLORS = {"finetune": "#1f77b4", "freeze-features": "#ff7f0e",
                 "reinit-head": "#2ca02c", "pretrained-encoder": "#9467bd"}
_OTHER_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728", "#7f7f7f")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- reading


def collect_runs(study_dir: Path, conditions: list[str]) -> tuple[dict, dict, dict]:
    """Curves of finished runs by condition, their run folders, and the runs not used by
    condition: ``{"failed": [{"run": "seed_3", "error": "Type: message"}], "left_out":
    ["seed_2 (running)", ...]}`` (left out: pending, running, interrupted, no status)."""
    curves: dict[str, list] = {}
    folders: dict[str, list[str]] = {}
    not_used: dict[str, dict[str, list]] = {}
    for condition in conditions:
        curves[condition], folders[condition] = [], []
        failed: list[dict[str, str]] = []
        left_out: list[str] = []
        for run_dir in sorted((study_dir / condition).glob("seed_*"),
                              key=lambda p: int(p.name.split("_")[1])):
            status_path = run_dir / "status.json"
            status = read_json(status_path) if status_path.is_file() else {"state": "missing"}
            state = status.get("state")
            csv_path = run_dir / "evaluations.csv"
            if state == "failed":
                failed.append({"run": run_dir.name,
                               "error": str(status.get("error") or "no error recorded")})
            elif state != "done" or not csv_path.is_file():
                left_out.append(f"{run_dir.name} ({state})")
            else:
                curves[condition].append(read_evaluations(csv_path))
                folders[condition].append(run_dir.name)
        not_used[condition] = {"failed": failed, "left_out": left_out}
    return curves, folders, not_used


# --------------------------------------------------------------------------- warnings

ERROR_CHARS = 120  # an error is shortened to this many characters where it is shown
_MAX_ERRORS = 3  # distinct errors quoted per condition


def shorten(text: str, width: int = ERROR_CHARS) -> str:
    """`text` on one line, cut to at most `width` characters (ending in "…" when cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def run_warnings(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per condition with failed runs and per condition with unfinished runs
    (summary.json's ``runs``): how many, which, why, and what its metrics use."""
    lines = []
    for condition, record in runs.items():
        finished, failed, left_out = record["finished"], record["failed"], record["left_out"]
        total = finished + len(failed) + len(left_out)
        if failed:
            lines.append(f"{condition}: {_how_many(len(failed), total)} failed "
                         f"({_failures_text(failed)}); "
                         f"{_metrics_use(finished, alone=not left_out)}")
        if left_out:
            lines.append(f"{condition}: {_how_many(len(left_out), total)} not finished "
                         f"({', '.join(left_out)}); {_metrics_use(finished, alone=not failed)}")
    return lines


def _how_many(count: int, total: int) -> str:
    if count == total:
        return "its only run" if total == 1 else f"all {total} runs"
    return f"{count} of {total} runs"


def _failures_text(failed: Sequence[Mapping[str, str]]) -> str:
    """"seed_3: Error: message; seed_1, seed_4: Other: message": runs grouped by error."""
    by_error: dict[str, list[str]] = {}
    for run in failed:
        by_error.setdefault(shorten(run["error"]), []).append(run["run"])
    parts = [f"{', '.join(names)}: {error}" for error, names in by_error.items()]
    if len(parts) > _MAX_ERRORS:
        parts[_MAX_ERRORS:] = [f"{len(parts) - _MAX_ERRORS} more errors"]
    return "; ".join(parts)


def _metrics_use(finished: int, *, alone: bool) -> str:
    """What a condition's metrics rest on; `alone`: only one kind of run was not used."""
    if finished == 0:
        return "no metrics for it"
    if alone:
        return "its metrics use the other run" if finished == 1 else (
            f"its metrics use the {finished} others")
    return f"its metrics use the {finished} finished run{'s' if finished > 1 else ''}"


def _without_metrics(result: Mapping[str, Any]) -> dict[str, str]:
    """Conditions with runs but none finished, and why: "all 5 runs failed", ..."""
    out = {}
    for condition, record in result["runs"].items():
        failed, left_out = len(record["failed"]), len(record["left_out"])
        if record["finished"] or not (failed or left_out):
            continue
        if not left_out:
            out[condition] = f"{_how_many(failed, failed)} failed"
        elif not failed:
            out[condition] = f"{_how_many(left_out, left_out)} not finished"
        else:
            out[condition] = f"{failed} failed, {left_out} not finished"
    return out


def study_summary(study_dir: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, list]]:
    """(summary.json's content, study.json, the finished curves) of a study folder, computed
    from its files without writing anything (what `compare` and `matrix` read)."""
    study_dir = Path(study_dir)
    study_path = study_dir / "study.json"
    if not study_path.is_file():
        raise OutputError(f"{study_dir} is not a study folder (no study.json): give runs/<study>")
    study = read_json(study_path)
    if "threshold" not in study:
        raise OutputError(f"{study_dir} stopped before its first target run: nothing to report")
    curves, folders, not_used = collect_runs(study_dir, list(study["spec"]["conditions"]))
    finished = {c: v for c, v in curves.items() if v}
    if not finished:
        runs = {c: {"finished": 0, **not_used[c]} for c in curves}
        why = "; ".join(run_warnings(runs)) if any(r["failed"] for r in runs.values()) else ""
        raise OutputError(f"{study_dir} has no finished runs" + (
            f": nothing to report ({why})" if why else " yet: nothing to report"))
    return _result(study_dir.name, study, finished, folders, not_used), study, finished


def summarize_study(study_dir: Path) -> dict[str, Any]:
    """Compute the study's metrics and verdicts from its files; write summary.json/csv,
    curves.png/.svg, profiles.png, metrics.png, report.md, report.html and the TensorBoard
    aggregates. Returns summary.json's content."""
    study_dir = Path(study_dir)
    result, study, finished = study_summary(study_dir)
    atomic_write_json(study_dir / "summary.json", result)
    atomic_write_text(study_dir / "summary.csv", summary_csv(result))
    images = write_figures(study_dir, result, finished)
    atomic_write_text(study_dir / "report.md", report_markdown(result, study))
    atomic_write_text(study_dir / "report.html", report_html(result, study, images))
    write_tensorboard(study_dir, result, study, finished)
    return result


def write_tensorboard(study_dir: Path, result: dict[str, Any], study: dict[str, Any],
                      finished: dict[str, list]) -> None:
    """The aggregate TensorBoard runs: across-seed mean and 95% band per condition, raw and
    normalized, the study's hyperparameters and the summary table (rltransfer.board)."""
    from .board import write_aggregates

    random_return, threshold = result["random_return"], result["threshold"]
    raw = {condition: aggregate_curves(runs) for condition, runs in finished.items()}
    normalized = {condition: AggregateCurve(curve.steps, *(
        metrics.normalize(values, random_return, threshold)
        for values in (curve.mean, curve.low, curve.high))) for condition, curve in raw.items()}
    spec = study["spec"]
    hparams = {"source": result["source"], "target": result["target"], "algo": result["algo"],
               "seeds": spec["seeds"], "timesteps": spec["timesteps"],
               "source_timesteps": spec["source_timesteps"], "threshold": threshold}
    points = {condition: {key: data[key]["point"] for key in ("auc_difference", "jumpstart",
                                                               "asymptote", "auc")
                          if isinstance(data.get(key), dict)
                          and data[key].get("point") is not None}
              for condition, data in result["metrics"]["conditions"].items()}
    table = "\n".join(["| " + " | ".join(headers()) + " |", "|" + "---|" * len(headers())]
                      + ["| " + " | ".join(row) + " |" for row in _rows(result)])
    write_aggregates(study_dir, raw, normalized, hparams, points, table)


def _result(name: str, study: dict[str, Any], finished: dict[str, list], folders: dict,
            not_used: dict) -> dict[str, Any]:
    spec = study["spec"]
    budget = int(spec["timesteps"])  # runs may overshoot it by part of a rollout
    alpha = float(spec.get("alpha", metrics.DEFAULT_ALPHA))  # studies from before --alpha
    normalization = {"random_return": study["target_random_return"],
                     "threshold": study["threshold"], "budget": budget}
    summary = metrics.summarize(finished, reference="scratch" if "scratch" in finished else None,
                                alpha=alpha, **normalization)
    verdicts.judge([summary], alpha)
    per_run = {
        condition: {
            folder: {k: _finite(v) for k, v in
                     metrics.run_metrics(steps, returns, **normalization).items()}
            for folder, (steps, returns) in zip(folders[condition], runs, strict=True)
        }
        for condition, runs in finished.items()
    }
    runs = {c: {"finished": len(folders[c]), **not_used[c]} for c in spec["conditions"]}
    return {
        "study": name, "source": _env_label(spec["source"]),
        "target": _env_label(spec["target"]), "algo": spec["algo"],
        "threshold": study["threshold"], "threshold_from": study.get("threshold_from"),
        "random_return": study["target_random_return"], "budget": budget,
        "runs": runs, "warnings": run_warnings(runs), "metrics": summary, "alpha": alpha,
        "verdict_rule": verdicts.rule(alpha), "seed_note": seed_note(summary, alpha),
        "per_run": per_run,
    }


def seed_note(summary: Mapping[str, Any], alpha: float) -> str | None:
    """Why no claim is made, when a comparison has fewer runs than a claim needs."""
    reference = summary.get("reference")
    if reference is None:
        return None
    n_ref = summary["conditions"][reference]["n_runs"]
    few = [name for name, data in summary["conditions"].items()
           if name != reference and min(data["n_runs"], n_ref) < verdicts.MIN_CLAIM_RUNS]
    if not few:
        return None
    n = min(summary["conditions"][name]["n_runs"] for name in few)
    return f"No claim is possible for {', '.join(few)}. " + verdicts.too_few_runs_reason(
        n, n_ref, alpha)


def _env_label(env: dict[str, Any]) -> str:
    params = env.get("params") or {}
    if not params:
        return env["id"]
    return env["id"] + ":" + ",".join(f"{k}={v:g}" for k, v in sorted(params.items()))


# --------------------------------------------------------------------------- curves


class AggregateCurve(NamedTuple):
    """Across-seed mean of evaluation curves and a 95% t interval at each step."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def aggregate_curves(
    curves: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    confidence_level: float = 0.95,
) -> AggregateCurve:
    """Mean over runs of ``[(timesteps, returns), ...]`` with a per-step t interval.

    Runs of a study share their evaluation steps, and then those are the grid. If steps
    differ (e.g. rollout boundaries), the grid is the union of all steps inside the range
    every run covers, and each run is linearly interpolated onto it (never extrapolated).
    ``low``/``high`` are the Student t interval of the mean over runs at each step (the
    same method as the summary's means; a percentile bootstrap under-covers at 3-10 runs),
    NaN with fewer than 2 runs. Works on any values (raw returns or normalized scores).
    """
    steps, values = _on_common_grid(curves)
    mean = values.mean(axis=0)
    n = values.shape[0]
    if n < 2:
        nan = np.full_like(mean, np.nan)
        return AggregateCurve(steps, mean, nan, nan.copy())
    half = stats.t.ppf(0.5 + confidence_level / 2, n - 1) * values.std(axis=0, ddof=1) / np.sqrt(n)
    return AggregateCurve(steps, mean, mean - half, mean + half)


def _on_common_grid(curves: Sequence[tuple[ArrayLike, ArrayLike]]) -> tuple[np.ndarray, ...]:
    """(grid, values of shape runs x steps): see `aggregate_curves`."""
    pairs = [(np.asarray(t, dtype=float), np.asarray(r, dtype=float)) for t, r in curves]
    if not pairs:
        raise metrics.MetricsError("aggregate_curves needs at least one curve.")
    for t, r in pairs:
        if t.ndim != 1 or t.shape != r.shape or t.size == 0 or np.any(np.diff(t) <= 0):
            raise metrics.MetricsError(
                "Each curve needs 1-D, strictly increasing timesteps and returns of the same "
                f"non-zero length; got shapes {t.shape} and {r.shape}.")
    first = pairs[0][0]
    if all(np.array_equal(t, first) for t, _ in pairs):
        return first, np.stack([r for _, r in pairs])
    start, end = max(t[0] for t, _ in pairs), min(t[-1] for t, _ in pairs)
    if start > end:
        raise metrics.MetricsError(f"The curves share no range of steps ({start} > {end}).")
    grid = np.unique(np.concatenate([t for t, _ in pairs]))
    grid = grid[(grid >= start) & (grid <= end)]
    return grid, np.stack([np.interp(grid, t, r) for t, r in pairs])


# --------------------------------------------------------------------------- figures


def condition_colors(conditions: Sequence[str]) -> dict[str, str]:
    """A colour per condition, the same in every figure: scratch dark grey, the built-in
    conditions fixed colours, any other the next free one."""
    free = iter(_OTHER_COLORS)
    colors = {}
    for name in conditions:
        if name == "scratch":
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


def write_figures(study_dir: Path, result: dict[str, Any],
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


def curves_figure(result: dict[str, Any], curves: Mapping[str, list]) -> Figure:
    """Normalized (left) and raw (right) evaluation return vs target env steps: the mean over
    seeds per condition with a shaded 1 - alpha t band, threshold and random policy lines."""
    from matplotlib.ticker import FuncFormatter

    norm = result["metrics"]["normalization"]
    colors = condition_colors(list(curves))
    fig = _new_figure(*CURVES_SIZE)
    ax_score, ax_raw = fig.subplots(1, 2)
    for name, runs in curves.items():
        scores = [(t, metrics.normalize(r, norm["random_return"], norm["threshold"]))
                  for t, r in runs]
        label = f"{name} (n={len(runs)})"
        level = 1 - result.get("alpha", metrics.DEFAULT_ALPHA)
        _plot_band(ax_score, aggregate_curves(scores, confidence_level=level), colors[name], label)
        _plot_band(ax_raw, aggregate_curves(runs, confidence_level=level), colors[name], label)
    _reference_lines(ax_score, 1.0, 0.0, norm)
    _reference_lines(ax_raw, norm["threshold"], norm["random_return"], norm)
    ax_score.set(title="normalized score", ylabel="normalized return\n(0 = random, "
                 "1 = threshold)")
    ax_raw.set(title="raw return", ylabel="mean evaluation return")
    for ax in (ax_score, ax_raw):
        ax.set_xlabel("target env steps")
        ax.xaxis.set_major_formatter(FuncFormatter(format_steps))
        ax.set_xlim(left=0)
        ax.grid(alpha=0.25)
    fig.suptitle(f"{result['source']} → {result['target']} ({result['algo']}): mean over "
                 f"seeds, shaded {_level(result)} t interval")
    _legend_below(fig, *ax_score.get_legend_handles_labels())
    return fig


def _level(result: Mapping[str, Any]) -> str:
    return f"{1 - result.get('alpha', metrics.DEFAULT_ALPHA):.0%}"


def profiles_figure(result: dict[str, Any]) -> Figure:
    """Performance profiles (rliable's score distributions): for each normalized score tau,
    the fraction of a condition's runs whose final score (mean of the last 3 evaluations)
    exceeds tau, as a step function with its exact (Clopper-Pearson) pointwise band."""
    from matplotlib.ticker import PercentFormatter

    profile = result["metrics"]["profile"]
    taus = np.asarray(profile["taus"])
    colors = condition_colors(list(profile["conditions"]))
    fig = _new_figure(7.0, 4.5)
    ax = fig.subplots()
    for name, data in profile["conditions"].items():
        ax.fill_between(taus, data["low"], data["high"], step="post", color=colors[name],
                        alpha=0.15, lw=0)
        ax.step(taus, data["fraction"], where="post", color=colors[name], lw=2,
                label=f"{name} (n={data['n']})")
    ax.axvline(1.0, color="black", ls="--", lw=1.2, label="threshold (1)")
    ax.axvline(0.0, color="black", ls=":", lw=1.2, label="random policy (0)")
    ax.set(xlabel="normalized final score τ (mean of the last 3 evaluations)",
           ylabel="fraction of runs with score > τ", ylim=(-0.02, 1.02))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.25)
    ax.set_title(f"performance profiles: {result['target']}\nshaded: exact {_level(result)} "
                 "pointwise band (Clopper-Pearson)", fontsize=11)
    ax.legend(loc="upper right", fontsize=9, frameon=False)
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


def _reference_lines(ax: Axes, threshold: float, random: float, norm: Mapping) -> None:
    ax.axhline(threshold, color="black", ls="--", lw=1.2,
               label=f"threshold: {norm['threshold']:g} (normalized 1)")
    ax.axhline(random, color="black", ls=":", lw=1.2,
               label=f"random policy: {norm['random_return']:.4g} (normalized 0)")


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


def metrics_figure(result: dict[str, Any]) -> Figure:
    """Interval estimates in the style of rliable: a panel per metric (the primary claim
    first), a row per condition, the point estimate and its interval; censored values and
    bounds drawn as bounds (arrows), never as measured bars."""
    summary = result["metrics"]
    names = list(summary["conditions"])
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
    fig.suptitle(f"{result['source']} → {result['target']}: transfer metrics vs "
                 f"{summary['reference'] or 'no reference'}")
    level = f"{1 - summary.get('alpha', metrics.DEFAULT_ALPHA):.0%}"
    fig.supxlabel(_METRICS_CAPTION.format(level=level), fontsize=9, color="#444444")
    return fig


def _metric_panel(ax: Axes, panel: _Panel, summary: Mapping, rows: Mapping[str, int],
                  colors: Mapping[str, str]) -> None:
    drawn: list[float] = [panel.line]
    for name, y in rows.items():
        est = summary["conditions"][name].get(panel.key)
        if est is None:
            _row_text(ax, y, "reference" if name == summary["reference"] else "no reference")
            continue
        drawn += _draw_interval(ax, y, est, colors[name])
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


# --------------------------------------------------------------------------- tables


def _cells(name: str, data: dict[str, Any], reference: str | None) -> list[str]:
    cells = []
    for metric in METRICS:
        if metric.key in data and data[metric.key] is not None:
            cells.append(metric.formatter(data[metric.key]))
        else:
            cells.append("(reference)" if name == reference else "—")
    return cells


NO_METRICS = "no metrics"


def _rows(result: dict[str, Any]) -> list[list[str]]:
    """A row per condition in study order; the runs column reads "4 of 5" when some runs of
    the condition failed or did not finish, and a condition without finished runs has a row
    of "—" whose verdict cell says why ("no metrics (all 5 runs failed)")."""
    summary = result["metrics"]
    missing = _without_metrics(result)
    runs = result["runs"]
    rows = []
    for name in [c for c in runs if c in summary["conditions"] or c in missing]:
        if name in missing:
            rows.append([name, _runs_cell(0, runs[name])] + ["—"] * len(METRICS)
                        + [f"{NO_METRICS} ({missing[name]})"])
            continue
        data = summary["conditions"][name]
        verdict = data.get("verdict", {}).get("label", "—")
        rows.append([name, _runs_cell(data["n_runs"], runs[name])]
                    + _cells(name, data, summary.get("reference"))
                    + [f"({verdict})" if verdict == REFERENCE else verdict])
    return rows


def _runs_cell(used: int, record: Mapping[str, Any]) -> str:
    """Runs used: "5", or "4 of 5" when some runs failed or did not finish."""
    if not (record["failed"] or record["left_out"]):
        return str(used)
    return f"{used} of {record['finished'] + len(record['failed']) + len(record['left_out'])}"


def headers() -> list[str]:
    return ["condition", "runs"] + [metric.title for metric in METRICS] + ["verdict"]


_TERMINAL_STYLES = {POSITIVE: "bold green", NEGATIVE: "bold red", NO_CLEAR: "dim"}
_TERMINAL_WARNING = "bold yellow"


def terminal_table(result: dict[str, Any]) -> Table:
    """The comparison table, for the terminal."""
    level = f"{1 - result.get('alpha', metrics.DEFAULT_ALPHA):.0%}"
    table = Table(title=escape(f"{result['source']} → {result['target']} ({result['algo']}), "
                               f"{level} intervals over seeds"), title_justify="left")
    for title in headers():
        table.add_column(title, overflow="fold")
    for row in _rows(result):
        cells = [escape(cell) for cell in row]
        style = _TERMINAL_STYLES.get(row[-1]) or (
            _TERMINAL_WARNING if row[-1].startswith(NO_METRICS) else None)
        if style:
            cells[-1] = f"[{style}]{cells[-1]}[/]"
        if not row[1].isdigit():  # some runs failed or did not finish
            cells[1] = f"[{_TERMINAL_WARNING}]{cells[1]}[/]"
        table.add_row(*cells)
    return table


def summary_csv(result: dict[str, Any]) -> str:
    """One row per condition x metric: point estimate, interval bounds, and the shown text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["condition", "metric", "point", "low", "high", "flags", "display"])
    for name, data in result["metrics"]["conditions"].items():
        for key, value in data.items():
            if not isinstance(value, dict) or key == "verdict":
                continue
            display = FORMATTERS.get(key, metrics.format_estimate)(value)
            writer.writerow([name, key, _csv(value.get("point")), _csv(value.get("low")),
                             _csv(value.get("high")), _flags(value), display])
    return buffer.getvalue()


def _flags(value: dict[str, Any]) -> str:
    """What an empty or plain number in the CSV means: censored values, bounds, p-values."""
    flags = [f"{part} censored (>{value['censored_at']})"
             for part in ("point", "low", "high") if value.get(f"{part}_censored")]
    words = {metrics.ABOVE: "a lower bound (the truth is above it)",
             metrics.BELOW: "an upper bound (the truth is below it)"}
    flags += [f"{part} is {words[value[f'{part}_bound']]}" for part in ("point", "low", "high")
              if value.get(f"{part}_bound") in words]
    if value.get("p_value") is not None:
        flags.append(f"p={value['p_value']:.6g}")
    if value.get("level") is not None:
        flags.append(f"interval level {value['level']:.4g}")
    return "; ".join(flags)


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)


# --------------------------------------------------------------------------- description


def env_differences(source: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """What differs between two env specs (study.json's ``spec.source``/``spec.target``), one
    markdown line each (names in backticks). Named variants and family defaults are resolved
    through the env catalog when it knows the ids; otherwise the specs are compared as written."""
    src_family, src_base, src_params = _resolve_env(source)
    tgt_family, tgt_base, tgt_params = _resolve_env(target)
    lines = []
    if src_base != tgt_base:
        lines.append(f"environment `{src_base}` → `{tgt_base}`")
    same_family = src_family is not None and src_family is tgt_family
    parameters = {p.name: p for p in tgt_family.parameters} if same_family else {}
    if same_family:  # fill in defaults so that "unset" reads as its value
        defaults = {name: p.default for name, p in parameters.items()}
        src_params, tgt_params = {**defaults, **src_params}, {**defaults, **tgt_params}
    for name in sorted(set(src_params) | set(tgt_params)):
        before, after = src_params.get(name), tgt_params.get(name)
        if before != after:
            parameter = parameters.get(name)
            unit = f" {parameter.unit}" if parameter and parameter.unit not in ("", "-") else ""
            doc = f" ({parameter.doc})" if parameter else ""
            lines.append(f"`{name}`: {_value(before)} → {_value(after)}{unit}{doc}")
    for key in sorted((set(source) | set(target)) - {"id", "params"}):
        if source.get(key) != target.get(key):
            lines.append(f"`{key}`: {_value(source.get(key))} → {_value(target.get(key))}")
    return lines


def _resolve_env(env: Mapping[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """(family or None, base id, variant + explicit parameters) of an env spec."""
    explicit = dict(env.get("params") or {})
    try:
        from . import envs as catalog

        found = catalog.family_of(env["id"])
    except (RLTransferError, ImportError):  # e.g. a family's optional package is missing
        found = None
    if found is None:
        return None, env["id"], explicit
    family, base_id, params = found
    return family, base_id, {**params, **explicit}


def _value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _hparams_text(hparams: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, dict | list) else v}"
                     for k, v in hparams.items())


def _description(result: dict[str, Any], study: dict[str, Any]) -> list[tuple[str, str]]:
    """(term, text) pairs of what was compared; text marks code with backticks."""
    spec = study["spec"]
    differences = env_differences(spec["source"], spec["target"])
    conditions = ", ".join(f"{c} (reference)" if c == result["metrics"]["reference"] else c
                           for c in spec["conditions"])
    items = [
        ("source → target", f"`{result['source']}` → `{result['target']}`"),
        ("what differs", "; ".join(differences) or "nothing: the same environment"),
        ("algorithm", f"{result['algo']}; conditions: {conditions}"),
        ("seeds", f"{spec['seeds']} per condition (seeds {spec['seed']}–"
                  f"{spec['seed'] + spec['seeds'] - 1})"),
        ("budgets", _budgets_text(spec)),
        ("normalization", f"threshold {result['threshold']:g} ({result['threshold_from']}), "
                          f"random policy's return on the target {result['random_return']:.4g}; "
                          "scores are normalized: 0 = random, 1 = threshold"),
        ("hyperparameters (target)", f"`{_hparams_text(study['target_agent']['hparams'])}`"),
    ]
    source_hparams = (study.get("source_agent") or {}).get("hparams")
    if source_hparams and source_hparams != study["target_agent"]["hparams"]:
        items.append(("hyperparameters (source)", f"`{_hparams_text(source_hparams)}`"))
    if study.get("source"):
        items.append(("source policy", _source_text(study["source"])))
    if study.get("versions"):
        items.append(("versions", ", ".join(f"{k} {v}" for k, v in study["versions"].items())))
    if study.get("started"):
        items.append(("ran", f"{study['started']} – {study.get('ended') or 'unfinished'}"))
    return items


def _budgets_text(spec: Mapping[str, Any]) -> str:
    text = f"target {spec['timesteps']:,} env steps per run, "
    if spec.get("source_model"):  # --source-model: the source budget was never spent
        text += f"source: external checkpoint `{spec['source_model']}` (not trained by rltransfer)"
    else:
        text += f"source {spec['source_timesteps']:,}"
    if spec.get("eval_freq"):
        text += (f"; evaluation every {spec['eval_freq']:,} steps "
                 f"({spec.get('eval_episodes', '?')} episodes)")
    if spec.get("n_envs"):
        text += f"; {spec['n_envs']} parallel envs"
    return text


def _source_text(source: Mapping[str, Any]) -> str:
    text = str(source.get("kind", "?"))
    if text == "external":  # --source-model (runner._check_external's record)
        text = f"external checkpoint `{source.get('path', '?')}`"
        if source.get("sha256"):
            text += f" (sha256 {str(source['sha256'])[:12]}…)"
        if source.get("algo_in_checkpoint"):
            text += f", a {source['algo_in_checkpoint']} checkpoint not trained by rltransfer"
    if source.get("reused"):
        text += " (reused)"
    if source.get("final_return") is not None:
        text += f", final return on the source {source['final_return']:.4g}"
    return text


def table_note(alpha: float) -> str:
    """What the table's numbers are, under every table."""
    return (
        f"Intervals are {1 - alpha:.0%} intervals over seeds, on normalized scores (0 = random, "
        "1 = threshold). Only the area difference (primary, Welch t) decides the verdict; "
        "the other columns are descriptive effects. Means and differences: t and Welch t "
        "intervals. Time to threshold: the median over seeds with its order-statistic "
        "interval (its exact level is printed when below 95%); a run that never reaches the "
        "threshold is censored, printed as >budget, never as a number. Speedup: scratch's "
        "median time / the condition's, from those two intervals; >x and <x are bounds. "
        "P(improve): P(area > scratch's area), Newcombe interval. Transfer ratio: (area − "
        "scratch's) / scratch's area, Fieller interval, reported only when scratch's area is "
        "clearly above 0; it depends on where 0 (the random policy) lies."
    )


_NO_VERDICTS = "No condition besides scratch: nothing to judge."
NO_VERDICT = "no verdict"


def _verdicts(result: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(condition, verdict) of every condition compared with the reference, and "no verdict"
    for every condition without finished runs."""
    verdicts = [(name, data["verdict"])
                for name, data in result["metrics"]["conditions"].items()
                if data.get("verdict", {}).get("label") != REFERENCE]
    verdicts += [(name, {"label": NO_VERDICT,
                         "reason": f"No metrics: {why}, so there is nothing to judge."})
                 for name, why in _without_metrics(result).items()]
    return verdicts


_WARNINGS_TITLE = "⚠ Warnings"


def _reading(verdict: Mapping[str, Any]) -> str:
    """The one-line reading, then the reason when it adds to it."""
    reading, reason = verdict.get("reading") or "", verdict.get("reason") or ""
    if not reading:
        return reason
    return f"{reading[0].upper()}{reading[1:]}. {reason}"


def _tensorboard_command(result: dict[str, Any], study: dict[str, Any]) -> str:
    return f"tensorboard --logdir {Path(study['spec']['out']) / result['study']}"


# --------------------------------------------------------------------------- report.md


def report_markdown(result: dict[str, Any], study: dict[str, Any]) -> str:
    """report.md: what was compared, verdicts, the table with intervals, the figures, and how
    to reproduce it."""
    lines = [f"# Transfer study `{result['study']}`", ""]
    if result.get("warnings"):
        lines += [f"## {_WARNINGS_TITLE}", ""]
        lines += [f"- {_md_text(warning)}" for warning in result["warnings"]]
        lines += [""]
    lines += ["## What was compared", ""]
    lines += [f"- **{term}**: {text}" for term, text in _description(result, study)]
    lines += ["", "## Verdict", ""]
    lines += [f"- **{name}: {verdict['label']}**: {_reading(verdict)}"
              for name, verdict in _verdicts(result)] or [_NO_VERDICTS]
    if result.get("seed_note"):
        lines += ["", f"**Seeds:** {result['seed_note']}"]
    lines += ["", f"How verdicts are decided: {result['verdict_rule']}", "", "## Metrics", "",
              "| " + " | ".join(headers()) + " |", "|" + "---|" * len(headers())]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    lines += ["", table_note(result["alpha"])]
    lines += ["", "## Figures", "",
              f"![{_FIGURE_CAPTIONS['curves.png']}](curves.png)", "",
              "(also as [curves.svg](curves.svg))", "",
              f"![{_FIGURE_CAPTIONS['profiles.png']}](profiles.png)", "",
              f"![{_FIGURE_CAPTIONS['metrics.png']}](metrics.png)", ""]
    lines += ["## Reproduce", ""]
    if study.get("command"):
        lines += ["```", study["command"], "```", ""]
    lines += [f"Learning curves in TensorBoard: `{_tensorboard_command(result, study)}` "
              "(tag `eval/mean_reward`)."]
    return "\n".join(lines) + "\n"


def _md_text(text: str) -> str:
    """`text` as literal markdown: backslash-escape what would become code, emphasis, links
    or HTML (an error message may hold any of them)."""
    return re.sub(r"([\\`*<>\[\]])", r"\\\1", text)


# --------------------------------------------------------------------------- report.html

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1f2328; background: #f6f8fa; margin: 0; line-height: 1.5; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
header { border-bottom: 3px solid #1f77b4; margin-bottom: 16px; }
h1 { font-size: 26px; margin: 0 0 4px; }
.subtitle { color: #57606a; margin: 0 0 12px; font-size: 15px; word-break: break-all; }
h2 { font-size: 20px; margin: 28px 0 10px; border-bottom: 1px solid #d0d7de; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dt { font-weight: 600; color: #57606a; }
dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       font-size: 13px; background: #f0f2f4; padding: 1px 4px; border-radius: 4px; }
pre { background: #161b22; color: #e6edf3; padding: 12px 16px; border-radius: 6px;
      overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
pre code { background: none; color: inherit; padding: 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { font-variant-numeric: tabular-nums; }
td.name, .ci, .badge { white-space: nowrap; }
.verdict { border-left: 6px solid; border-radius: 6px; padding: 8px 14px; margin: 10px 0; }
.verdict p { margin: 4px 0 0; }
.positive { border-color: #1a7f37; background: #dafbe1; }
.negative { border-color: #cf222e; background: #ffebe9; }
.inconclusive { border-color: #8c959f; background: #f0f2f4; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 12px; color: #fff;
         font-weight: 600; font-size: 13px; }
.badge.positive { background: #1a7f37; } .badge.negative { background: #cf222e; }
.badge.inconclusive { background: #6e7781; } .badge.reference { background: #afb8c1; }
.note { color: #57606a; font-size: 13px; }
.warnings { border-left: 6px solid #bf8700; background: #fff8c5; border-radius: 6px;
            padding: 4px 14px 8px; margin: 10px 0 16px; }
.warnings h2 { border: none; margin: 8px 0 4px; color: #7d4e00; }
.warnings ul { margin: 0; padding-left: 20px; overflow-wrap: anywhere; }
.missing { border-color: #bf8700; background: #fff8c5; }
.badge.missing { background: #9a6700; }
figure { margin: 12px 0 24px; } figure img { width: 100%; height: auto; }
figcaption { color: #57606a; font-size: 13px; }
"""

_VERDICT_CLASSES = {POSITIVE: "positive", NEGATIVE: "negative", NO_CLEAR: "inconclusive",
                    REFERENCE: "reference", NO_VERDICT: "missing"}


def _verdict_class(label: str) -> str:
    if label.startswith(NO_METRICS):
        return "missing"
    return _VERDICT_CLASSES.get(label, "inconclusive")


def report_html(result: dict[str, Any], study: dict[str, Any],
                images: Mapping[str, bytes]) -> str:
    """report.html: report.md's content as one self-contained page (inline CSS, the figures
    as base64 PNG data URIs, no external resources)."""
    title = f"Transfer study {result['study']}"
    body = [
        f"<header><h1>Transfer study</h1><p class=\"subtitle\">{_esc(result['source'])} → "
        f"{_esc(result['target'])} · {_esc(result['algo'])} · {_esc(result['study'])}</p>"
        "</header>",
        _html_warnings(result), _html_description(result, study), _html_verdicts(result),
        _html_table(result), _html_figures(images), _html_reproduce(result, study),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: str) -> str:
    """Escape `text`, turning markdown `code` spans into <code> elements."""
    parts = text.split("`")
    return "".join(f"<code>{_esc(p)}</code>" if i % 2 else _esc(p) for i, p in enumerate(parts))


def _html_warnings(result: dict[str, Any]) -> str:
    if not result.get("warnings"):
        return ""
    items = "".join(f"<li>{_esc(warning)}</li>" for warning in result["warnings"])
    return (f"<section class=\"warnings\"><h2>{_WARNINGS_TITLE}</h2><ul>{items}</ul>"
            "</section>")


def _html_description(result: dict[str, Any], study: dict[str, Any]) -> str:
    items = "".join(f"<dt>{_esc(term)}</dt><dd>{_inline(text)}</dd>"
                    for term, text in _description(result, study))
    return f"<section><h2>What was compared</h2><dl>{items}</dl></section>"


def _html_verdicts(result: dict[str, Any]) -> str:
    cards = []
    for name, verdict in _verdicts(result):
        css = _verdict_class(verdict["label"])
        cards.append(f"<div class=\"verdict {css}\"><strong>{_esc(name)}</strong> "
                     f"<span class=\"badge {css}\">{_esc(verdict['label'])}</span>"
                     f"<p>{_esc(_reading(verdict))}</p></div>")
    return ("<section><h2>Verdict</h2>" + ("".join(cards) or f"<p>{_NO_VERDICTS}</p>")
            + (f"<p><strong>Seeds:</strong> {_esc(result['seed_note'])}</p>"
               if result.get("seed_note") else "")
            + f"<p class=\"note\">How verdicts are decided: {_esc(result['verdict_rule'])}</p>"
            "</section>")


def _html_table(result: dict[str, Any]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers())
    rows = []
    for row in _rows(result):
        cells = [f"<td class=\"name\"><strong>{_esc(row[0])}</strong></td>"]
        cells += [f"<td class=\"num\">{_interval_cell(cell)}</td>" for cell in row[1:-1]]
        label = row[-1][1:-1] if row[-1] == f"({REFERENCE})" else row[-1]
        cells.append(f"<td><span class=\"badge {_verdict_class(label)}\">{_esc(label)}</span>"
                     "</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = _esc(table_note(result["alpha"]))
    return (f"<section><h2>Metrics</h2><table><thead><tr>{head}</tr></thead><tbody>"
            + "".join(rows) + f"</tbody></table><p class=\"note\">{note}</p></section>")


def _interval_cell(text: str) -> str:
    """Escaped cell text that may wrap before an interval but never inside one."""
    return _esc(text).replace("[", "<span class=\"ci\">[").replace("]", "]</span>")


_FIGURE_CAPTIONS = {
    "curves.png": "Learning curves on the target: mean over seeds per condition, shaded t "
                  "interval of the mean; left normalized (0 = random, 1 = threshold), "
                  "right raw returns.",
    "profiles.png": "Performance profiles: the fraction of runs whose final normalized score "
                    "exceeds each value, with exact pointwise bands.",
    "metrics.png": "The primary claim (area vs scratch) and the descriptive effects: point "
                   "estimates and intervals over seeds; bounds and censored values are drawn "
                   "as arrows, never as measured bars.",
}


def _html_figures(images: Mapping[str, bytes]) -> str:
    figures = []
    for name, caption in _FIGURE_CAPTIONS.items():
        if name not in images:
            continue
        data = base64.b64encode(images[name]).decode("ascii")
        figures.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{_esc(caption)}"
                       f"\"><figcaption>{_esc(caption)}</figcaption></figure>")
    return "<section><h2>Figures</h2>" + "".join(figures) + "</section>"


def _html_reproduce(result: dict[str, Any], study: dict[str, Any]) -> str:
    command = (f"<pre><code>{_esc(study['command'])}</code></pre>" if study.get("command")
               else "<p class=\"note\">The command line was not recorded.</p>")
    return (f"<section><h2>Reproduce</h2>{command}<p>Learning curves in TensorBoard: "
            f"<code>{_esc(_tensorboard_command(result, study))}</code> (tag "
            "<code>eval/mean_reward</code>).</p></section>")


# --- collections of studies: the transfer matrix and comparisons ---------------------------

MATRIX_METRICS = (("auc_difference", "area vs scratch (primary)"),
                  ("jumpstart", "jumpstart (step 0 vs scratch)"))


def matrix_figure(result: Mapping[str, Any]) -> Figure:
    """Heatmaps per condition of transfer ratio and jumpstart: rows are sources, columns
    targets; colour is the point estimate (diverging at 0) and each cell prints the estimate
    with its 95% interval, so the interval width is visible next to the colour."""
    conditions, sources, targets = list(result["cells"]), result["sources"], result["targets"]
    fig = _new_figure(max(8.0, 2.4 * len(targets) * 2 + 3),
                      1.0 + max(2.0, 1.0 * len(sources)) * max(1, len(conditions)))
    axes = fig.subplots(max(1, len(conditions)), 2, squeeze=False)
    for row, condition in enumerate(conditions):
        for col, (key, title) in enumerate(MATRIX_METRICS):
            _matrix_panel(fig, axes[row][col], result["cells"][condition], sources, targets, key)
            axes[row][col].set_title(f"{condition}: {title}")
    fig.suptitle("transfer matrix: point estimate [interval] per source → target pair; "
                 "verdicts Holm-corrected across every cell")
    return fig


def _matrix_panel(fig: Figure, ax: Any, cells: Mapping[str, Any], sources: list[str],
                  targets: list[str], key: str) -> None:
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
            ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(targets)), labels=[textwrap.fill(t, 20) for t in targets])
    ax.set_yticks(range(len(sources)), labels=[textwrap.fill(s, 24) for s in sources])
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    fig.colorbar(image, ax=ax, shrink=0.8)


def write_matrix_figure(folder: Path, result: Mapping[str, Any]) -> None:
    """matrix.png beside matrix.md."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        atomic_write_bytes(folder / "matrix.png", _render(matrix_figure(result), "png"))


_STUDY_STYLES = ("-", "--", ":", "-.")


def compare_figure(studies: Sequence[Path]) -> Figure:
    """Normalized score vs target env steps for every condition of every study: colour is the
    condition, line style the study; mean over seeds with a shaded 95% band."""
    fig = _new_figure(*CURVES_SIZE)
    ax = fig.subplots()
    names = {name for study in studies for name in read_json(study / "study.json")["spec"][
        "conditions"]}
    colors = condition_colors(sorted(names, key=lambda c: (c != "scratch", c)))
    for index, study in enumerate(studies):
        record = read_json(study / "study.json")
        curves, _, _ = collect_runs(study, list(record["spec"]["conditions"]))
        style = _STUDY_STYLES[index % len(_STUDY_STYLES)]
        for condition, runs in curves.items():
            if not runs:
                continue
            curve = aggregate_curves(runs)
            mean, low, high = (metrics.normalize(v, record["target_random_return"],
                                                 record["threshold"])
                               for v in (curve.mean, curve.low, curve.high))
            ax.plot(curve.steps, mean, style, color=colors[condition],
                    label=f"{study.name}: {condition} (n={len(runs)})")
            ax.fill_between(curve.steps, low, high, color=colors[condition], alpha=0.12)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="threshold (1)")
    ax.axhline(0.0, color="black", linestyle=":", linewidth=1, label="random policy (0)")
    ax.set_xlabel("target env steps")
    ax.set_ylabel("normalized return (0 = random, 1 = threshold)")
    ax.xaxis.set_major_formatter(lambda value, _: format_steps(value))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)
    ax.set_title("studies compared: mean over seeds, shaded 95% bootstrap CI")
    return fig


def write_compare_figure(out: Path, studies: Sequence[Path]) -> None:
    """compare.png beside compare.md."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        atomic_write_bytes(out / "compare.png", _render(compare_figure(studies), "png"))
