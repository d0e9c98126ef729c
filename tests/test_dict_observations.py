"""Issue 23 part C: Dict observations get MultiInputPolicy everywhere, goal envs HER with
the off-policy algorithms, and each condition either runs on a Dict observation or is
refused in one line before anything is written. The envs are the test's own
(tests/goal_envs.py: a point reaching a goal, observed as Gymnasium-Robotics observes)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import goal_envs  # noqa: F401  (registers PointGoal-v0 and its variants)
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import PPO, SAC, HerReplayBuffer

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import HyperparameterError
from rltransfer.specs import EnvSpec
from rltransfer.strategies import registry
from rltransfer.study.plan import plan
from rltransfer.study.study_spec import StudySpec
from rltransfer.training import algos
from rltransfer.training.layers import feature_layers
from rltransfer.training.run import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

GOAL, DISCRETE, IMAGE = ("goal_envs:PointGoal-v0", "goal_envs:PointGoalDiscrete-v0",
                         "goal_envs:PointGoalImage-v0")
KEYS = "achieved_goal, desired_goal, observation"
TINY = ["--seeds", "1", "--timesteps", "128", "--source-timesteps", "128", "--eval-freq",
        "64", "--eval-episodes", "2", "--threshold", "-5", "--workers", "1"]
SMALL = "policy_kwargs={net_arch=[16,16]}"
OFF_POLICY = ["learning_starts=64", "batch_size=16", "train_freq=2", "buffer_size=2000", SMALL]
ON_POLICY = ["n_steps=16", "batch_size=64", "n_epochs=1", SMALL]


def _plan(algo: str, env: str = GOAL, **values):
    return plan(StudySpec.build(EnvSpec.parse(env), EnvSpec.parse(env), algo=algo, seeds=1,
                                **values))


def _study(tmp_path: Path, capsys, algo: str, env: str, conditions: str, hparams: list[str],
           *extra: str) -> tuple[int, str, Path]:
    target = f"{env}:goal_range=0.8" if env.startswith("goal_envs:") else env
    code = main(["run", env, target, "--algo", algo, "--conditions", conditions,
                 "--hparams", *hparams, *TINY, *extra, "--out", str(tmp_path), "--name", "s"])
    return code, capsys.readouterr().err, tmp_path / "s"


# --- the agent: policy and replay buffer, planned once ---------------------------------------

@pytest.mark.parametrize("algo", ["sac", "td3", "tqc", "dqn", "qrdqn"])
def test_goal_env_gets_multiinputpolicy_and_rl_zoos_her_with_off_policy_algorithms(algo):
    env = DISCRETE if algo in ("dqn", "qrdqn") else GOAL
    planned = _plan(algo, env)
    for agent in (planned.source_agent, planned.target_agent):
        assert agent.hparams["policy"] == "MultiInputPolicy"
        assert agent.hparams["replay_buffer_class"] == "HerReplayBuffer"
        assert agent.hparams["replay_buffer_kwargs"] == {"n_sampled_goal": 4,
                                                         "goal_selection_strategy": "future"}


def test_on_policy_dict_agent_has_no_replay_buffer_and_her_can_be_switched_off():
    assert _plan("ppo").target_agent.hparams["policy"] == "MultiInputPolicy"
    assert "replay_buffer_class" not in _plan("ppo").target_agent.hparams
    off = _plan("sac", hparams={"replay_buffer_class": "none"}).target_agent.hparams
    assert off["policy"] == "MultiInputPolicy"
    assert "replay_buffer_class" not in off and "replay_buffer_kwargs" not in off
    own = _plan("sac", hparams={"replay_buffer_kwargs": {"n_sampled_goal": 8}}).target_agent
    assert own.hparams["replay_buffer_kwargs"] == {"n_sampled_goal": 8,
                                                   "goal_selection_strategy": "future"}
    # RecurrentPPO's Dict policy is its LSTM one
    pytest.importorskip("sb3_contrib")
    assert _plan("recurrentppo").target_agent.hparams["policy"] == "MultiInputLstmPolicy"


def test_fetch_presets_are_rl_zoos_her_tables():
    sac = algos.preset("sac", ["FetchReach-v4"])
    assert {k: sac[k] for k in ("policy", "n_timesteps", "batch_size", "gamma", "learning_rate",
                                "learning_starts", "normalize", "replay_buffer_class",
                                "replay_buffer_kwargs", "policy_kwargs")} == {
        "policy": "MultiInputPolicy", "n_timesteps": 20_000, "batch_size": 256, "gamma": 0.95,
        "learning_rate": 0.001, "learning_starts": 1000, "normalize": True,
        "replay_buffer_class": "HerReplayBuffer",
        "replay_buffer_kwargs": {"goal_selection_strategy": "future", "n_sampled_goal": 4},
        "policy_kwargs": {"net_arch": [64, 64]}}
    push = algos.preset("tqc", ["FetchPush-v4"])
    assert (push["batch_size"], push["tau"], push["policy_kwargs"]) == (
        2048, 0.05, {"net_arch": [512, 512, 512], "n_critics": 2})
    assert algos.preset("tqc", ["FetchSlide-v4"])["n_timesteps"] == 3_000_000


@pytest.mark.parametrize("hparams, message", [
    ({"policy": "MlpPolicy"},
     f"--hparams policy=MlpPolicy: goal_envs:PointGoal-v0 observes a Dict ({KEYS}), which "
     f"only MultiInputPolicy takes: drop policy from --hparams"),
    ({"replay_buffer_class": "PrioritizedBuffer"},
     "unknown --hparams replay_buffer_class='PrioritizedBuffer': choose HerReplayBuffer, "
     "DictReplayBuffer, ReplayBuffer, or none"),
])
def test_dict_agent_inputs_that_cannot_work_are_refused(hparams, message):
    with pytest.raises(HyperparameterError, match=re.escape(message)):
        _plan("sac", hparams=hparams)


def test_her_needs_a_goal_env_and_crossq_a_vector(tmp_path, capsys):
    code, err, study = _study(tmp_path, capsys, "sac", "Pendulum-v1", "finetune",
                              ["replay_buffer_class=HerReplayBuffer"])
    assert code == 2 and not study.exists()
    assert err.strip() == ("rltransfer: error: --hparams replay_buffer_class=HerReplayBuffer: "
                           "Pendulum-v1 observes a vector, not a goal env's Dict: drop "
                           "replay_buffer_class")
    pytest.importorskip("sb3_contrib")
    with pytest.raises(HyperparameterError, match=re.escape(
            f"--algo crossq has no policy for a Dict observation (no MultiInputPolicy), but "
            f"goal_envs:PointGoal-v0 observes one ({KEYS}): use --algo ppo, a2c, dqn, sac")):
        _plan("crossq")


# --- HER in use ------------------------------------------------------------------------------

@pytest.mark.parametrize("algo, env", [("sac", GOAL), ("dqn", DISCRETE)])
def test_her_buffer_relabels_goals_with_the_envs_compute_reward(algo, env):
    small = {"learning_starts": 64, "batch_size": 16, "buffer_size": 2000,
             "policy_kwargs": {"net_arch": [16, 16]}}
    run = _plan(algo, env, hparams=small).policy_run()
    venv = make_vec(run.env, 1, seed=0)
    model = build_model(run, venv)
    model.learn(100)
    buffer = model.replay_buffer
    assert isinstance(buffer, HerReplayBuffer)
    samples = buffer.sample(256)
    desired = samples.observations["desired_goal"].numpy()
    achieved = samples.next_observations["achieved_goal"].numpy()
    expected = goal_envs.PointGoal().compute_reward(achieved, desired, None)
    np.testing.assert_allclose(samples.rewards.numpy().ravel(), expected)
    # some desired goals are relabelled: achieved goals, which can be the stored reward's 0
    assert (samples.rewards.numpy() == 0).mean() > 0.2


def test_source_trained_with_her_transfers_and_model_zip_loads(tmp_path, capsys):
    code, err, study = _study(tmp_path, capsys, "sac", GOAL, "finetune", OFF_POLICY)
    assert code == 0, err
    record = json.loads((study / "study.json").read_text())
    for agent in ("source_agent", "target_agent"):
        assert record[agent]["hparams"]["replay_buffer_class"] == "HerReplayBuffer"
        assert record[agent]["hparams"]["policy"] == "MultiInputPolicy"
    transfer = json.loads((study / "finetune" / "seed_0" / "transfer.json").read_text())
    copied = [entry["name"] for entry in transfer["tensors"] if entry["status"] == "copied"]
    assert "actor.mu.weight" in copied and "critic.qf0.0.weight" in copied
    env = gym.make("PointGoal-v0", goal_range=0.8)
    model = SAC.load(study / "finetune" / "seed_0" / "model.zip", env=make_vec(
        EnvSpec.parse(f"{GOAL}:goal_range=0.8"), 1, seed=0))
    assert model.replay_buffer_class is HerReplayBuffer
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == (2,)


# --- the conditions on Dict observations -----------------------------------------------------

@pytest.mark.parametrize("algo, env, conditions, hparams", [
    ("sac", GOAL, "freeze-features,reinit-head,replay:n=64,jsrl", OFF_POLICY),
    ("ppo", GOAL, "kickstart:steps=64", ON_POLICY),
    ("dqn", DISCRETE, "qdagger:n=64,replay:init=finetune,n=64", OFF_POLICY),
])
def test_conditions_train_on_dict_observations(tmp_path, capsys, algo, env, conditions,
                                               hparams):
    code, err, study = _study(tmp_path, capsys, algo, env, conditions, hparams)
    assert code == 0, err
    for run in study.glob("*/seed_0"):
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "done", (run, status)
    assert len(list(study.glob("*/seed_0"))) == len(registry.split(conditions))


@pytest.mark.parametrize("algo, condition, message", [
    ("sac", "align", "condition 'align' stores observations as arrays, but "
                     "goal_envs:PointGoal-v0:goal_range=0.8 observes Dict("),
    ("sac", "darc", "condition 'darc': its classifiers read vector observations, and "
                    "goal_envs:PointGoal-v0:goal_range=0.8 observes Dict("),
    ("ppo", "pretrained-encoder", "the pretrained-encoder condition replaces the encoder of "
                                  "one image, but goal_envs:PointGoal-v0:goal_range=0.8 "
                                  "observes a Dict: use finetune or freeze-features (each "
                                  "image key's CNN is copied from the source)"),
    ("ppo", "progressive", "condition 'progressive' builds its columns from MLP layers on "
                           "vector observations, but this study's policy is a "
                           "MultiInputPolicy on a Dict observation: use an env that observes "
                           "a vector, or finetune, freeze-features or reinit-head"),
])
def test_conditions_that_cannot_read_a_dict_are_refused_before_anything_is_written(
        tmp_path, capsys, algo, condition, message):
    code, err, study = _study(tmp_path, capsys, algo, GOAL, condition,
                              OFF_POLICY if algo == "sac" else ON_POLICY)
    assert code == 2 and not study.exists()
    assert err.startswith(f"rltransfer: error: {message}") and err.count("\n") == 1


def test_freeze_features_layers_counts_each_keys_cnn_from_one(tmp_path, capsys):
    code, err, study = _study(tmp_path, capsys, "ppo", IMAGE, "freeze-features:layers=2",
                              ON_POLICY)
    assert code == 0, err
    transfer = json.loads((study / "freeze-features:layers=2" / "seed_0" / "transfer.json"
                           ).read_text())
    frozen = sorted({entry["name"].rsplit(".", 1)[0] for entry in transfer["tensors"]
                     if entry["frozen"]})
    # the pixels key's first two convolutions (under each name PPO shares its extractor by),
    # not its third, nor its Linear, nor the MLPs after the extractor (depth 5 and on)
    assert frozen and {name.split(".extractors.")[-1] for name in frozen} == {
        "pixels.cnn.0", "pixels.cnn.2"}


class TwoCameras(gym.Env):
    observation_space = spaces.Dict({
        "left": spaces.Box(0, 255, (36, 36, 1), np.uint8),
        "right": spaces.Box(0, 255, (36, 36, 1), np.uint8),
        "joints": spaces.Box(-1, 1, (3,), np.float32)})
    action_space = spaces.Discrete(2)


def test_feature_depths_of_a_combined_extractor_run_per_key():
    policy = PPO("MultiInputPolicy", TwoCameras(), n_steps=64, batch_size=64).policy
    depths = feature_layers(policy)
    for key in ("left", "right"):
        assert [depths[f"features_extractor.extractors.{key}.{layer}"]
                for layer in ("cnn.0", "cnn.2", "cnn.4", "linear.0")] == [1, 2, 3, 4]
    assert depths["mlp_extractor.policy_net.0"] == depths["mlp_extractor.value_net.0"] == 5


def test_real_robotics_goal_envs_get_rl_zoos_setup_and_a_learning_start_her_can_sample():
    pytest.importorskip("gymnasium_robotics")
    fetch = _plan("sac", "FetchReach-v4").target_agent.hparams
    assert (fetch["policy"], fetch["replay_buffer_class"], fetch["learning_starts"],
            fetch["normalize"]) == ("MultiInputPolicy", "HerReplayBuffer", 1000, True)
    # no zoo table for PointMaze: SAC's default learning_starts (100) would sample HER's
    # buffer before its first 300-step episode ended, so it starts after one
    maze = _plan("sac", "PointMaze_UMaze-v3").target_agent.hparams
    assert (maze["replay_buffer_class"], maze["learning_starts"]) == ("HerReplayBuffer", 300)
    with pytest.raises(HyperparameterError, match=re.escape(
            "--hparams learning_starts=64: HER samples only finished episodes, and "
            "PointMaze_UMaze-v3's take 300 steps (per env): give learning_starts=300 or more")):
        _plan("sac", "PointMaze_UMaze-v3", hparams={"learning_starts": 64})
