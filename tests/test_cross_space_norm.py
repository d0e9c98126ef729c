"""Normalization statistics across observation spaces (`rltransfer.training.vecnorm`'s
``features``, from the map `rltransfer.training.transfer.normalization_features` gives the
weights): a grown Box or Dict key's shared features take the source's mean, var and count,
new ones start at mean 0, var 1 (a fresh count), so with normalize=true the target still acts
as the source at step 0 on the states they share; norm=update moves new features at once,
norm=freeze moves nothing, norm=reset is unchanged; transfer.json records the map.

The envs are this module's own (``test_cross_space_norm:NormBox-v0``)."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from rltransfer.cli import main
from rltransfer.strategies import hooks
from rltransfer.strategies.registry import parse
from rltransfer.training import vecnorm

pytestmark = pytest.mark.usefixtures("one_thread")


class NormBox(gym.Env):
    """Observations of `size` features (or a Dict of `keys`: name -> size) drawn around
    `offset` with spread `scale` (so normalization matters); Box(-1, 1, (2,)) actions,
    rewarded for matching the first feature's sign."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 4, keys: dict[str, int] | None = None,
                 offset: float = 3.0, scale: float = 0.5,
                 render_mode: str | None = None) -> None:
        vector = lambda n: spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
        self.keys, self.offset, self.scale = keys, offset, scale
        self.observation_space = (spaces.Dict({k: vector(n) for k, n in keys.items()})
                                  if keys else vector(size))
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.t = 0

    def _vector(self, n: int) -> np.ndarray:
        return (self.offset + self.scale * self.np_random.standard_normal(n)).astype(np.float32)

    def _obs(self) -> Any:
        sizes = self.keys or {"": self.observation_space.shape[0]}
        self.last = {k: self._vector(n) for k, n in sizes.items()}
        return self.last if self.keys else self.last[""]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any):
        first = next(iter(self.last.values()))[0] - self.offset
        self.t += 1
        return (self._obs(), float(np.sign(action[0]) == np.sign(first)), False, self.t >= 16,
                {})


gym.register("NormBox-v0", entry_point=NormBox)
ENV = "test_cross_space_norm:NormBox-v0"
SOURCE_KEYS = {"observation": 3, "goal": 2, "gone": 2}
TARGET_KEYS = {"observation": 5, "goal": 2, "extra": 1}  # observation grew, extra is new


def _model(algo: type, **kwargs: Any) -> Any:
    """A model on a normalized env, its statistics gathered from a few hundred steps."""
    policy = "MultiInputPolicy" if kwargs.get("keys") else "MlpPolicy"
    venv = VecNormalize(DummyVecEnv([lambda: NormBox(**kwargs)]), norm_reward=False)
    extra = ({"n_steps": 64, "batch_size": 32, "n_epochs": 1} if algo is PPO
             else {"learning_starts": 0, "batch_size": 32, "train_freq": 8})
    model = algo(policy, venv, seed=0, policy_kwargs={"net_arch": [32, 32]},
                 learning_rate=3e-3, **extra)
    model.learn(128)
    return model


def _start(source: Any, target: Any, condition: str) -> dict[str, Any]:
    """The run's start through the condition's hooks (`Strategy.start`): statistics, then
    weights; transfer.json's record."""
    choice = parse(condition)
    context = hooks.Context(100, "target", source.policy.state_dict(), "src",
                            (source.observation_space, source.action_space),
                            vecnorm.arrays(vecnorm.find(source.get_env())))
    report, record = hooks.of(choice).start(target, choice, context)
    assert report.copied == len(report.tensors)
    return record


def _normalized(model: Any, obs: Any) -> Any:
    return vecnorm.find(model.get_env()).normalize_obs(obs)


def _acts_alike(source: Any, target: Any, obs: Any, shared: Any) -> None:
    """The target's deterministic action on its states equals the source's on the features
    they share, each normalized with its own statistics."""
    act_t = target.predict(_normalized(target, obs), deterministic=True)[0]
    act_s = source.predict(_normalized(source, shared), deterministic=True)[0]
    np.testing.assert_allclose(act_t, act_s, rtol=0, atol=1e-5)


@pytest.mark.parametrize("algo", [SAC, PPO])
def test_a_grown_box_normalizes_shared_features_as_the_source_did(algo):
    source, target = _model(algo, size=4), _model(algo, size=6, offset=-2.0)
    # the middle two target features are new: source 0:2 -> 0:2, 2:4 -> 4:6
    record = _start(source, target, "finetune:obs_map=[0:2>0:2;2:4>4:6],norm=freeze")
    assert record["normalization"]["mapped"] == {"obs_rms": "0:2>0:2;2:4>4:6; 2 new at mean "
                                                            "0, var 1"}
    assert record["normalization"]["fresh"] == {} and record["normalization"]["copied"] == []
    src, tgt = vecnorm.find(source.get_env()).obs_rms, vecnorm.find(target.get_env()).obs_rms
    shared = [0, 1, 4, 5]
    np.testing.assert_array_equal(tgt.mean[shared], src.mean)
    np.testing.assert_array_equal(tgt.var[shared], src.var)
    np.testing.assert_array_equal(tgt.mean[2:4], 0.0)
    np.testing.assert_array_equal(tgt.var[2:4], 1.0)
    np.testing.assert_array_equal(tgt.count, [src.count] * 2 + [vecnorm.EPSILON] * 2
                                  + [src.count] * 2)
    rng = np.random.default_rng(1)
    obs = (3.0 + 0.5 * rng.standard_normal((64, 6))).astype(np.float32)
    _acts_alike(source, target, obs, obs[:, shared])
    # under freeze nothing moves, the new features' 0 and 1 included
    before = tgt.copy()
    target.learn(64)
    after = vecnorm.find(target.get_env()).obs_rms
    assert np.array_equal(after.mean, before.mean) and np.array_equal(after.var, before.var)


