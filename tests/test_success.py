"""Success rates (issue 23, part B): recorded at every evaluation where the env reports
success, shown by the report, the study's score with --score success, and Continual World's
forward transfer. Every env here is defined by this file, its success known per episode."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rltransfer.cli import main
from rltransfer.report.runfiles import EVAL_COLUMNS, read_evaluations, read_rows
from rltransfer.report.success import forward_transfer, success_columns
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training.run import train_run
from rltransfer.training.success import EpisodeSuccess

pytestmark = pytest.mark.usefixtures("one_thread")


class BySeed(gym.Env):
    """Four steps an episode; whether the episode succeeds follows from its reset seed, so
    each evaluation's success rate is known: an evaluation of 4 episodes plays 4 consecutive
    seeds (one env each), one of them divisible by 4.

    ``mode="any"``: ``success`` is 1 at step 2 only, for seeds not divisible by 4 (Meta-World's
    any-step rule gives 3/4; a last-step rule would give 0). ``mode="last"``: ``is_success``
    is True at step 2 always, and at the last step only for seeds divisible by 4 (the
    last-step rule gives 1/4; an any-step rule would give 1). ``mode="none"``: no success."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, mode: str = "any") -> None:
        self.mode, self.lucky, self.t = mode, False, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.lucky = seed % 4 == 0
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        info = {}
        if self.mode == "any":
            info["success"] = float(self.t == 2 and not self.lucky)
        elif self.mode == "last":
            info["is_success"] = self.t == 2 or (self.t == 4 and self.lucky)
        return np.full(1, self.t / 4, np.float32), float(action), False, self.t >= 4, info


