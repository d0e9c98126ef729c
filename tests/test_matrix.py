"""The transfer matrix (sources and scratch baselines trained once) and compare."""

from __future__ import annotations

import pytest

from rltransfer.cli import main
from rltransfer.io_utils import read_json
from rltransfer.matrix import parse_env_list

TINY = ["--seeds", "2", "--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
        "--eval-episodes", "2", "--n-envs", "2",
        "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1"]


def test_env_lists_keep_parameter_commas():
    envs = parse_env_list("CartPole-v1:length=0.25,force_mag=5,CartPole-v1;Acrobot-v1")
    assert [str(e) for e in envs] == ["CartPole-v1:force_mag=5,length=0.25", "CartPole-v1",
                                      "Acrobot-v1"]


def test_matrix_trains_sources_and_scratch_once(tmp_path, training_calls):
    code = main(["matrix", "--sources", "CartPole-v1:length=0.25,CartPole-v1",
                 "--targets", "CartPole-v1:length=1.0;CartPole-v1:length=2.0",
                 "--out", str(tmp_path), "--name", "m", "--workers", "1", *TINY])
    assert code == 0
    trained = [f"{run.condition}:{run.env}:{run_dir.parent.name}"
               for run, run_dir in training_calls]
    sources = [run for run, run_dir in training_calls if run_dir.name == "source"]
    scratch = [t for t in trained if t.endswith(":scratch")]
    finetune = [t for t in trained if t.startswith("finetune:")]
    assert len(sources) == 2  # one per source, not one per pair
    assert len(scratch) == 2 * 2  # one per target and seed, not per pair
    assert len(finetune) == 2 * 2 * 2
    result = read_json(tmp_path / "m" / "matrix.json")
    cells = result["cells"]["finetune"]
    assert set(cells) == {"CartPole-v1:length=0.25", "CartPole-v1"}
    assert set(cells["CartPole-v1"]) == {"CartPole-v1:length=1", "CartPole-v1:length=2"}
    assert "jumpstart" in cells["CartPole-v1"]["CartPole-v1:length=1"]
    markdown = (tmp_path / "m" / "matrix.md").read_text()
    assert "## finetune: area vs scratch (primary)" in markdown
    assert "## finetune: verdict (Holm across every cell)" in markdown
    assert "`CartPole-v1:length=2`" in markdown
    from matplotlib.image import imread

    assert imread(tmp_path / "m" / "matrix.png").shape[2] in (3, 4)

    # one Holm family across every cell: m counts every condition x cell with a test
    verdicts = [cell["verdict"] for row in cells.values() for cell in row.values()]
    tested = [v for v in verdicts if v["p_holm"] is not None]
    assert tested and {v["m"] for v in tested} == {len(tested)}
    assert "Holm-corrected together" in result["verdict_rule"]

    # compare two of the matrix's studies in one table
    studies = sorted(p for p in (tmp_path / "m").iterdir() if (p / "study.json").is_file())
    written = {path: (path.read_bytes(), path.stat().st_mtime_ns) for study in studies
               for path in study.iterdir() if path.is_file()}
    assert main(["compare", str(studies[0]), str(studies[1]), "--out", str(tmp_path)]) == 0
    from rltransfer.matrix import summarize_matrix

    summarize_matrix(tmp_path / "m")
    # compare and matrix read the studies: their reports are not rewritten
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in written} == written
    compared = read_json(tmp_path / "compare.json")
    assert len(compared["rows"]) == 4  # 2 studies x (scratch, finetune)
    assert (tmp_path / "compare.md").read_text().count("| finetune |") == 2
    assert (tmp_path / "compare.png").stat().st_size > 10_000


@pytest.mark.parametrize("args,message", [
    (["--conditions", "finetune"], "a transfer matrix compares against scratch"),
    (["--sources", "CartPol-v1"], "unknown environment 'CartPol-v1'"),
])
def test_matrix_input_errors(tmp_path, capsys, args, message):
    base = ["matrix", "--sources", "CartPole-v1", "--targets", "CartPole-v1:length=1",
            "--out", str(tmp_path), *TINY]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
