"""Bad inputs found by the fault and bad-input probe (issue 20, point 7): each is one line
that names the input and the fix, exit status 2, no traceback, and nothing in runs/ written
or changed. A damaged run file that resume can recover from (a checkpoint, an evaluations.csv)
is discarded and its run restarted, saying so."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from stable_baselines3 import PPO

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.io_utils import atomic_write_json, read_json
from rltransfer.specs import EnvSpec
from rltransfer.study.plan import plan
from rltransfer.study.study_spec import STUDY_FORMAT, StudySpec
from rltransfer.training.run import EVAL_COLUMNS, save_model

BUDGET = ["--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128"]
TINY = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--n-envs", "2",
        "--eval-episodes", "2", "--seeds", "2", "--conditions", "scratch,finetune"]
# Six parameters with six significant digits each, twice: once a default study name of
# about 300 characters, past the file system's 255.
LONG = ("CartPole-v1:gravity=9.81234,masscart=1.01234,masspole=0.101234,length=0.501234,"
        "force_mag=10.1234,tau=0.0201234")
LONG_TARGET = LONG.replace("length=0.501234", "length=1.01234")


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(capsys, code: int, message: str) -> None:
    """Exit status 2 (for bad input), and stderr one line holding `message`."""
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert message in lines[0], lines[0]
    assert "Traceback" not in captured.out + captured.err


def _study(root: Path, name: str = "s", *, states: tuple[str, ...] = ("done", "done")) -> Path:
    """A hand-made study folder as a real one records it (study.json of the resolved spec),
    with the runs of its scratch and finetune conditions, each written in `states` order."""
    spec = plan(StudySpec.build(EnvSpec.parse("CartPole-v1"),
                                EnvSpec.parse("CartPole-v1:length=1.0"), seeds=2,
                                timesteps=256, source_timesteps=256, eval_freq=128,
                                n_envs=2, eval_episodes=2, conditions=("scratch", "finetune"),
                                hparams={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
                                out=str(root), name=name)).spec
    study = root / name
    atomic_write_json(study / "study.json", {
        "format": STUDY_FORMAT, "spec": spec.to_dict(), "command": "python -m rltransfer run",
        "target_agent": {"hparams": {"n_steps": 64}}, "threshold": 100.0,
        "threshold_from": "--threshold", "target_random_return": 0.0})
    for condition in ("scratch", "finetune"):
        for seed, state in enumerate(states):
            _write_run(study / condition / f"seed_{seed}", [0, 128, 256],
                       [10.0, 40.0 + seed, 60.0 + seed * (condition == "finetune")], state)
    return study


def _write_run(run_dir: Path, steps, returns, state: str = "done") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "evaluations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EVAL_COLUMNS)
        writer.writerows([s, r, 0, 2, 0.5] for s, r in zip(steps, returns, strict=True))
    atomic_write_json(run_dir / "status.json", {"state": state})


@pytest.fixture
def files(tmp_path):
    """Bad files, and an --out folder holding a finished study that nothing may change."""
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "binary.toml").write_bytes(b"\x00\x01\xff\xfe\x80 seeds = 3")
    (tmp_path / "utf16.toml").write_text('source = "CartPole-v1"\n', encoding="utf-16")
    model = PPO("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 1, 0), device="cpu")
    with torch.no_grad():
        next(iter(model.policy.action_net.parameters())).fill_(float("nan"))
    save_model(model, tmp_path / "nan.zip")
    out = tmp_path / "runs"
    _study(out, "existing")
    return tmp_path, out


RUN = [
    (["--name", "a" * 300], "--name is 300 characters long: give at most 200"),
    (["--name", ".cache"], "--name '.cache' must be a folder name that starts with a letter or "
                           "a digit (names that start with '.' are hidden, and .cache holds "
                           "the cache), then letters, digits, '.', '_' or '-'"),
    (["--config", "{d}/folder.toml"], "--config {d}/folder.toml is a folder: give the path "
                                      "of a TOML file"),
    (["--config", "{d}/binary.toml"], "--config {d}/binary.toml is not UTF-8 text (byte 2 "
                                      "cannot be read): give a TOML file saved as UTF-8"),
    (["--config", "{d}/utf16.toml"], "--config {d}/utf16.toml is not UTF-8 text (byte 0 "
                                     "cannot be read): give a TOML file saved as UTF-8"),
    (["--source-model", "{d}/nan.zip"], "{d}/nan.zip has NaN or infinite weights "
                                        "(action_net.weight): its training diverged or the "
                                        "file is damaged; give another checkpoint"),
    (["--seeds", "10000"], "--seeds 10000 is more than 1,000, the most a study takes"),
    (["--seeds", "auto:first=5,step=500,max=5000"], "--seeds auto:first=5,step=500,max=5000: "
                                                    "max=5000 is more than 1,000"),
    (["--timesteps", str(10**30)], f"--timesteps {10**30} is more than 10,000,000,000, the "
                                   f"most env steps a run takes"),
    (["--n-envs", "100000"], "--n-envs 100000 is more than 1,024, the most parallel envs a "
                             "run takes"),
    (["--hparams", "policy_kwargs={net_arch=[0]}"], "--hparams policy_kwargs: net_arch=[0] has "
                                                    "a layer of size 0: layer sizes are "
                                                    "positive integers, e.g. net_arch=[64,64]"),
    (["--hparams", "policy_kwargs={net_arch={pi=[64],vf=[0]}}"], "has a layer of size 0"),
]


@pytest.mark.parametrize("args,message", RUN, ids=[m[:30] for _, m in RUN])
def test_bad_run_options_are_one_line_and_write_nothing(files, capsys, args, message):
    folder, out = files
    before = _snapshot(out)
    args = [a.replace("{d}", str(folder)) for a in args]
    _one_line(capsys, main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--out", str(out),
                            *BUDGET, *args]), message.replace("{d}", str(folder)))
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["existing"]


@pytest.mark.parametrize("target,message", [
    ("CartPole-v1:", "nothing after ':' in 'CartPole-v1:': write CartPole-v1:name=value, or "
                     "just CartPole-v1"),
    ("CartPole-v1:length=1,", "an empty parameter in 'CartPole-v1:length=1,' (a ',' with "
                              "nothing on one side): remove the extra ','"),
    ("CartPole-v1:,length=1", "an empty parameter in 'CartPole-v1:,length=1'"),
])
def test_an_env_spec_with_nothing_after_a_separator_is_refused(files, capsys, target, message):
    _, out = files
    _one_line(capsys, main(["run", "CartPole-v1", target, "--out", str(out), *BUDGET]),
              message)


def test_out_where_nothing_can_be_created_is_one_line(tmp_path, capsys):
    """/proc/x: root passes the writability check (it may write /proc), but no folder can be
    made there; StudyLock's mkdir says so."""
    code = main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--out", "/proc/x",
                 "--name", "n", *BUDGET])
    if os.geteuid() == 0:
        _one_line(capsys, code, "cannot create the study folder /proc/x/n: No such file or "
                                "directory; choose an --out folder you can write")
    else:
        _one_line(capsys, code, "cannot write to --out /proc/x")
    assert not Path("/proc/x").exists()


