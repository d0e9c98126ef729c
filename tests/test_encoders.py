"""Pixel encoders: shapes, weights, normalization, freezing, lr scaling, augmentation, errors."""

from __future__ import annotations

import json
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
import torchvision
from stable_baselines3 import PPO

from rltransfer.errors import EncoderError
from rltransfer.training import encoders
from rltransfer.training.encoders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PixelEncoder,
    RandomShift,
    describe,
    encoder_parameters,
    pixel_policy_kwargs,
    scale_encoder_lr,
)
from rltransfer.training.transfer import load_checkpoint

SIZE = 36  # the smallest image NatureCNN's 8x8/4, 4x4/2, 3x3 convolutions accept


class FakeImageEnv(gym.Env):
    """Random uint8 HWC images, two actions, 20-step episodes; reward = action."""

    def __init__(self, size: int = SIZE, channels: int = 3) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (size, size, channels), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._image(), {}

    def step(self, action):
        self._t += 1
        return self._image(), float(action), False, self._t >= 20, {}

    def _image(self) -> np.ndarray:
        return self.np_random.integers(0, 256, self.observation_space.shape, dtype=np.uint8)


def space(frames: int = 1, channels: int = 3, size: int = SIZE) -> gym.spaces.Box:
    """A channel-first stacked image space, as SB3 hands it to the features extractor."""
    return gym.spaces.Box(0, 255, (frames * channels, size, size), np.uint8)


def images(obs_space: gym.spaces.Box, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, *obs_space.shape), generator=generator).float()


def ppo(encoder_kwargs: dict, **kwargs) -> PPO:
    hparams = {"n_steps": 64, "batch_size": 32, "n_epochs": 1, "seed": 0, "device": "cpu"}
    return PPO("CnnPolicy", FakeImageEnv(), policy_kwargs=pixel_policy_kwargs(**encoder_kwargs),
               **{**hparams, **kwargs})


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


EMBEDDING = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v3_small": 1024,
             "efficientnet_b0": 1280, "vgg16": 4096, "inception_v3": 2048}


@pytest.mark.parametrize("name,frames,channels", [
    ("nature-cnn", 1, 3), ("nature-cnn", 4, 1), ("nature-cnn", 4, 3), ("nature-cnn", 1, 1),
    ("resnet18", 1, 3), ("resnet18", 4, 1), ("resnet18", 4, 3), ("resnet18", 1, 1),
    ("resnet34", 1, 3), ("resnet50", 4, 1), ("mobilenet_v3_small", 4, 3),
    ("efficientnet_b0", 1, 1), ("vgg16", 1, 3), ("inception_v3", 2, 3),
])
def test_output_is_batch_by_features_dim(name, frames, channels):
    size = 75 if name == "inception_v3" else SIZE  # Inception's smallest input
    obs_space = space(frames, channels, size)
    encoder = PixelEncoder(obs_space, name, frame_stack=frames, features_dim=256
                           if name == "nature-cnn" else 512)
    out = encoder(images(obs_space))
    expected = 256 if name == "nature-cnn" else frames * EMBEDDING[name]
    assert encoder.features_dim == expected
    assert out.shape == (2, expected) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_frames_are_encoded_by_one_shared_trunk():
    stacked = PixelEncoder(space(2), "resnet18", frame_stack=2).eval()
    single = PixelEncoder(space(1), "resnet18").eval()
    single.trunk.load_state_dict(stacked.trunk.state_dict())
    first, second = images(space(1)), images(space(1), batch=2).flip(0)
    with torch.no_grad():
        same = stacked(torch.cat([first, first], dim=1))
        out = stacked(torch.cat([first, second], dim=1))
        torch.testing.assert_close(same[:, :512], same[:, 512:], rtol=0, atol=0)
        # frame k's embedding sits at [k*512, (k+1)*512)
        torch.testing.assert_close(out[:, :512], single(first))
        torch.testing.assert_close(out[:, 512:], single(second))
    assert sum(isinstance(m, torchvision.models.ResNet) for m in stacked.modules()) == 1


def test_random_regularizers_are_removed():
    encoder = PixelEncoder(space(), "efficientnet_b0")
    kinds = (torch.nn.Dropout, torchvision.ops.StochasticDepth)
    assert not any(isinstance(m, kinds) for m in encoder.modules())
    x = images(space())
    torch.testing.assert_close(encoder.train()(x), encoder(x), rtol=0, atol=0)


