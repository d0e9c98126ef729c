"""The transfer matrix (sources and scratch baselines trained once) and compare."""

from __future__ import annotations

from pathlib import Path

import pytest

from rltransfer.cli import main
from rltransfer.io_utils import read_json
from rltransfer.study.matrix import parse_env_list

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
    from rltransfer.study.matrix import summarize_matrix

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
    (["--resume"], "matrix --resume needs --name NAME"),
])
def test_matrix_input_errors(tmp_path, capsys, args, message):
    base = ["matrix", "--sources", "CartPole-v1", "--targets", "CartPole-v1:length=1",
            "--out", str(tmp_path), *TINY]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _files(folder):
    """Every file under `folder` with its bytes, mtime and inode: what "unchanged" means."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
            for path in folder.rglob("*") if path.is_file()}


def test_matrix_resume_finishes_an_interrupted_matrix(tmp_path, capsys, monkeypatch,
                                                      training_calls):
    import rltransfer.study.runner as runner

    real, calls = runner.run_study, []

    def interrupted_at_second_study(spec, **kwargs):
        calls.append(spec.output.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C before the second study trained anything
        return real(spec, **kwargs)

    monkeypatch.setattr(runner, "run_study", interrupted_at_second_study)
    argv = ["matrix", "--sources", "CartPole-v1", "--targets",
            "CartPole-v1:length=1.0;CartPole-v1:length=2.0", "--out", str(tmp_path),
            "--name", "m", "--workers", "1", *TINY]
    folder = tmp_path / "m"
    first, second = (folder / f"CartPole-v1--CartPole-v1_length_{n}" for n in (1, 2))
    # --resume without a matrix starts one; the command it records has no --resume
    assert main([*argv, "--resume"]) == 130
    assert (first / "study.json").is_file() and not second.exists()
    assert "--resume" not in read_json(folder / "matrix_spec.json")["command"]
    monkeypatch.setattr(runner, "run_study", real)
    capsys.readouterr()
    training_calls.clear()  # what trained until the interruption
    before = _files(folder)
    assert any(path.name == "model.zip" for path in before)

    # without --resume the folder is refused, and the message says how to finish it
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"rltransfer: error: {folder} already exists and is not empty: pass --resume to "
        f"finish the matrix in it, or choose another --name\n")

    # other study options (or other targets) than the matrix was started with: refused
    command = "python -m rltransfer " + " ".join(
        a if ";" not in a else f"'{a}'" for a in argv)
    assert main([*argv, "--seeds", "3", "--resume"]) == 2  # the last --seeds counts
    assert capsys.readouterr().err == (
        f"rltransfer: error: {folder} was started with other options (seeds: 2 there, 3 "
        f"now): resume it with {command} --resume, or choose another --name for a new "
        f"matrix\n")
    other_targets = [a if ";" not in a else "CartPole-v1:length=1.0" for a in argv]
    assert main([*other_targets, "--resume"]) == 2
    assert capsys.readouterr().err.startswith(
        f"rltransfer: error: {folder} was started with other options (targets: "
        "['CartPole-v1:length=1', 'CartPole-v1:length=2'] there, ['CartPole-v1:length=1'] "
        "now): ")
    assert _files(folder) == before and training_calls == []

    # --resume finishes it (more threads: execution options may differ): the done study
    # is neither retrained nor rewritten, the missing one trains, matrix.json has both
    assert main([*argv, "--threads", "1", "--resume"]) == 0
    assert "done before this resume (0 training steps)" in capsys.readouterr().out
    trained = [Path(run_dir).resolve() for _, run_dir in training_calls]
    assert trained and all(second.resolve() in path.parents for path in trained)
    assert len(trained) == 2 * 2  # scratch and finetune x 2 seeds; the source is cached
    assert {path: data for path, data in _files(folder).items() if path in before} == before
    cells = read_json(folder / "matrix.json")["cells"]["finetune"]["CartPole-v1"]
    assert set(cells) == {"CartPole-v1:length=1", "CartPole-v1:length=2"}

    # resuming a finished matrix trains nothing and leaves every study as it is
    studies = {path: data for path, data in _files(folder).items()
               if path.parent != folder}
    assert main([*argv, "--resume"]) == 0
    assert len(trained) == len(training_calls)
    assert {path: data for path, data in _files(folder).items()
            if path.parent != folder} == studies
