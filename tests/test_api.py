"""The Python API as a notebook user runs it: `rltransfer.run` on an env module of the
user's own (imported by the study's worker processes too), the typed `Study` checked against
the files the study wrote, `rltransfer.load` of the same folder, an interrupted study, and
every bad input raising the message the CLI prints."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rltransfer
from rltransfer import api
from rltransfer.cli import main
from rltransfer.errors import (
    ConfigError,
    HyperparameterError,
    MissingDependencyError,
    OutputError,
    ParameterError,
    RLTransferError,
)
from rltransfer.io_utils import atomic_write_json, read_json

CORRIDOR = '''
"""A corridor: step left or right from 0 (a step slips the other way at rate `slip`);
reaching `length` ends the episode with reward 1."""
import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    def __init__(self, length: int = 6, slip: float = 0.2):
        self.length, self.slip = length, slip
        self.observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._observation(), {}

    def step(self, action):
        step = 1 if action == 1 else -1
        if self.np_random.random() < self.slip:
            step = -step
        self.position = max(0, self.position + step)
        reached = self.position >= self.length
        return self._observation(), float(reached), reached, False, {}

    def _observation(self):
        return np.array([self.position / self.length], dtype=np.float32)


class CrashingInWorkers(Corridor):
    """Crashes in a study's worker process (not in the study's own checks)."""

    def step(self, action):
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            raise RuntimeError("the simulator crashed")
        return super().step(action)


gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=20, reward_threshold=0.9,
             kwargs={"length": 6})
gym.register("CorridorLong-v0", entry_point=Corridor, max_episode_steps=20,
             reward_threshold=0.9, kwargs={"length": 9})
gym.register("CorridorCrash-v0", entry_point=CrashingInWorkers, max_episode_steps=20,
             reward_threshold=0.9, kwargs={"length": 9})
'''

TINY = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}
BUDGET = {"timesteps": 256, "source_timesteps": 256, "eval_freq": 128, "eval_episodes": 2,
          "n_envs": 2}


@pytest.fixture(scope="module")
def corridor(tmp_path_factory):
    """The user's env module, on sys.path (worker processes inherit it)."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "corridor_api.py").write_text(CORRIDOR)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield "corridor_api"


