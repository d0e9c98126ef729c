"""Algorithm registry, presets as data, overrides, action-space fit."""

from __future__ import annotations

import re

import gymnasium as gym
import pytest
import torch
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.utils import LinearSchedule

from rltransfer.errors import AlgorithmError, ConfigError, HyperparameterError
from rltransfer.specs import EnvSpec
from rltransfer.study.plan import plan
from rltransfer.study.study_spec import StudySpec
from rltransfer.training import algos


def test_ppo_cartpole_preset_is_rl_zoos():
    hp = algos.preset("ppo", ["CartPole-v1"])
    assert {k: hp[k] for k in ("n_envs", "n_steps", "batch_size", "gae_lambda", "gamma",
                               "n_epochs", "ent_coef", "learning_rate", "clip_range",
                               "n_timesteps")} == {
        "n_envs": 8, "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98,
        "n_epochs": 20, "ent_coef": 0.0, "learning_rate": "lin_0.001", "clip_range": "lin_0.2",
        "n_timesteps": 100_000}


def test_preset_falls_back_to_default():
    assert algos.preset("ppo", ["Taxi-v3"]) == algos.load_presets()["ppo"]["default"]


def _planned_hparams(algo: str, source: str, target: str) -> tuple[dict, dict]:
    resolved = plan(StudySpec.build(EnvSpec.parse(source), EnvSpec.parse(target), algo=algo,
                                    seeds=1))
    return resolved.source_agent.hparams, resolved.target_agent.hparams


def test_box2d_variants_get_the_base_envs_zoo_preset():
    source, target = _planned_hparams("dqn", "rltransfer/LunarLander-LowGravity-v0",
                                      "LunarLander-v3:gravity=-11")
    assert source == target == algos.preset("dqn", ["LunarLander-v3"])
    assert (source["learning_rate"], source["target_update_interval"], source["gradient_steps"],
            source["n_timesteps"]) == (6.3e-4, 250, -1, 100_000)  # the zoo's, not the default
    # SAC's LunarLander-v3 table is the zoo's LunarLanderContinuous-v3 entry (continuous=1)
    source, target = _planned_hparams("sac", "rltransfer/LunarLander-Continuous-v0",
                                      "LunarLander-v3:continuous=1,gravity=-5")
    assert source == target
    assert (source["n_timesteps"], source["learning_rate"], source["policy_kwargs"]) == (
        500_000, "lin_7.3e-4", {"net_arch": [400, 300]})
    # hardcore=1 is the same id: the BipedalWalker-v3 table, not the zoo's Hardcore entry
    source, _ = _planned_hparams("ppo", "rltransfer/BipedalWalker-Hardcore-v0",
                                 "BipedalWalker-v3:friction=1")
    assert (source["normalize"], source["n_envs"], source["clip_range"]) == (True, 32, 0.18)


def test_mujoco_variants_get_the_base_envs_zoo_preset():
    pytest.importorskip("mujoco")
    source, target = _planned_hparams("sac", "rltransfer/Hopper-HeavyTorso-v0",
                                      "Hopper-v5:mass=2,friction=uniform(0.5,1.5)")
    assert source == target == algos.preset("sac", ["Hopper-v5"])
    assert source["learning_starts"] == 10_000  # the zoo's, not SAC's default of 100


def test_mujoco_presets_are_the_zoos_v4_and_v2_entries_applied_to_v5():
    hopper = algos.preset("ppo", ["Hopper-v5"])
    assert (hopper["normalize"], hopper["n_envs"], hopper["learning_rate"],
            hopper["policy_kwargs"]["activation_fn"]) == (True, 1, 9.80828e-05, "relu")
    # "<<: *mujoco-defaults" merged; n_envs is the zoo's 1, not [a2c.default]'s 4
    assert algos.preset("a2c", ["Walker2d-v5"]) == {
        "normalize": True, "policy": "MlpPolicy", "n_envs": 1, "n_timesteps": 1_000_000}
    assert algos.preset("sac", ["Ant-v5"])["learning_starts"] == 10_000
    assert algos.preset("td3", ["HalfCheetah-v5"])["policy_kwargs"] == {"net_arch": [400, 300]}
    assert algos.preset("ppo", ["InvertedPendulum-v5"])["n_steps"] == 32  # the zoo's -v2 entry
    for algo in ("a2c", "sac", "td3"):  # the zoo has no MuJoCo pendulum entry for them
        assert algos.preset(algo, ["InvertedDoublePendulum-v5"]) == algos.load_presets()[algo][
            "default"]


