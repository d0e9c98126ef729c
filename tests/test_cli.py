"""The command line end to end (tiny budgets), and every bad input: one line, exit 2."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from stable_baselines3 import DQN, PPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.io_utils import read_json
from rltransfer.specs import EnvSpec
from rltransfer.study.study_spec import flat_spec
from rltransfer.training.run import save_model

TINY_CLI = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=2", "--n-envs", "2",
            "--eval-episodes", "2"]
BUDGET = ["--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128"]
CONDITIONS = ["scratch", "finetune", "freeze-features", "reinit-head"]


def _run(tmp_path: Path, name: str, *extra: str) -> int:
    return main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--seeds", "2",
                 "--out", str(tmp_path), "--name", name, *BUDGET, *TINY_CLI, *extra])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    assert _run(out, "s1", "--conditions", ",".join(CONDITIONS)) == 0
    return out / "s1"


def test_study_writes_the_design_run_folder(study):
    record = read_json(study / "study.json")
    record["spec"] = flat_spec(record["spec"])
    assert record["spec"]["conditions"] == CONDITIONS
    assert record["spec"]["timesteps"] == 256 and record["ended"]
    assert record["threshold"] == 475.0 and record["threshold_from"] == "target reward_threshold"
    assert {"torch", "stable-baselines3", "gymnasium"} <= set(record["versions"])
    assert record["command"].startswith("python -m rltransfer run CartPole-v1")
    for name in ("model.zip", "evaluations.csv", "source.json", "status.json"):
        assert (study / "source" / name).is_file(), name
    for condition in CONDITIONS:
        for seed in (0, 1):
            run = study / condition / f"seed_{seed}"
            assert {"evaluations.csv", "model.zip", "status.json"} <= {p.name for p in
                                                                       run.iterdir()}
            assert (run / "transfer.json").exists() == (condition != "scratch")
            events = EventAccumulator(str(run))
            events.Reload()
            assert [s.step for s in events.Scalars("eval/mean_reward")] == [0, 128, 256]
    assert {"summary.json", "summary.csv", "report.md"} <= {p.name for p in study.iterdir()}


def test_summary_has_every_condition_and_metric(study):
    summary = read_json(study / "summary.json")
    conditions = summary["metrics"]["conditions"]
    assert list(conditions) == CONDITIONS
    assert {"initial", "asymptote", "auc", "iqm", "time_to_threshold"} <= set(
        conditions["scratch"])
    for condition in CONDITIONS[1:]:
        assert {"jumpstart", "time_to_threshold", "speedup", "transfer_ratio", "asymptote",
                "prob_improvement"} <= set(conditions[condition])
    assert summary["runs"]["finetune"] == {"finished": 2, "failed": [], "diverged": [],
                                           "left_out": []}


def test_frozen_study_run_kept_features_of_the_source(study):
    transfer = read_json(study / "freeze-features" / "seed_0" / "transfer.json")
    assert transfer["copied"] == transfer["total"] == 12
    assert sum(t["frozen"] for t in transfer["tensors"]) == 8


def test_report_recomputes_the_summary_from_files(study, capsys):
    before = (study / "summary.json").read_text()
    (study / "summary.json").unlink()
    assert main(["report", str(study)]) == 0
    assert (study / "summary.json").read_text() == before
    out = capsys.readouterr().out
    assert "jumpstart" in out and str(study / "report.md") in out


def test_second_study_reuses_the_cached_source(study, capsys):
    out_dir = study.parent
    assert _run(out_dir, "s2", "--conditions", "finetune", "--seeds", "1") == 0
    source = read_json(out_dir / "s2" / "source" / "source.json")
    first = read_json(study / "source" / "source.json")
    assert source["reused"] is True and source["trained_steps"] == 0
    assert source["key"] == first["key"] and first["trained_steps"] == 256
    assert "reusing cached policy" in capsys.readouterr().out
    assert _run(out_dir, "s3", "--conditions", "finetune", "--seeds", "1",
                "--retrain-source") == 0
    retrained = read_json(out_dir / "s3" / "source" / "source.json")
    assert retrained["reused"] is False and retrained["trained_steps"] == 256


def test_external_source_model_and_config_file(study, tmp_path):
    config = tmp_path / "study.toml"
    config.write_text('source = "CartPole-v1"\ntarget = "CartPole-v1:masspole=0.5"\n'
                      'conditions = "finetune"\nseeds = 3\nhparams = { n_epochs = 1 }\n')
    code = main(["run", "--config", str(config), "--seeds", "1", "--out", str(tmp_path),
                 "--name", "ext", "--source-model", str(study / "source" / "model.zip"),
                 *BUDGET, "--n-envs", "2", "--hparams", "n_steps=64", "batch_size=64"])
    assert code == 0
    record = read_json(tmp_path / "ext" / "study.json")
    record["spec"] = flat_spec(record["spec"])
    assert record["spec"]["seeds"] == 1  # the command line overrides the file
    assert record["spec"]["target"] == {"id": "CartPole-v1", "params": {"masspole": 0.5}}
    assert record["target_agent"]["hparams"]["n_epochs"] == 1
    assert record["target_agent"]["hparams"]["n_steps"] == 64
    assert record["source"]["kind"] == "external" and record["source"]["trained_steps"] == 0
    assert not (tmp_path / ".cache").exists()  # no source was trained
    # the report says where the source came from, not a source budget that was never spent
    report = (tmp_path / "ext" / "report.md").read_text()
    budgets = next(line for line in report.splitlines() if "budgets" in line)
    model = study / "source" / "model.zip"
    assert f"source: external checkpoint `{model}` (not trained by rltransfer)" in budgets
    assert "source 256" not in budgets
    assert f"external checkpoint `{model.resolve()}` (sha256 " in report


def test_envs_lists_families(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for family in ("CartPole", "Acrobot", "Pendulum", "MountainCar", "MountainCarContinuous"):
        assert family in out
    assert main(["envs", "cartpole"]) == 0
    out = capsys.readouterr().out
    assert "force_mag" in out and "[0.5, 100]" in out and "rltransfer/CartPole-LongPole-v0" in out


# --- bad input: one line, exit status 2, nothing in the output folder touched -------------


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "corrupt.zip").write_bytes(b"garbage")
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("weights.npy", b"")
    save_model(DQN("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 1, 0), device="cpu"),
               tmp_path / "dqn.zip")
    save_model(PPO("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 1, 0), device="cpu"),
               tmp_path / "ppo.zip")
    (tmp_path / "types.toml").write_text('source = "CartPole-v1"\ntarget = "CartPole-v1"\n'
                                         "seeds = true\n")
    (tmp_path / "source.toml").write_text('source = 5\ntarget = "CartPole-v1"\n')
    (tmp_path / "afile").write_text("")
    out = tmp_path / "runs"
    (out / "existing").mkdir(parents=True)
    (out / "existing" / "study.json").write_text(json.dumps({"spec": {}}))
    return tmp_path, out


BAD = [
    (["CartPol-v1", "CartPole-v1"], "unknown environment 'CartPol-v1'. Did you mean "
                                    "'CartPole-v1'"),
    (["CartPole-v1", "CartPole-v1:lenght=1"], "CartPole has no parameter 'lenght'. Did you "
                                              "mean 'length'? Valid parameters: gravity,"),
    (["CartPole-v1", "CartPole-v1:length=100"], "length=100 is outside its valid range"),
    (["Pendulum-v1", "Pendulum-v1:m=1.5", "--algo", "dqn"], "dqn needs Discrete actions, but "
                                                            "Pendulum-v1 has Box actions"),
    (["CartPole-v1", "CartPole-v1", "--algo", "ppo2"], "unknown algorithm 'ppo2'"),
    (["CartPole-v1", "CartPole-v1", "--source-model", "{d}/missing.zip"], "missing.zip does "
                                                                          "not exist"),
    (["CartPole-v1", "CartPole-v1", "--source-model", "{d}/corrupt.zip"], "is not a readable zip"),
    (["CartPole-v1", "CartPole-v1", "--source-model", "{d}/plain.zip"], "is not a "
                                                                        "Stable-Baselines3 "
                                                                        "checkpoint"),
    (["CartPole-v1", "CartPole-v1", "--source-model", "{d}/dqn.zip"], "is a dqn checkpoint but "
                                                                      "the study uses ppo"),
    (["CartPole-v1", "CartPole-v1", "--timesteps", "0"], "--timesteps must be a positive "
                                                         "integer, got 0"),
    (["CartPole-v1", "CartPole-v1", "--source-timesteps", "-5"], "--source-timesteps must be "
                                                                 "a positive integer, got -5"),
    (["CartPole-v1", "CartPole-v1", "--seed", "abc"], "argument --seed: invalid int value"),
    (["CartPole-v1", "CartPole-v1", "--seeds", "abc"], "--seeds 'abc': give a number of "
                                                     "seeds (e.g. 10) or auto"),
    (["CartPole-v1", "CartPole-v1", "--seeds", "auto:max=3"], "--seeds 'auto:max=3': needs "
                                                            "first >= 2, step >= 1 and max > "
                                                            "first"),
    (["CartPole-v1", "CartPole-v1", "--seeds", "auto:steps=2"], "unknown option 'steps=2'; "
                                                              "auto takes first=N, step=N"),
    (["CartPole-v1", "CartPole-v1", "--out", "{d}/afile/runs"], "cannot write to --out"),
    (["CartPole-v1", "CartPole-v1", "--name", "existing"],
     "existing already holds a study (0 of 10 runs done): pass --resume to finish it, or choose "
     "another --name for a new study"),
    (["CartPole-v1", "CartPole-v1", "--resume"], "--resume needs --name NAME, the study to "
                                                 "finish"),
    (["CartPole-v1", "CartPole-v1", "--workers", "0"], "--workers 0 must be at least 1"),
    (["CartPole-v1", "CartPole-v1", "--gpus-per-run", "0.5"],
     "--gpus-per-run applies to --backend ray: add --backend ray, or drop --gpus-per-run"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "n_steps=abc"], "cannot build ppo for "
                                                                 "CartPole-v1 with these "
                                                                 "hyperparameters"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "batch_size=0"], "cannot build ppo"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "policy=CnnPolicy"], "cannot build ppo"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "seed=3"], "--hparams seed is set by "
                                                            "rltransfer: use --seed instead"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "noise_type=normal"], "ppo has no "
                                                                       "hyperparameter "
                                                                       "'noise_type'"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "policy_kwargs=5"], "policy_kwargs must be a "
                                                                     "table"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "n_envs=abc"], "--hparams n_envs must be a "
                                                                "positive integer"),
    (["Blackjack-v1", "Blackjack-v1"], "cannot build ppo for Blackjack-v1"),
    (["CartPole-v1", "CartPole-v1", "--seed", "4294967296"], "--seed 4294967296 is too large"),
    (["Pendulum-v1", "MountainCarContinuous-v0", "--algo", "sac"], "nothing transfers from the "
                                                                   "Pendulum-v1 policy to the "
                                                                   "target"),
    (["Acrobot-v1", "CartPole-v1", "--source-model", "{d}/ppo.zip"], "ppo.zip does not fit "
                                                                     "Acrobot-v1"),
    (["CartPole-v1", "CartPole-v1", "--hparams", "learning_rat=1"], "ppo has no "
                                                                    "hyperparameter "
                                                                    "'learning_rat'"),
    (["CartPole-v1", "CartPole-v1", "--conditions", "scratch,finetunee"], "unknown condition "
                                                                          "'finetunee'"),
    (["CartPole-v1", "CartPole-v1", "--conditions", "scratch,finetune:lr_scale=0"],
     "condition 'finetune:lr_scale=0': lr_scale must be a number in (0, 1], got 0"),
    (["CartPole-v1", "CartPole-v1", "--conditions", "scratch,freeze-features:layers=0"],
     "layers must be an integer >= 1, got 0"),
    (["CartPole-v1", "CartPole-v1", "--conditions",
      "scratch,freeze-features:layers=3,lr_scale=0.5"],
     "condition 'freeze-features:layers=3,lr_scale=0.5': the policy has 2 feature layers from "
     "the input to its heads, so layers must be 1..2"),
    (["CartPole-v1", "CartPole-v1", "--config", "{d}/none.toml"], "--config {d}/none.toml "
                                                                  "does not exist"),
    (["--config", "{d}/types.toml"], "seeds must be an integer, got True"),
    (["--config", "{d}/source.toml"], "source must be an environment like"),
    (["CartPole-v1", "CartPole-v1", "--alpha", "0.7"], "--alpha must be a level between "
                                                      "0.0001 and 0.5 (e.g. 0.05), got 0.7"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(bad_inputs, capsys, args, message):
    folder, out = bad_inputs
    before = _snapshot(out)
    args = [a.replace("{d}", str(folder)) for a in args]
    if "--out" not in args:
        args += ["--out", str(out)]
    if "abc" in args and "--seed" in args:  # argparse rejects what it cannot convert: exit
        with pytest.raises(SystemExit) as exited:
            main(["run", *BUDGET, *args])
        code = exited.value.code
    else:
        code = main(["run", *BUDGET, *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message.replace("{d}", str(folder)) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["existing"]


def test_module_entry_point_in_a_subprocess(tmp_path):
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "rltransfer", "run", "CartPol-v1", "CartPole-v1",
                          "--out", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("rltransfer: error: unknown environment 'CartPol-v1'")
    assert len(bad.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    helped = subprocess.run([sys.executable, "-m", "rltransfer", "run", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0
    for option in ("--algo", "--conditions", "--seeds", "--timesteps", "--source-timesteps",
                   "--eval-freq", "--eval-episodes", "--threshold", "--n-envs", "--device",
                   "--name", "--out", "--config", "--source-model", "--retrain-source",
                   "--hparams"):
        assert option in helped.stdout


def test_studies_sharing_a_target_reuse_its_scratch_runs(tmp_path, capsys, training_calls):
    for source, name in (("CartPole-v1", "a"), ("rltransfer/CartPole-HeavyPole-v0", "b")):
        assert main(["run", source, "CartPole-v1:length=1.0", "--seeds", "2",
                     "--conditions", "scratch,finetune", "--out", str(tmp_path), "--name", name,
                     "--workers", "1", *BUDGET, *TINY_CLI]) == 0
    trained = [f"{run_dir.parent.name}/{run_dir.name}" for _, run_dir in training_calls]
    assert sorted(t for t in trained if t.startswith("scratch/")) == ["scratch/seed_0",
                                                                       "scratch/seed_1"]
    assert sum(t.startswith("finetune/") for t in trained) == 4
    assert "reused cached run" in capsys.readouterr().out
    for seed in (0, 1):
        first = (tmp_path / "a" / "scratch" / f"seed_{seed}" / "evaluations.csv").read_text()
        again = (tmp_path / "b" / "scratch" / f"seed_{seed}" / "evaluations.csv").read_text()
        assert first == again
        assert read_json(tmp_path / "b" / "scratch" / f"seed_{seed}" / "status.json")[
            "state"] == "done"


def test_report_writes_aggregate_tensorboard_runs(study):
    import numpy as np

    from rltransfer.training.run import read_evaluations

    for condition in CONDITIONS:
        returns = [read_evaluations(study / condition / f"seed_{s}" / "evaluations.csv")[1]
                   for s in (0, 1)]
        events = EventAccumulator(str(study / "_aggregate" / condition))
        events.Reload()
        mean = [s.value for s in events.Scalars("aggregate/return/mean")]
        assert mean == pytest.approx(list(np.mean(returns, axis=0)), rel=1e-6)
        assert [s.step for s in events.Scalars("aggregate/return/mean")] == [0, 128, 256]
    for name in ("curves.png", "curves.svg", "metrics.png", "report.html"):
        assert (study / name).is_file()


def test_custom_scalars_of_a_real_study_chart_each_condition_alone(study, custom_scalar_charts):
    charts = custom_scalar_charts(study)  # as `tensorboard --logdir runs/<study>`
    title = "evaluation return: mean and 95% CI over seeds"
    runs = {condition: f"_aggregate/{condition}" for condition in CONDITIONS}
    assert set(charts[title]) == set(runs.values())  # every condition, no training run
    for condition, run in runs.items():
        events = EventAccumulator(str(study / run))
        events.Reload()
        mean = [s.value for s in events.Scalars("aggregate/return/mean")]
        own = charts[f"{condition}: {title}"]
        assert list(own) == [run]  # that condition's band alone
        assert own[run] == pytest.approx(mean) and charts[title][run] == pytest.approx(mean)


# Run the command line, then fail (status 99) if it imported a heavy module.
_AUDIT = """\
import sys
from rltransfer.cli import main
status = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "stable_baselines3",
                                                         "tensorflow"})
