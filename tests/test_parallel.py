"""Parallel workers, resume after a real kill, failure isolation, the study lock, refusal to
overwrite, and the Ray backend: the files a study leaves are the same whatever ran it."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy import stats

from rltransfer.cli import main
from rltransfer.io_utils import atomic_write_json, read_json
from rltransfer.study.study_folder import StudyLock

TINY = ["--hparams", "n_steps=64", "batch_size=64", "n_epochs=2", "--n-envs", "2",
        "--eval-episodes", "2"]
BUDGET = ["--timesteps", "512", "--source-timesteps", "512", "--eval-freq", "128"]
PAIR = ["CartPole-v1", "CartPole-v1:length=1.0"]


def _study(tmp_path: Path, name: str, *extra: str, pair: list[str] = PAIR) -> int:
    return main(["run", *pair, "--seeds", "2", "--conditions", "scratch,finetune",
                 "--out", str(tmp_path), "--name", name, *BUDGET, *TINY, *extra])


def _files(study: Path) -> list[str]:
    """The study's files, with TensorBoard event files (named by time and host) as one name."""
    names = set()
    for path in study.rglob("*"):
        if path.is_file():
            name = str(path.relative_to(study))
            names.add(name.split("events.out.tfevents")[0] + "events" if "tfevents" in name
                      else name)
    return sorted(names)


def _curve(csv_path: Path) -> list[tuple[str, str, str, str]]:
    """evaluations.csv without its wall-time column."""
    with open(csv_path, newline="") as handle:
        return [(r["timesteps"], r["mean_return"], r["std_return"], r["n_episodes"])
                for r in csv.DictReader(handle)]


RUNS = [f"{c}/seed_{s}" for c in ("scratch", "finetune") for s in (0, 1)]


# RL-Zoo's CartPole preset (8 envs, batches of 256) with a tiny budget: batches big enough that
# torch would split sums over threads, so the curves only match when every run computes alike.
PRESET_BUDGET = ["--timesteps", "768", "--source-timesteps", "768", "--eval-freq", "256",
                 "--eval-episodes", "2"]


def _preset_study(out: Path, *extra: str) -> int:
    return main(["run", *PAIR, "--seeds", "2", "--conditions", "scratch,finetune",
                 "--out", str(out), "--name", "s", *PRESET_BUDGET, *extra])


def test_parallel_and_sequential_studies_write_the_same_files_and_curves(tmp_path, capsys):
    assert _preset_study(tmp_path / "seq", "--workers", "1") == 0
    assert _preset_study(tmp_path / "par", "--workers", "2") == 0
    out = capsys.readouterr().out
    assert "on 1 worker (this process), 1 torch thread(s)" in out
    assert "on 2 worker processes, 1 torch thread(s) each" in out
    sequential, parallel = tmp_path / "seq" / "s", tmp_path / "par" / "s"
    assert _files(sequential) == _files(parallel)
    for run in RUNS:  # same seeds on CPU: the same curves, whatever process trained them
        assert _curve(sequential / run / "evaluations.csv") == \
            _curve(parallel / run / "evaluations.csv")
        assert read_json(parallel / run / "status.json")["state"] == "done"
        assert not (parallel / run / "checkpoint.pt").exists()  # model.zip is the final policy
    executions = read_json(parallel / "study.json")["executions"]
    assert executions[0]["workers"] == 2 and executions[0]["threads_per_run"] == 1
    assert executions[0]["ended"]
    assert not (parallel / ".lock").exists()


CRASHING_ENVS = '''
import math
import os
import signal
import gymnasium as gym
from gymnasium.envs.classic_control import CartPoleEnv


class Crashing(CartPoleEnv):
    """CartPole whose training env of seed 1 fails after 100 steps."""

    bad = "raise"

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.armed, self.steps = seed == 1, 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if getattr(self, "armed", False) and self.steps > 100:
            if self.bad == "raise":
                raise RuntimeError("the simulator crashed")
            if self.bad == "kill":  # a hard crash: the worker process dies with no error
                os.kill(os.getpid(), signal.SIGKILL)
            reward = math.nan
        return obs, reward, terminated, truncated, info


class NanReward(Crashing):
    bad = "nan"


class Killed(Crashing):
    bad = "kill"


gym.register("Crashing-v0", entry_point=Crashing, max_episode_steps=500)
gym.register("NanReward-v0", entry_point=NanReward, max_episode_steps=500)
gym.register("Killed-v0", entry_point=Killed, max_episode_steps=500)
'''


