"""Sweeps in the transfer matrix: grid(low,high,n) expansion, its one-line errors, the sweep's
plotted data (`sweep_series`) and its panels in matrix.png."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from rltransfer.cli import main
from rltransfer.io_utils import atomic_write_json, read_json
from rltransfer.report.figures import FIGURE_DPI, matrix_figure
from rltransfer.report.sweep_figure import Mark, sweep_series
from rltransfer.report.verdict import NO_CLEAR, POSITIVE
from rltransfer.specs import EnvSpec
from rltransfer.study.matrix import parse_env_list, summarize_matrix

# --------------------------------------------------------------------------- expansion


def test_grid_expands_to_evenly_spaced_values_both_ends_included():
    envs = parse_env_list("CartPole-v1:length=grid(0.25,2.0,8)")
    assert [e.params["length"] for e in envs] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    assert [str(e) for e in envs] == [f"CartPole-v1:length={v}" for v in
                                      ("0.25", "0.5", "0.75", "1", "1.25", "1.5", "1.75", "2")]


def test_grid_values_carry_no_float_noise():
    envs = parse_env_list("CartPole-v1:length=grid(0,1,11)")
    assert envs[3].params["length"] == 0.3  # numpy.linspace gives 0.30000000000000004
    assert [e.params["length"] for e in envs] == [i / 10 for i in range(11)]


def test_grid_values_are_the_values_their_labels_show():
    envs = parse_env_list("CartPole-v1:length=grid(0.5,1.5,7)")  # thirds and sixths
    for env in envs:
        assert EnvSpec.parse(str(env)).params == env.params


def test_grids_in_one_env_expand_to_their_product_beside_fixed_values():
    envs = parse_env_list("CartPole-v1:length=grid(0.5,1,2),force_mag=grid(5,15,3),"
                          "masscart=2;Acrobot-v1")
    assert [str(e) for e in envs] == [
        "CartPole-v1:force_mag=5,length=0.5,masscart=2",
        "CartPole-v1:force_mag=10,length=0.5,masscart=2",
        "CartPole-v1:force_mag=15,length=0.5,masscart=2",
        "CartPole-v1:force_mag=5,length=1,masscart=2",
        "CartPole-v1:force_mag=10,length=1,masscart=2",
        "CartPole-v1:force_mag=15,length=1,masscart=2",
        "Acrobot-v1"]
    assert envs[4].params == {"length": 1.0, "force_mag": 10.0, "masscart": 2.0}


def test_a_grid_after_another_env_in_a_comma_list():
    envs = parse_env_list("CartPole-v1:length=0.1,CartPole-v1:masspole=grid(0.1,0.3,3)")
    assert [str(e) for e in envs] == ["CartPole-v1:length=0.1", "CartPole-v1:masspole=0.1",
                                      "CartPole-v1:masspole=0.2", "CartPole-v1:masspole=0.3"]


TINY = ["--seeds", "2", "--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
        "--eval-episodes", "2", "--n-envs", "2"]


@pytest.mark.parametrize("option,envs,message", [
    ("--targets", "CartPole-v1:length=grid(0.25,2.0,1)",
     "length=grid(0.25,2.0,1) in --targets needs at least 2 points: write grid(low,high,n) "
     "with n >= 2"),
    ("--sources", "CartPole-v1:length=grid(0.25,2.0)",
     "length=grid(0.25,2.0) in --sources needs three numbers (low, high, points), not 2: "
     "write grid(low,high,n), e.g. grid(0.25,2.0,8)"),
    ("--targets", "CartPole-v1:length=grid(0.25,2.0,2.5)",
     "length=grid(0.25,2.0,2.5) in --targets needs a whole number of points, not 2.5: "
     "write grid(low,high,n) with n a whole number >= 2"),
    ("--targets", "CartPole-v1:length=grid(2.0,0.25,8)",
     "length=grid(2.0,0.25,8) in --targets needs low < high: write grid(low,high,n), e.g. "
     "grid(0.25,2.0,8)"),
    ("--targets", "CartPole-v1:length=grid(1,1,3)",
     "length=grid(1,1,3) in --targets needs low < high: write grid(low,high,n), e.g. "
     "grid(0.25,2.0,8)"),
    ("--targets", "CartPole-v1:length=grid(0.25,2.0,101)",
     "length=grid(0.25,2.0,101) in --targets has 101 points, each a study: give at most 100 "
     "per grid"),
    ("--targets", "CartPole-v1:length=grid(1,1.000001,3)",
     "length=grid(1,1.000001,3) in --targets has points closer than 6 significant digits, "
     "which would name the same env: widen the range or use fewer points"),
    ("--targets", "CartPole-v1:length=grid(a,1,3)",
     "length=grid(a,1,3) in --targets has a value that is not a number: write "
     "grid(low,high,n), e.g. grid(0.25,2.0,8)"),
    ("--targets", "CartPole-v1:length=1;CartPole-v1:length=grid(0,2,3)",
     "CartPole-v1:length=1 is given twice in --targets (after expanding grids): give each "
     "environment once"),
    # one grid value out of the parameter's range: the per-pair checks stop the whole matrix
    ("--targets", "CartPole-v1:length=grid(1,21,3)",
     "length=11 is outside its valid range [0.05, 10] m in CartPole-v1:length=11: pick a "
     "value inside the range"),
])
def test_grid_errors_are_one_line_and_write_nothing(tmp_path, capsys, option, envs, message):
    args = {"--sources": "CartPole-v1", "--targets": "CartPole-v1:length=1", option: envs}
    code = main(["matrix", "--sources", args["--sources"], "--targets", args["--targets"],
                 "--out", str(tmp_path), "--name", "m", "--workers", "1", *TINY])
    assert code == 2
    assert capsys.readouterr().err == f"rltransfer: error: {message}\n"
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the sweep's data


def _estimate(point: float, half: float = 0.1) -> dict:
    return {"point": point, "low": point - half, "high": point + half}


def _cell(area: float, jump: float, label: str = NO_CLEAR) -> dict:
    return {"auc_difference": {**_estimate(area), "p_value": 0.01},
            "jumpstart": _estimate(jump), "verdict": {"label": label}}


def _matrix(sources: list[str], targets: list[str], cells: dict) -> tuple[dict, dict]:
    """matrix.json's result and matrix_spec.json's record for the given env texts."""
    source_specs = [EnvSpec.parse(s) for s in sources]
    target_specs = [EnvSpec.parse(t) for t in targets]
    record = {"sources": [s.to_dict() for s in source_specs],
              "targets": [t.to_dict() for t in target_specs]}
    result = {"sources": [str(s) for s in source_specs],
              "targets": [str(t) for t in target_specs], "cells": cells}
    return result, record


def test_sweep_series_over_targets_sorted_with_each_sources_value_marked():
    targets = ["CartPole-v1:length=1", "CartPole-v1:length=0.25", "CartPole-v1:length=2"]
    cells = {"finetune": {
        "CartPole-v1": {"CartPole-v1:length=1": _cell(0.3, 0.5, POSITIVE),
                        "CartPole-v1:length=0.25": _cell(0.1, 0.2),
                        "CartPole-v1:length=2": _cell(-0.4, -0.1)},
        "CartPole-v1:length=1.5": {"CartPole-v1:length=2": _cell(0.2, 0.3)}}}
    result, record = _matrix(["CartPole-v1", "CartPole-v1:length=1.5"], targets, cells)
    sweep = sweep_series(result, record)
    assert sweep.to_dict() == {"axis": "targets", "env": "CartPole-v1", "parameter": "length",
                               "values": [0.25, 1.0, 2.0]}
    default, long_pole = sweep.series
    assert (default.condition, default.env, default.group) == ("finetune", "CartPole-v1", "")
    assert default.x == (0.25, 1.0, 2.0)
    assert [e["point"] for e in default.estimates["auc_difference"]] == [0.1, 0.3, -0.4]
    assert [e["point"] for e in default.estimates["jumpstart"]] == [0.2, 0.5, -0.1]
    assert default.significant == (False, True, False)
    assert default.mark == Mark(value=0.5)  # CartPole-v1's own pole: the family default
    assert long_pole.mark == Mark(value=1.5)
    assert long_pole.x == (0.25, 1.0, 2.0)  # cells not run yet stay as gaps
    assert long_pole.estimates["auc_difference"][:2] == (None, None)
    assert long_pole.swept == ("CartPole-v1:length=0.25", "CartPole-v1:length=1",
                               "CartPole-v1:length=2")


def test_sweep_series_over_sources_marks_the_targets_value():
    sources = ["CartPole-v1:masspole=0.2", "CartPole-v1:masspole=0.05"]
    cells = {"finetune": {"CartPole-v1:masspole=0.2": {"CartPole-v1:masspole=0.1":
                                                       _cell(0.2, 0.1)},
                          "CartPole-v1:masspole=0.05": {"CartPole-v1:masspole=0.1":
                                                        _cell(0.4, 0.3)}}}
    result, record = _matrix(sources, ["CartPole-v1:masspole=0.1"], cells)
    sweep = sweep_series(result, record)
    assert (sweep.axis, sweep.parameter, sweep.values) == ("sources", "masspole", (0.05, 0.2))
    (series,) = sweep.series
    assert series.env == "CartPole-v1:masspole=0.1"
    assert [e["point"] for e in series.estimates["auc_difference"]] == [0.4, 0.2]
    assert series.mark == Mark(value=0.1)


def test_sweep_series_of_a_grid_product_groups_by_the_other_parameter():
    targets = [str(e) for e in parse_env_list(
        "CartPole-v1:force_mag=grid(5,10,2),length=grid(0.5,1.5,3)")]
    cells = {"finetune": {"Acrobot-v1": {t: _cell(i / 10, 0.0)
                                         for i, t in enumerate(targets)}}}
    result, record = _matrix(["Acrobot-v1"], targets, cells)
    sweep = sweep_series(result, record)
    assert sweep.parameter == "length"  # 3 values beat force_mag's 2
    assert [(s.group, s.x) for s in sweep.series] == [("force_mag=5", (0.5, 1.0, 1.5)),
                                                     ("force_mag=10", (0.5, 1.0, 1.5))]
    assert [e["point"] for e in sweep.series[1].estimates["auc_difference"]] == [0.3, 0.4, 0.5]
    assert sweep.series[0].mark is None  # Acrobot has no pole length


@pytest.mark.parametrize("targets", [
    ["CartPole-v1:length=1", "Acrobot-v1"],  # two envs
    ["CartPole-v1:length=1"],  # one target
])
def test_no_sweep_without_one_env_varied(targets):
    cells = {"finetune": {"CartPole-v1": {t: _cell(0.1, 0.1) for t in targets}}}
    assert sweep_series(*_matrix(["CartPole-v1"], targets, cells)) is None


def test_a_randomized_source_marks_its_range():
    source = EnvSpec.parse("CartPole-v1:length=uniform(0.25,1.0)")
    targets = ["CartPole-v1:length=0.5", "CartPole-v1:length=2"]
    cells = {"finetune": {str(source): {t: _cell(0.1, 0.1) for t in targets}}}
    result, record = _matrix([], targets, cells)
    record["sources"], result["sources"] = [source.to_dict()], [str(source)]
    (series,) = sweep_series(result, record).series
    assert series.mark == Mark(span=(0.25, 1.0))


# --------------------------------------------------------------------------- matrix.png

STEPS = [0, 100, 200, 300, 400]
SCRATCH = [[20, 40 + 5 * s, 60 + 5 * s, 80, 100] for s in range(5)]
GOOD = [[150 + 5 * s, 200, 200, 200, 200] for s in range(5)]  # far above scratch


def _study(folder: Path, source: EnvSpec, target: EnvSpec, finetune: list, write_run) -> None:
    study = folder / f"{source.slug}--{target.slug}"
    atomic_write_json(study / "study.json", {
        "spec": {"source": source.to_dict(), "target": target.to_dict(), "algo": "ppo",
                 "conditions": ["scratch", "finetune"], "seeds": 5, "seed": 0,
                 "timesteps": 400, "source_timesteps": 1000, "eval_freq": 100,
                 "eval_episodes": 5, "out": str(folder)},
        "target_agent": {"hparams": {}}, "command": "", "versions": {},
        "threshold": 200.0, "threshold_from": "--threshold", "target_random_return": 20.0})
    for condition, curves in (("scratch", SCRATCH), ("finetune", finetune)):
        for seed, returns in enumerate(curves):
            write_run(study / condition / f"seed_{seed}", STEPS, returns)


def test_summarize_matrix_draws_the_sweep_below_the_heatmaps(tmp_path, write_run):
    source = EnvSpec.parse("CartPole-v1:length=1")
    targets = parse_env_list("CartPole-v1:length=grid(0.5,1.5,3)")
    folder = tmp_path / "m"
    atomic_write_json(folder / "matrix_spec.json", {
        "command": "", "sources": [source.to_dict()],
        "targets": [t.to_dict() for t in targets],
        "base": {"conditions": ["scratch", "finetune"], "alpha": 0.05}})
    for target, finetune in zip(targets, (GOOD, SCRATCH, GOOD), strict=True):
        _study(folder, source, target, finetune, write_run)
    result = summarize_matrix(folder)
    assert read_json(folder / "matrix.json")["sweep"] == {
        "axis": "targets", "env": "CartPole-v1", "parameter": "length",
        "values": [0.5, 1.0, 1.5]}
    image = matplotlib.image.imread(folder / "matrix.png")
    # the heatmaps (3 in high) and, below them, the sweep's row of panels (4.7 in)
    assert image.shape[0] == round((3.0 + 4.7) * FIGURE_DPI)

    sweep = sweep_series(result, read_json(folder / "matrix_spec.json"))
    fig = matrix_figure(result, sweep)
    # two heatmaps, their colour bars, and the sweep's two panels
    assert len(fig.axes) == 6
    panels = {ax.get_label(): ax for ax in fig.axes if ax.get_label().startswith("sweep:")}
    assert set(panels) == {"sweep:finetune:auc_difference", "sweep:finetune:jumpstart"}
    ax = panels["sweep:finetune:auc_difference"]
    line, filled, hollow, mark, zero = ax.lines
    assert list(line.get_xdata()) == [0.5, 1.0, 1.5]
    cells = result["cells"]["finetune"][str(source)]
    points = [cells[str(t)]["auc_difference"]["point"] for t in targets]
    np.testing.assert_allclose(line.get_ydata(), points)
    assert points[0] > 0.3 and abs(points[1]) < 1e-9 and points[2] > 0.3
    # Holm-significant cells filled, the others hollow
    labels = [cells[str(t)]["verdict"]["label"] for t in targets]
    assert labels == [POSITIVE, NO_CLEAR, POSITIVE]
    assert list(filled.get_xdata()) == [0.5, 1.5] and list(hollow.get_xdata()) == [1.0]
    assert hollow.get_markerfacecolor() == "white"
    assert list(mark.get_xdata()) == [1.0, 1.0]  # the source's own length
    assert list(zero.get_ydata()) == [0.0, 0.0]


def test_a_matrix_without_a_sweep_keeps_only_its_heatmaps():
    cells = {"finetune": {"CartPole-v1": {"Acrobot-v1": _cell(0.1, 0.1),
                                          "CartPole-v1:length=1": _cell(0.2, 0.1)}}}
    result, record = _matrix(["CartPole-v1"], ["Acrobot-v1", "CartPole-v1:length=1"], cells)
    assert len(matrix_figure(result, sweep_series(result, record)).axes) == 4


def test_a_wide_matrix_figure_is_capped_so_its_sweep_panels_stay_readable():
    targets = [f"CartPole-v1:length={v}" for v in (0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2)]
    estimate = {"point": 0.1, "low": 0.0, "high": 0.2}
    result = {"sources": ["CartPole-v1"], "targets": targets,
              "cells": {"finetune": {"CartPole-v1": {
                  t: {"auc_difference": estimate, "jumpstart": estimate} for t in targets}}}}
    width, _ = matrix_figure(result).get_size_inches()
    assert width == 24.0  # 2.4 in per target and panel would be 41.4 in
    assert matrix_figure({**result, "targets": targets[:2],
                          "cells": {"finetune": {"CartPole-v1": {
                              t: {"auc_difference": estimate} for t in targets[:2]}}}}
                         ).get_size_inches()[0] == pytest.approx(12.6)