def test_default_names_of_long_env_specs_fit_a_file_name():
    source, target = EnvSpec.parse(LONG), EnvSpec.parse(LONG_TARGET)
    assert len(str(source)) > 100
    name = plan(StudySpec.build(source, target, seeds=2, timesteps=256)).spec.output.name
    assert len(name.encode()) <= 200
    assert source.slug != target.slug and len(source.slug) <= 80
    assert source.slug.startswith("CartPole-v1_force_mag_10.1234_gravity_9.81234")
    assert EnvSpec.parse("CartPole-v1:length=1.0").slug == "CartPole-v1_length_1"  # as before


def test_matrix_with_an_empty_list_names_the_option(capsys):
    _one_line(capsys, main(["matrix", "--sources", "", "--targets", "CartPole-v1"]),
              "--sources '' names no environment: give e.g. --sources "
              "CartPole-v1,Acrobot-v1")


# --- damaged or foreign study files -------------------------------------------------------

def _damage(study: Path, what: str) -> str:
    """Damage `study` as `what` says; returns the expected message."""
    if what == "empty study.json":
        (study / "study.json").write_text("")
        return (f"{study / 'study.json'} is damaged (not JSON: Expecting value: line 1 column "
                f"1 (char 0)): restore it from a copy; the study cannot be read or resumed "
                f"without it")
    if what == "format 99":
        record = read_json(study / "study.json")
        atomic_write_json(study / "study.json", {**record, "format": 99})
        return (f"{study / 'study.json'} is in format 99, newer than this rltransfer reads (up "
                f"to {STUDY_FORMAT}): upgrade rltransfer to read or resume it")
    if what == "damaged status.json":
        (study / "scratch" / "seed_1" / "status.json").write_text('{"state": "do')
        return (f"{study / 'scratch' / 'seed_1' / 'status.json'} is damaged (not JSON: "
                f"Unterminated string starting at: line 1 column 11 (char 10)): restore it "
                f"from a copy, or delete the run folder {study / 'scratch' / 'seed_1'} and "
                f"resume the study to train that run again")
    csv_path = study / "finetune" / "seed_0" / "evaluations.csv"
    text = csv_path.read_text()
    if what == "abc in a CSV":
        csv_path.write_text(text.replace("40.0", "abc"))
        return (f"{csv_path} is damaged (line 3 is not numbers: '128,abc,0,2,0.5'): restore "
                f"it from a copy, or delete the run folder {csv_path.parent} and resume the "
                f"study to train that run again")
    if what == "a truncated last row":
        csv_path.write_text(text[:text.rindex(",0,2")])
        return f"{csv_path} is damaged (line 4 is cut short or has extra fields)"
    assert what == "no evaluation"
    csv_path.write_text(text.splitlines()[0] + "\n")
    return f"{csv_path} is damaged (no evaluation in it)"