@pytest.fixture(scope="module")
def study(corridor, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return rltransfer.run(f"{corridor}:Corridor-v0", f"{corridor}:CorridorLong-v0", seeds=2,
                          conditions=["scratch", "finetune"], hparams=TINY, out=out,
                          name="api", workers=2, **BUDGET)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_returns_the_study_its_files_hold(study):
    assert isinstance(study, rltransfer.Study)
    folder = study.path
    record, summary = read_json(folder / "study.json"), read_json(folder / "summary.json")
    assert record["executions"][0]["workers"] == 2  # the runs trained in worker processes
    assert record["spec"]["agent"]["hparams"] == TINY  # the dict, read back by the CLI's code
    assert record["command"] == (
        "python -m rltransfer run corridor_api:Corridor-v0 corridor_api:CorridorLong-v0 "
        "--seeds 2 --conditions scratch,finetune --hparams n_steps=64 batch_size=64 "
        f"n_epochs=2 --out {folder.parent} --name api --workers 2 --timesteps 256 "
        "--source-timesteps 256 --eval-freq 128 --eval-episodes 2 --n-envs 2")
    assert study.spec.env.target.id == "corridor_api:CorridorLong-v0"
    assert (study.spec.protocol.seeds, study.spec.protocol.timesteps) == (2, 256)

    conditions = summary["metrics"]["conditions"]
    assert study.verdicts == {"scratch": "reference", "finetune": "too few seeds to test"}
    assert study.verdicts == {c: data["verdict"]["label"] for c, data in conditions.items()}
    for condition, data in conditions.items():
        for key in ("initial", "asymptote", "auc"):
            estimate = study.metrics[condition][key]
            assert (estimate.point, estimate.low, estimate.high) == (
                data[key]["point"], data[key]["low"], data[key]["high"])
    written = conditions["finetune"]["auc_difference"]
    claim = study.metrics["finetune"]["auc_difference"]
    assert claim == api.Estimate(written["point"], written["low"], written["high"],
                                 written["p_value"], written["note"])
    assert claim.details["method"] == written["method"]
    assert claim.low < claim.point < claim.high and 0 < claim.p_value <= 1
    assert "auc_difference" not in study.metrics["scratch"]  # the reference
    assert study.n_runs == {"scratch": 2, "finetune": 2}
    assert study.failed_runs == {} and study.missing_runs == []

    curves = study.curves
    assert list(curves.columns) == list(api.CURVE_COLUMNS)
    assert sorted(set(zip(curves.condition, curves.seed, strict=True))) == [
        ("finetune", 0), ("finetune", 1), ("scratch", 0), ("scratch", 1)]
    for (condition, seed), rows in curves.groupby(["condition", "seed"]):
        written = _csv_rows(folder / condition / f"seed_{seed}" / "evaluations.csv")
        assert rows.timesteps.tolist() == [int(r["timesteps"]) for r in written]
        assert rows.mean_return.tolist() == [float(r["mean_return"]) for r in written]
        assert rows.std_return.tolist() == [float(r["std_return"]) for r in written]
    random, threshold = record["target_random_return"], record["threshold"]
    assert threshold == 0.9  # the registration's reward_threshold
    assert curves.score.tolist() == pytest.approx(
        ((curves.mean_return - random) / (threshold - random)).tolist())

    text = repr(study)
    assert "\n" not in text
    assert text == ("<Study api: corridor_api:Corridor-v0 → corridor_api:CorridorLong-v0 "
                    "(ppo), 2 seeds; finetune: too few seeds to test>")


def test_load_reads_the_same_study(study):
    loaded = rltransfer.load(str(study.path))
    assert loaded.verdicts == study.verdicts
    assert loaded.metrics == study.metrics
    assert loaded.runs == study.runs
    assert loaded.spec == study.spec
    assert repr(loaded) == repr(study)
    assert loaded.curves.equals(study.curves)
    assert loaded.summary == read_json(study.path / "summary.json")


def test_an_interrupted_study_loads_what_is_there_and_names_the_missing_runs(study, tmp_path):
    folder = tmp_path / "api"
    shutil.copytree(study.path, folder)
    shutil.rmtree(folder / "finetune" / "seed_1")  # never started
    atomic_write_json(folder / "scratch" / "seed_1" / "status.json",
                      {"state": "failed", "error": "RuntimeError: the simulator crashed"})
    partial = rltransfer.load(folder)
    assert partial.missing_runs == ["finetune/seed_1 (missing)"]
    assert partial.failed_runs == {"scratch/seed_1": "RuntimeError: the simulator crashed"}
    assert partial.n_runs == {"scratch": 1, "finetune": 1}
    assert sorted(set(zip(partial.curves.condition, partial.curves.seed,
                              strict=True))) == [
        ("finetune", 0), ("scratch", 0)]
    assert repr(partial).endswith("; 1 failed: scratch/seed_1; 1 missing: finetune/seed_1 "
                                  "(missing)>")
    assert partial.report() == folder / "report.html"  # the report, again from the files
    assert read_json(folder / "summary.json")["runs"]["scratch"]["failed"] == [
        {"run": "seed_1", "error": "RuntimeError: the simulator crashed"}]

    for run in ("scratch/seed_0", "finetune/seed_0"):  # interrupted before any finished
        atomic_write_json(folder / run / "status.json", {"state": "interrupted"})
    empty = rltransfer.load(folder)
    assert empty.verdicts == {} and empty.metrics == {} and empty.summary is None
    assert empty.missing_runs == ["scratch/seed_0 (interrupted)",
                                  "finetune/seed_0 (interrupted)", "finetune/seed_1 (missing)"]
    assert empty.curves.empty
    assert f"no results yet ({folder} has no finished runs" in repr(empty)


def test_a_study_whose_runs_all_failed_returns_them_instead_of_raising(corridor, tmp_path,
                                                                       capsys):
    study = rltransfer.run(f"{corridor}:Corridor-v0", f"{corridor}:CorridorCrash-v0", seeds=2,
                           conditions="scratch", hparams=TINY, out=tmp_path, name="crash",
                           workers=2, **BUDGET)
    error = "RuntimeError: the simulator crashed"
    assert {key: value.split("\n")[0] for key, value in study.failed_runs.items()} == {
        "scratch/seed_0": error, "scratch/seed_1": error}
    assert study.verdicts == {} and study.summary is None
    assert study.note == (f"{tmp_path / 'crash'} has no finished runs: nothing to report "
                          f"(scratch: all 2 runs failed (seed_0, seed_1: {error}); no metrics "
                          f"for it)")
    assert f"rltransfer: {study.note}\n" in capsys.readouterr().out


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None])
def test_a_folder_that_is_not_a_study_is_one_line_naming_it(tmp_path, make):
    folder = tmp_path / "notes"
    make(folder)
    with pytest.raises(OutputError) as raised:
        rltransfer.load(folder)
    assert str(raised.value) == (f"{folder} is not a study folder (no study.json): give "
                                 f"runs/<study>")


def test_every_run_option_is_a_keyword_and_every_keyword_an_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    listed = set(re.findall(r"^  (--[a-z-]+)", capsys.readouterr().out, re.MULTILINE))
    assert {"--eval-freq", "--finetune-encoder", "--workers", "--config"} <= listed
    emitted = set()
    for name, help_text in api.options().items():
        assert help_text  # each keyword has the option's help
        for value in (True, False) if name in ("pixels", "grayscale", "freeze_encoder",
                                               "retrain_source", "resume") else ("1",):
            argv, _ = api.command_line("A", "B", {name: value})
            emitted |= {a.split("=")[0] for a in argv if a.startswith("--")}
    assert emitted == listed


