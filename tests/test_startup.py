"""The fixed cost of a study: what runs where, and which checks and imports it skips.

No timings here (benchmarks/startup.py measures them); these tests check the behaviour the
speed rests on: a study with one run to train starts no worker processes, workers fork from
a server and stop with their study, a cached source is not built again, the CLI reads a
study without importing torch, and the garbage collector is left as it was found."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rltransfer.cli import main
from rltransfer.io_utils import read_json
from rltransfer.strategies import registry as conditions
from rltransfer.study import execution, preflight
from rltransfer.study.execution import Job
from rltransfer.study.plan import plan
from rltransfer.study.scheduler import Task, at_once
from rltransfer.study.study_spec import StudySpec

PAIR = ["CartPole-v1", "CartPole-v1:length=1.0"]
TINY = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=2", "--n-envs", "2",
        "--eval-episodes", "2", "--timesteps", "256", "--source-timesteps", "256",
        "--eval-freq", "128"]


def _jobs(*keys: str) -> list[Job]:
    return [Job(key, key, None, "") for key in keys]  # type: ignore[arg-type]


@pytest.mark.parametrize("ready,waiting,expected", [
    (["scratch/seed_0"], [], 1),
    ([], [], 0),
    (["source"], ["finetune/seed_0"], 1),  # the source, then its one dependent
    (["source"], ["finetune/seed_0", "finetune/seed_1"], 2),
    (["source", "scratch/seed_0"], ["finetune/seed_0"], 2),
    (["source", "scratch/seed_0", "scratch/seed_1"], ["finetune/seed_0"], 3),
    (["scratch/seed_0", "scratch/seed_1"], [], 2),
])
def test_at_once_counts_the_jobs_that_can_run_together(ready, waiting, expected):
    tasks = [Task(job) for job in _jobs(*ready)]
    tasks += [Task(job, after="source") for job in _jobs(*waiting)]
    assert at_once(tasks) == expected


def test_a_study_with_one_run_to_train_starts_no_worker_process(tmp_path, capsys, monkeypatch):
    def no_workers(*args, **kwargs):
        raise AssertionError("a worker process was started for a single run")

    monkeypatch.setattr(execution, "ProcessBackend", no_workers)
    assert main(["run", *PAIR, "--conditions", "scratch", "--seeds", "1", "--workers", "2",
                 "--out", str(tmp_path), "--name", "one", *TINY]) == 0
    out = capsys.readouterr().out
    assert "one run to train at a time: it trains in this process" in out
    study = tmp_path / "one"
    assert read_json(study / "scratch" / "seed_0" / "status.json")["state"] == "done"
    assert not (study / "source").exists()  # CartPole's reward_threshold: no source needed
    assert read_json(study / "study.json")["executions"][0]["workers"] == 2
    assert gc.get_freeze_count() == 0  # the in-process run froze the imports, then thawed


def test_a_cached_source_is_not_built_again_and_its_weights_dry_run_the_transfer(
        tmp_path, monkeypatch):
    base = ["run", *PAIR, "--seeds", "1", "--workers", "1", "--out", str(tmp_path), *TINY]
    assert main([*base, "--name", "first"]) == 0  # trains and caches the source
    built, transferred = [], []
    real_probe, real_transfer = preflight.probe_model, preflight.apply_transfer

    def probe(run):
        built.append(run.condition.label)
        return real_probe(run)

    def transfer(model, state, condition, label=""):
        transferred.append(label)
        return real_transfer(model, state, condition, label)

    monkeypatch.setattr(preflight, "probe_model", probe)
    monkeypatch.setattr(preflight, "apply_transfer", transfer)
    preflight.probe(plan(StudySpec.from_dict({
        "source": PAIR[0], "target": PAIR[1], "seeds": 1, "out": str(tmp_path),
        "timesteps": 256, "source_timesteps": 256, "eval_freq": 128, "eval_episodes": 2,
        "n_envs": 2, "hparams": {"n_steps": 64, "batch_size": 64, "n_epochs": 2}})),
        train_source=True)
    assert built == [conditions.REFERENCE]  # the target's network only
    assert transferred == ["the cached CartPole-v1 policy"]


def test_reading_a_study_from_the_command_line_imports_no_torch():
    code = textwrap.dedent("""
        import sys
        from rltransfer.cli import _build_parser, _execution, study_spec
        args = _build_parser().parse_args(["run", "CartPole-v1", "CartPole-v1:length=1.0",
                                           "--seeds", "3"])
        spec, execution = study_spec(args), _execution(args)
        assert spec.protocol.seeds == 3 and execution.backend == "local"
        assert "torch" not in sys.modules, "torch imported before the worker server starts"
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        stat = Path(f"/proc/{pid}/stat")
        if stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z":
            continue  # a zombie: dead, waiting for its parent to reap it
        alive.append(pid)
    return alive


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table in /proc")
def test_workers_stop_when_their_study_is_killed(tmp_path):
    """Workers fork from a server, so their parent is not the study: they watch the study's
    end of a pipe, and stop when a kill -9 of the study process alone closes it."""
    out = tmp_path / "runs"
    study = subprocess.Popen(
        [sys.executable, "-m", "rltransfer", "run", *PAIR, "--seeds", "2", "--conditions",
         "scratch", "--workers", "2", "--out", str(out), "--name", "k", "--timesteps",
         "200000", "--n-envs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        states: list[str] = []
        while time.monotonic() < deadline:
            states = [read_json(p).get("state") for p in (out / "k").glob("*/*/status.json")]
            if states.count("running") == 2:
                break
            assert study.poll() is None, "the study ended before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail(f"the runs never started: {states}")
        group = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                 and _pgid(int(p.name)) == study.pid and int(p.name) != study.pid]
        assert group, "no worker processes"
        study.kill()  # the study process only, not its group
        study.wait()
        deadline = time.monotonic() + 10
        while _alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(group), "workers outlived their study"
    finally:
        try:
            os.killpg(study.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