@pytest.mark.parametrize("freeze", [False, True])
def test_loads_a_torchvision_state_dict(tmp_path, freeze):
    torch.manual_seed(123)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    encoder = PixelEncoder(space(), "resnet18", weights=str(tmp_path / "resnet18.pth"),
                           freeze=freeze)
    trunk = encoder.trunk.state_dict()
    assert set(trunk) == set(state) - {"fc.weight", "fc.bias"}  # the head is gone
    for key, tensor in trunk.items():
        assert torch.equal(tensor, state[key]), key


def test_loads_a_trunk_or_a_policy_state_dict(tmp_path):
    source = PixelEncoder(space(), "resnet18")
    torch.save(source.trunk.state_dict(), tmp_path / "trunk.pth")
    policy_like = {f"features_extractor.trunk.{k}": v for k, v in source.trunk.state_dict().items()}
    torch.save(policy_like, tmp_path / "policy.pth")
    for file in ("trunk.pth", "policy.pth"):
        loaded = PixelEncoder(space(), "resnet18", weights=str(tmp_path / file))
        for key, tensor in loaded.trunk.state_dict().items():
            assert torch.equal(tensor, source.trunk.state_dict()[key]), key
    nature = PixelEncoder(space(4, 1), frame_stack=4)
    torch.save(nature.trunk.state_dict(), tmp_path / "nature.pth")
    again = PixelEncoder(space(4, 1), frame_stack=4, weights=str(tmp_path / "nature.pth"))
    assert all(torch.equal(v, nature.trunk.state_dict()[k])
               for k, v in again.trunk.state_dict().items())