print("imported:", heavy)
sys.exit(99 if heavy else status)
"""


@pytest.mark.parametrize("command", [["report", "{study}"],
                                     ["compare", "{study}", "--out", "{tmp}"],
                                     ["envs", "CartPole"]])
def test_reading_commands_import_neither_torch_nor_sb3(study, tmp_path, command):
    import subprocess
    import sys

    args = [a.format(study=study, tmp=tmp_path) for a in command]
    done = subprocess.run([sys.executable, "-c", _AUDIT, *args], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "imported: []" in done.stdout


def test_the_help_lists_every_algorithm():
    from rltransfer import cli
    from rltransfer.training import algos

    assert cli.ALGORITHM_NAMES == tuple(algos.ALGORITHMS)


def test_alpha_is_fixed_with_the_study_and_sets_the_verdict_level(tmp_path, capsys):
    assert _run(tmp_path, "a", "--conditions", "scratch,finetune", "--alpha", "0.01") == 0
    study = tmp_path / "a"
    assert flat_spec(read_json(study / "study.json")["spec"])["alpha"] == 0.01
    summary = read_json(study / "summary.json")
    assert summary["alpha"] == 0.01 and "α = 0.01" in summary["verdict_rule"]
    assert summary["metrics"]["alpha"] == 0.01
    out = capsys.readouterr().out
    assert "99% intervals over seeds" in out and "at α = 0.01" in out
    assert "No claim is possible for finetune. Only 2 vs 2 runs" in summary["seed_note"]
    assert "How verdicts are decided:" in (study / "report.md").read_text()


def test_a_study_stopped_by_its_checks_leaves_no_new_out_folder(tmp_path, capsys):
    # the probe's check (the layers option against the network) fails after planning: the
    # --out folder (and the parent) that did not exist before are not left behind
    out = tmp_path / "new" / "runs"
    code = main(["run", *BUDGET, "CartPole-v1", "CartPole-v1", "--conditions",
                 "scratch,freeze-features:layers=3", "--out", str(out)])
    assert code == 2
    assert "so layers must be 1..2" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_seeds_auto_adds_batches_until_its_last_look(study, capsys):
    """--seeds auto:first=2,step=1,max=3: 2 seeds per condition, a look (too few seeds to
    decide), one more seed for each, the last look; every look in study.json, the repeated
    p-values in summary.json; the source and the first batch's runs are reused."""
    out = study.parent
    assert _run(out, "auto", "--conditions", "scratch,finetune", "--seeds",
                "auto:first=2,step=1,max=3") == 0
    printed = capsys.readouterr().out
    assert "--seeds auto: look at 2 seeds per condition: finetune not decided yet; adding " \
           "seeds up to 3 (at most 3)" in printed
    assert "done at an earlier look" in printed
    assert "--seeds auto: look at 3 seeds per condition: the last look (3 seeds); finetune " \
           "not decided" in printed
    record = read_json(out / "auto" / "study.json")
    assert record["spec"]["protocol"]["seeds"] == 2
    assert record["spec"]["protocol"]["sequential"] == "auto:first=2,step=1,max=3"
    sequential = record["sequential"]
    assert [look["n"] for look in sequential["looks"]] == [2, 3]
    assert sequential["counts"] == {"scratch": 3, "finetune": 3} and sequential["done"]
    assert sorted(p.name for p in (out / "auto" / "finetune").iterdir()) == [
        "seed_0", "seed_1", "seed_2"]
    summary = read_json(out / "auto" / "summary.json")
    finetune = summary["metrics"]["conditions"]["finetune"]
    assert [look["n"] for look in finetune["sequential"]["looks"]] == [2, 3]
    assert finetune["verdict"]["label"] == "too few seeds to test"
    assert summary["sequential"] == {"first": 2, "step": 1, "max": 3, "looks": [2, 3],
                                     "done": True}
    assert main(["resume", str(out / "auto")]) == 0  # nothing left: no run trains again
    assert "done before this resume" in capsys.readouterr().out


def test_diverged_runs_are_outcomes_that_resume_does_not_train_again(study, capsys,
                                                                       monkeypatch):
    """Every run's policy turns NaN after its first update (patched in, so in this process;
    the source and scratch's runs come from the cache, untouched): finetune's runs are
    outcomes, the study exits 0 with a warning, and resume leaves them alone."""
    import torch

    from rltransfer.training import run as training

    real = training._diverged

    def poisoned(model):
        if model.num_timesteps > 0:
            with torch.no_grad():
                next(model.policy.parameters()).fill_(float("nan"))
        return real(model)

    monkeypatch.setattr(training, "_diverged", poisoned)
    out = study.parent
    assert _run(out, "nan", "--conditions", "scratch,finetune", "--workers", "1") == 0
    printed = capsys.readouterr().out
    assert "finetune: all 2 runs diverged (seed_0 from step" in " ".join(printed.split())
    summary = read_json(out / "nan" / "summary.json")
    assert summary["metrics"]["conditions"]["finetune"]["failed_runs"] == 2
    assert main(["resume", str(out / "nan")]) == 0
    assert capsys.readouterr().out.count("diverged: an outcome of its condition, not run "
                                         "again") == 2
