"""Pretrained encoders through the real training path: the weights survive SB3's build for
every algorithm, frozen trunks stay byte-identical to their file, and a frozen trunk's
features are computed once per observation with the same results as computing them anew."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
import torchvision
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy

import rltransfer.training.run as training
from rltransfer.env_factory import make_vec
from rltransfer.errors import EncoderError
from rltransfer.io_utils import file_sha256, read_json
from rltransfer.specs import AgentSpec, EncoderSpec, EnvSpec, RunSpec
from rltransfer.training import features
from rltransfer.training.encoders import PixelEncoder, trunk_checksum
from rltransfer.training.run import FROZEN_FEATURES, build_model, frozen_features, train_run

CATCH = EnvSpec("rltransfer/PixelCatch-v0")  # 48x48 RGB, 3 discrete actions
PENDULUM = EnvSpec("Pendulum-v1", pixels=True, image_size=36)  # continuous actions
OFF_POLICY = {"buffer_size": 400, "learning_starts": 16, "batch_size": 8, "train_freq": 4,
              "gradient_steps": 1}
ALGOS = {
    "ppo": (CATCH, {"n_steps": 16, "batch_size": 16, "n_epochs": 2}),
    "a2c": (CATCH, {"n_steps": 8}),
    "dqn": (CATCH, {**OFF_POLICY, "target_update_interval": 8}),
    "sac": (PENDULUM, OFF_POLICY),
    "td3": (PENDULUM, {**OFF_POLICY, "policy_delay": 1}),
}
# Every copy of the trunk SB3 keeps, target networks included (PPO's three names are one
# shared module).
COPIES = {
    "ppo": {"features_extractor", "pi_features_extractor", "vf_features_extractor"},
    "a2c": {"features_extractor", "pi_features_extractor", "vf_features_extractor"},
    "dqn": {"q_net.features_extractor", "q_net_target.features_extractor"},
    "sac": {"actor.features_extractor", "critic.features_extractor",
            "critic_target.features_extractor"},
    "td3": {"actor.features_extractor", "actor_target.features_extractor",
            "critic.features_extractor", "critic_target.features_extractor"},
}
MODES = {"frozen": (True, None), "frozen-augmented": (True, "random-shift"),
         "finetuned": (False, None)}


# The reported case (PPO, ResNet-18) and, to keep the suite fast, a smaller torchvision
# trunk with the same kinds of layers (Conv2d, BatchNorm, Linear) for the other algorithms.
ENCODER = {"ppo": "resnet18", "a2c": "mobilenet_v3_small", "dqn": "mobilenet_v3_small",
           "sac": "mobilenet_v3_small", "td3": "mobilenet_v3_small"}
STEPS = 32


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """{encoder: a torchvision state dict file}, as a user would download it (head included)."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name in ("resnet18", "mobilenet_v3_small"):
        torch.manual_seed(2024)
        files[name] = folder / f"{name}.pth"
        torch.save(torchvision.models.get_model(name).state_dict(), files[name])
    return files


@pytest.fixture(scope="module")
def nature_weights(tmp_path_factory):
    """{env: a NatureCNN trunk's state dict for that env's images} (cheap to run)."""
    folder = tmp_path_factory.mktemp("nature")
    files = {}
    for env in (CATCH, PENDULUM):
        torch.manual_seed(7)
        space = features.channels_first(make_vec(env, 1, 0)).observation_space
        files[str(env)] = folder / f"{env.slug}.pth"
        torch.save(PixelEncoder(space).trunk.state_dict(), files[str(env)])
    return files


def pretrained_run(algo: str, weights, mode: str, timesteps: int = STEPS, encoder="resnet18",
                   env: EnvSpec | None = None, hparams: dict | None = None) -> RunSpec:
    freeze, augment = MODES[mode]
    default_env, algo_hparams = ALGOS[algo]
    extractor = EncoderSpec(encoder, str(weights), freeze, 0.1, augment, frame_stack=1)
    return RunSpec(env or default_env,
                   AgentSpec(algo, {"policy": "CnnPolicy", **algo_hparams, **(hparams or {})},
                             1, "cpu", extractor),
                   "pretrained-encoder", 0, timesteps, timesteps, 1)