@pytest.mark.parametrize("what", ["empty study.json", "format 99", "damaged status.json",
                                  "abc in a CSV", "a truncated last row", "no evaluation"])
def test_report_of_a_damaged_study_names_the_file(tmp_path, capsys, what):
    study = _study(tmp_path)
    message = _damage(study, what)
    before = _snapshot(study)
    _one_line(capsys, main(["report", str(study)]), message)
    assert _snapshot(study) == before


@pytest.mark.parametrize("what", ["empty study.json", "format 99", "damaged status.json"])
def test_resume_of_a_damaged_study_names_the_file_and_writes_nothing(tmp_path, capsys, what):
    study = _study(tmp_path, states=("done", "pending"))
    message = _damage(study, what)
    before = _snapshot(study)
    _one_line(capsys, main(["resume", str(study), "--workers", "1"]), message)
    assert _snapshot(study) == before  # study.json not rewritten (format 99 included)


def test_compare_of_one_study_twice_is_refused(tmp_path, capsys):
    study = _study(tmp_path)
    before = _snapshot(tmp_path)
    _one_line(capsys, main(["compare", str(study), str(study)]),
              f"{study} is given twice: give each study once")
    assert _snapshot(tmp_path) == before
    (tmp_path / "link").symlink_to(study)
    _one_line(capsys, main(["compare", str(study), str(tmp_path / "link")]),
              f"{study} and {tmp_path / 'link'} are the same study: give each study once")
    assert {f"s/{k}": v for k, v in _snapshot(study).items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "s"]


# --- a damaged checkpoint: discarded, its run restarted ------------------------------------

def test_a_damaged_checkpoint_is_discarded_and_its_run_restarts(tmp_path, tiny_agent,
                                                                 interrupted_train_run):
    from rltransfer.specs import RunSpec
    from rltransfer.training import run as training

    run = RunSpec(EnvSpec.parse("CartPole-v1"), tiny_agent, "scratch", seed=0, timesteps=256,
                  eval_freq=128, eval_episodes=2)
    run_dir = tmp_path / "run"
    interrupted_train_run(run, run_dir)
    checkpoint = run_dir / training.CHECKPOINT
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])  # cut short on disk
    notes = []
    result = training.train_run(run, run_dir, resume=True,
                                notify=lambda kind, value: notes.append((kind, value)))
    assert result.resumed_from is None and result.timesteps >= 256  # from the start
    start = next(value for kind, value in notes if kind == "start")
    assert start["note"].startswith("restarts from the start: its checkpoint.pt was damaged (")
    assert start["note"].endswith("), so it was discarded")
    assert "weights_only" not in start["note"]
    assert read_json(run_dir / "status.json")["state"] == "done"
    steps = [int(r["timesteps"]) for r in csv.DictReader(io.StringIO(
        (run_dir / "evaluations.csv").read_text()))]
    assert steps == sorted(set(steps)) and steps[0] == 0  # no row doubled


# --- SIGTERM -----------------------------------------------------------------------------

def test_sigterm_exits_143_with_its_own_message(tmp_path):
    out = tmp_path / "runs"
    process = subprocess.Popen(
        [sys.executable, "-m", "rltransfer", "run", "CartPole-v1", "CartPole-v1:length=1.0",
         "--out", str(out), "--name", "t", "--workers", "1", "--timesteps", "100000",
         "--eval-freq", "128", *TINY[:-2], "--conditions", "scratch"],  # no source to train
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("t/scratch/seed_0/evaluations.csv")):  # a run trains
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143
    assert "rltransfer: terminated (SIGTERM); finished runs and their files are kept" in stderr
    assert "Traceback" not in stderr
    assert read_json(out / "t" / "scratch" / "seed_0" / "status.json")["state"] == "interrupted"
    assert json.loads((out / "t" / "study.json").read_text())["spec"]