def test_an_unknown_keyword_is_one_line_with_a_did_you_mean(tmp_path):
    with pytest.raises(TypeError) as raised:
        rltransfer.run("CartPole-v1", "CartPole-v1", eval_frequency=100, out=tmp_path)
    message = str(raised.value)
    assert isinstance(raised.value, RLTransferError)
    assert message.startswith("rltransfer.run() has no option 'eval_frequency'. Did you mean "
                              "'eval_freq'? Options: address, algo, alpha,")
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_hparams_given_as_a_dict_reach_the_spec_as_given():
    from rltransfer.cli import _build_parser, study_spec

    hparams = {"learning_rate": 3e-4, "policy_kwargs": {"net_arch": [64, 64]},
               "normalize": False, "clip_range": "lin_0.2", "ent_coef": 0}
    argv, _ = api.command_line("CartPole-v1", "CartPole-v1:length=1.0",
                               {"hparams": hparams, "threshold": -100.5})
    spec = study_spec(_build_parser().parse_args(argv))
    assert dict(spec.agent.hparams) == hparams
    assert spec.protocol.threshold == -100.5
    with pytest.raises(HyperparameterError, match=r"^hparams target_kl=None: a value is a "):
        api.command_line("A", "B", {"hparams": {"target_kl": None}})


BAD = [  # (keyword arguments, the same on the command line)
    ({"target": "CartPole-v1:lenght=1"}, ["CartPole-v1:lenght=1"]),
    ({"timesteps": 0}, ["--timesteps", "0"]),
    ({"seed": "abc"}, ["--seed", "abc"]),
    ({"backend": "rayy"}, ["--backend", "rayy"]),
    ({"algo": "ppo2"}, ["--algo", "ppo2"]),
    ({"workers": 0}, ["--workers", "0"]),
    ({"conditions": ["scratch", "finetunee"]}, ["--conditions", "scratch,finetunee"]),
    ({"hparams": {"learning_rat": 1}}, ["--hparams", "learning_rat=1"]),
    ({"seeds": "auto:steps=2"}, ["--seeds", "auto:steps=2"]),
]


@pytest.mark.parametrize("options,args", BAD, ids=[a[-1] for _, a in BAD])
def test_a_bad_option_raises_the_message_the_cli_prints(tmp_path, capsys, options, args):
    out = tmp_path / "runs"
    target = options.pop("target", "CartPole-v1:length=1.0")
    cli_args = args if args[0] == target else [target, *args]
    try:
        code = main(["run", "CartPole-v1", *cli_args, "--out", str(out)])
    except SystemExit as exited:  # argparse's own checks exit
        code = exited.code
    assert code == 2
    printed = capsys.readouterr().err.strip()
    with pytest.raises(RLTransferError) as raised:
        rltransfer.run("CartPole-v1", target, out=out, **options)
    message = str(raised.value)
    assert "\n" not in message
    assert printed in (f"rltransfer: error: {message}",  # the study's checks
                       f"rltransfer run: error: {message} (see rltransfer run --help)")
    assert not out.exists()  # nothing written
    if options.get("timesteps") == 0:
        assert isinstance(raised.value, ConfigError)
    if "lenght" in target:
        assert isinstance(raised.value, ParameterError)


def test_a_script_that_runs_a_study_unguarded_is_refused_in_its_workers(tmp_path):
    """Workers import the script that started the study (multiprocessing's forkserver and
    spawn), as `_fixup_main_from_path` does here: run() refuses to start the study again."""
    script = tmp_path / "study.py"
    script.write_text("import rltransfer\n"
                      f"rltransfer.run('CartPole-v1', 'CartPole-v1', out={str(tmp_path)!r})\n")
    done = subprocess.run([sys.executable, "-c", "import multiprocessing.spawn as spawn; "
                           f"spawn._fixup_main_from_path({str(script)!r})"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"rltransfer.errors.ConfigError: rltransfer.run() ran again as a worker process "
        f"imported {script}: in a script, call it under 'if __name__ == \"__main__\":' (a "
        f"notebook needs nothing)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.py"]


def test_curves_without_pandas_say_how_to_install_it(study, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(MissingDependencyError) as raised:
        _ = study.curves
    assert str(raised.value) == ("Study.curves needs pandas: pip install "
                                 "'rltransfer[notebook]'")
    assert study.verdicts  # everything else reads without it


def test_the_command_line_does_not_import_the_api_and_load_imports_no_torch(study):
    code = ("import sys, rltransfer.cli, rltransfer.__main__\n"
            "assert 'rltransfer.api' not in sys.modules and 'pandas' not in sys.modules\n"
            "import rltransfer\n"
            "assert rltransfer.load is rltransfer.api.load\n"
            f"assert rltransfer.load({str(study.path)!r}).verdicts\n"
            "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