def file_trunk(weights) -> dict[str, torch.Tensor]:
    """The file's tensors without the classification head (ResNet's fc, MobileNet's last)."""
    state = torch.load(weights, weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier.3."))}


def file_checksum(weights, encoder_name: str) -> str:
    """The checksum of the file's trunk, loaded into a bare encoder (no SB3 build)."""
    space = gym.spaces.Box(0, 255, (3, 48, 48), np.uint8)
    encoder = PixelEncoder(space, encoder_name, weights=str(weights))
    assert_equals_file(encoder.trunk.state_dict(), file_trunk(weights))
    return trunk_checksum(encoder.trunk)


def saved_copies(model_zip) -> dict[str, dict[str, torch.Tensor]]:
    """{copy name: trunk state} from a model.zip's policy.pth."""
    with zipfile.ZipFile(model_zip) as archive:
        state = torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)
    copies: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        owner, sep, name = key.partition(".trunk.")
        if sep:
            copies.setdefault(owner, {})[name] = tensor
    return copies


def assert_equals_file(trunk: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(trunk) == set(expected)
    for key, tensor in trunk.items():  # every conv, linear and BatchNorm tensor
        assert torch.equal(tensor, expected[key]), key


@pytest.mark.parametrize("algo", list(ALGOS))
def test_frozen_trunk_in_the_policy_is_the_file_after_training(tmp_path, weights, algo):
    # An augmented frozen trunk runs inside the policy, so every SB3 copy of it is checked.
    name, file = ENCODER[algo], weights[ENCODER[algo]]
    result = train_run(pretrained_run(algo, file, "frozen-augmented", encoder=name), tmp_path)
    assert result.timesteps == STEPS
    copies = saved_copies(tmp_path / "model.zip")
    assert set(copies) == COPIES[algo]
    for trunk in copies.values():
        assert_equals_file(trunk, file_trunk(file))
    record = read_json(tmp_path / "transfer.json")["encoder"]
    expected = file_checksum(file, name)
    assert set(record["trunk_sha256_loaded"].values()) == {expected}
    assert record["trunk_sha256_saved"] == record["trunk_sha256_loaded"]
    assert record["features"] == "computed in every update"


@pytest.mark.parametrize("algo", list(ALGOS))
def test_frozen_trunk_features_are_cached_and_stay_the_file(tmp_path, weights, algo):
    name, file = ENCODER[algo], weights[ENCODER[algo]]
    run = pretrained_run(algo, file, "frozen", encoder=name)
    result = train_run(run, tmp_path)
    assert result.timesteps == STEPS
    assert saved_copies(tmp_path / "model.zip") == {}  # the policy is an MLP on features
    record = read_json(tmp_path / "transfer.json")["encoder"]
    assert record["features"] == "computed once per observation (frozen, cached)"
    assert record["weights_file"] == str(file.resolve())
    assert record["weights_sha256"] == file_sha256(file)
    loaded = record["trunk_sha256_loaded"]
    assert list(loaded) == [FROZEN_FEATURES]
    assert record["trunk_sha256_saved"] == loaded
    assert loaded[FROZEN_FEATURES] == file_checksum(file, name)
    env, frozen = frozen_features(run, make_vec(run.env, 1, 0))
    assert_equals_file(frozen.trunk.state_dict(), file_trunk(file))
    assert env.observation_space.shape == (frozen.features_dim,)


@pytest.mark.parametrize("algo", list(ALGOS))
def test_finetuned_trunk_starts_from_the_file_in_every_copy_and_trains(tmp_path, weights, algo):
    name, file = ENCODER[algo], weights[ENCODER[algo]]
    run = pretrained_run(algo, file, "finetuned", encoder=name)
    model = build_model(run, make_vec(run.env, 1, 0))  # what train_run trains, before learn()
    trunks = {name: m.trunk.state_dict() for name, m in model.policy.named_modules(
        remove_duplicate=False) if isinstance(m, PixelEncoder)}
    assert set(trunks) == COPIES[algo]
    for trunk in trunks.values():
        assert_equals_file(trunk, file_trunk(file))
    train_run(run, tmp_path)
    record = read_json(tmp_path / "transfer.json")["encoder"]
    assert set(record["trunk_sha256_loaded"].values()) == {file_checksum(file, name)}
    copies = saved_copies(tmp_path / "model.zip")
    online = [name for name in copies if "target" not in name]
    first = "conv1.weight" if name == "resnet18" else "features.0.0.weight"
    assert any(not torch.equal(copies[copy][first], file_trunk(file)[first])
               for copy in online)  # trained


def test_nature_cnn_weights_from_a_model_zip_survive_ortho_init(tmp_path):
    # A source policy's NatureCNN (PPO on PixelCatch) as the pretrained trunk: model.zip is
    # read as weights only, and PPO's ortho_init does not overwrite it.
    source = RunSpec(CATCH, AgentSpec("ppo", {"policy": "CnnPolicy", **ALGOS["ppo"][1]}, 1,
                                      "cpu", EncoderSpec("nature-cnn", frame_stack=1)),
                     "scratch", 0, 64, 64, 1)
    train_run(source, tmp_path / "source")
    zip_path = tmp_path / "source" / "model.zip"
    trained = saved_copies(zip_path)["features_extractor"]
    run = pretrained_run("ppo", zip_path, "frozen-augmented", encoder="nature-cnn")
    train_run(run, tmp_path / "target")
    for trunk in saved_copies(tmp_path / "target" / "model.zip").values():
        assert_equals_file(trunk, trained)


class Snapshots(BaseCallback):
    """The policy's parameters at the start of each rollout, i.e. after each update."""

    def __init__(self) -> None:
        super().__init__()
        self.params: list[dict[str, torch.Tensor]] = []

    def _on_rollout_start(self) -> None:
        self.params.append({k: v.detach().clone() for k, v in self.model.policy.state_dict()
                            .items() if "features_extractor" not in k})

    def _on_step(self) -> bool:
        return True


def _paired_models(monkeypatch, algo: str, weights, hparams: dict):
    """The cached and the uncached model of one frozen-encoder run, with equal heads."""
    run = pretrained_run(algo, weights, "frozen", encoder="nature-cnn", hparams=hparams)
    env, frozen = frozen_features(run, make_vec(run.env, 1, 0))
    cached = build_model(run, env)
    with monkeypatch.context() as patch:  # the same run, with features computed in the policy
        patch.setattr(training, "caches_features", lambda encoder: False)
        plain = build_model(run, make_vec(run.env, 1, 0))
    assert any("features_extractor.trunk" in k for k in plain.policy.state_dict())
    # SB3 draws the trunk's initial weights first, so the heads start apart: align them.
    heads = {k: v for k, v in plain.policy.state_dict().items() if "features_extractor" not in k}
    assert set(heads) == set(cached.policy.state_dict())  # the same MLP and heads
    cached.policy.load_state_dict(heads)  # target networks included
    return cached, plain, frozen


@pytest.mark.parametrize("algo,hparams", [
    ("ppo", {"n_steps": 16, "batch_size": 8, "n_epochs": 2}),
    ("dqn", {**OFF_POLICY, "target_update_interval": 8, "train_freq": 8, "gradient_steps": 2,
             "learning_rate": 1e-3}),
    ("sac", {**OFF_POLICY, "train_freq": 8, "gradient_steps": 2}),
])
def test_cached_features_train_exactly_like_features_computed_anew(monkeypatch, nature_weights,
                                                                 algo, hparams):
    env = ALGOS[algo][0]
    cached, plain, frozen = _paired_models(monkeypatch, algo, nature_weights[str(env)], hparams)
    returns = []
    for model, wrap in ((cached, True), (plain, False)):
        eval_env = make_vec(env, 2, seed=123)
        if wrap:
            eval_env = features.FrozenFeatures(eval_env, frozen)
        returns.append(evaluate_policy(model, eval_env, n_eval_episodes=2, deterministic=True,
                                       return_episode_rewards=True)[0])
    # step 0: the same policy on the same episodes
    assert returns[0] == pytest.approx(returns[1], rel=1e-5)
    snapshots = []
    for model in (cached, plain):
        model.set_random_seed(0)
        callback = Snapshots()
        model.learn(64, callback=callback)
        snapshots.append(callback.params + [{k: v.detach().clone() for k, v in
                                             model.policy.state_dict().items()
                                             if "features_extractor" not in k}])
    assert len(snapshots[0]) == len(snapshots[1]) >= 4  # the first few updates
    # The trunk runs on other batch sizes in the two paths, so float32 sums differ in the last
    # bits and Adam carries that along: measured at most 6e-8 (PPO, DQN) and 2e-6 (SAC)
    # apart, while each update moves weights by ~1e-3.
    moved = []
    for after_cached, after_plain in zip(*snapshots, strict=True):
        for key, value in after_plain.items():
            torch.testing.assert_close(after_cached[key], value, rtol=0, atol=1e-5)
        moved.append(max(float((v - snapshots[1][0][k]).abs().max())
                         for k, v in after_plain.items()))
    assert sum(m > 5e-4 for m in moved) >= 2  # the updates moved the weights far beyond that


def test_cached_features_count_each_observation_once(nature_weights):
    run = pretrained_run("ppo", nature_weights[str(CATCH)], "frozen", encoder="nature-cnn",
                         hparams={"n_steps": 32, "batch_size": 16, "n_epochs": 4})
    env, frozen = frozen_features(run, make_vec(run.env, 2, 0))
    seen = []
    frozen.trunk.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    model = build_model(run, env)
    assert not any(isinstance(m, PixelEncoder) for m in model.policy.modules())
    model.learn(128)
    # 128 env steps in 2 envs: 2 observations at reset plus 2 per step, and terminal ones:
    # each observation went through the trunk once, and the epochs trained on the buffer's
    # features (the policy has no trunk to run).
    assert 130 <= sum(seen) < 130 + 128
    assert np.asarray(model.rollout_buffer.observations).shape[-1] == 512


def test_terminal_observations_are_encoded_like_the_images_sb3_would_see(nature_weights):
    run = pretrained_run("ppo", nature_weights[str(CATCH)], "frozen", encoder="nature-cnn")
    cached, frozen = frozen_features(run, make_vec(run.env, 2, 0))
    plain = features.channels_first(make_vec(run.env, 2, 0))  # what a CnnPolicy is given
    cached.reset(), plain.reset()
    actions = np.random.default_rng(0).integers(0, 3, (120, 2))
    ended = 0
    for action in actions:
        cached.step_async(action), plain.step_async(action)
        obs, _, done, infos = cached.step_wait()
        images, _, plain_done, plain_infos = plain.step_wait()
        assert np.array_equal(done, plain_done)
        np.testing.assert_allclose(obs, cached.encode(images), rtol=0, atol=0)
        for i, (info, plain_info) in enumerate(zip(infos, plain_infos, strict=True)):
            if "terminal_observation" in plain_info:
                ended += 1
                expected = cached.encode(plain_info["terminal_observation"][None])[0]
                np.testing.assert_allclose(info["terminal_observation"], expected, atol=1e-6)
                # the last frame of the episode, not the first of the next one
                assert not np.allclose(info["terminal_observation"], obs[i], atol=1e-3)
    assert ended >= 4  # PixelCatch episodes end after about 20 steps


def test_a_cached_run_resumes_only_on_the_trunk_it_started_with(tmp_path, nature_weights):
    weights = tmp_path / "trunk.pth"
    weights.write_bytes(nature_weights[str(CATCH)].read_bytes())
    run = dataclasses.replace(pretrained_run("ppo", weights, "frozen", encoder="nature-cnn",
                                             timesteps=64), eval_freq=16)

    def stop_at_the_end(kind, value):  # a kill after a checkpoint (every 16 steps)
        if kind == "advance" and value >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(run, tmp_path / "run", notify=stop_at_the_end)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    saved = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    step = torch.load(io.BytesIO(saved), weights_only=True)["num_timesteps"]
    assert step > 0
    state = torch.load(weights, weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, weights)  # the file changed meanwhile
    with pytest.raises(EncoderError, match="changed since this run started"):
        train_run(run, tmp_path / "run", resume=True)
    assert read_json(tmp_path / "run" / "status.json")["state"] == "failed"
    torch.save(state, weights)  # put back
    (tmp_path / "run" / "checkpoint.pt").write_bytes(saved)
    result = train_run(run, tmp_path / "run", resume=True)
    assert result.resumed_from == step and result.timesteps == 64
