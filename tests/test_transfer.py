"""Shape-aware mapping, freezing, and the weights-only checkpoint loader."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile

import pytest
import torch
from stable_baselines3 import DQN, PPO

from rltransfer.env_factory import make_vec
from rltransfer.errors import CheckpointError, TransferError
from rltransfer.specs import EnvSpec
from rltransfer.training.run import save_model
from rltransfer.training.transfer import (
    apply_transfer,
    check_algorithm,
    head_parameters,
    load_checkpoint,
)

TINY = {"n_steps": 64, "batch_size": 64, "n_epochs": 2}


def _ppo(env_id: str, seed: int = 0, **kwargs) -> PPO:
    return PPO("MlpPolicy", make_vec(EnvSpec.parse(env_id), 2, seed), seed=seed, device="cpu",
               **{**TINY, **kwargs})


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def test_equal_spaces_copy_everything():
    source, target = _ppo("CartPole-v1", seed=1), _ppo("CartPole-v1:length=1", seed=2)
    report = apply_transfer(target, _state(source), "finetune", "src")
    assert report.copied == len(report.tensors) == 12
    for name, tensor in target.policy.state_dict().items():
        assert torch.equal(tensor, source.policy.state_dict()[name])
    assert report.summary() == "copied 12/12 tensors"


def test_different_obs_and_action_sizes_transfer_what_fits():
    source = _ppo("CartPole-v1", seed=1)  # 4 observations, 2 actions
    target = _ppo("Acrobot-v1", seed=2)  # 6 observations, 3 actions
    fresh = _state(target)
    report = apply_transfer(target, _state(source), "finetune", "src")
    status = {t.name: (t.status, t.reason) for t in report.tensors}
    assert status["mlp_extractor.policy_net.0.weight"] == ("reinitialized", "shape (64,4)→(64,6)")
    assert status["action_net.weight"] == ("reinitialized", "shape (2,64)→(3,64)")
    assert status["action_net.bias"] == ("reinitialized", "shape (2)→(3)")
    assert status["mlp_extractor.policy_net.0.bias"] == ("reinitialized",
                                                         "layer shape (64,4)→(64,6)")
    assert status["mlp_extractor.policy_net.2.weight"] == ("copied", "")
    after = target.policy.state_dict()
    assert torch.equal(after["mlp_extractor.policy_net.2.weight"],
                       source.policy.state_dict()["mlp_extractor.policy_net.2.weight"])
    assert torch.equal(after["action_net.weight"], fresh["action_net.weight"])
    assert torch.equal(after["mlp_extractor.policy_net.0.bias"],
                       fresh["mlp_extractor.policy_net.0.bias"])
    assert report.copied == 6
    assert report.summary().startswith("copied 6/12 tensors, 6 re-initialized: ")
    assert report.summary() == (
        "copied 6/12 tensors, 6 re-initialized: mlp_extractor.policy_net.0.* shape "
        "(64,4)→(64,6); mlp_extractor.value_net.0.* shape (64,4)→(64,6); action_net.* shape "
        "(2,64)→(3,64)")


def test_different_architecture_is_a_clear_error():
    source = DQN("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 1, 0), device="cpu")
    target = _ppo("CartPole-v1")
    with pytest.raises(TransferError, match=re.escape(
            "nothing transfers from dqn.zip to the target: no tensor names match: the source "
            "is a different policy architecture")):
        apply_transfer(target, _state(source), "finetune", "dqn.zip")
    narrow = _ppo("Acrobot-v1", policy_kwargs={"net_arch": [32, 32]})
    with pytest.raises(TransferError, match=re.escape(
            "no feature layer matches in shape (the networks differ)")):
        apply_transfer(narrow, _state(_ppo("CartPole-v1")), "finetune")


def test_head_parameters_per_algorithm():
    assert head_parameters(_ppo("CartPole-v1").policy) == {
        "action_net.weight", "action_net.bias", "value_net.weight", "value_net.bias"}
    dqn = DQN("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 1, 0), device="cpu")
    assert head_parameters(dqn.policy) == {f"{n}.q_net.4.{p}" for n in ("q_net", "q_net_target")
                                           for p in ("weight", "bias")}


def test_reinit_head_keeps_fresh_heads_and_copies_features():
    source, target = _ppo("CartPole-v1", seed=1), _ppo("CartPole-v1", seed=2)
    fresh = _state(target)
    report = apply_transfer(target, _state(source), "reinit-head", "src")
    after = target.policy.state_dict()
    assert torch.equal(after["action_net.weight"], fresh["action_net.weight"])
    assert not torch.equal(after["action_net.weight"], source.policy.state_dict()[
        "action_net.weight"])
    assert torch.equal(after["mlp_extractor.value_net.0.weight"],
                       source.policy.state_dict()["mlp_extractor.value_net.0.weight"])
    assert {t.reason for t in report.tensors if t.status != "copied"} == {
        "fresh head (reinit-head)"}


def test_frozen_features_stay_bit_identical_through_training():
    source, target = _ppo("CartPole-v1", seed=1), _ppo("CartPole-v1:length=1", seed=2)
    report = apply_transfer(target, _state(source), "freeze-features", "src")
    frozen = {t.name for t in report.tensors if t.frozen}
    heads = head_parameters(target.policy)
    assert frozen and frozen.isdisjoint(heads)
    assert frozen | heads == {n for n, _ in target.policy.named_parameters()}
    before = _state(target)
    optimized = {id(p) for g in target.policy.optimizer.param_groups for p in g["params"]}
    for name, param in target.policy.named_parameters():
        assert param.requires_grad == (name not in frozen)
        assert (id(param) in optimized) == (name not in frozen)
    target.learn(256)
    after = target.policy.state_dict()
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    assert all(not torch.equal(after[n], before[n]) for n in heads)
    assert not target.policy.mlp_extractor.training  # pinned to eval mode during training
    target.policy.set_training_mode(True)
    assert not target.policy.mlp_extractor.policy_net.training
    assert target.policy.action_net.training


def test_finetune_changes_every_tensor():
    source, target = _ppo("CartPole-v1", seed=1), _ppo("CartPole-v1", seed=2)
    apply_transfer(target, _state(source), "finetune", "src")
    before = _state(target)
    target.learn(256)
    changed = [n for n, t in target.policy.state_dict().items() if not torch.equal(t, before[n])]
    assert len(changed) == len(before)


# --- the weights-only loader -----------------------------------------------------------


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip(path, **files: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_loader_reads_weights_of_a_real_checkpoint(tmp_path):
    model = _ppo("CartPole-v1")
    save_model(model, tmp_path / "model.zip")
    checkpoint = load_checkpoint(tmp_path / "model.zip")
    assert checkpoint.algo == "ppo"
    for name, tensor in model.policy.state_dict().items():
        assert torch.equal(checkpoint.state_dict[name], tensor)


# torch warns about the planted pickle's protocol before refusing it: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")


def test_loader_never_executes_a_pickle_planted_in_a_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"action_net.weight": torch.zeros(2, 64), "x": _Payload(str(marker))}, buffer)
    _zip(tmp_path / "evil.zip", **{"policy.pth": buffer.getvalue(), "data": b"{}"})
    with pytest.raises(CheckpointError, match="policy.pth is not a plain weights file"):
        load_checkpoint(tmp_path / "evil.zip")
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    with zipfile.ZipFile(tmp_path / "evil.zip") as archive:
        torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=False)
    assert marker.exists()


def test_loader_refuses_a_plain_pickle(tmp_path):
    marker = tmp_path / "pwned"
    _zip(tmp_path / "evil.zip", **{"policy.pth": pickle.dumps(_Payload(str(marker)))})
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.zip")
    assert not marker.exists()


@pytest.mark.parametrize("make,message", [
    (None, "does not exist: give the path of an SB3 .zip"),
    (lambda p: p.write_bytes(b"not a zip"), "is not a readable zip archive (corrupt or not "
                                             "an SB3 checkpoint)"),
    (lambda p: _zip(p, **{"data": b"{}"}), "is not a Stable-Baselines3 checkpoint (no "
                                            "policy.pth inside)"),
])
def test_loader_errors(tmp_path, make, message):
    path = tmp_path / "model.zip"
    if make:
        make(path)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(path)


def test_checkpoint_of_another_algorithm(tmp_path):
    dqn = DQN("MlpPolicy", make_vec(EnvSpec("CartPole-v1"), 1, 0), device="cpu")
    save_model(dqn, tmp_path / "dqn.zip")
    checkpoint = load_checkpoint(tmp_path / "dqn.zip")
    assert checkpoint.algo == "dqn"
    with pytest.raises(CheckpointError, match=re.escape(
            "is a dqn checkpoint but the study uses ppo: pass --algo dqn or a ppo checkpoint")):
        check_algorithm(checkpoint, "ppo")


def test_freeze_features_leaves_layers_that_could_not_be_copied_trainable():
    target = _ppo("Acrobot-v1", seed=2)
    report = apply_transfer(target, _state(_ppo("CartPole-v1", seed=1)), "freeze-features")
    records = {t.name: t for t in report.tensors}
    first = records["mlp_extractor.policy_net.0.weight"]
    assert first.status == "reinitialized" and not first.frozen
    assert target.policy.mlp_extractor.policy_net[0].weight.requires_grad
    assert records["mlp_extractor.policy_net.2.weight"].frozen
    assert not target.policy.mlp_extractor.policy_net[2].weight.requires_grad


def test_loader_tolerates_odd_metadata(tmp_path):
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    _zip(tmp_path / "a.zip", **{"policy.pth": buffer.getvalue(), "data": b"\xff\xfe"})
    _zip(tmp_path / "b.zip", **{"policy.pth": buffer.getvalue(), "data": b"5"})
    for name in ("a.zip", "b.zip"):
        checkpoint = load_checkpoint(tmp_path / name)
        assert checkpoint.algo is None and torch.equal(checkpoint.state_dict["w"], torch.ones(2))


def test_transfer_report_is_json():
    report = apply_transfer(_ppo("CartPole-v1"), _state(_ppo("Acrobot-v1")), "freeze-features",
                            "src")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total"] == 12 and data["copied"] == report.copied
    assert {"name", "shape", "status", "reason", "frozen", "role", "lr_scale"} == set(
        data["tensors"][0])
    assert data["options"] == {} and data["frozen_layers"] == [
        {"layer": "mlp_extractor.policy_net.2", "depth": 2},
        {"layer": "mlp_extractor.value_net.2", "depth": 2}]  # layer 1 could not be copied
