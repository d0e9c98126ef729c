"""Output that fits: the results table at 80 columns and at log width, where `compare`
writes, figure bands inside the seeds' range, legends off the data, progress lines in logs."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console

from rltransfer.cli import compare_folder, main, self_command
from rltransfer.io_utils import atomic_write_json
from rltransfer.report.build import summarize_study
from rltransfer.report.fit_table import SKIPPED, FitTable
from rltransfer.report.tables import table_rows, terminal_table
from rltransfer.study import progress as progress_module

STEPS = [0, 100, 200, 300, 400]
# 5 seeds per condition, one of finetune's never reaching the threshold: its time and
# speedup cells carry censored bounds and interval levels, the longest cells a table has
SCRATCH = [[0, 20 + k, 40, 60, 80 + k] for k in range(5)]
FINETUNE = [[50, 90 + k, 100, 100, 100] for k in range(4)] + [[10, 20, 30, 40, 50]]
REINIT = [[20, 60 + k, 100 + k, 110, 110] for k in range(5)]


def _study(folder: Path, write_run, curves: dict[str, list[list[float]]]) -> Path:
    atomic_write_json(folder / "study.json", {
        "spec": {"source": {"id": "CartPole-v1", "params": {}},
                 "target": {"id": "CartPole-v1", "params": {"length": 1.0}}, "algo": "ppo",
                 "conditions": list(curves), "seeds": 5, "seed": 0, "timesteps": 400,
                 "source_timesteps": 1000, "out": str(folder.parent)},
        "target_agent": {"hparams": {"n_steps": 32}}, "command": "python -m rltransfer run x y",
        "threshold": 100.0, "threshold_from": "--threshold", "target_random_return": 0.0})
    for condition, runs in curves.items():
        for seed, returns in enumerate(runs):
            write_run(folder / condition / f"seed_{seed}", STEPS, returns)
    return folder


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from conftest import _write_run

    study = _study(tmp_path_factory.mktemp("fit") / "s", _write_run,
                   {"scratch": SCRATCH, "finetune": FINETUNE, "reinit-head": REINIT})
    return summarize_study(study)


def _render(renderable, width: int) -> list[str]:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


def _rows_of(lines: list[str]) -> list[list[list[str]]]:
    """The body rows of a rendered 2-column table, each as its lines' cells (a row goes on
    while its first cell is blank, until a rule)."""
    rows: list[list[list[str]]] = []
    body = False
    for line in lines:
        if line.startswith(("┡", "├")):  # under the header, or between blocks
            body = True
            continue
        if not body or not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if cells[0] or not rows:
            rows.append([cells])
        else:
            rows[-1].append(cells)
    return rows


@pytest.mark.parametrize("width", [80, 160])  # a small terminal; logs and pipes
def test_the_results_table_fits_and_no_cell_takes_more_than_two_lines(result, width):
    lines = _render(terminal_table(result), width)
    assert max(len(line.rstrip()) for line in lines) <= width
    rows = _rows_of(lines)
    assert rows and max(len(row) for row in rows) <= 2
    # every cell the study has is there, whole, beside its condition or metric, in order
    shown = [(" ".join(c[0] for c in row).strip(), " ".join(c[1] for c in row).strip())
             for row in rows]
    table = terminal_table(result)
    expected = []
    for row in table_rows(result):
        expected.append((row[0], row[-1]))
        expected += [(table.headers[i], row[i]) for i in range(1, len(row) - 1)
                     if row[i] not in SKIPPED]
    assert shown == expected
    time_cell = table_rows(result)[1][4]
    assert time_cell == "200 [200, >400] (93.8% interval) (4/5 reached)"  # a long cell


def test_a_wide_console_gets_one_line_per_condition(result):
    table = terminal_table(result)
    width = sum(table.wide_widths()) + 3 * len(table.headers) + 1
    lines = _render(table, width)
    for row in table_rows(result):
        line = next(line for line in lines if line.startswith(f"│ {row[0]} "))
        assert all(cell in line for cell in row)  # every cell on the condition's one line
    assert _render(table, width)[1].count("┳") == len(table.headers) - 1  # a column each
    assert _render(table, width - 1)[1].count("┳") == 1  # one less: blocks, 2 columns


def test_blocks_leave_out_reference_cells_and_keep_failed_runs_visible():
    table = FitTable("t", ["condition", "runs", "area", "verdict"],
                     [["scratch", "5", "(reference)", "(reference)"],
                      ["finetune", "4 of 5", "—", "no metrics (all 5 runs failed)"]])
    text = "\n".join(_render(table.blocks(), 80))
    assert "(reference)" in text and text.count("(reference)") == 1  # the verdict cell only
    assert "4 of 5" in text and "no metrics (all 5 runs failed)" in text
    assert "area" not in text.split("finetune")[1]  # "—": not computed, left out
    assert SKIPPED == {"(reference)", "—"}


def test_the_compare_table_fits_80_columns(result, tmp_path, write_run):
    from rltransfer.report.compare import compare_studies, compare_table

    study = _study(tmp_path / "runs" / "a", write_run, {"scratch": SCRATCH, "finetune": FINETUNE})
    lines = _render(compare_table(compare_studies([study])), 80)
    assert max(len(line.rstrip()) for line in lines) <= 80
    rows = _rows_of(lines)
    assert max(len(row) for row in rows) <= 2
    assert any(row[0][0] == "a: finetune" for row in rows)


def test_compare_writes_beside_the_first_study_without_out(tmp_path, write_run, monkeypatch,
                                                            capsys):
    runs = tmp_path / "runs"
    a = _study(runs / "a", write_run, {"scratch": SCRATCH, "finetune": FINETUNE})
    b = _study(runs / "b", write_run, {"scratch": SCRATCH, "reinit-head": REINIT})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compare", str(a), str(b)]) == 0
    assert sorted(p.name for p in runs.glob("compare.*")) == ["compare.json", "compare.md",
                                                              "compare.png"]
    assert list(elsewhere.iterdir()) == []  # nothing in the current folder
    assert f"compare: {runs / 'compare.md'}" in capsys.readouterr().out
    # --out: there, and only there
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "compare.png").is_file()
    # --out a file: one line, exit 2, nothing written
    (tmp_path / "f").write_text("x")
    assert main(["compare", str(a), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert err == (f"rltransfer: error: --out {tmp_path / 'f'} is a file: give a folder for "
                   "compare.md, compare.json and compare.png\n")
    assert (tmp_path / "f").read_text() == "x"


def test_compare_folder_is_the_folder_holding_the_first_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert compare_folder(Path("runs/a")) == Path("runs")
    assert compare_folder(Path("runs/a/")) == Path("runs")
    assert compare_folder(Path("a")) == Path(".")
    assert compare_folder(Path(".")) == tmp_path.parent  # never inside the study itself
    assert compare_folder(Path("runs/a/..")) == Path(".")


def test_compare_help_says_once_where_it_writes(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "current folder" not in text and "beside" not in text
    assert "(default: the folder that holds the first study, e.g. runs for runs/a)" in text


def test_bands_are_cut_to_the_seeds_range():
    from rltransfer.report.figures import seed_band

    steps = np.array([0, 100, 200])
    # 2 seeds on CartPole: the t band is mean ± 6.4 SDs, past 0 and 500
    two = [(steps, np.array([10.0, 100.0, 500.0])), (steps, np.array([30.0, 400.0, 480.0]))]
    band = seed_band(two)
    assert np.allclose(band.mean, [20, 250, 490])
    assert np.allclose(band.low, [10, 100, 480]) and np.allclose(band.high, [30, 400, 500])
    # where the t band is inside the seeds' range it is drawn as it is
    many = [(steps, np.array([100.0 + k, 200.0, 300.0 + 10 * k])) for k in range(-10, 11)]
    from rltransfer.report.curves import aggregate_curves

    plain = aggregate_curves(many)
    band = seed_band(many)
    assert np.allclose(band.low, plain.low) and np.allclose(band.high, plain.high)
    assert band.high[0] < 110 and band.low[0] > 90
    # different grids (a resumed run): each seed on the common grid, then cut
    mixed = [(np.array([0, 100, 200]), np.array([0.0, 50.0, 100.0])),
             (np.array([0, 150, 200]), np.array([0.0, 0.0, 500.0]))]
    band = seed_band(mixed)
    assert list(band.steps) == [0, 100, 150, 200]
    assert np.allclose(band.low, [0, 0, 0, 100]) and np.allclose(band.high, [0, 50, 75, 500])
    # one seed: no band
    assert np.isnan(seed_band(two[:1]).low).all()


def test_figures_draw_bands_inside_the_seeds_range_and_legends_off_the_axes(result, tmp_path,
                                                                           write_run):
    from rltransfer.report.figures import compare_figure, curves_figure, profiles_figure

    curves = {"scratch": [(STEPS, r) for r in SCRATCH[:2]],
              "finetune": [(STEPS, r) for r in FINETUNE[3:5]]}  # 2 seeds, far apart
    fig = curves_figure(result, curves)
    for ax in fig.axes:
        for collection in ax.collections:  # the bands
            ys = np.concatenate([path.vertices[:, 1] for path in collection.get_paths()])
            assert ys.min() >= -1e-9 and ys.max() <= 100 + 1e-9  # raw 0..100; normalized 0..1
    profiles = profiles_figure(result)
    assert profiles.axes[0].get_legend() is None and len(profiles.legends) == 1
    study = _study(tmp_path / "s", write_run, {"scratch": SCRATCH[:2],
                                               "finetune": FINETUNE[3:5]})
    ax = compare_figure([study]).axes[0]
    low, high = ax.get_ylim()
    assert low > -0.2 and high < 1.2  # 2-seed bands: not −4 to 6


def test_a_log_shows_progress_when_training_starts_and_the_eta(monkeypatch):
    monkeypatch.setattr(progress_module, "HEARTBEAT_S", 0.05)
    out = io.StringIO()
    console = Console(file=out, width=160)  # not a terminal: lines, no bars
    with progress_module.StudyProgress(console, total_steps=6000, total_runs=3) as bar:
        bar.start_run("source", "source", 2000)
        first = out.getvalue()
        for _ in range(2):
            time.sleep(0.06)
            bar.advance("source", 1000)
        bar.finish_run("source", 2000)
        bar.skip_run("scratch seed 0", 2000, "copied from the scratch cache")
        bar.start_run("finetune/seed_0", "finetune seed 0", 2000)
        bar.advance("finetune/seed_0", 2000)
        bar.finish_run("finetune/seed_0", 2000)
    assert first == ("[started] source: 2,000 steps (a line per finished run follows, the "
                     "study's progress at least every 0 s)\n")
    lines = out.getvalue().splitlines()
    beat = next(line for line in lines if line.startswith("study: 2,000/6,000 steps (33%)"))
    assert ", ETA " in beat and beat.endswith("training: source 2,000/2,000")
    source = next(line for line in lines if line.startswith("[1/3] source: 2,000 steps in"))
    assert "; study ETA " in source
    assert "ETA" not in lines[-1] and lines[-1].startswith("[3/3] finetune seed 0")


def test_eta_is_the_steps_left_at_the_rate_trained(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    bar = progress_module.StudyProgress(Console(file=io.StringIO()), 4000, 2)
    assert bar.eta_seconds() is None
    bar.start_run("a", "a", 2000)  # at 0 s
    now[0] = 10.0
    bar.advance("a", 1000)  # at 10 s: 100 steps/s, 3000 steps left
    assert bar.eta_seconds() == pytest.approx(30.0)
    assert progress_module.format_duration(30) == "30 s"
    assert progress_module.format_duration(185) == "3 min 5 s"
    assert progress_module.format_duration(7800) == "2 h 10 min"


def test_printed_commands_run_without_an_activated_venv(monkeypatch, tmp_path):
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.executable", str(venv / "python"))
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/python")  # not activated
    assert self_command() == f"{os.path.join('.venv', 'bin', 'python')} -m rltransfer"
    monkeypatch.setattr("shutil.which", lambda name: str(venv / "python3"))  # activated
    assert self_command() == "python -m rltransfer"