class AllOnes(gym.Env):
    """Reward 1 for action 1; the episode (4 steps) succeeds (``is_success`` at its last
    step) when every action was 1: a random policy succeeds in 1/16 of episodes, one that
    learned the reward in all of them."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.ones = 0, 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        self.ones += int(action == 1)
        done = self.t >= 4
        info = {"is_success": done and self.ones == 4}
        return np.full(1, self.t / 4, np.float32), float(action == 1), False, done, info


for _mode in ("any", "last", "none"):
    gym.register(f"SuccessBySeed{_mode.title()}-v0", entry_point=BySeed, kwargs={"mode": _mode})
gym.register("SuccessAllOnes-v0", entry_point=AllOnes, max_episode_steps=4)

TINY_PPO = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "policy_kwargs": {"net_arch": [8]}}


def _train(tmp_path: Path, mode: str) -> Path:
    run = RunSpec(EnvSpec.parse(f"SuccessBySeed{mode.title()}-v0"),
                  AgentSpec("ppo", TINY_PPO, 1, "cpu"), "scratch", 0, 96, 32, 4)
    train_run(run, tmp_path / mode)
    return tmp_path / mode


@pytest.mark.parametrize(("mode", "rate"), [("any", 0.75), ("last", 0.25)])
def test_each_evaluation_records_its_success_rate_by_the_documented_rule(tmp_path, mode, rate):
    run_dir = _train(tmp_path, mode)
    with open(run_dir / "evaluations.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == [*EVAL_COLUMNS, "success_rate"]
    rows = read_rows(run_dir / "evaluations.csv")
    assert [r["timesteps"] for r in rows] == [0, 32, 64, 96]
    assert [r["success_rate"] for r in rows] == [rate] * 4
    steps, rates = read_evaluations(run_dir / "evaluations.csv", "success")
    assert rates.tolist() == [rate] * 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next(run_dir.rglob("events.out.tfevents*")).parent))
    events.Reload()
    values = [(e.step, e.value) for e in events.Scalars("eval/success_rate")]
    assert values == [(0, rate), (32, rate), (64, rate), (96, rate)]


def test_an_env_without_success_keeps_the_columns_it_always_had(tmp_path):
    run_dir = _train(tmp_path, "none")
    assert (run_dir / "evaluations.csv").read_text().splitlines()[0] == ",".join(EVAL_COLUMNS)
    assert {r["success_rate"] for r in read_rows(run_dir / "evaluations.csv")} == {None}
    with pytest.raises(Exception, match="has no success_rate column"):
        read_evaluations(run_dir / "evaluations.csv", "success")


def test_an_episode_that_reports_no_success_leaves_the_rate_unknown():
    success = EpisodeSuccess(2)
    local = {"is_monitor_wrapped": False}
    success({**local, "i": 0, "info": {"is_success": True}, "done": True}, {})
    assert success.rate == 1.0
    success({**local, "i": 1, "info": {}, "done": True}, {})
    assert success.rate is None


def test_forward_transfer_on_hand_computed_curves():
    """Success curves on steps 0, 50, 100 (budget 100): areas by the trapezoid rule."""
    steps = np.array([0, 50, 100])
    scratch = [(steps, np.array([0.0, 0.0, 1.0])), (steps, np.array([0.0, 0.5, 0.5])),
               (steps, np.array([0.0, 0.0, 0.5]))]
    transfer = [(steps, np.array([0.5, 1.0, 1.0])), (steps, np.array([1.0, 1.0, 1.0])),
                (steps, np.array([0.5, 0.5, 1.0]))]
    ref, cond = success_columns(scratch, 100), success_columns(transfer, 100)
    assert ref["auc"].tolist() == [0.25, 0.375, 0.125]
    assert cond["auc"].tolist() == [0.875, 1.0, 0.625]
    ft = forward_transfer(cond["auc"], ref["auc"])
    assert ft["point"] == pytest.approx((2.5 / 3 - 0.25) / (1 - 0.25))
    assert ft["low"] < ft["point"] < ft["high"] <= 1.0 + 1e-9
    assert ft["method"].startswith("Fieller")
    done = forward_transfer(cond["auc"], np.array([1.0, 1.0, 1.0]))  # scratch always succeeds
    assert done["point"] is None and "not clearly below 1" in done["note"]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_score_success_is_refused_for_a_target_without_success(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    before = _snapshot(tmp_path)
    code = main(["run", "SuccessBySeedNone-v0", "SuccessBySeedNone-v0",
                 "--score", "success", "--out", str(tmp_path), "--timesteps", "64",
                 "--conditions", "scratch"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rltransfer: error: --score success: SuccessBySeedNone-v0 reports no success "
                   "(no 'is_success' or 'success' in its step infos, in 100 random episodes): "
                   "use --score return"]
    assert _snapshot(tmp_path) == before


def test_a_matrix_refuses_score_success_for_a_target_without_success(tmp_path, capsys):
    code = main(["matrix", "--sources", "SuccessAllOnes-v0",
                 "--targets", "SuccessAllOnes-v0;SuccessBySeedNone-v0", "--score", "success",
                 "--out", str(tmp_path), "--timesteps", "64", "--conditions", "scratch"])
    assert code == 2
    assert "--score success: SuccessBySeedNone-v0 reports no success" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_score_success_is_refused_where_the_random_policy_already_succeeds(tmp_path, capsys):
    """SuccessBySeedAny: 3 in 4 episodes succeed whatever the policy does; 100% is 0.25
    above it, less than 3 standard errors of a 10-episode evaluation (3 x 0.137)."""
    code = main(["run", "SuccessBySeedAny-v0", "SuccessBySeedAny-v0", "--score", "success",
                 "--out", str(tmp_path), "--conditions", "scratch"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rltransfer: error: --score success: the random policy already succeeds in "
                   "75% of 100 episodes on SuccessBySeedAny-v0, so 100% success is less than 3 "
                   "standard errors of an evaluation above it: success rates cannot tell "
                   "transfer from chance; use --score return, or a harder target"]
    assert not any(tmp_path.iterdir())


def test_score_success_refuses_a_threshold(tmp_path, capsys):
    code = main(["run", "SuccessAllOnes-v0", "SuccessAllOnes-v0", "--score", "success",
                 "--threshold", "3", "--out", str(tmp_path)])
    assert code == 2
    assert "--threshold 3 is a return, and --score success compares success rates" in \
        capsys.readouterr().err
    assert not any(tmp_path.iterdir())


STUDY = ["--algo", "ppo", "--timesteps", "192", "--source-timesteps", "192", "--eval-freq",
         "64", "--eval-episodes", "4", "--seeds", "2", "--conditions", "scratch,finetune",
         "--n-envs", "1", "--hparams", "n_steps=32", "batch_size=32", "n_epochs=1",
         "learning_rate=0.01", "policy_kwargs={net_arch=[8]}", "--similarity", "0",
         "--workers", "1"]


def test_score_success_end_to_end(tmp_path, capsys):
    code = main(["run", "SuccessAllOnes-v0", "SuccessAllOnes-v0", "--score", "success",
                 "--out", str(tmp_path), "--name", "s", *STUDY])
    out = capsys.readouterr().out
    assert code == 0, out
    study_dir = tmp_path / "s"
    study = json.loads((study_dir / "study.json").read_text())
    assert study["spec"]["protocol"]["score"] == "success"
    assert study["threshold"] == 1.0 and study["normalization"] == "success-rate"
    random = study["target_random_return"]  # the random policy's success rate
    assert random == study["measured_random_success"]
    assert 0.0 < random < 0.2  # 1/16 in expectation over its 100 episodes
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["score"] == "success" and summary["random_return"] == random
    # hand-check the normalized numbers from the runs' success columns
    for condition in ("scratch", "finetune"):
        rates = [read_evaluations(study_dir / condition / f"seed_{k}" / "evaluations.csv",
                                  "success") for k in (0, 1)]
        normalized = [(r - random) / (1 - random) for _, r in rates]
        entry = summary["metrics"]["conditions"][condition]
        assert entry["initial"]["point"] == pytest.approx(np.mean([n[0] for n in normalized]))
        assert entry["asymptote"]["point"] == pytest.approx(
            np.mean([n[-3:].mean() for n in normalized]))
        steps = rates[0][0]
        areas = [np.trapezoid(n, steps) / steps[-1] for n in normalized]
        assert entry["auc"]["point"] == pytest.approx(np.mean(areas))
        assert entry["success"]["point"] == pytest.approx(np.mean([r[-3:].mean()
                                                                   for _, r in rates]))
    assert "forward_transfer" in summary["metrics"]["conditions"]["finetune"]
    from rltransfer import api

    curves = api.load(study_dir).curves  # the API's curves: the study's score, normalized
    assert curves.score.tolist() == pytest.approx(
        ((curves.success_rate - random) / (1 - random)).tolist())
    assert "score: success rate" in out and "final success rate" in out
    report = (study_dir / "report.md").read_text()
    assert "success rate (--score success)" in report and "forward transfer (success)" in report


def test_a_return_study_on_a_success_env_reports_success_beside_the_return(tmp_path, capsys):
    code = main(["run", "SuccessAllOnes-v0", "SuccessAllOnes-v0", "--out", str(tmp_path),
                 "--name", "r", "--threshold", "4", *STUDY])
    assert code == 0, capsys.readouterr()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["score"] == "return" and summary["threshold"] == 4
    entry = summary["metrics"]["conditions"]["finetune"]
    assert {"success", "forward_transfer"} <= set(entry)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "r" / "_aggregate" / "finetune"))
    events.Reload()
    assert "aggregate/success_rate/finetune/mean" in events.Tags()["scalars"]


def test_a_cached_scratch_run_without_success_rates_is_trained_again_under_score_success(
        tmp_path):
    """A scratch run cached before success rates were recorded has no success_rate column:
    a --score success study does not reuse it (it trains it again); a --score return study
    does."""
    from rltransfer.study.caches import reuse_scratch, scratch_cache
    from rltransfer.study.plan import plan
    from rltransfer.study.study_spec import StudySpec

    def scratch(score: str):
        spec = StudySpec.build(EnvSpec.parse("SuccessAllOnes-v0"),
                               EnvSpec.parse("SuccessAllOnes-v0"), conditions=["scratch"],
                               seeds=1, timesteps=64, eval_freq=32, score=score,
                               out=str(tmp_path), hparams={"n_steps": 32, "batch_size": 32})
        plan_ = plan(spec)
        return plan_, plan_.target_runs()[0]

    plan_, run = scratch("success")
    cache = scratch_cache(plan_, run)
    cache.mkdir(parents=True)
    (cache / "status.json").write_text(json.dumps({"state": "done"}))
    rows = [",".join(EVAL_COLUMNS), "0,1.0,0.0,4,0.1", "64,4.0,0.0,4,0.2"]
    (cache / "evaluations.csv").write_text("\n".join(rows) + "\n")
    assert reuse_scratch(plan_, run, tmp_path / "s" / "scratch" / "seed_0") is None
    assert reuse_scratch(*scratch("return"), tmp_path / "r" / "scratch" / "seed_0") == cache.name
    (cache / "evaluations.csv").write_text("\n".join(
        [rows[0] + ",success_rate", rows[1] + ",0.0", rows[2] + ",1.0"]) + "\n")
    assert reuse_scratch(plan_, run, tmp_path / "s" / "scratch" / "seed_0") == cache.name
