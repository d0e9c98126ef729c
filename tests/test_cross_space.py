"""Transfer across observation and action spaces (`rltransfer.training.cross_space`): a grown
Box or Dict key mapped by obs_map, new inputs at zero weight, so the target acts as the source
on the states they share at step 0; grown Discrete and Box actions; transfer.json's
provenance; a bad obs_map refused before anything is written; FetchReach -> FetchPush.

The envs are this module's own (registered on import, ``test_cross_space:CrossBox-v0``)."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO, SAC, TD3

from rltransfer.cli import main
from rltransfer.errors import ConfigError
from rltransfer.specs import EnvSpec
from rltransfer.strategies.hooks import Context
from rltransfer.strategies.registry import parse
from rltransfer.training.cross_space import NEW_ACTION_MARGIN
from rltransfer.training.transfer import apply_transfer

pytestmark = pytest.mark.usefixtures("one_thread")


class CrossBox(gym.Env):
    """Observations of `size` features (or a Dict of `keys`: name -> size), redrawn each step;
    actions Discrete(`actions`) or, with `box`, Box(-1, 1, (actions,)); rewarded for matching
    the sign of the first feature."""

    metadata = {"render_modes": []}

    def __init__(self, size: int = 4, actions: int = 2, box: bool = False,
                 keys: dict[str, int] | None = None, render_mode: str | None = None) -> None:
        vector = lambda n: spaces.Box(-1.0, 1.0, (n,), np.float32)  # noqa: E731
        self.keys = keys
        self.observation_space = (spaces.Dict({k: vector(n) for k, n in keys.items()})
                                  if keys else vector(size))
        self.action_space = (spaces.Box(-1.0, 1.0, (actions,), np.float32) if box
                             else spaces.Discrete(actions))
        self.t = 0

    def _obs(self) -> Any:
        self.last = self.observation_space.sample()
        return self.last

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any):
        first = (self.last[next(iter(self.keys))] if self.keys else self.last)[0]
        if isinstance(self.action_space, spaces.Discrete):
            reward = float(int(action) == int(first > 0))
        else:
            reward = -abs(float(np.asarray(action)[0]) - float(first))
        self.t += 1
        return self._obs(), reward, False, self.t >= 16, {}


gym.register("CrossBox-v0", entry_point=CrossBox)
ENV = "test_cross_space:CrossBox-v0"


def _model(algo: type, **kwargs: Any) -> Any:
    policy = "MultiInputPolicy" if kwargs.get("keys") else "MlpPolicy"
    extra = ({"learning_starts": 0, "batch_size": 32, "train_freq": 8}
             if algo is not PPO else {"n_steps": 64, "batch_size": 32, "n_epochs": 2})
    return algo(policy, CrossBox(**kwargs), seed=0, policy_kwargs={"net_arch": [32, 32]},
                learning_rate=3e-3, **extra)


def _context(source: Any) -> Context:
    return Context(100, "target", source_spaces=(source.observation_space,
                                                 source.action_space))


def _transfer(source: Any, target: Any, condition: str):
    return apply_transfer(target, source.policy.state_dict(), condition, "src",
                          _context(source))


def _shared_states(target: Any, shared: Any, n: int = 64, seed: int = 1):
    """(target observations, source observations): the target's redrawn, the shared
    features copied from them as `shared(obs)` says."""
    space = target.observation_space
    space.seed(seed)
    obs = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        batch = {k: np.stack([o[k] for o in obs]) for k in space.spaces}
    else:
        batch = np.stack(obs)
    return batch, shared(batch)


FIRST_LAYER = {PPO: "mlp_extractor.policy_net.0.weight", SAC: "actor.latent_pi.0.weight",
               TD3: "actor.mu.0.weight", DQN: "q_net.q_net.0.weight"}


@pytest.mark.parametrize("algo", [PPO, SAC, TD3, DQN])
def test_grown_box_acts_as_the_source_at_step_0_then_trains_its_new_columns(algo):
    box = algo in (SAC, TD3)
    source = _model(algo, size=4, box=box)
    target = _model(algo, size=6, box=box)
    report = _transfer(source, target, "finetune:obs_map=[0:4>0:4]")
    assert report.copied == len(report.tensors)
    obs, shared = _shared_states(target, lambda b: b[:, :4])
    assert np.array_equal(target.predict(obs, deterministic=True)[0],
                          source.predict(shared, deterministic=True)[0])
    first = FIRST_LAYER[algo]
    before = target.policy.state_dict()[first].clone()
    assert torch.equal(before[:, :4], source.policy.state_dict()[first])
    assert torch.count_nonzero(before[:, 4:]) == 0  # new inputs at zero weight
    if box:  # the critics' [features, action] input: the action columns move along
        critic = target.policy.state_dict()["critic.qf0.0.weight"]
        copied = source.policy.state_dict()["critic.qf0.0.weight"]
        assert torch.equal(critic[:, 6:], copied[:, 4:])
        assert torch.count_nonzero(critic[:, 4:6]) == 0
        mapping = next(t for t in report.tensors if t.name == "critic.qf0.0.weight").mapping
        assert mapping["columns"] == [{"source": [0, 4], "target": [0, 4]},
                                      {"source": [4, 6], "target": [6, 8]}]
        assert mapping["zero_columns"] == [[4, 6]]
    target.learn(256)
    after = target.policy.state_dict()[first]
    assert not torch.allclose(after[:, :4], before[:, :4])  # the copied columns trained
    assert torch.count_nonzero(after[:, 4:]) > 0  # and the new ones moved off zero


def test_grown_dict_key_new_key_and_dropped_key_with_provenance():
    source = _model(SAC, keys={"goal": 2, "old": 1, "state": 3}, box=True)
    target = _model(SAC, keys={"extra": 2, "goal": 2, "state": 5}, box=True)
    report = _transfer(source, target, "finetune:obs_map=state[0:3>2:5]")
    # "old", a key only the source has, is 0 on the source's side: its weights add nothing
    obs, shared = _shared_states(target, lambda b: {
        "goal": b["goal"], "old": np.zeros((len(b["goal"]), 1), np.float32),
        "state": b["state"][:, 2:5]})
    assert np.array_equal(target.predict(obs, deterministic=True)[0],
                          source.predict(shared, deterministic=True)[0])
    spaces_record = report.to_dict()["spaces"]
    assert spaces_record["origin"] == "option"
    assert spaces_record["source_layout"] == {"goal": [0, 2], "old": [2, 3], "state": [3, 6]}
    assert spaces_record["target_layout"] == {"extra": [0, 2], "goal": [2, 4], "state": [4, 9]}
    keys = {k["key"]: k for k in spaces_record["keys"]}
    assert keys["extra"]["new"] == "only in the target: zero columns"
    assert keys["old"]["new"] == "only in the source: dropped"
    assert keys["state"]["spans"] == ["0:3>2:5"]
    mapping = next(t for t in report.tensors if t.name == "actor.latent_pi.0.weight").mapping
    assert mapping["columns"] == [{"source": [0, 2], "target": [2, 4]},
                                  {"source": [3, 6], "target": [6, 9]}]
    assert mapping["zero_columns"] == [[0, 2], [4, 6]]
    assert "mapped across spaces, map: option" in report.summary()


def test_grown_discrete_actions_keep_the_sources_argmax():
    source = _model(DQN, size=4, actions=2)
    target = _model(DQN, size=4, actions=3)
    report = _transfer(source, target, "finetune")
    obs, _ = _shared_states(target, lambda b: b)
    with torch.no_grad():
        q_source = source.q_net(torch.as_tensor(obs))
        q_target = target.q_net(torch.as_tensor(obs))
    assert torch.allclose(q_target[:, :2], q_source)
    # the new action: the shared ones' mean, NEW_ACTION_MARGIN below, on every state
    assert torch.allclose(q_target[:, 2], q_source.mean(dim=1) - NEW_ACTION_MARGIN, atol=1e-5)
    assert torch.equal(q_target.argmax(dim=1), q_source.argmax(dim=1))
    head = next(t for t in report.tensors if t.name == "q_net.q_net.4.bias").mapping
    assert head["rows"] == {"source": [0, 2], "target": [0, 2]} and head["new_rows"] == [2, 3]
    assert report.to_dict()["spaces"]["actions"] == {"kind": "discrete", "source": 2,
                                                      "target": 3, "shared": 2}
    ppo_source, ppo_target = _model(PPO, size=4, actions=2), _model(PPO, size=4, actions=3)
    _transfer(ppo_source, ppo_target, "finetune")
    assert np.array_equal(ppo_target.predict(obs, deterministic=True)[0],
                          ppo_source.predict(obs, deterministic=True)[0])


def test_grown_box_actions_keep_the_shared_dimensions_and_start_new_ones_at_zero():
    source = _model(SAC, size=4, actions=2, box=True)
    target = _model(SAC, size=6, actions=3, box=True)
    _transfer(source, target, "finetune:obs_map=[0:4>0:4]")
    obs, shared = _shared_states(target, lambda b: b[:, :4])
    acted = target.predict(obs, deterministic=True)[0]
    assert np.allclose(acted[:, :2], source.predict(shared, deterministic=True)[0], atol=1e-6)
    assert np.allclose(acted[:, 2], 0.0)
    ppo_source = _model(PPO, size=4, actions=2, box=True)
    ppo_target = _model(PPO, size=4, actions=3, box=True)
    _transfer(ppo_source, ppo_target, "finetune")
    log_std = ppo_target.policy.log_std.detach()
    assert torch.equal(log_std[:2], ppo_source.policy.log_std.detach())


def test_without_a_map_a_grown_box_starts_its_first_layers_fresh_and_says_how_to_map():
    source, target = _model(PPO, size=4), _model(PPO, size=6)
    report = _transfer(source, target, "finetune")
    record = next(t for t in report.tensors if t.name == "mlp_extractor.policy_net.0.weight")
    assert record.status == "reinitialized"
    assert record.reason == ("shape (32,4)→(32,6): box has 4 source and 6 target features: "
                             "give obs_map=[0:4>0:4] (which features coincide) or "
                             "obs_map=leading")
    leading = _model(PPO, size=6)
    assert _transfer(source, leading, "freeze-features:obs_map=leading").copied == len(
        report.tensors)
    # a mapped first layer with new inputs trains (frozen, it could never read them)
    params = dict(leading.policy.named_parameters())
    assert params["mlp_extractor.policy_net.0.weight"].requires_grad
    assert not params["mlp_extractor.policy_net.2.weight"].requires_grad


@pytest.mark.parametrize("obs_map, message", [
    ("[0:4>0:9]", "maps 4 source features onto 9 target features"),
    ("[0:5>0:5]", "range 0:5>0:5 is outside its 4 source and 6 target features"),
    ("state[0:4>0:4]", "obs_map names key 'state' but the observations are Boxes"),
])
def test_a_bad_obs_map_is_one_line_exit_2_before_anything_is_written(tmp_path, capsys,
                                                                      obs_map, message):
    out = tmp_path / "runs"
    code = main(["run", f"{ENV}:size=4", f"{ENV}:size=6",
                 "--out", str(out), "--conditions", f"scratch,finetune:obs_map={obs_map}",
                 "--timesteps", "128", "--source-timesteps", "128", "--eval-freq", "64",
                 "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--n-envs", "1",
                 "--eval-episodes", "2", "--seeds", "1", "--threshold", "15"])
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert not out.exists() or not any(out.rglob("*.json"))


def test_a_study_across_spaces_writes_the_mapping_into_transfer_json(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["run", f"{ENV}:size=4", f"{ENV}:size=6",
                 "--out", str(out), "--conditions", "finetune:obs_map=[0:4>0:4]",
                 "--timesteps", "128", "--source-timesteps", "128", "--eval-freq", "64",
                 "--hparams", "n_steps=64", "batch_size=64", "n_epochs=1", "--n-envs", "1",
                 "--eval-episodes", "2", "--seeds", "1", "--threshold", "15"])
    assert code == 0, capsys.readouterr().err
    written = json.loads(next(out.rglob("transfer.json")).read_text())
    assert written["spaces"]["obs_map"] == "[0:4>0:4]"
    assert written["spaces"]["source_layout"] == {"box": [0, 4]}
    assert written["spaces"]["target_layout"] == {"box": [0, 6]}
    first = next(t for t in written["tensors"]
                 if t["name"] == "mlp_extractor.policy_net.0.weight")
    assert first["status"] == "copied"
    assert first["mapping"]["columns"] == [{"source": [0, 4], "target": [0, 4]}]
    assert first["mapping"]["zero_columns"] == [[4, 6]]


def test_fetch_reach_to_fetch_push_acts_as_the_source_on_shared_states():
    pytest.importorskip("gymnasium_robotics")
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    reach, push = gym.make("FetchReach-v4"), gym.make("FetchPush-v4")
    kwargs = {"policy_kwargs": {"net_arch": [32, 32]}, "seed": 0, "buffer_size": 100}
    source = SAC("MultiInputPolicy", reach, **kwargs)
    target = SAC("MultiInputPolicy", push, **kwargs)
    fetch_map = "observation[0:3>0:3;3:5>9:11;5:8>20:23;8:10>23:25]"
    report = _transfer(source, target, f"finetune:obs_map={fetch_map}")
    assert report.copied == len(report.tensors)
    obs, shared = _shared_states(target, lambda b: {
        "achieved_goal": b["achieved_goal"], "desired_goal": b["desired_goal"],
        "observation": b["observation"][:, [0, 1, 2, 9, 10, 20, 21, 22, 23, 24]]})
    assert np.allclose(target.predict(obs, deterministic=True)[0],
                       source.predict(shared, deterministic=True)[0], atol=1e-6)
    with pytest.raises(ConfigError, match="obs_map's key 'goal' is not in the source"):
        _transfer(source, target, "finetune:obs_map=goal[0:1>0:1]")
    # the Fetch family declares that map for Reach -> Push: a study of the two uses it
    studied = Context(100, "target", source_spaces=(reach.observation_space,
                                                    reach.action_space),
                      source_env=EnvSpec.parse("FetchReach-v4"),
                      target_env=EnvSpec.parse("FetchReach-v4:task=Push"))
    fresh = SAC("MultiInputPolicy", push, **kwargs)
    report = apply_transfer(fresh, source.policy.state_dict(), "finetune", "src", studied)
    assert report.spaces is not None and report.spaces["origin"] == "family"
    assert report.spaces["obs_map"] == fetch_map
    assert np.allclose(fresh.predict(obs, deterministic=True)[0],
                       source.predict(shared, deterministic=True)[0], atol=1e-6)
    dropped = apply_transfer(SAC("MultiInputPolicy", push, **kwargs), source.policy.state_dict(),
                             "finetune:obs_map=none", "src", studied)
    assert next(t for t in dropped.tensors if t.name == "actor.latent_pi.0.weight").reason == (
        "shape (32,16)→(32,31): obs_map=none: the first layers start fresh")
    reach.close()
    push.close()


def test_init_conditions_copy_with_their_obs_map():
    choice = parse("replay:dataset=cartpole/expert-v0,init=reinit-head,obs_map=leading")
    assert choice.weights is not None
    assert choice.weights.label == "reinit-head:obs_map=leading"
    assert parse("replay:init=finetune").weights.label == "finetune"
    with pytest.raises(ConfigError, match=r"^obs_map 'x\[0:2>0:2;1:3>4:6\]': 0:2>0:2 and "
                                          r"1:3>4:6 overlap in the source"):
        parse("finetune:obs_map=x[0:2>0:2;1:3>4:6]")
