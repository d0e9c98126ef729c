"""The score scale and thresholds: Atari human-normalized scores, the registered
reward_threshold, a threshold derived from the source's last evaluations (with a warning),
and the refusal of a threshold too close to random."""

from __future__ import annotations

import csv
import math

import gymnasium as gym
import numpy as np
import pytest

from rltransfer.cli import main
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.report.metrics import ASYMPTOTE_WINDOW
from rltransfer.specs import EnvSpec
from rltransfer.study import preflight
from rltransfer.study.plan import plan
from rltransfer.study.score_scale import (
    HUMAN_NORMALIZED,
    SE_GAP,
    RandomScore,
    atari_game,
    atari_table,
    choose,
    human_scores,
    source_score,
)
from rltransfer.study.study_spec import StudySpec
from rltransfer.training.run import EVAL_COLUMNS, read_evaluations

BUDGET = ["--timesteps", "128", "--source-timesteps", "256", "--eval-freq", "64",
          "--seeds", "1", "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1",
          "--n-envs", "1", "--eval-episodes", "2", "--workers", "1"]
CALM = RandomScore(0.0, 10.0, 100)  # eval SE over 4 episodes: 5


def _spec(text: str) -> EnvSpec:
    return EnvSpec.parse(text)


def _choose(target: str, given: float | None = None, random: RandomScore = CALM,
            source: dict | None = None, eval_episodes: int = 4, required: bool = False):
    return choose(_spec(target), _spec("CartPole-v1"), given, random, eval_episodes, source,
                  required=required)


# --- the published Atari scores -----------------------------------------------------------


def test_atari_table_holds_the_published_scores_with_their_source():
    table = atari_table()
    assert table["games"]["pong"] == {"random": -20.7, "human": 14.6}
    assert table["games"]["breakout"] == {"random": 1.7, "human": 30.5}
    assert table["games"]["space_invaders"] == {"random": 148.0, "human": 1668.7}
    assert table["games"]["montezuma_revenge"] == {"random": 0.0, "human": 4753.3}
    assert len(table["games"]) == 57
    assert "Badia et al. 2020" in table["source"] and "Mnih et al. 2015" in table["source"]
    assert "dqn_zoo" in table["url"]


def test_ale_ids_map_to_game_names():
    pytest.importorskip("ale_py")
    assert atari_game(_spec("ALE/Pong-v5")) == "pong"
    assert atari_game(_spec("ALE/Pong-v5:mode=1,difficulty=1")) == "pong"
    assert atari_game(_spec("PongNoFrameskip-v4")) == "pong"
    assert atari_game(_spec("rltransfer/Pong-Mode1-v0")) == "pong"
    assert atari_game(_spec("ALE/SpaceInvaders-v5")) == "space_invaders"
    assert atari_game(_spec("CartPole-v1")) is None
    assert human_scores(_spec("BreakoutNoFrameskip-v4")) == (1.7, 30.5)
    assert human_scores(_spec("ALE/Tetris-v5")) is None  # not one of the 57 games
    # every game of the table is a game ale-py plays
    games = {s.kwargs.get("game") for s in gym.registry.values()
             if str(s.entry_point).startswith("ale_py")}
    assert set(atari_table()["games"]) <= games


def test_atari_target_is_human_normalized_by_default():
    pytest.importorskip("ale_py")
    # a noisy random policy does not matter: the published gap is used as it is
    noisy = RandomScore(-20.3, 50.0, 10)
    found = _choose("ALE/Pong-v5:mode=1,difficulty=1", random=noisy)
    assert (found.threshold, found.random_return, found.kind) == (14.6, -20.7, HUMAN_NORMALIZED)
    record = found.record()
    assert record["normalization"] == "human-normalized"
    assert record["threshold_from"].startswith("human score (Atari human-normalized; Badia")
    assert record["target_random_return"] == -20.7
    assert "published random score" in record["random_return_from"]
    assert "mode=1, difficulty=1" in record["normalization_note"]
    assert "normalization_note" not in _choose("ALE/Pong-v5", random=noisy).record()


def test_atari_with_threshold_or_unknown_game_uses_the_generic_rule():
    pytest.importorskip("ale_py")
    given = _choose("ALE/Pong-v5", given=10.0, random=RandomScore(-20.3, 0.5, 52))
    assert (given.threshold_from, given.random_return, given.kind) == ("--threshold", -20.3,
                                                                     "threshold")
    # Tetris: no published scores and no reward_threshold: wait for the source's score
    assert _choose("ALE/Tetris-v5") is None
    derived = _choose("ALE/Tetris-v5", source={"score": 40.0, "score_from": "source's mean"})
    assert derived.threshold == 40.0
    assert derived.warning and "pass --threshold R to pin it" in derived.warning


def test_plan_of_the_pong_mode_study_is_human_normalized():
    pytest.importorskip("ale_py")
    spec = StudySpec.build(_spec("ALE/Pong-v5"), _spec("ALE/Pong-v5:mode=1,difficulty=1"),
                           seeds=2, timesteps=256, source_timesteps=256, eval_freq=128,
                           eval_episodes=1, name="pong")
    found = preflight.score_scale(plan(spec), RandomScore(-20.3, 0.78, 52), None)
    assert (found.threshold, found.random_return) == (14.6, -20.7)