def test_weights_file_errors(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")},
               tmp_path / "partial.pth")
    with pytest.raises(EncoderError, match=r"lacks \d+ of the \d+ tensors .*layer4\."):
        PixelEncoder(space(), "resnet18", weights=str(tmp_path / "partial.pth"))
    with pytest.raises(EncoderError, match="does not exist"):
        PixelEncoder(space(), "resnet18", weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_text("not a weights file")
    with pytest.raises(EncoderError, match="torch.load can read safely"):
        PixelEncoder(space(), "resnet18", weights=str(tmp_path / "junk.pth"))
    torch.save(PixelEncoder(space(), frame_stack=1).trunk.state_dict(), tmp_path / "rgb.pth")
    with pytest.raises(EncoderError, match=re.escape("cnn.0.weight has shape (32, 3, 8, 8)")):
        PixelEncoder(space(4, 1), frame_stack=4, weights=str(tmp_path / "rgb.pth"))


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(encoders, "_reachable", lambda url: False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


def test_missing_imagenet_weights_say_which_file_to_put_where(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    message = (
        "ImageNet weights for resnet18 are not in torch hub's cache and cannot be downloaded: "
        "put resnet18-f37072fd.pth (from https://download.pytorch.org/models/resnet18-f37072fd.pth)"
        f" into {tmp_path / 'hub' / 'checkpoints'}/, or pass --encoder-weights PATH"
    )
    with pytest.raises(EncoderError) as raised:
        PixelEncoder(space(), "resnet18", weights="imagenet")
    assert str(raised.value) == message
    assert "\n" not in str(raised.value)


def test_imagenet_weights_come_from_torch_hubs_cache(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    monkeypatch.setattr(encoders, "_reachable", lambda url: pytest.fail("network probed"))
    torch.manual_seed(7)
    state = torchvision.models.resnet18().state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    encoder = PixelEncoder(space(), "resnet18", weights="imagenet", freeze=True)
    assert all(torch.equal(v, state[k]) for k, v in encoder.trunk.state_dict().items())
    summary = describe(encoder)
    assert summary["imagenet_weights"] == "ResNet18_Weights.IMAGENET1K_V1"


def test_offline_probe_fails_fast():
    assert encoders._reachable("http://127.0.0.1:9/", timeout=2.0) is False


def _first_conv_input(encoder: PixelEncoder, observations) -> torch.Tensor:
    seen = []
    handle = encoder.trunk.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        observations()
    finally:
        handle.remove()
    return seen[0]


def test_imagenet_normalization_is_applied_once():
    encoder = PixelEncoder(space(), "resnet18").eval()
    mean_image = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, SIZE, SIZE) * 255
    seen = _first_conv_input(encoder, lambda: encoder(mean_image))
    assert seen.abs().max() < 1e-5
    gray = PixelEncoder(space(1, 1), "resnet18").eval()
    seen = _first_conv_input(gray, lambda: gray(torch.full((2, 1, SIZE, SIZE), 51.0)))
    expected = (0.2 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(seen[0, :, 0, 0], expected)


def test_ppo_does_not_divide_images_by_255_again():
    model = ppo({"encoder": "resnet18"})
    assert model.policy.normalize_images is False
    encoder = model.policy.features_extractor
    pixel = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    observation = np.broadcast_to(pixel, (SIZE, SIZE, 3)).copy()  # HWC, as the env renders
    seen = _first_conv_input(encoder, lambda: model.predict(observation, deterministic=True))
    assert seen.abs().max() < 0.01  # divided by 255 twice it would be about -2


def test_frozen_encoder_stays_fixed_while_the_heads_train():
    model = ppo({"encoder": "resnet18", "freeze": True, "augment": "random-shift"})
    policy = model.policy
    encoder = policy.features_extractor
    trunk_before, heads_before = snapshot(encoder.trunk), snapshot(policy.action_net)
    assert list(encoder.trunk.parameters()) == [] and encoder_parameters(policy) == []
    in_optimizer = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(t) for t in encoder.trunk.buffers()}
    assert not any(t.requires_grad for t in encoder.trunk.state_dict(keep_vars=True).values())

    policy.set_training_mode(True)  # what SB3 does before each update
    assert encoder.augment.training and not encoder.trunk.training
    assert not any(m.training for m in encoder.trunk.modules())
    model.learn(128)
    for key, tensor in encoder.trunk.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(tensor, trunk_before[key]), key
    heads_after = policy.action_net.state_dict()
    assert any(not torch.equal(v, heads_before[k]) for k, v in heads_after.items())


def test_finetuned_encoder_trains(tmp_path):
    model = ppo({"encoder": "resnet18"})
    encoder = model.policy.features_extractor
    before = snapshot(encoder.trunk)
    trunk_params = encoder_parameters(model.policy)
    assert len(trunk_params) == len(list(encoder.trunk.parameters())) > 0
    model.learn(128)
    after = encoder.trunk.state_dict()
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])


def test_frozen_model_saves_and_loads_with_sb3(tmp_path):
    model = ppo({"encoder": "nature-cnn", "freeze": True})
    model.learn(64)
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", device="cpu")
    assert loaded.policy.features_extractor.frozen
    for key, tensor in loaded.policy.state_dict().items():
        assert torch.equal(tensor, model.policy.state_dict()[key]), key


def _one_update(scale: float | None) -> tuple[PPO, dict, dict]:
    # n_steps = batch_size = 64, one epoch: learn(64) makes exactly one optimizer step,
    # at progress_remaining 0, where the schedule gives 0.5e-3 (not the initial 1e-3).
    model = ppo({"encoder": "nature-cnn"}, batch_size=64,
                learning_rate=lambda progress: 1e-3 * (0.5 + 0.5 * progress))
    if scale is not None:
        scale_encoder_lr(model, scale)
    trunk, head = model.policy.features_extractor.trunk, model.policy.action_net
    trunk_before, head_before = snapshot(trunk), snapshot(head)
    model.learn(64)
    deltas = {k: v - trunk_before[k] for k, v in trunk.state_dict().items()}
    head_deltas = {k: v - head_before[k] for k, v in head.state_dict().items()}
    return model, deltas, head_deltas


def test_encoder_learning_rate_is_scaled_at_sb3s_scheduled_lr(tmp_path):
    model, deltas, head_deltas = _one_update(0.25)
    _, ref_deltas, ref_head_deltas = _one_update(None)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)  # SB3's own
    for key in deltas:
        # up to float32 rounding of the weights (~1e-8), far below the step (~1e-4)
        torch.testing.assert_close(deltas[key], 0.25 * ref_deltas[key], rtol=1e-4, atol=1e-7)
    for key in head_deltas:
        torch.testing.assert_close(head_deltas[key], ref_head_deltas[key])
    # Adam's first step moves each weight by about lr: the scaled lr for the encoder
    assert deltas["cnn.0.weight"].abs().max().item() == pytest.approx(0.25 * 0.5e-3, rel=0.02)
    assert head_deltas["weight"].abs().max().item() == pytest.approx(0.5e-3, rel=0.02)

    model.save(tmp_path / "model.zip")
    assert set(load_checkpoint(tmp_path / "model.zip").state_dict) == set(model.policy.state_dict())
    loaded = PPO.load(tmp_path / "model.zip", env=FakeImageEnv(), device="cpu")
    scale_encoder_lr(loaded, 0.25)  # hooks are not saved: set the scale again to go on training
    loaded.learn(64)


def test_scale_encoder_lr_checks_its_input():
    model = ppo({"encoder": "nature-cnn", "freeze": True})
    with pytest.raises(EncoderError, match="must be a number > 0"):
        scale_encoder_lr(model, 0)
    with pytest.warns(UserWarning, match="no optimizer trains encoder parameters"):
        scale_encoder_lr(model, 0.1)