@pytest.mark.parametrize("algo", list(algos.ALGORITHMS))
def test_every_preset_key_is_accepted_by_the_algorithm(algo):
    for table in algos.load_presets()[algo].values():
        algos.validate_hparams(algos.ALGORITHMS[algo], table)


def test_model_kwargs_converts_data_forms():
    space = gym.spaces.Box(-1, 1, (2,))
    kwargs = algos.model_kwargs({"learning_rate": "lin_0.001", "n_envs": 8,
                                 "policy_kwargs": {"activation_fn": "relu", "net_arch": [8]},
                                 "train_freq": [1, "episode"], "noise_type": "normal",
                                 "noise_std": 0.2}, space)
    assert isinstance(kwargs["learning_rate"], LinearSchedule)
    assert kwargs["learning_rate"](1.0) == pytest.approx(1e-3)
    assert kwargs["learning_rate"](0.5) == pytest.approx(5e-4)
    assert kwargs["policy_kwargs"]["activation_fn"] is torch.nn.ReLU
    assert kwargs["train_freq"] == (1, "episode")
    assert isinstance(kwargs["action_noise"], NormalActionNoise)
    assert "n_envs" not in kwargs and "noise_type" not in kwargs


def test_parse_overrides_reads_toml_literals():
    assert algos.parse_overrides(["learning_rate=3e-4", "policy_kwargs={net_arch=[64, 64]}",
                                  "clip_range=lin_0.1", "normalize_advantage=false"]) == {
        "learning_rate": 3e-4, "policy_kwargs": {"net_arch": [64, 64]},
        "clip_range": "lin_0.1", "normalize_advantage": False}


def test_bad_overrides():
    with pytest.raises(HyperparameterError, match=re.escape("cannot read --hparams 'lr'")):
        algos.parse_overrides(["lr"])
    with pytest.raises(HyperparameterError, match=re.escape(
            "ppo has no hyperparameter 'learning_rat'. Did you mean 'learning_rate'")):
        algos.validate_hparams(algos.ALGORITHMS["ppo"], {"learning_rat": 1e-3})


def test_unknown_algorithm_suggests():
    with pytest.raises(AlgorithmError, match=re.escape(
            "unknown algorithm 'ppo2': choose from ppo, a2c, dqn, sac, td3, tqc, qrdqn, crossq, "
            "trpo, ars, recurrentppo, maskableppo. Did you mean 'ppo'")):
        algos.get_algorithm("ppo2")


def test_algorithm_must_fit_the_action_space():
    with pytest.raises(AlgorithmError, match=re.escape(
            "dqn needs Discrete actions, but Pendulum-v1 has Box actions: use --algo ppo or "
            "a2c or sac or td3")):
        algos.check_action_space(algos.ALGORITHMS["dqn"], gym.make("Pendulum-v1").action_space,
                                 "Pendulum-v1")
    with pytest.raises(AlgorithmError, match="sac needs Box actions"):
        algos.check_action_space(algos.ALGORITHMS["sac"], gym.make("CartPole-v1").action_space,
                                 "CartPole-v1")


def test_auto_device_puts_cnn_policies_on_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert algos.resolve_device("auto", "CnnPolicy") == "cuda"
    assert algos.resolve_device("auto", "MlpPolicy") == "cpu"  # SB3: MLPs are faster on CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert algos.resolve_device("auto", "CnnPolicy") == "cpu"
    with pytest.raises(ConfigError, match=re.escape(
            "--device cuda: no CUDA device is available here; use --device cpu or auto")):
        algos.resolve_device("cuda", "CnnPolicy")
