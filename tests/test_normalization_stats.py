"""VecNormalize statistics: presets keep RL-Zoo's normalize, runs save them as plain arrays,
transfer takes them as norm=freeze|update|reset says, and RL-Zoo's pickles are read through
an allowlist that never runs what a pickle names."""

from __future__ import annotations

import os
import pickle
import re

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rltransfer.cli import main
from rltransfer.errors import CheckpointError, ConfigError, HyperparameterError
from rltransfer.io_utils import read_json
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.strategies import registry as conditions
from rltransfer.training import algos, vecnorm
from rltransfer.training.run import train_run
from rltransfer.training.safe_pickle import read_vecnormalize
from rltransfer.training.transfer import load_checkpoint

TINY = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}
INITIAL_COUNT = 1e-4  # RunningMeanStd's epsilon: the count of fresh statistics


def _agent(normalize=True) -> AgentSpec:
    hparams = {**algos.preset("ppo", ["CartPole-v1"]), **TINY, "normalize": normalize}
    return AgentSpec("ppo", hparams, n_envs=2, device="cpu")


def _run(condition: str, seed: int = 0, timesteps: int = 256, agent=None) -> RunSpec:
    return RunSpec(EnvSpec("CartPole-v1"), agent or _agent(), condition, seed, timesteps, 128, 2)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A normalized source run: (its model.zip, its statistics)."""
    folder = tmp_path_factory.mktemp("source")
    train_run(_run("scratch", seed=1), folder)
    found = vecnorm.source_stats(folder / "model.zip")
    assert found is not None and found[1] == folder / "vecnormalize.npz"
    return folder / "model.zip", found[0]


def _target(source, tmp_path, condition, **kwargs):
    path, stats = source
    result = train_run(_run(condition), tmp_path / "run",
                       source_state=load_checkpoint(path).state_dict, source_label="src",
                       source_stats=stats, **kwargs)
    return result, vecnorm.load_npz(tmp_path / "run" / "vecnormalize.npz")


# --- presets and the normalize hyperparameter --------------------------------------------


@pytest.mark.parametrize("algo,env", [("ppo", "Acrobot-v1"), ("ppo", "MountainCar-v0"),
                                      ("ppo", "MountainCarContinuous-v0"),
                                      ("a2c", "Acrobot-v1"), ("a2c", "MountainCar-v0"),
                                      ("a2c", "Pendulum-v1")])
def test_presets_keep_rl_zoos_normalize(algo, env):
    hparams = algos.preset(algo, [env])
    assert hparams["normalize"] is True
    # VecNormalize discounts returns with the algorithm's gamma, as RL-Zoo does
    assert vecnorm.config(hparams) == ({"gamma": hparams["gamma"]} if "gamma" in hparams else {})


def test_the_zoos_dict_form_is_read_as_data():
    hparams = algos.preset("ppo", ["CarRacing-v3"])
    assert hparams["normalize"] == "{'norm_obs': False, 'norm_reward': True}"
    assert vecnorm.config(hparams) == {"norm_obs": False, "norm_reward": True, "gamma": 0.99}
    assert vecnorm.config({"normalize": "dict(norm_obs=False, clip_reward=5.0)"}) == {
        "norm_obs": False, "clip_reward": 5.0}
    assert vecnorm.config({"normalize": False}) is None
    assert "normalize" not in algos.preset("ppo", ["CartPole-v1"])


def test_bad_normalize_values_are_one_line_errors(tmp_path):
    ppo = algos.ALGORITHMS["ppo"]
    with pytest.raises(HyperparameterError, match=re.escape(
            "cannot read normalize=\"__import__('os').system('x')\": write true, false or a "
            "dict such as \"{'norm_obs': False, 'norm_reward': True}\"")):
        algos.validate_hparams(ppo, {"normalize": "__import__('os').system('x')"})
    with pytest.raises(HyperparameterError, match=re.escape(
            "normalize has no option 'norm_ob': VecNormalize takes norm_obs, norm_reward, "
            "clip_obs, clip_reward, gamma, epsilon, norm_obs_keys")):
        algos.validate_hparams(ppo, {"normalize": {"norm_ob": True}})


ACROBOT = ["--seeds", "1", "--timesteps", "64", "--source-timesteps", "64", "--eval-freq", "64",
           "--eval-episodes", "1", "--n-envs", "2", "--workers", "1",
           "--hparams", "n_steps=32", "batch_size=64", "n_epochs=1"]


def test_a_normalized_preset_study_hands_the_sources_statistics_on(tmp_path, capsys):
    """Acrobot's preset normalizes: the study's source saves its statistics, the frozen
    target keeps them; --hparams normalize=false turns normalization off."""
    assert main(["run", "Acrobot-v1", "Acrobot-v1", "--conditions", "scratch,finetune:norm=freeze",
                 "--out", str(tmp_path), "--name", "on", *ACROBOT]) == 0
    study = tmp_path / "on"
    assert read_json(study / "study.json")["target_agent"]["hparams"]["normalize"] is True
    source = vecnorm.load_npz(study / "source" / "vecnormalize.npz")
    target = vecnorm.load_npz(study / "finetune:norm=freeze" / "seed_0" / "vecnormalize.npz")
    assert source["obs_rms.mean"].shape == (6,) and _same(target, source)
    record = read_json(study / "finetune:norm=freeze" / "seed_0" / "transfer.json")
    assert record["normalization"]["copied"] == ["obs_rms", "ret_rms"]
    scratch = vecnorm.load_npz(study / "scratch" / "seed_0" / "vecnormalize.npz")
    assert float(scratch["obs_rms.count"]) == pytest.approx(INITIAL_COUNT + 64 + 2, rel=1e-12)
    assert "normalization statistics: the source's, frozen (norm=freeze)" in capsys.readouterr().out

    assert main(["run", "Acrobot-v1", "Acrobot-v1", "--conditions", "scratch", "--out",
                 str(tmp_path), "--name", "off", *ACROBOT, "normalize=false"]) == 0
    assert read_json(tmp_path / "off" / "study.json")["target_agent"]["hparams"][
        "normalize"] is False
    assert not (tmp_path / "off" / "scratch" / "seed_0" / "vecnormalize.npz").exists()


def test_an_rl_zoo_folders_statistics_go_with_its_checkpoint(tmp_path):
    """logs/ppo/CartPole-v1_1/CartPole-v1.zip with CartPole-v1/vecnormalize.pkl, written by SB3
    itself as RL-Zoo does: the frozen target's statistics are the pickle's."""
    from stable_baselines3 import PPO

    folder = tmp_path / "logs" / "ppo" / "CartPole-v1_1"
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")] * 2))
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0)
    model.learn(128)
    model.save(folder / "CartPole-v1.zip")
    (folder / "CartPole-v1").mkdir()
    venv.save(str(folder / "CartPole-v1" / "vecnormalize.pkl"))
    assert main(["run", "CartPole-v1", "CartPole-v1", "--conditions", "finetune:norm=freeze",
                 "--source-model", str(folder / "CartPole-v1.zip"), "--out", str(tmp_path),
                 "--name", "zoo", "--seeds", "1", "--timesteps", "128", "--eval-freq", "128",
                 "--eval-episodes", "2", "--n-envs", "2", "--workers", "1", "--hparams",
                 "n_steps=64", "batch_size=64", "n_epochs=1", "normalize=true"]) == 0
    run = tmp_path / "zoo" / "finetune:norm=freeze" / "seed_0"
    stats = vecnorm.load_npz(run / "vecnormalize.npz")
    assert np.array_equal(stats["obs_rms.mean"], venv.obs_rms.mean)
    assert np.array_equal(stats["obs_rms.var"], venv.obs_rms.var)
    assert float(stats["obs_rms.count"]) == venv.obs_rms.count
    assert read_json(run / "transfer.json")["normalization"]["copied"] == ["obs_rms", "ret_rms"]


# --- the norm option ---------------------------------------------------------------------


def test_norm_option_is_checked_and_labelled():
    assert conditions.parse("finetune").get("norm") == "update"
    assert conditions.parse("freeze-features").get("norm") == "freeze"
    assert conditions.parse("reinit-head:norm=reset").label == "reinit-head:norm=reset"
    assert conditions.parse("finetune:norm=update").label == "finetune"
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'finetune:norm=keep': norm must be freeze, update or reset, got keep")):
        conditions.parse("finetune:norm=keep")
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'scratch' takes no options (got 'norm'): write scratch")):
        conditions.parse("scratch:norm=freeze")


def test_a_bad_norm_option_exits_2_and_writes_nothing(tmp_path, capsys):
    code = main(["run", "CartPole-v1", "CartPole-v1", "--conditions", "scratch,finetune:norm=x",
                 "--out", str(tmp_path), "--name", "bad"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("condition 'finetune:norm=x': norm must be freeze, update or reset, "
                        "got x")
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# --- statistics in runs and across transfer ----------------------------------------------


def _same(a: vecnorm.Stats, b: vecnorm.Stats, prefix: str = "obs_rms") -> bool:
    return all(np.array_equal(a[f"{prefix}.{k}"], b[f"{prefix}.{k}"])
               for k in ("mean", "var", "count"))


def test_freeze_keeps_the_sources_statistics_bit_for_bit(source, tmp_path):
    result, stats = _target(source, tmp_path, "finetune:norm=freeze")
    assert result.timesteps == 256
    assert _same(stats, source[1]) and _same(stats, source[1], "ret_rms")
    record = read_json(tmp_path / "run" / "transfer.json")["normalization"]
    assert record["mode"] == "freeze" and record["updated"] is False
    assert record["copied"] == ["obs_rms", "ret_rms"] and record["fresh"] == {}


def test_update_starts_from_the_sources_and_keeps_counting(source, tmp_path):
    result, stats = _target(source, tmp_path, "finetune")  # update is finetune's default
    seen = result.timesteps + 2  # every step's observations and the 2 envs' first reset
    assert float(stats["obs_rms.count"]) == pytest.approx(float(source[1]["obs_rms.count"]) + seen,
                                                          rel=1e-12)
    assert not np.array_equal(stats["obs_rms.mean"], source[1]["obs_rms.mean"])
    record = read_json(tmp_path / "run" / "transfer.json")["normalization"]
    assert record["mode"] == "update" and record["updated"] is True


def test_reset_and_scratch_runs_get_fresh_statistics(source, tmp_path):
    result, stats = _target(source, tmp_path, "reinit-head:norm=reset")
    assert float(stats["obs_rms.count"]) == pytest.approx(INITIAL_COUNT + result.timesteps + 2,
                                                          rel=1e-12)
    record = read_json(tmp_path / "run" / "transfer.json")["normalization"]
    assert record["mode"] == "reset" and record["copied"] == []
    train_run(_run("scratch"), tmp_path / "scratch")
    fresh = vecnorm.load_npz(tmp_path / "scratch" / "vecnormalize.npz")
    assert float(fresh["obs_rms.count"]) == pytest.approx(INITIAL_COUNT + 256 + 2, rel=1e-12)


def test_a_source_without_statistics_warns_and_the_target_starts_fresh(source, tmp_path):
    with pytest.warns(UserWarning, match=re.escape(
            "norm=freeze: fresh normalization statistics for what the source cannot give "
            "(obs_rms: the source has none; ret_rms: the source has none)")):
        train_run(_run("freeze-features"), tmp_path / "run",
                  source_state=load_checkpoint(source[0]).state_dict, source_stats=None)
    record = read_json(tmp_path / "run" / "transfer.json")["normalization"]
    assert record["fresh"] == {"obs_rms": "the source has none",
                               "ret_rms": "the source has none"}


def test_evaluation_uses_the_training_statistics_without_updating_them():
    def venv():
        return DummyVecEnv([lambda: gym.make("CartPole-v1")])

    train = vecnorm.wrap(venv(), {})
    evaluation = vecnorm.wrap(venv(), {}, evaluation=True)
    train.reset()
    for _ in range(20):
        train.step(np.array([0]))
    vecnorm.sync(train, evaluation)
    assert not evaluation.training and not evaluation.norm_reward
    before = evaluation.obs_rms.mean.copy()
    evaluation.reset()
    evaluation.step(np.array([1]))
    assert np.array_equal(evaluation.obs_rms.mean, train.obs_rms.mean)
    assert np.array_equal(evaluation.obs_rms.mean, before)
    assert evaluation.obs_rms is not train.obs_rms


def test_a_resumed_run_continues_with_its_statistics(tmp_path, interrupted_train_run):
    import torch

    run = _run("scratch")
    interrupted_train_run(run, tmp_path / "run")
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["vecnormalize"]
    assert float(saved["obs_rms.count"]) == pytest.approx(INITIAL_COUNT + 128 + 2, rel=1e-12)
    result = train_run(run, tmp_path / "run", resume=True)
    assert result.resumed_from == 128 and result.timesteps == 256
    stats = vecnorm.load_npz(tmp_path / "run" / "vecnormalize.npz")
    # the checkpoint's statistics, then the resumed steps (and the resumed envs' first reset)
    assert float(stats["obs_rms.count"]) == pytest.approx(float(saved["obs_rms.count"]) + 128 + 2,
                                                          rel=1e-12)


# --- RL-Zoo's vecnormalize.pkl -----------------------------------------------------------


def _zoo_vecnormalize(path):
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), gamma=0.98,
                        clip_obs=5.0)
    venv.reset()
    for step in range(30):
        venv.step(np.array([step % 2]))
    path.parent.mkdir(parents=True, exist_ok=True)
    venv.save(str(path))  # SB3's own pickling
    return venv


def test_sb3s_pickled_vecnormalize_reads_into_plain_arrays(tmp_path):
    venv = _zoo_vecnormalize(tmp_path / "vecnormalize.pkl")
    data = read_vecnormalize(tmp_path / "vecnormalize.pkl")
    assert np.array_equal(data["obs_rms"]["mean"], venv.obs_rms.mean)
    assert np.array_equal(data["obs_rms"]["var"], venv.obs_rms.var)
    assert data["obs_rms"]["count"] == venv.obs_rms.count == pytest.approx(INITIAL_COUNT + 31)
    assert np.array_equal(data["ret_rms"]["var"], venv.ret_rms.var)
    assert (data["norm_obs"], data["clip_obs"], data["gamma"]) == (True, 5.0, 0.98)
    assert type(data["obs_rms"]["mean"]) is np.ndarray


@pytest.mark.parametrize("layout", ["zoo", "hub"])
def test_statistics_are_found_beside_a_zoo_or_hub_checkpoint(tmp_path, layout):
    folder = tmp_path / "logs" / "ppo" / "CartPole-v1_1"
    pkl = (folder / "CartPole-v1" / "vecnormalize.pkl" if layout == "zoo"
           else folder / "vec_normalize.pkl")
    venv = _zoo_vecnormalize(pkl)
    found = vecnorm.source_stats(folder / "CartPole-v1.zip")
    assert found is not None and found[1] == pkl
    assert np.array_equal(found[0]["obs_rms.mean"], venv.obs_rms.mean)
    assert float(found[0]["obs_rms.count"]) == venv.obs_rms.count


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "CartPole-v1"
    folder.mkdir()
    pkl = folder / "vecnormalize.pkl"
    pkl.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{pkl}: refused to unpickle global posix.system (only numpy arrays and SB3's "
            f"VecNormalize statistics are read from this file)")):
        vecnorm.source_stats(tmp_path / "CartPole-v1.zip")
    assert not marker.exists()
    # hidden inside a real VecNormalize's state, too
    venv = _zoo_vecnormalize(tmp_path / "real.pkl")
    venv.clip_obs = _Payload(marker)
    nested = tmp_path / "nested.pkl"
    venv.save(str(nested))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{nested}: refused to unpickle global posix.system")):
        read_vecnormalize(nested)
    assert not marker.exists()


def test_a_target_that_does_not_normalize_records_only_that():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("CartPole-v1", n_envs=1)
    try:
        record = vecnorm.apply(venv, None, "freeze", "cache:abc")
    finally:
        venv.close()
    assert record == {"mode": "freeze", "source": "cache:abc", "target_normalizes": False}
    assert vecnorm.note(record) == ""
