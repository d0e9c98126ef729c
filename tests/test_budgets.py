"""Budgets that are what they say: a budget below one rollout is refused before anything is
written; a larger one is rounded up to whole rollouts, said in the terminal and study.json,
and the report, tables and figures state the steps that really ran and the evaluation grid
really used."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re

import pytest

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.io_utils import atomic_write_json, read_json
from rltransfer.report.build import summarize_study
from rltransfer.specs import EnvSpec
from rltransfer.study import budgets

PAIR = ["CartPole-v1", "CartPole-v1:length=1.0"]
ROLLOUT_128 = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--n-envs", "2",
               "--eval-episodes", "2", "--workers", "1"]


def _evaluated_steps(run_dir) -> list[int]:
    with open(run_dir / "evaluations.csv", newline="") as handle:
        return [int(row["timesteps"]) for row in csv.DictReader(handle)]


def test_the_evaluation_grid_is_where_rollouts_start():
    # the study: 4 x 2,048-step rollouts against --timesteps 5,000, --eval-freq 250
    assert budgets.evaluation_steps(5000, 250, 8192) == [0, 8192]
    assert budgets.evaluation_steps(9000, 450, 8192) == [0, 8192, 16384]
    # an --eval-freq that is not a multiple of the rollout: the first rollout start past it
    assert budgets.evaluation_steps(3000, 1500, 256)[:4] == [0, 1536, 3072]
    assert budgets.evaluation_steps(300, 100, 128) == [0, 128, 256, 384]
    assert budgets.describe_grid([0, 128, 256, 384]) == "at 0, 128, 256 and 384"
    assert budgets.describe_grid(list(range(0, 2001, 250))) == "every 250 steps"


def test_a_budget_below_one_rollout_is_one_line_naming_both_numbers(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["run", *PAIR, "--conditions", "scratch", "--out", str(out), "--name", "s",
            "--hparams", "n_steps=2048", "--n-envs", "4", "--eval-episodes", "2"]
    assert main([*args, "--timesteps", "5000"]) == 2
    err = capsys.readouterr().err
    assert err == ("rltransfer: error: --timesteps 5,000 is less than one ppo rollout of 8,192 "
                   "env steps (n_steps 2,048 × n_envs 4), so every run would train 8,192 "
                   "steps, evaluated only at 0 and at its end: give --timesteps 8192 or "
                   "more, or a shorter rollout, e.g. --hparams n_steps=32\n")
    assert not out.exists()
    # the source's budget too, when the study trains one
    assert main(["run", *PAIR, "--conditions", "scratch,finetune", "--out", str(out),
                 "--name", "s", "--hparams", "n_steps=2048", "--n-envs", "4",
                 "--timesteps", "8192", "--source-timesteps", "1000",
                 "--threshold", "400"]) == 2
    err = capsys.readouterr().err
    assert "--source-timesteps 1,000 is less than one ppo rollout of 8,192 env steps" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_the_advised_n_steps_runs_and_keeps_the_requested_grid(tmp_path, capsys):
    """The error's advice works: n_steps=32 with 4 envs is a 128-step rollout, so the runs
    train exactly --timesteps and are evaluated every --eval-freq steps."""
    assert main(["run", *PAIR, "--conditions", "scratch", "--seeds", "1", "--out",
                 str(tmp_path), "--name", "s", "--timesteps", "1280", "--eval-freq", "256",
                 "--hparams", "n_steps=32", "--n-envs", "4", "--eval-episodes", "2",
                 "--workers", "1"]) == 0
    assert _evaluated_steps(tmp_path / "s" / "scratch" / "seed_0") == list(range(0, 1281, 256))
    out = capsys.readouterr().out
    assert "rounded up" not in out and "coarse" not in out


@pytest.fixture(scope="module")
def rounded(tmp_path_factory):
    """A study whose budgets are not whole rollouts of 128 steps (64 steps x 2 envs):
    --timesteps 300 runs 384 steps, --source-timesteps 200 runs 256. Returns its folder and
    what the terminal said."""
    out = tmp_path_factory.mktemp("runs")
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal):
        assert main(["run", *PAIR, "--conditions", "scratch,finetune", "--seeds", "1",
                     "--out", str(out), "--name", "r", "--timesteps", "300",
                     "--source-timesteps", "200", "--eval-freq", "100", *ROLLOUT_128]) == 0
    return out / "r", terminal.getvalue()


def test_a_rounded_budget_is_said_recorded_and_reported(rounded):
    study, out = rounded
    assert ("target runs: 384 env steps each (--timesteps 300 rounded up to whole rollouts "
            "of 128: n_steps 64 × n_envs 2); evaluated 4 times, at 0, 128, 256 and 384 "
            "(every --eval-freq 100 steps, at the next rollout's start)") in out
    assert ("source run: 256 env steps (--source-timesteps 200 rounded up to whole rollouts "
            "of 128: n_steps 64 × n_envs 2)") in out
    assert ("warning: each target run is evaluated only 4 times (at 0, 128, 256 and 384), so "
            "the area under its curve is coarse") in out
    assert ("budget: the runs trained 384 env steps (--timesteps 300, rounded up to whole "
            "rollouts or updates); the metrics use the first 384") in out
    assert "not reached (>384 steps)" in out

    record = read_json(study / "study.json")
    assert record["budgets"]["target"] == {
        "requested": 300, "steps": 384, "rollout": 128, "rollout_from": "n_steps 64 × n_envs 2",
        "eval_freq": 100, "evaluations": 4, "evaluation_spacing": [128, 128]}
    assert record["budgets"]["source"]["steps"] == 256
    # the evaluations really happened on the stated grid
    for condition in ("scratch", "finetune"):
        assert _evaluated_steps(study / condition / "seed_0") == [0, 128, 256, 384]
        assert read_json(study / condition / "seed_0" / "status.json")["timesteps"] == 384
    assert read_json(study / "source" / "status.json")["timesteps"] == 256

    summary = read_json(study / "summary.json")
    assert summary["budget"] == 384 and summary["requested_budget"] == 300
    assert summary["evaluations"]["grid"] == [0, 128, 256, 384]
    assert summary["metrics"]["conditions"]["scratch"]["time_to_threshold"]["censored_at"] == 384
    report = (study / "report.md").read_text()
    assert ("- **budgets**: target 384 env steps per run (--timesteps 300, rounded up to whole "
            "rollouts); source 256 (--source-timesteps 200, rounded up); each run evaluated 4 "
            "times (2 episodes each), at 0, 128, 256 and 384 (--eval-freq 100: evaluations "
            "fall at the start of a rollout); 2 parallel envs") in report
    assert "evaluation every 100" not in report and "300 env steps" not in report
    assert "not reached (>384 steps)" in report and ">300" not in report
    assert "runs were evaluated only 4 times up to step 384" in report
    assert "evaluated only 4 times" in (study / "report.html").read_text()
    key = record["source"]["key"]
    assert (f"- **source policy**: trained in this study for 256 steps (then cached as `{key}` "
            f"for other studies)") in report


def test_a_study_that_ran_past_its_budget_is_reported_with_the_steps_it_ran(tmp_path,
                                                                            write_run):
    """The issue's study, as written before budgets were checked: --timesteps 5,000, runs of
    8,192 steps evaluated at 0 and 8,192. The report states 8,192 and the two evaluations."""
    study = tmp_path / "old"
    atomic_write_json(study / "study.json", {
        "spec": {"source": {"id": "CartPole-v1", "params": {}},
                 "target": {"id": "CartPole-v1", "params": {"length": 1.0}}, "algo": "ppo",
                 "conditions": ["scratch", "finetune"], "seeds": 2, "seed": 0,
                 "timesteps": 5000, "source_timesteps": 10000, "eval_freq": 250,
                 "eval_episodes": 10,
                 "out": str(tmp_path)},
        "target_agent": {"hparams": {"n_steps": 2048}}, "command": "python -m rltransfer run",
        "threshold": 475.0, "threshold_from": "target reward_threshold",
        "target_random_return": 22.0})
    for condition, returns in (("scratch", [20.0, 250.0]), ("finetune", [30.0, 100.0])):
        for seed in range(2):
            write_run(study / condition / f"seed_{seed}", [0, 8192], returns)
    result = summarize_study(study).to_dict()
    assert result["budget"] == 8192 and result["evaluations"]["per_run"] == [2, 2]
    report = (study / "report.md").read_text()
    assert "target 8,192 env steps per run (--timesteps 5,000, rounded up" in report
    assert "each run evaluated 2 times (10 episodes each), at 0 and 8,192" in report
    assert "not reached (>8,192 steps)" in report and "5,000 steps)" not in report
    assert "runs were evaluated only 2 times up to step 8,192 (at 0 and 8,192)" in report
    # the area is the mean over the 8,192 steps that ran, not an interpolation at 5,000
    scratch = result["per_run"]["scratch"]["seed_0"]["auc"]
    assert scratch == pytest.approx(((20 - 22) / 453 + (250 - 22) / 453) / 2)


def test_an_off_policy_rollout_is_train_freq_steps_and_ars_whole_episodes():
    from sb3_contrib import ARS
    from stable_baselines3 import DQN

    dqn = DQN("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 2, 0), train_freq=4, device="cpu")
    fit = budgets.fit_of(dqn, "--timesteps", "dqn", 100, 20)
    assert (fit.rollout, fit.steps, fit.rollout_from) == (8, 104, "train_freq 4 × n_envs 2")
    ars = ARS("LinearPolicy", make_vec(EnvSpec("Pendulum-v1"), 1, 0), n_delta=2, device="cpu")
    fit = budgets.fit_of(ars, "--timesteps", "ars", 3000, 150)
    assert fit.rollout is None and fit.grid() is None
    assert (fit.episodes, fit.episode_limit) == (4, 200)
    budgets.check(fit)  # whole episodes: never refused, the report states what ran
    assert fit.note() == ("target runs: ars trains in whole updates of 2 × n_delta × "
                          "n_eval_episodes = 4 episodes, up to 800 steps at its 200-step "
                          "episode limit: a run ends past --timesteps 3,000 by up to one "
                          "update; the report states the steps it really trained")
    assert "holds fewer than 5 ars updates of up to 800 steps" in fit.coarse()


def test_study_json_names_no_encoder_for_a_study_without_one(rounded):
    spec = read_json(rounded[0] / "study.json")["spec"]
    assert not {"encoder", "encoder_weights"} & set(spec["transfer"])
    assert json.dumps(spec).count("resnet") == 0


def test_each_verdict_states_the_area_claim_once(tmp_path, write_run):
    study = tmp_path / "s"
    atomic_write_json(study / "study.json", {
        "spec": {"source": {"id": "CartPole-v1", "params": {}},
                 "target": {"id": "CartPole-v1", "params": {"length": 1.0}}, "algo": "ppo",
                 "conditions": ["scratch", "finetune", "reinit-head"], "seeds": 5, "seed": 0,
                 "timesteps": 400, "source_timesteps": 1000, "out": str(tmp_path)},
        "target_agent": {"hparams": {}}, "command": "python -m rltransfer run",
        "threshold": 100.0, "threshold_from": "--threshold", "target_random_return": 0.0})
    for seed in range(5):
        write_run(study / "scratch" / f"seed_{seed}", [0, 100, 200, 300, 400],
                  [0, 10 + seed, 20, 30, 40 + 3 * seed])
        write_run(study / "finetune" / f"seed_{seed}", [0, 100, 200, 300, 400],
                  [0, 12 - seed, 21, 33, 38 + 4 * seed])  # no clear difference
        write_run(study / "reinit-head" / f"seed_{seed}", [0, 100, 200, 300, 400],
                  [0, 90 + seed, 100, 100, 100])  # clearly above scratch
    result = summarize_study(study).to_dict()
    lines = [line for line in (study / "report.md").read_text().splitlines()
             if line.startswith("- **finetune:") or line.startswith("- **reinit-head:")]
    assert len(lines) == 2
    for line in lines:
        assert len(re.findall(r"Holm p [=<]", line)) == 1, line
        assert len(re.findall(r"area [+-]\d", line)) == 1, line
    labels = {name: data["verdict"]["label"]
              for name, data in result["metrics"]["conditions"].items()}
    assert labels["finetune"] == "no clear difference"
    assert "The area difference is not clear at α = 0.05." in lines[0]