@pytest.fixture
def crashing_envs(tmp_path, monkeypatch):
    """A module registering envs that fail for seed 1; worker processes import it by name
    (Gymnasium's module:EnvId form) from sys.path, which they inherit."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "crashing_envs.py").write_text(CRASHING_ENVS)
    monkeypatch.syspath_prepend(str(folder))
    return "crashing_envs"


@pytest.mark.parametrize("env,workers,error", [
    ("Crashing-v0", "2", "RuntimeError: the simulator crashed"),
    ("NanReward-v0", "1", "ValueError: found nan in rewards."),
    ("Killed-v0", "2", "its worker process died (killed, or out of memory?)"),
])
def test_a_failing_run_is_marked_failed_and_the_others_finish(tmp_path, capsys, crashing_envs,
                                                              env, workers, error):
    target = f"{crashing_envs}:{env}"
    code = _study(tmp_path, "f", "--workers", workers, "--threshold", "100", "--n-envs", "1",
                  pair=["CartPole-v1", target])  # one env per run: seed k's env has seed k
    assert code == 1  # runs failed: the summary is written, the exit status says so
    study = tmp_path / "f"
    for condition in ("scratch", "finetune"):
        failed = read_json(study / condition / "seed_1" / "status.json")
        assert failed["state"] == "failed"
        assert failed["error"].startswith(error)
        assert read_json(study / condition / "seed_0" / "status.json")["state"] == "done"
    summary = read_json(study / "summary.json")
    assert summary["runs"]["finetune"]["finished"] == 1
    assert [f["run"] for f in summary["runs"]["finetune"]["failed"]] == ["seed_1"]
    assert summary["warnings"][0].startswith("scratch: 1 of 2 runs failed (seed_1: " + error)
    assert list(summary["per_run"]["finetune"]) == ["seed_0"]  # metrics on the rest
    out = capsys.readouterr().out
    assert f"[failed] scratch seed 1: {error}" in out
    assert "2 run(s) failed; fix the cause, then: python -m rltransfer resume" in out


def test_a_diverging_loss_fails_the_run_with_a_clear_error(tmp_path, tiny_agent):
    import dataclasses

    from rltransfer.specs import EnvSpec, RunSpec
    from rltransfer.training.run import train_run

    agent = dataclasses.replace(tiny_agent, hparams={**tiny_agent.hparams,
                                                     "learning_rate": 1e20})
    run = RunSpec(EnvSpec("CartPole-v1"), agent, "scratch", 0, 256, 128, 2)
    with pytest.raises(FloatingPointError, match="is not finite after an update"):
        train_run(run, tmp_path / "run")
    status = read_json(tmp_path / "run" / "status.json")
    assert status["state"] == "failed"
    assert "the loss diverged (NaN); lower the learning rate" in status["error"]


def test_a_restarted_run_removes_what_a_killed_write_left(tmp_path, tiny_agent):
    from rltransfer.specs import EnvSpec, RunSpec
    from rltransfer.training.run import train_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".evaluations.csv.k1ll3d.tmp").write_text("timesteps,mean_ret")
    run = RunSpec(EnvSpec("CartPole-v1"), tiny_agent, "scratch", 0, 256, 128, 2)
    train_run(run, run_dir, resume=True)
    assert not list(run_dir.glob(".*"))
    assert read_json(run_dir / "status.json")["state"] == "done"


def test_a_finished_study_is_not_overwritten_and_resume_finishes_nothing_twice(
        tmp_path, capsys, training_calls):
    assert _study(tmp_path, "done", "--workers", "1") == 0
    before = (tmp_path / "done" / "finetune" / "seed_0" / "evaluations.csv").read_bytes()
    training_calls.clear()
    capsys.readouterr()
    assert _study(tmp_path, "done", "--workers", "1") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"rltransfer: error: {tmp_path / 'done'} already holds a study (4 of 4 runs "
                   f"done): pass --resume to finish it, or choose another --name for a new study")
    assert _study(tmp_path, "done", "--workers", "1", "--resume") == 0
    assert training_calls == []
    assert "done before this resume" in capsys.readouterr().out
    assert (tmp_path / "done" / "finetune" / "seed_0" / "evaluations.csv").read_bytes() == before
    assert [e["resume"] for e in read_json(tmp_path / "done" / "study.json")["executions"]] == [
        False, True]
    assert _study(tmp_path, "done", "--workers", "1", "--resume", "--seed", "3") == 2
    assert "was started with other options (seed: 0 there, 3 now)" in capsys.readouterr().err
    # a study started before --alpha existed resumes (its level was the default)
    record = read_json(tmp_path / "done" / "study.json")
    del record["spec"]["protocol"]["alpha"]
    atomic_write_json(tmp_path / "done" / "study.json", record)
    assert _study(tmp_path, "done", "--workers", "1", "--resume") == 0
    assert training_calls == []
    assert _study(tmp_path, "done", "--workers", "1", "--resume", "--alpha", "0.01") == 2
    assert "(alpha: 0.05 there, 0.01 now)" in capsys.readouterr().err


def test_a_second_study_on_a_locked_folder_gets_a_clear_error(tmp_path, capsys):
    study = tmp_path / "busy"
    with StudyLock(study):
        assert (study / ".lock").read_text().startswith(f"rltransfer pid {os.getpid()} on ")
        assert _study(tmp_path, "busy", "--workers", "1") == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rltransfer: error: {study} is in use by rltransfer pid "
                              f"{os.getpid()} on ")
        assert err.rstrip().endswith(f"(lock file {study / '.lock'}): wait for that study to "
                                     f"finish, or choose another --name")
        assert sorted(p.name for p in study.iterdir()) == [".lock"]  # nothing interleaved
    assert not study.exists() or not any(study.iterdir())


def _states(study: Path) -> dict[str, str]:
    found = {}
    for run in RUNS3:
        path = study / run / "status.json"
        try:
            found[run] = read_json(path)["state"] if path.is_file() else "missing"
        except ValueError:  # pragma: no cover - status files are atomic; defensive
            found[run] = "unreadable"
    return found


RUNS3 = [f"{c}/seed_{s}" for c in ("scratch", "finetune") for s in (0, 1, 2)]
KILL_BUDGET = ["--seeds", "3", "--conditions", "scratch,finetune", "--timesteps", "4096",
               "--source-timesteps", "512", "--eval-freq", "256", *TINY]


def _replay_resume(study: Path, run_key: str, step: int, folder: Path) -> list[tuple[str, ...]]:
    """The curve of the study's `run_key` trained again in this process, interrupted just
    after its checkpoint at `step` and resumed, as a worker of the study computes it."""
    import torch

    from rltransfer.specs import RunSpec
    from rltransfer.training import run as training
    from rltransfer.training.transfer import load_checkpoint

    run = RunSpec.from_dict(read_json(study / run_key / "status.json")["run"])
    source = (None if run.condition.label == "scratch"
              else load_checkpoint(study / "source" / "model.zip").state_dict)

    class StopAfterCheckpoint(training.EvaluationCallback):
        def __init__(self, *args, checkpoint, **kwargs):
            def save_then_stop() -> None:
                checkpoint()
                if self.model.num_timesteps == step:
                    raise KeyboardInterrupt
            super().__init__(*args, checkpoint=save_then_stop, **kwargs)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the study's workers
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(training, "EvaluationCallback", StopAfterCheckpoint)
            with pytest.raises(KeyboardInterrupt):
                training.train_run(run, folder, source_state=source)
        result = training.train_run(run, folder, source_state=source, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert result.resumed_from == step
    return _curve(folder / "evaluations.csv")


def _close(got: dict | None, expected: dict | None, tolerance: float,
           bounds: float | None = None) -> bool:
    """Two estimates agree: points within `tolerance`, bounds within `bounds` (default the
    same), unknown where both are."""
    if got is None or expected is None:
        return got == expected
    limits = {"point": tolerance, "low": bounds or tolerance, "high": bounds or tolerance}
    return all((got[k] is None) == (expected[k] is None) and
               (got[k] is None or abs(got[k] - expected[k]) <= limit + 1e-12)
               for k, limit in limits.items())


def test_resume_after_kill_9_finishes_the_study_as_if_uninterrupted(tmp_path, capsys):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "rltransfer", "run", *PAIR, "--out", str(out),
               "--name", "k", "--workers", "2", *KILL_BUDGET]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    study = out / "k"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill once one run is done and one is mid-way
            states = _states(study) if study.is_dir() else {}
            mid_way = [r for r, s in states.items()
                       if s == "running" and (study / r / "checkpoint.pt").is_file()]
            if "done" in states.values() and mid_way:
                break
            assert process.poll() is None, "the study ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail(f"no moment to kill: {states}")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the study and its workers, at once
        process.wait()
    done_before = {r: (study / r / "evaluations.csv").read_bytes()
                   for r, s in _states(study).items() if s == "done"}
    assert set(_states(study).values()) - {"done"}  # some runs were cut short

    assert main(["resume", str(study), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "continues from its checkpoint at step" in printed
    assert set(_states(study).values()) == {"done"}
    for run, data in done_before.items():
        assert (study / run / "evaluations.csv").read_bytes() == data  # kept as they were
    resumed = {r: step for r in RUNS3
               if (step := read_json(study / r / "status.json").get("resumed_from"))}
    assert resumed
    for run in RUNS3:
        steps = [int(row[0]) for row in _curve(study / run / "evaluations.csv")]
        assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] >= 4096  # no doubles
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = next(iter(resumed))
    board = EventAccumulator(str(study / first))
    board.Reload()
    tb_steps = [event.step for event in board.Scalars("eval/mean_reward")]
    assert tb_steps == [int(row[0]) for row in _curve(study / first / "evaluations.csv")]

    # The same study, uninterrupted, in a folder of its own (so no run is a cached copy).
    whole = tmp_path / "uninterrupted" / "k"
    assert main(["run", *PAIR, "--out", str(whole.parent), "--name", "k", "--workers", "2",
                 *KILL_BUDGET]) == 0
    assert _files(study) == _files(whole)
    _assert_same_curves(study, whole, resumed, tmp_path / "replay")
    _assert_same_summary(study, whole, resumed)


def _assert_same_curves(study: Path, whole: Path, resumed: dict[str, int], replay: Path) -> None:
    """Same seeds on CPU with 1 torch thread: every run that did not continue from a
    checkpoint (done before the kill, restarted from the start, or not started) has the same
    curve, digit for digit. A resumed run draws fresh random numbers from its checkpoint on
    (seed + step): it keeps the rows up to the checkpoint, evaluates at the same steps, and
    computes exactly what a run stopped at that checkpoint and resumed computes."""
    for run in ["source", *RUNS3]:
        mine, theirs = (_curve(s / run / "evaluations.csv") for s in (study, whole))
        if run not in resumed:
            assert mine == theirs, run
            continue
        assert [row[0] for row in mine] == [row[0] for row in theirs], run
        kept = [row for row in theirs if int(row[0]) <= resumed[run]]
        assert mine[:len(kept)] == kept, run
        assert mine == _replay_resume(study, run, resumed[run], replay / run), run


def _assert_same_summary(study: Path, whole: Path, resumed: dict[str, int]) -> None:
    """Every number that depends only on runs that did not resume is the same; a resumed
    run's own metrics are those of its whole curve on disk. Each other metric compared is a
    mean, trimmed mean or difference of means of per-run normalized scores, so it
    moves by no more than the resumed runs' normalized returns differ between the two
    studies (twice that for a difference of two conditions)."""
    from rltransfer.report.metrics import run_metrics
    from rltransfer.training.run import read_evaluations

    mine, theirs = read_json(study / "summary.json"), read_json(whole / "summary.json")
    assert mine.pop("study") == theirs.pop("study") == "k"
    my_metrics, their_metrics = mine.pop("metrics"), theirs.pop("metrics")
    my_runs, their_runs = mine.pop("per_run"), theirs.pop("per_run")
    assert mine == theirs  # normalization, budget, finished runs, warnings
    scale = theirs["threshold"] - theirs["random_return"]
    moved = {}
    for run in resumed:
        curves = [_curve(s / run / "evaluations.csv") for s in (study, whole)]
        moved[run] = max(abs(float(a[1]) - float(b[1]))
                         for a, b in zip(*curves, strict=True)) / scale
    assert {c: list(s) for c, s in my_runs.items()} == {c: list(s) for c, s in their_runs.items()}
    for condition, seeds in their_runs.items():
        for seed, expected in seeds.items():
            got, run = my_runs[condition][seed], f"{condition}/{seed}"
            if run not in moved:
                assert got == expected, run
                continue
            steps, returns = read_evaluations(study / run / "evaluations.csv")
            assert got == {k: v if math.isfinite(v) else None for k, v in run_metrics(
                steps, returns, **my_metrics["normalization"]).items()}, run  # its whole curve
            assert got["initial"] == expected["initial"], run  # step 0: before any resume
            for key in ("auc", "asymptote"):
                assert abs(got[key] - expected[key]) <= moved[run] + 1e-12, (run, key)
    my_conditions, their_conditions = my_metrics.pop("conditions"), their_metrics.pop("conditions")
    # the performance profile's grid spans every run's score, resumed runs' included
    my_profile, their_profile = my_metrics.pop("profile"), their_metrics.pop("profile")
    assert my_profile["conditions"].keys() == their_profile["conditions"].keys()
    assert my_metrics == their_metrics and my_conditions.keys() == their_conditions.keys()
    for got, expected in zip(my_conditions.values(), their_conditions.values(), strict=True):
        # Holm adjusts every condition's p-value by the others', resumed ones' included
        mine_verdict, their_verdict = got.pop("verdict"), expected.pop("verdict")
        assert mine_verdict["m"] == their_verdict["m"]
    shaken, delta = {run.split("/")[0] for run in resumed}, max(moved.values())
    for condition, expected in their_conditions.items():
        got = my_conditions[condition]
        if condition not in shaken and (condition == "scratch" or "scratch" not in shaken):
            assert got == expected, condition
            continue
        assert got["n_runs"] == expected["n_runs"] and got["initial"] == expected["initial"]
        assert got.get("jumpstart") == expected.get("jumpstart"), condition
        # A t interval's bounds move with the mean (<= delta) and with its half-width
        # t * sd / sqrt(n), whose sd moves by at most delta * sqrt(n / (n - 1)).
        n = got["n_runs"]
        t = stats.t.ppf(0.975, n - 1)
        for key in ("auc", "asymptote", "iqm"):
            assert _close(got[key], expected[key], delta, delta * (1 + t / math.sqrt(n - 1))), (
                condition, key)
        gain, before = got.get("asymptote_gain"), expected.get("asymptote_gain")
        if before is not None:  # Welch: both samples' sd may move, and its df with them
            half = (before["high"] - before["low"]) / 2
            slack = (2 * delta + t * math.sqrt(2) * delta / math.sqrt(n - 1)
                     + (t - stats.t.ppf(0.975, 2 * n - 2)) * half)
            assert _close(gain, before, 2 * delta, slack), condition


def test_ray_backend_writes_the_same_files_as_the_local_one(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert _study(tmp_path / "ray", "s", "--backend", "ray") == 0
    finally:
        ray.shutdown()
    assert _study(tmp_path / "local", "s", "--workers", "1") == 0
    on_ray, local = tmp_path / "ray" / "s", tmp_path / "local" / "s"
    assert _files(on_ray) == _files(local)
    for run in RUNS:
        assert _curve(on_ray / run / "evaluations.csv") == _curve(local / run / "evaluations.csv")
    assert read_json(on_ray / "study.json")["executions"][0]["backend"] == "ray"


def test_progress_shows_every_running_run_and_the_study_total():
    from rich.console import Console

    from rltransfer.study.progress import StudyProgress

    def screen(progress: StudyProgress) -> list[str]:
        snapshot = Console(width=160, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        snapshot.print(progress._progress.get_renderable())
        return snapshot.export_text().splitlines()

    console = Console(record=True, width=160, file=open(os.devnull, "w"))  # noqa: SIM115
    with StudyProgress(console, total_steps=4000, total_runs=2) as progress:
        progress.start_run("scratch/seed_0", "scratch seed 0", 2000)
        progress.start_run("finetune/seed_1", "finetune seed 1", 2000, resumed_from=500)
        time.sleep(0.05)
        progress.advance("scratch/seed_0", 1000)
        progress.advance("finetune/seed_1", 500)
        live = screen(progress)
        progress.finish_run("scratch/seed_0", 2000)
        progress.fail_run("finetune/seed_1", "finetune seed 1", "RuntimeError: boom", 2000)
        after = screen(progress)
    study = next(line for line in live if line.startswith("study [0/2 runs]"))
    assert "2000/4000 steps" in study and "steps/s" in study and "ETA" in study
    for label in ("scratch seed 0", "finetune seed 1"):  # each running run, its steps and rate
        row = next(line for line in live if line.strip().startswith(label))
        assert "1000/2000 steps" in row and "steps/s" in row
    assert len(after) == 1 and after[0].startswith("study [1/2 runs, 1 failed]")
    assert "3000/3000 steps" in after[0]  # finished: its rest counted; failed: its rest gone
    printed = console.export_text()
    assert "[1/2] scratch seed 0: 1,000 steps in" in printed
    assert "[failed] finetune seed 1: RuntimeError: boom" in printed
