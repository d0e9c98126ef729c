"""Advice that works: every "then run X" the tool prints is a command that succeeds in that
situation, and a refusal counts what is on disk."""

from __future__ import annotations

import shlex

import pytest

from rltransfer.cli import main
from rltransfer.io_utils import read_json

TINY = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--n-envs", "1",
        "--eval-episodes", "2", "--timesteps", "256", "--source-timesteps", "256",
        "--eval-freq", "64", "--workers", "1"]


def _argv(advice: str) -> list[str]:
    """The rltransfer arguments of a printed 'python -m rltransfer ...' command."""
    words = shlex.split(advice)
    assert words[:3] == ["python", "-m", "rltransfer"], advice
    return words[3:]


def test_a_source_whose_score_sets_no_threshold_resumes_with_the_one_given(tmp_path, capsys):
    """Pendulum registers no reward_threshold: the source's own score would be the threshold,
    and an untrained source's is not above random. The error gives the exact command, which
    takes the threshold (it only changes the normalized scores, and no run was judged)."""
    study = tmp_path / "p"
    argv = ["run", "Pendulum-v1", "Pendulum-v1:m=1.5", "--seeds", "1", "--conditions",
            "scratch,finetune", "--out", str(tmp_path), "--name", "p", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rltransfer: error: the source run trained, but its score cannot "
                          "be the threshold (threshold ")
    advice = f"python -m rltransfer resume {study} --threshold R"
    assert err.endswith(f"give the return that counts as solving Pendulum-v1:m=1.5: {advice}")
    assert "threshold" not in read_json(study / "study.json")

    # resumed without one: the same refusal, with the same exact command
    assert main(["resume", str(study), "--workers", "1"]) == 2
    assert f"give it with: {advice}, with R the return that counts" in capsys.readouterr().err

    assert main([*_argv(advice.replace(" R", " -200")), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "threshold: -200 (--threshold), in place of none" in out
    record = read_json(study / "study.json")
    assert record["threshold"] == -200 and record["threshold_from"] == "--threshold"
    assert record["spec"]["protocol"]["threshold"] == -200
    assert "threshold_warning" not in record
    assert read_json(study / "finetune" / "seed_0" / "status.json")["state"] == "done"
    assert read_json(study / "summary.json")["threshold"] == -200

    # once target runs are done under a threshold, it is fixed: refused, nothing changed
    assert main(["resume", str(study), "--threshold", "-300", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"rltransfer: error: {study} has 2 of 2 target runs done under threshold "
                   f"-200 (--threshold): a threshold is fixed before the results, so it cannot "
                   f"change now; resume it without --threshold, or start a new study with "
                   f"another --name\n")
    assert read_json(study / "study.json")["threshold"] == -200


def test_a_refused_name_counts_the_runs_of_the_study_on_disk(tmp_path, capsys):
    base = ["run", "CartPole-v1", "CartPole-v1:length=1.0", "--out", str(tmp_path),
            "--name", "s"]
    assert main([*base, "--conditions", "scratch", "--seeds", "2", *TINY]) == 0
    capsys.readouterr()
    # the new command's defaults (scratch,finetune x 5 seeds) are not what is on disk
    assert main(base) == 2
    assert capsys.readouterr().err == (
        f"rltransfer: error: {tmp_path / 's'} already holds a study (2 of 2 runs done): pass "
        f"--resume to finish it, or choose another --name for a new study\n")


def test_an_interrupted_study_says_the_command_that_finishes_it(tmp_path, capsys,
                                                              monkeypatch):
    import rltransfer.training.run as training

    real = training.train_run

    def ctrl_c_at_seed_1(run, run_dir, **kwargs):
        if run.seed == 1:
            raise KeyboardInterrupt  # as Ctrl-C while the second run trains
        return real(run, run_dir, **kwargs)

    monkeypatch.setattr(training, "train_run", ctrl_c_at_seed_1)
    out = tmp_path / "my runs"  # a folder the advice has to quote
    study = out / "s"
    assert main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--conditions", "scratch",
                 "--seeds", "2", "--out", str(out), "--name", "s", *TINY]) == 130
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("interrupted: "))
    advice = line.partition("to finish it, run: ")[2]
    assert advice == f"python -m rltransfer resume '{study}'"
    monkeypatch.setattr(training, "train_run", real)
    assert main([*_argv(advice), "--workers", "1"]) == 0
    for seed in (0, 1):
        assert read_json(study / "scratch" / f"seed_{seed}" / "status.json")["state"] == "done"


@pytest.mark.parametrize("command", ["tensorboard", "run", "resume", "matrix", "compare",
                                     "report", "envs"])
def test_help_texts_print_no_format_escapes(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "%%" not in text and "%(" not in text
    if command == "tensorboard":
        assert "95% band" in " ".join(text.split())


def test_envs_lists_each_id_once():
    from rltransfer import envs as catalog
    from rltransfer.cli import _listed_ids

    families = list(catalog.families().values())
    listed = {family.name: _listed_ids(family, families) for family in families}
    assert listed["Pong"] == "ALE/Pong-v5"
    assert listed["Atari"] == "any other id of AtariEnv"  # not Pong's id a second time
    ids = [i for text in listed.values() for i in text.split(", ") if "/" in i or "-v" in i]
    assert len(ids) == len(set(ids))


def test_an_interrupted_matrix_names_its_own_resume_command(tmp_path):
    from rltransfer.study.matrix import _resume_command

    command = "python -m rltransfer matrix --sources CartPole-v1 --targets 'A;B' --seeds 2"
    folder = tmp_path / "my runs" / "m-1"
    assert _resume_command(command, folder) == (
        f"{command} --name m-1 --out '{folder.parent}' --resume")
    given = f"{command} --name m-1 --out runs"
    assert _resume_command(given, folder) == f"{given} --resume"