def test_random_shift_shifts_in_training_only():
    torch.manual_seed(0)
    shift = RandomShift(4)
    x = torch.rand(2, 3, SIZE, SIZE)
    out = shift(x)
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.equal(out, x)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="replicate")
    for i in range(2):  # every sample is one crop of its padded image
        crops = [padded[i, :, dy:dy + SIZE, dx:dx + SIZE] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], crop) for crop in crops)
    assert shift(x.to(torch.uint8)).dtype == torch.uint8
    assert shift.eval()(x) is x


def test_augmentation_is_independent_of_freezing():
    encoder = PixelEncoder(space(), freeze=True, augment="random-shift")
    x = images(space())
    with torch.no_grad():
        evaluated = encoder.eval()(x)
        torch.manual_seed(0)
        trained = encoder.train()(x)
    assert encoder.augment.training and not encoder.trunk.training
    assert not torch.equal(evaluated, trained)


def test_describe_is_json_and_counts_parameters():
    summary = describe({"encoder": "resnet18", "weights": "imagenet", "freeze": True,
                        "frame_stack": 2})
    assert json.loads(json.dumps(summary)) == summary
    assert summary["weights"] == "imagenet"  # described, never loaded
    assert summary["embedding_dim"] == 512 and summary["features_dim"] == 1024
    assert summary["trainable_parameters"] == 0
    assert summary["frozen_parameters"] == 11_689_512 - 513_000  # resnet18 without its fc head
    nature = describe(PixelEncoder(space(4, 1), frame_stack=4, augment="random-shift"))
    assert nature["augment"] == "random-shift" and nature["frozen_parameters"] == 0
    assert nature["trainable_parameters"] > 0 and nature["features_dim"] == 512


@pytest.mark.parametrize("kwargs,obs_space,message", [
    ({"encoder": "resnet19"}, space(), "unknown encoder 'resnet19'. Did you mean 'resnet18'"),
    ({"encoder": "nature-cnn", "weights": "imagenet"}, space(), "nature-cnn has no ImageNet"),
    ({"weights": "no/such/file.pth"}, space(), "no/such/file.pth does not exist"),
    ({"frame_stack": 2}, space(1, 5), "has 5 channels, which is not frame_stack=2 frames"),
    ({"frame_stack": 1}, space(1, 4), "has 4 channels, which is not frame_stack=1 frames"),
    ({"augment": "random_shift"}, space(), "Did you mean 'random-shift'"),
    ({"encoder": "inception_v3"}, space(), "inception_v3 cannot encode 36x36 images"),
    ({}, gym.spaces.Box(0, 1, (3, SIZE, SIZE), np.float32), "need uint8 images"),
    ({}, gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8), "it looks channel-last"),
])
def test_user_mistakes_raise_encoder_errors(kwargs, obs_space, message):
    with pytest.raises(EncoderError, match=re.escape(message)):
        PixelEncoder(obs_space, **kwargs)


def test_pixel_policy_kwargs_validate_early():
    kwargs = pixel_policy_kwargs(encoder="resnet18", freeze=True)
    assert kwargs["normalize_images"] is False
    assert kwargs["features_extractor_class"] is PixelEncoder
    with pytest.raises(EncoderError, match="unknown encoder option 'freez'. Did you mean 'freeze'"):
        pixel_policy_kwargs(encoder="resnet18", freez=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PixelEncoder(space(), "nature-cnn", features_dim=128)
    with pytest.warns(UserWarning, match="features_dim=128 is ignored for resnet18"):
        PixelEncoder(space(), "resnet18", features_dim=128)


def test_a_checkpoint_with_sb3s_single_group_loads_into_a_scaled_encoder():
    # Written before the encoder's rate was a group of its own (one group, every parameter,
    # in SB3's order): it loads onto the groups, each parameter's Adam state with it.
    old = ppo({"encoder": "nature-cnn"})
    old.learn(64)
    saved = old.policy.optimizer.state_dict()
    assert len(saved["param_groups"]) == 1 and "rltransfer_groups" not in saved["param_groups"][0]
    model = ppo({"encoder": "nature-cnn"})
    scale_encoder_lr(model, 0.25)
    model.policy.optimizer.load_state_dict(saved)
    groups = model.policy.optimizer.param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, 0.25]
    assert groups[1]["lr"] == pytest.approx(0.25 * groups[0]["lr"])
    trunk = model.policy.features_extractor.trunk.cnn[0].weight
    old_trunk = old.policy.features_extractor.trunk.cnn[0].weight
    assert torch.equal(model.policy.optimizer.state[trunk]["exp_avg"],
                       old.policy.optimizer.state[old_trunk]["exp_avg"])
