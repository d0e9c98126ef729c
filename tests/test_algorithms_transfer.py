"""Every algorithm: a transferred, frozen run trains its heads and leaves features intact."""

from __future__ import annotations

import pytest
import torch

from rltransfer.env_factory import make_vec
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training import algos
from rltransfer.training.run import build_model
from rltransfer.training.transfer import SyncFrozenTargets, apply_transfer, head_parameters

CASES = [
    ("a2c", "CartPole-v1", "CartPole-v1:length=1", {"n_steps": 8}),
    ("dqn", "CartPole-v1", "CartPole-v1:length=1", {"learning_starts": 50, "train_freq": 4,
                                                    "gradient_steps": 1,
                                                    "target_update_interval": 20}),
    ("sac", "Pendulum-v1", "Pendulum-v1:m=1.5", {"learning_starts": 50,
                                                 "policy_kwargs": {"net_arch": [32, 32]}}),
    ("td3", "Pendulum-v1", "Pendulum-v1:m=1.5", {"learning_starts": 50,
                                                 "policy_kwargs": {"net_arch": [32, 32]}}),
]


def _model(algo: str, env: str, extra: dict, seed: int):
    hparams = {**algos.preset(algo, [env.split(":")[0]]), **extra}
    run = RunSpec(EnvSpec.parse(env), AgentSpec(algo, hparams, 1, "cpu"), "scratch", seed,
                  200, 100, 1)
    return build_model(run, make_vec(run.env, 1, seed))


@pytest.mark.parametrize("algo,source_env,target_env,extra", CASES, ids=[c[0] for c in CASES])
def test_freeze_features_for_every_algorithm(algo, source_env, target_env, extra):
    source = _model(algo, source_env, extra, seed=1)
    target = _model(algo, target_env, extra, seed=2)
    report = apply_transfer(target, source.policy.state_dict(), "freeze-features", "src")
    assert report.copied == len(report.tensors)
    frozen = {t.name for t in report.tensors if t.frozen}
    heads = head_parameters(target.policy)
    assert frozen and heads and frozen.isdisjoint(heads)
    before = {k: v.clone() for k, v in target.policy.state_dict().items()}
    if algo in ("sac", "td3"):  # target critics/actors: their frozen layers are the online ones
        assert report.frozen_targets
        for online, copy in report.frozen_targets:
            assert torch.equal(online, copy)
    target.learn(200, callback=SyncFrozenTargets(report.frozen_targets))
    after = target.policy.state_dict()
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    trained_heads = [n for n in heads if "target" not in n]  # target nets move slowly
    assert any(not torch.equal(after[n], before[n]) for n in trained_heads)


def test_sac_study_run_keeps_frozen_layers_of_the_source(tmp_path):
    from rltransfer.training.run import train_run
    from rltransfer.training.transfer import load_checkpoint

    hparams = {**algos.preset("sac", ["Pendulum-v1"]), "learning_starts": 50,
               "policy_kwargs": {"net_arch": [32, 32]}}
    agent = AgentSpec("sac", hparams, 1, "cpu")
    train_run(RunSpec(EnvSpec("Pendulum-v1"), agent, "scratch", 0, 150, 150, 1),
              tmp_path / "source")
    source = load_checkpoint(tmp_path / "source" / "model.zip").state_dict
    run = RunSpec(EnvSpec.parse("Pendulum-v1:m=1.5"), agent, "freeze-features", 1, 150, 150, 1)
    result = train_run(run, tmp_path / "target", source_state=source)
    trained = load_checkpoint(tmp_path / "target" / "model.zip").state_dict
    records = {t.name: t for t in result.transfer.tensors}
    assert set(records) == set(trained) and all(t.status == "copied" for t in records.values())
    frozen = {name for name, t in records.items() if t.frozen}
    assert frozen == {name for name, t in records.items() if t.role == "features"}
    frozen_targets = {name for name in frozen if "_target." in name}
    assert frozen_targets and frozen - frozen_targets  # online feature layers and their copies
    for name in frozen:  # a frozen target-net layer equals the source's *online* layer
        assert torch.equal(trained[name], source[name.replace("_target.", ".")]), name
    trainable = [name for name in trained if name not in frozen and "_target." not in name]
    assert trainable and all(records[name].role == "head" for name in trainable)
    for name in trainable:  # the heads trained (target nets only follow them slowly)
        assert not torch.equal(trained[name], source[name]), name