# --- the registered reward_threshold, and one derived from the source ---------------------


def test_registered_reward_threshold_comes_before_the_source():
    found = _choose("CartPole-v1", source={"score": 40.0})
    assert (found.threshold, found.threshold_from, found.warning) == (
        475.0, "target reward_threshold", None)
    assert found.random_return == CALM.mean  # measured


def test_derived_threshold_is_the_mean_of_the_last_evaluations(tmp_path):
    path = tmp_path / "evaluations.csv"
    rows = [(0, -900.0), (64, -500.0), (128, -300.0), (192, -200.0), (256, -100.0)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EVAL_COLUMNS)
        writer.writerows((s, r, 1.0, 2, 0.0) for s, r in rows)
    score, used = source_score(*read_evaluations(path))
    assert ASYMPTOTE_WINDOW == 3 and used == 3
    assert score == pytest.approx((-300.0 - 200.0 - 100.0) / 3)
    # with fewer evaluations after training began, the untrained one (step 0) is left out
    assert source_score(np.array([0, 64]), np.array([-900.0, -500.0])) == (-500.0, 1)
    found = _choose("Pendulum-v1", random=RandomScore(-1500.0, 10.0, 100),
                    source={"score": score, "score_from": "source's mean return over its last "
                                                          "3 evaluations on Pendulum-v1"})
    assert found.threshold == pytest.approx(-200.0)
    assert found.threshold_from.startswith("source's mean return over its last 3 evaluations")
    assert found.warning == (
        "Pendulum-v1 registers no reward_threshold, so the threshold (normalized score 1) is "
        "the source policy's own score on CartPole-v1, the mean of its last 3 evaluations: "
        "pass --threshold R to pin it")
    with pytest.raises(ConfigError, match="there is no source score: pass --threshold"):
        _choose("Pendulum-v1", required=True)


def test_study_derives_the_threshold_from_the_source_and_warns(tmp_path, capsys, monkeypatch):
    # a random policy far below anything the tiny source scores: the gap check passes
    monkeypatch.setattr(preflight, "random_return", lambda *a: RandomScore(-5000.0, 1.0, 100))
    code = main(["run", "Pendulum-v1", "Pendulum-v1:m=1.2", "--out", str(tmp_path),
                 "--name", "derived", *BUDGET])
    assert code == 0
    out = capsys.readouterr().out
    study = tmp_path / "derived"
    record = read_json(study / "study.json")
    steps, returns = read_evaluations(study / "source" / "evaluations.csv")
    expected = float(np.mean(returns[steps > 0][-3:]))
    assert len(returns[steps > 0]) > 3  # the last 3 of more, not the final one alone
    assert record["threshold"] == pytest.approx(expected)
    assert record["threshold_from"] == ("source's mean return over its last 3 evaluations on "
                                        "Pendulum-v1")
    assert record["threshold_warning"].endswith("pass --threshold R to pin it")
    assert record["normalization"] == "threshold"
    assert record["target_random_return"] == record["measured_random_return"] == -5000.0
    assert record["measured_random_std"] == 1.0 and record["measured_random_episodes"] == 100
    warned = " ".join(out.split())
    assert "warning: Pendulum-v1:m=1.2 registers no reward_threshold" in warned
    assert warned.count("registers no reward_threshold") == 1  # once, then the value it set
    assert f"threshold {record['threshold']:g} (source's mean return" in warned


# --- a threshold too close to random is refused ---------------------------------------------


def test_gap_below_se_gap_standard_errors_is_refused():
    assert SE_GAP == 3.0
    # SE = 10 / sqrt(4) = 5: the threshold must be at least 15 above random
    assert _choose("Pendulum-v1", given=15.5).threshold == 15.5
    with pytest.raises(ConfigError) as refused:
        _choose("Pendulum-v1", given=14.0)
    message = str(refused.value)
    for part in ("threshold 14 (--threshold)", "only 14 above", "return 0 on Pendulum-v1",
                 "3 x 5", "pass a higher --threshold"):
        assert part in message
    with pytest.raises(ConfigError, match="is not above the random policy's return"):
        _choose("Pendulum-v1", given=-1.0)
    # a study.json from before the std was recorded: only the "above random" check
    assert _choose("Pendulum-v1", given=0.5, random=RandomScore(0.0, None, 0)).threshold == 0.5
    assert math.isclose(CALM.standard_error(4), 5.0)


@pytest.mark.parametrize("threshold,message", [
    ("40", "standard errors of an evaluation"),
    ("5", "is not above the random policy's return"),
])
def test_cli_refuses_a_threshold_near_random_before_writing(tmp_path, capsys, threshold,
                                                            message):
    out = tmp_path / "runs"
    code = main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--threshold", threshold,
                 "--out", str(out), "--name", "near", *BUDGET])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "pass a higher --threshold" in err
    assert f"threshold {threshold} (--threshold)" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "near").exists() and not (out / ".cache").exists()