def test_a_grown_dict_key_new_key_and_dropped_key():
    source, target = _model(PPO, keys=SOURCE_KEYS), _model(PPO, keys=TARGET_KEYS)
    with pytest.warns(UserWarning, match=r"obs_rms/extra: the source has none"):
        record = _start(source, target,
                        "finetune:obs_map=observation[0:3>0:3],norm=update")["normalization"]
    assert record["copied"] == ["obs_rms/goal"]  # the same size: whole, as before
    assert record["mapped"] == {"obs_rms/observation": "0:3>0:3; 2 new at mean 0, var 1"}
    assert record["fresh"] == {"obs_rms/extra": "the source has none"}
    assert "obs_rms/gone" not in json.dumps(record)  # a source-only key is dropped
    src, tgt = vecnorm.find(source.get_env()), vecnorm.find(target.get_env())
    np.testing.assert_array_equal(tgt.obs_rms["observation"].mean[:3],
                                  src.obs_rms["observation"].mean)
    np.testing.assert_array_equal(tgt.obs_rms["observation"].var[3:], 1.0)
    np.testing.assert_array_equal(tgt.obs_rms["goal"].var, src.obs_rms["goal"].var)
    rng = np.random.default_rng(2)
    obs = {k: (3.0 + 0.5 * rng.standard_normal((64, n))).astype(np.float32)
           for k, n in TARGET_KEYS.items()}
    # "gone", a key only the source has, at its mean: normalized to 0, its weights add nothing
    gone = np.broadcast_to(src.obs_rms["gone"].mean, (64, 2)).astype(np.float32)
    shared = {"observation": obs["observation"][:, :3], "goal": obs["goal"], "gone": gone}
    _acts_alike(source, target, obs, shared)
    # norm=update: a new feature learns the data's statistics at its first step, a shared
    # one keeps the source's count and moves by the share of the new samples
    counted = tgt.obs_rms["observation"].count.copy()
    target.learn(64)
    stats = vecnorm.find(target.get_env()).obs_rms["observation"]
    added = stats.count - counted  # the same samples for every feature (resets included)
    assert np.all(added == added[0]) and added[0] >= 64
    assert np.all(np.abs(stats.mean[3:] - 3.0) < 0.3)  # near the data's mean, not 0
    assert stats.count[:3].min() > stats.count[3:].max()  # the source's samples too


def test_a_study_with_normalize_records_the_mapped_statistics(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["run", f"{ENV}:size=4", f"{ENV}:size=6", "--out", str(out), "--algo", "ppo",
            "--timesteps", "128", "--source-timesteps", "128", "--eval-freq", "64",
            "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1", "normalize=true",
            "--n-envs", "1", "--eval-episodes", "2", "--seeds", "1", "--threshold", "15",
            "--similarity", "0", "--conditions",  # finetune's norm: update, by default
            "finetune:obs_map=[0:4>0:4],finetune:norm=reset,obs_map=[0:4>0:4]"]
    assert main(args) == 0, capsys.readouterr().err
    records = {json.loads(p.read_text())["condition"]: json.loads(p.read_text())
               for p in out.rglob("transfer.json")}
    update = records["finetune:obs_map=[0:4>0:4]"]["normalization"]
    assert update["mapped"] == {"obs_rms": "0:4>0:4; 2 new at mean 0, var 1"}
    assert update["fresh"] == {} and update["copied"] == ["ret_rms"]
    reset = records["finetune:norm=reset,obs_map=[0:4>0:4]"]["normalization"]
    assert reset["mapped"] == {} and set(reset["fresh"]) == {"obs_rms", "ret_rms"}
    # the per-feature counts are saved as plain arrays and read back as they were
    run = next(p.parent for p in out.rglob("transfer.json")
               if "reset" not in json.loads(p.read_text())["condition"])
    saved = vecnorm.load_npz(run / vecnorm.NPZ)
    source = vecnorm.load_npz(next(p for p in out.rglob(vecnorm.NPZ)
                                   if "source" in p.relative_to(out).parts[1]))
    counts = saved["obs_rms.count"]
    assert counts.shape == (6,) and np.all(counts[4:] == counts[4]) and counts[0] > counts[4]
    np.testing.assert_allclose(counts[:4] - source["obs_rms.count"], counts[4] - vecnorm.EPSILON)
    venv = VecNormalize(DummyVecEnv([lambda: NormBox(size=6)]))
    vecnorm.load_into(venv, saved)
    assert np.array_equal(venv.obs_rms.count, counts)
    assert np.array_equal(venv.obs_rms.copy().count, counts)  # as the evaluation env's sync
