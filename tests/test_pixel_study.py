"""Pixel studies end to end: the pixel pipeline, the encoders in a study, their errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from rltransfer.cli import main
from rltransfer.env_factory import make_env, make_vec
from rltransfer.io_utils import read_json
from rltransfer.specs import EncoderSpec, EnvSpec
from rltransfer.study.plan import encoder_note, plan
from rltransfer.study.study_spec import StudySpec, flat_spec

TINY = ["--seeds", "1", "--timesteps", "128", "--source-timesteps", "128", "--eval-freq", "64",
        "--eval-episodes", "2", "--n-envs", "2",
        "--hparams", "n_steps=32", "batch_size=32", "n_epochs=1"]


def test_rendered_frames_become_observations():
    env = make_env(EnvSpec("CartPole-v1", {"length": 1.0}, pixels=True, image_size=64))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert env.observation_space.shape == (64, 64, 3)
    gray = make_env(EnvSpec("CartPole-v1", pixels=True, image_size=40, grayscale=True))
    assert gray.reset(seed=0)[0].shape == (40, 40, 1)
    venv = make_vec(EnvSpec("CartPole-v1", pixels=True, image_size=40, frame_stack=4), 2, 0)
    assert venv.reset().shape == (2, 40, 40, 12)


def test_longer_pole_shows_in_the_pixels():
    frames = [make_env(EnvSpec("CartPole-v1", {"length": length}, pixels=True,
                               image_size=64)).reset(seed=0)[0] for length in (0.5, 1.0)]
    assert not np.array_equal(*frames)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_pixel_study_with_every_condition(tmp_path, resnet_weights, capsys):
    conditions = "scratch,finetune,freeze-features,pretrained-encoder"
    code = main(["run", "rltransfer/PixelCatch-v0", "rltransfer/PixelCatch-v0:ball_hue=0.33",
                 "--conditions", conditions, "--encoder", "resnet18",
                 "--encoder-weights", str(resnet_weights), "--augment", "random-shift",
                 "--frame-stack", "2", "--out", str(tmp_path), "--name", "px", *TINY,
                 "--eval-episodes", "6"])  # 2 would put the 0.8 threshold within 3 random SEs
    assert code == 0
    out = capsys.readouterr().out
    # Said once, at the start: augmentation keeps the frozen encoder from being cached.
    assert out.count("warning: --augment random-shift changes the images at every update, so "
                     "the frozen encoder's features cannot be cached") == 1
    study = tmp_path / "px"
    record = read_json(study / "study.json")
    assert flat_spec(record["spec"])["target"]["frame_stack"] == 2
    assert record["target_agent"]["hparams"]["policy"] == "CnnPolicy"
    finetune = read_json(study / "finetune" / "seed_0" / "transfer.json")
    assert finetune["copied"] == finetune["total"]  # same architecture: every tensor moves
    assert finetune["encoder"]["encoder"] == "nature-cnn"
    frozen = read_json(study / "freeze-features" / "seed_0" / "transfer.json")
    assert any(t["frozen"] and "features_extractor" in t["name"] for t in frozen["tensors"])
    pretrained = read_json(study / "pretrained-encoder" / "seed_0" / "transfer.json")
    assert pretrained["source"] is None
    assert pretrained["encoder"]["encoder"] == "resnet18"
    assert pretrained["encoder"]["weights"] == str(resnet_weights)
    assert pretrained["encoder"]["frozen"] is True
    assert pretrained["encoder"]["features"] == "computed in every update"
    summary = read_json(study / "summary.json")
    assert set(summary["metrics"]["conditions"]) == set(conditions.split(","))


def test_frozen_encoder_without_augmentation_is_cached_and_said_so():
    spec = StudySpec.build(EnvSpec.parse("rltransfer/PixelCatch-v0"),
                           EnvSpec.parse("rltransfer/PixelCatch-v0"),
                           conditions=("scratch", "pretrained-encoder"), encoder="nature-cnn",
                           encoder_weights="none", seeds=1, timesteps=64)
    assert encoder_note(plan(spec)) == ("pretrained-encoder: the frozen encoder's features are "
                                        "computed once per observation and reused by every "
                                        "update")
    assert encoder_note(plan(spec.update(freeze_encoder=False))) is None
    assert encoder_note(plan(spec.update(conditions=("scratch",)))) is None


def test_the_pretrained_encoder_is_its_conditions_agent_configured_by_its_hooks():
    spec = StudySpec.build(EnvSpec.parse("rltransfer/PixelCatch-v0"),
                           EnvSpec.parse("rltransfer/PixelCatch-v0"),
                           conditions=("scratch", "finetune", "pretrained-encoder"),
                           encoder="resnet18", encoder_weights="none", augment="random-shift",
                           seeds=1, timesteps=64)
    resolved = plan(spec)
    stack = resolved.spec.frame_stack
    runs = {run.condition.label: run for run in resolved.target_runs()}
    fresh = EncoderSpec(augment="random-shift", frame_stack=stack)  # a fresh NatureCNN
    assert runs["scratch"].agent.encoder == runs["finetune"].agent.encoder == fresh
    pretrained = EncoderSpec("resnet18", "none", True, 0.1, "random-shift", stack)
    assert runs["pretrained-encoder"].agent.encoder == resolved.encoder == pretrained
    assert resolved.encoder_agent == runs["pretrained-encoder"].agent
    assert runs["pretrained-encoder"].agent.hparams == runs["scratch"].agent.hparams
    assert plan(spec.update(conditions=("scratch",))).encoder_agent is None


def test_pixels_on_a_classic_control_target(tmp_path):
    code = main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--pixels", "--image-size",
                 "36", "--grayscale", "--conditions", "scratch,finetune", "--out",
                 str(tmp_path), "--name", "cp", *TINY])
    assert code == 0
    target = flat_spec(read_json(tmp_path / "cp" / "study.json")["spec"])["target"]
    assert target["pixels"] is True and target["image_size"] == 36 and target["frame_stack"] == 4


@pytest.mark.parametrize("args,message", [
    (["CartPole-v1", "CartPole-v1", "--conditions", "scratch,pretrained-encoder"],
     "the pretrained-encoder condition needs image observations, but CartPole-v1 observes "
     "vectors: add --pixels"),
    (["rltransfer/PixelCatch-v0", "rltransfer/PixelCatch-v0", "--conditions",
      "scratch,pretrained-encoder", "--encoder", "resnet18"], "resnet18-f37072fd.pth"),
    (["rltransfer/PixelCatch-v0", "rltransfer/PixelCatch-v0", "--conditions",
      "pretrained-encoder", "--encoder", "resnet19"], "resnet19"),
    (["CartPole-v1", "CartPole-v1", "--pixels", "--image-size", "20"], "--image-size must be "
                                                                       "between 36"),
    (["CartPole-v1", "CartPole-v1", "--augment", "flip"], "--augment 'flip' is not one of "
                                                          "random-shift"),
])
def test_pixel_input_errors(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    monkeypatch.setattr("rltransfer.training.encoders._reachable", lambda url, timeout=3.0: False)
    out = tmp_path / "runs"
    assert main(["run", *args, "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or [p.name for p in out.iterdir()] == []


def test_an_encoder_weights_path_is_recorded_absolute(tmp_path, monkeypatch, resnet_weights):
    # Workers, Ray nodes and `resume` may run in another folder than the one it was given in.
    monkeypatch.chdir(resnet_weights.parent)
    spec = StudySpec.build(EnvSpec.parse("rltransfer/PixelCatch-v0"),
                           EnvSpec.parse("rltransfer/PixelCatch-v0"),
                           conditions=("scratch", "pretrained-encoder"),
                           encoder_weights=resnet_weights.name, seeds=1, timesteps=64)
    resolved = plan(spec)
    assert resolved.spec.transfer.encoder_weights == str(resnet_weights.resolve())
    assert resolved.encoder_agent.encoder.weights == str(resnet_weights.resolve())
