"""The transfer matrix's sweep: when its targets (or sources) are one env with one parameter
varied, as ``--targets 'CartPole-v1:length=grid(0.25,2.0,8)'`` gives, matrix.png adds line
plots of the area difference and the jumpstart against that parameter, one line per source
with the source's own value marked, so that where transfer helps, where it hurts and how it
degrades with distance from the source (interpolation vs extrapolation) read off one axis.

`sweep_series` is pure (matrix.json's content and matrix_spec.json's record in, the plotted
numbers out); `draw_sweep` draws them into a figure (matplotlib, imported by its caller's
figure: nothing here imports a plotting library at module level).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import envs as catalog
from ..errors import RLTransferError
from ..specs import EnvSpec
from .metrics import MATRIX_METRICS
from .verdict import NEGATIVE, POSITIVE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

AXES = ("targets", "sources")
"""The side of the matrix a sweep runs along, in the order they are looked for."""
LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
               "#17becf", "#bcbd22", "#7f7f7f")
GROUP_STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Mark:
    """Where a line's own env sits on the swept axis: a value (vertical line) or, for a
    randomized parameter, the range its distribution draws from (shaded)."""

    value: float | None = None
    span: tuple[float, float] | None = None


@dataclass(frozen=True)
class Series:
    """One line: a condition, the env on the other side of the matrix (a source when the
    targets are swept), and the values of any other varied parameters (`group`)."""

    condition: str
    env: str
    group: str  # e.g. "force_mag=5" when a product of grids varies it too; '' otherwise
    x: tuple[float, ...]
    swept: tuple[str, ...]  # the swept envs, as matrix.json names them, aligned with x
    estimates: Mapping[str, tuple[Mapping[str, Any] | None, ...]]  # metric key -> per x
    significant: tuple[bool, ...]  # Holm verdict positive or negative, per x
    mark: Mark | None


@dataclass(frozen=True)
class Sweep:
    """A swept parameter of a matrix and its lines."""

    axis: str  # "targets" or "sources"
    env: str  # the base Gymnasium id every swept env shares
    parameter: str
    values: tuple[float, ...]  # sorted
    series: tuple[Series, ...]

    def to_dict(self) -> dict[str, Any]:
        """What matrix.json records of the sweep."""
        return {"axis": self.axis, "env": self.env, "parameter": self.parameter,
                "values": list(self.values)}


def resolved(spec: EnvSpec) -> tuple[str, dict[str, Any]]:
    """(base id, every parameter's value) of `spec`: the family's defaults, then a named
    variant's values, then the spec's own, so that ``CartPole-v1`` sits at length 0.5. An env
    outside the catalog (or whose family cannot load) has only its own values."""
    try:
        found = catalog.family_of(spec.id)
    except RLTransferError:
        found = None
    if found is None:
        return spec.id + spec.observation_label, dict(spec.params)
    family, base_id, variant = found
    values: dict[str, Any] = {p.name: p.default for p in family.parameters}
    return base_id + spec.observation_label, {**values, **variant, **spec.params}


def find_sweep(specs: Sequence[EnvSpec]) -> tuple[str, str, list[dict[str, Any]]] | None:
    """(base id, swept parameter, each env's values) when `specs` are one env (same base id
    and observations) whose numeric parameters vary; the parameter with the most distinct
    values is the axis (ties: the first by name), any other varied one groups the lines."""
    if len(specs) < 2:
        return None
    found = [resolved(spec) for spec in specs]
    bases = {base for base, _ in found}
    if len(bases) != 1:
        return None
    values = [params for _, params in found]
    names = set().union(*values)
    numeric = [name for name in sorted(names)
               if all(isinstance(v.get(name), float | int) for v in values)]
    counts = {name: len({v[name] for v in values}) for name in numeric}
    varied = [name for name in numeric if counts[name] > 1]
    if not varied:
        return None
    parameter = max(varied, key=lambda name: counts[name])  # max keeps the first of a tie
    return bases.pop(), parameter, values


def sweep_series(result: Mapping[str, Any], record: Mapping[str, Any]) -> Sweep | None:
    """The sweep of a matrix (matrix.json's `result`, matrix_spec.json's `record`), or None
    when neither its targets nor its sources are a sweep. Targets are looked at first: then
    each line is a source, x the target's value, and the mark the source's own value."""
    sides = {axis: [EnvSpec.from_dict(d) for d in record[axis]] for axis in AXES}
    for axis in AXES:
        found = find_sweep(sides[axis])
        if found:
            break
    else:
        return None
    base, parameter, values = found
    swept, others = sides[axis], sides["sources" if axis == "targets" else "targets"]
    groups = [_group_label(params, parameter, values) for params in values]
    first = {group: i for i, group in reversed(list(enumerate(groups)))}  # as listed
    order = sorted(range(len(swept)), key=lambda i: (first[groups[i]], values[i][parameter]))
    series = []
    for condition, rows in result["cells"].items():
        for other in others:
            mark = _mark(other, base, parameter)
            for group in dict.fromkeys(groups[i] for i in order):
                picked = [i for i in order if groups[i] == group]
                cells = [_cell(rows, other, swept[i], axis) for i in picked]
                if not any(cells):
                    continue
                series.append(Series(
                    condition=condition, env=str(other), group=group,
                    x=tuple(float(values[i][parameter]) for i in picked),
                    swept=tuple(str(swept[i]) for i in picked),
                    estimates={key: tuple((c or {}).get(key) for c in cells)
                               for key, _ in MATRIX_METRICS},
                    significant=tuple(((c or {}).get("verdict") or {}).get("label")
                                      in (POSITIVE, NEGATIVE) for c in cells),
                    mark=mark))
    distinct = sorted({float(v[parameter]) for v in values})
    return Sweep(axis, base, parameter, tuple(distinct), tuple(series))


def _group_label(params: Mapping[str, Any], parameter: str,
                 values: Sequence[Mapping[str, Any]]) -> str:
    varied = [name for name in sorted(params) if name != parameter
              and len({repr(v.get(name)) for v in values}) > 1]
    return ",".join(f"{name}={_text(params.get(name))}" for name in varied)


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def _cell(rows: Mapping[str, Any], other: EnvSpec, swept: EnvSpec,
          axis: str) -> Mapping[str, Any] | None:
    source, target = (other, swept) if axis == "targets" else (swept, other)
    return rows.get(str(source), {}).get(str(target))


def _mark(spec: EnvSpec, base: str, parameter: str) -> Mark | None:
    """The line env's own value of the swept parameter, when it is the same env."""
    spec_base, params = resolved(spec)
    value = params.get(parameter)
    if spec_base != base or value is None:
        return None
    if isinstance(value, float | int):
        return Mark(value=float(value))
    span = _support(str(value))
    return Mark(span=span) if span else None


def _support(text: str) -> tuple[float, float] | None:
    """The range a randomized parameter's distribution ("uniform(0.25,1)") draws from."""
    from ..envs.randomization import parse_distribution

    try:
        low, high = parse_distribution(text).support()
    except (RLTransferError, ValueError):
        return None
    return (float(low), float(high)) if low < high else None


# --------------------------------------------------------------------------- drawing


def draw_sweep(parent: Figure | SubFigure, sweep: Sweep) -> list[Axes]:
    """A row per condition and a column per matrix metric: each series' point estimates
    (filled markers where the Holm verdict is positive or negative, open elsewhere) with
    its interval as a band, y = 0 dashed, each line's own value marked in its colour."""
    conditions = list(dict.fromkeys(s.condition for s in sweep.series))
    envs = list(dict.fromkeys(s.env for s in sweep.series))
    groups = list(dict.fromkeys(s.group for s in sweep.series))
    colors = {env: LINE_COLORS[i % len(LINE_COLORS)] for i, env in enumerate(envs)}
    styles = {group: GROUP_STYLES[i % len(GROUP_STYLES)] for i, group in enumerate(groups)}
    axes = parent.subplots(len(conditions), len(MATRIX_METRICS), squeeze=False)
    side = sweep.axis[:-1]  # "target" or "source"
    other = "source" if sweep.axis == "targets" else "target"
    for row, condition in enumerate(conditions):
        for col, (key, title) in enumerate(MATRIX_METRICS):
            ax = axes[row][col]
            ax.set_label(f"sweep:{condition}:{key}")
            for series in (s for s in sweep.series if s.condition == condition):
                _draw_series(ax, series, key, colors[series.env], styles[series.group], other)
            ax.axhline(0.0, color="black", ls="--", lw=1, zorder=0)
            ax.set(title=f"{condition}: {title}", xlabel=f"{side} {sweep.parameter}")
            ax.grid(alpha=0.25)
    handles, labels = axes[0][0].get_legend_handles_labels()
    parent.legend(handles, labels, loc="outside lower center", frameon=False,
                  ncols=min(len(labels), 4) or 1)
    parent.suptitle(f"{sweep.env}: against the {side}'s {sweep.parameter}, one line per "
                    f"{other} (dotted line / hatching: its own value / range); band: interval; "
                    "filled: Holm-significant", fontsize=11)
    return [ax for row in axes for ax in row]


def _draw_series(ax: Axes, series: Series, key: str, color: str, style: str,
                 side: str) -> None:
    estimates = series.estimates[key]

    def column(name: str) -> Any:
        return np.array([np.nan if (e or {}).get(name) is None else e[name]
                         for e in estimates], dtype=float)

    x, point, low, high = np.array(series.x), column("point"), column("low"), column("high")
    label = f"{side} {series.env}" + (f" ({series.group})" if series.group else "")
    ax.fill_between(x, low, high, color=color, alpha=0.15, lw=0)
    ax.plot(x, point, ls=style, color=color, lw=2, label=label)
    significant = np.array(series.significant, dtype=bool)
    for chosen, face in ((significant, color), (~significant, "white")):
        ax.plot(x[chosen], point[chosen], ls="none", marker="o", ms=7, color=color, mfc=face,
                mew=1.6, zorder=3)
    if series.mark and series.mark.value is not None:
        ax.axvline(series.mark.value, color=color, ls=":", lw=1.8)
    elif series.mark and series.mark.span is not None:
        # hatched, so a source's range does not read as another interval band
        ax.axvspan(*series.mark.span, facecolor="none", edgecolor=color, hatch="//",
                   alpha=0.3, lw=0)
