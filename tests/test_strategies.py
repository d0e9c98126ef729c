"""Strategies (issue 11): ``lr_scale=S`` (copied tensors train at S x the schedule's rate, in
their own optimizer group) and ``freeze-features:layers=k`` (only the first k feature layers
frozen), for every algorithm; their records; SB3's own load() of the runs they write."""

from __future__ import annotations

import re

import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.envs import FakeImageEnv

from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training import algos, optim_groups
from rltransfer.training.run import build_model, train_run
from rltransfer.training.transfer import (
    SyncFrozenTargets,
    apply_transfer,
    check_options,
    feature_layers,
    head_parameters,
)

OFF_POLICY = {"learning_starts": 50, "train_freq": 4, "gradient_steps": 1}
SMALL = {"policy_kwargs": {"net_arch": [32, 32]}}
CASES = {
    "ppo": ("CartPole-v1", {"n_steps": 32, "batch_size": 32, "n_epochs": 2}),
    "a2c": ("CartPole-v1", {"n_steps": 8}),
    "dqn": ("CartPole-v1", {**OFF_POLICY, "target_update_interval": 20}),
    "sac": ("Pendulum-v1", {**OFF_POLICY, **SMALL}),
    "td3": ("Pendulum-v1", {**OFF_POLICY, **SMALL}),
}


def schedule(progress: float) -> float:
    """Linear, never 0: each update's rate differs from the last one's."""
    return 1e-3 * (0.25 + 0.75 * progress)


def _agent(algo: str, **extra) -> AgentSpec:
    env, hparams = CASES[algo]
    return AgentSpec(algo, {**algos.preset(algo, [env]), **hparams, **extra}, 1, "cpu")


def _model(algo: str, seed: int, env: str | None = None, **extra):
    run = RunSpec(EnvSpec.parse(env or CASES[algo][0]), _agent(algo, **extra), "scratch", seed,
                  200, 100, 1)
    return build_model(run, make_vec(run.env, 1, seed))


def _record_rates(model) -> list[tuple[float, list[tuple[float, float, int]]]]:
    """At every optimizer step: the schedule's value and each group's (lr, lr_scale, size),
    as the step sees them (this hook runs after rltransfer's)."""
    seen: list[tuple[float, list[tuple[float, float, int]]]] = []

    def record(optimizer, args, kwargs) -> None:
        rate = model.lr_schedule(model._current_progress_remaining)
        seen.append((rate, [(g["lr"], g["lr_scale"], len(g["params"]))
                            for g in optimizer.param_groups]))
    for optimizer in optim_groups.optimizers(model.policy):
        optimizer.register_step_pre_hook(record)
    return seen


def _group_of(model) -> dict[str, float]:
    """Parameter name -> the lr factor of the optimizer group training it."""
    factors = optim_groups.policy_lr_factors(model.policy)
    return {name: factors[id(p)] for name, p in model.policy.named_parameters()
            if id(p) in factors}


@pytest.mark.parametrize("algo", CASES)
def test_copied_tensors_train_at_lr_scale_times_the_schedule(algo):
    source = _model(algo, seed=1)
    target = _model(algo, seed=2, learning_rate=schedule)
    report = apply_transfer(target, source.policy.state_dict(), "reinit-head:lr_scale=0.25")
    heads = head_parameters(target.policy)
    groups = _group_of(target)
    copied = {t.name for t in report.tensors if t.status == "copied"}
    assert copied and {n for n, f in groups.items() if f == 0.25} == copied & set(groups)
    assert {n for n, f in groups.items() if f == 1.0} == heads & set(groups)  # fresh heads
    seen = _record_rates(target)
    target.learn(200)
    rates = {rate for rate, _ in seen}
    assert len(rates) >= 3  # the schedule moved between updates (SB3 reset every group's lr)
    for rate, groups_seen in seen:
        assert [scale for _, scale, _ in groups_seen][:2] == [1.0, 0.25]
        for lr, scale, _ in groups_seen:
            assert lr == pytest.approx(scale * rate, rel=1e-12)
    for optimizer in optim_groups.optimizers(target.policy):  # after the last update, too
        rate = target.lr_schedule(target._current_progress_remaining)
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
            [g["lr_scale"] * rate for g in optimizer.param_groups])


def test_finetune_scales_what_was_copied_and_fresh_layers_train_at_the_full_rate():
    source = _model("ppo", seed=1)  # CartPole: 4 observations, 2 actions
    target = _model("ppo", seed=2, env="Acrobot-v1")  # 6 observations, 3 actions
    report = apply_transfer(target, source.policy.state_dict(), "finetune:lr_scale=0.1")
    records = {t.name: t for t in report.tensors}
    assert records["mlp_extractor.policy_net.2.weight"].lr_scale == 0.1  # copied
    assert records["value_net.weight"].lr_scale == 0.1  # copied: same shape (1, 64)
    assert records["mlp_extractor.policy_net.0.weight"].lr_scale == 1.0  # fresh: shape
    assert records["action_net.weight"].lr_scale == 1.0  # fresh: 3 actions
    assert report.options == {"lr_scale": 0.1}
    assert report.summary().endswith("; 6 at 0.1x the learning rate")


def test_freeze_features_scales_the_copied_tensors_it_trains():
    source, target = _model("ppo", seed=1), _model("ppo", seed=2)
    report = apply_transfer(target, source.policy.state_dict(),
                            "freeze-features:layers=1,lr_scale=0.5")
    by_layer = {t.name.rsplit(".", 1)[0]: (t.frozen, t.lr_scale) for t in report.tensors}
    assert by_layer["mlp_extractor.policy_net.0"] == (True, None)  # frozen: in no optimizer
    assert by_layer["mlp_extractor.value_net.0"] == (True, None)
    assert by_layer["mlp_extractor.policy_net.2"] == (False, 0.5)
    assert by_layer["action_net"] == (False, 0.5)  # copied head, trained


@pytest.mark.parametrize("algo", CASES)
def test_a_scaled_run_records_it_and_its_model_loads_with_sb3(tmp_path, algo):
    source = _model(algo, seed=1).policy.state_dict()
    env = EnvSpec.parse(CASES[algo][0])
    run = RunSpec(env, _agent(algo), "reinit-head:lr_scale=0.25", 2, 200, 100, 1)
    train_run(run, tmp_path / "run", source_state=source)
    transfer = read_json(tmp_path / "run" / "transfer.json")
    assert transfer["condition"] == "reinit-head:lr_scale=0.25"
    assert transfer["options"] == {"lr_scale": 0.25}
    scaled = {t["name"] for t in transfer["tensors"] if t["lr_scale"] == 0.25}
    assert scaled and all(t["status"] == "copied" and t["role"] == "features"
                          for t in transfer["tensors"] if t["name"] in scaled)
    assert all(t["lr_scale"] == 1.0 for t in transfer["tensors"]
               if t["role"] == "head" and "_target." not in t["name"])
    assert all(t["lr_scale"] is None for t in transfer["tensors"] if "_target." in t["name"])
    assert "at 0.25x the learning rate" in transfer["summary"]

    # SB3's own load(): one group per optimizer, as SB3 builds it, trained at the full rate.
    cls = algos.get_algorithm(algo).cls
    loaded = cls.load(tmp_path / "run" / "model.zip", env=make_vec(env, 1, 3), device="cpu")
    for optimizer in optim_groups.optimizers(loaded.policy):
        [group] = optimizer.param_groups
        assert optim_groups.GROUPS_KEY in group  # the groups, described
    # rltransfer re-attached: the groups of the run, scale and all
    assert optim_groups.attach(loaded.policy)
    assert {n for n, f in _group_of(loaded).items() if f == 0.25} == (
        scaled & {n for n, _ in loaded.policy.named_parameters()})
    seen = _record_rates(loaded)
    loaded.learn(100)
    assert seen and all(lr == pytest.approx(scale * rate)
                        for rate, groups in seen for lr, scale, _ in groups)


def test_plain_sb3_trains_a_loaded_run_at_the_full_rate(tmp_path):
    source, target = _model("ppo", seed=1), _model("ppo", seed=2)
    apply_transfer(target, source.policy.state_dict(), "freeze-features:lr_scale=0.5")
    target.learn(64)
    target.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", env=make_vec(EnvSpec("CartPole-v1"), 1, 0),
                      device="cpu")
    [group] = loaded.policy.optimizer.param_groups
    assert len(group["params"]) == len(list(loaded.policy.parameters()))  # frozen ones too
    # Adam's moments of the trained tensors came along; frozen ones have none
    trained = {n for n, p in target.policy.named_parameters() if p.requires_grad}
    params = dict(loaded.policy.named_parameters())
    with_state = {n for n, p in params.items() if p in loaded.policy.optimizer.state}
    assert with_state == trained
    for name in trained:
        torch.testing.assert_close(
            loaded.policy.optimizer.state[params[name]]["exp_avg"],
            target.policy.optimizer.state[dict(target.policy.named_parameters())[name]][
                "exp_avg"])
    loaded.learn(64)
    assert group["lr"] == loaded.lr_schedule(loaded._current_progress_remaining)


def test_optimizer_state_round_trips_through_sb3s_layout():
    source = _model("ppo", seed=1).policy.state_dict()
    condition = "freeze-features:layers=1,lr_scale=0.5"
    first, second = _model("ppo", seed=2), _model("ppo", seed=3)
    apply_transfer(first, source, condition)
    apply_transfer(second, source, condition)
    first.learn(64)
    saved = first.policy.optimizer.state_dict()
    [group] = saved["param_groups"]
    assert group["params"] == list(range(len(list(first.policy.parameters()))))
    second.policy.optimizer.load_state_dict(saved)  # as a resumed run's checkpoint is read
    assert [(len(g["params"]), g["lr_scale"]) for g in second.policy.optimizer.param_groups] == [
        (0, 1.0), (8, 0.5)]
    names = {id(p): n for n, p in second.policy.named_parameters()}
    ours = dict(first.policy.named_parameters())
    for param, state in second.policy.optimizer.state.items():
        torch.testing.assert_close(state["exp_avg"],
                                   first.policy.optimizer.state[ours[names[id(param)]]]["exp_avg"])
    other = _model("ppo", seed=4)
    apply_transfer(other, source, "finetune:lr_scale=0.5")
    with pytest.raises(ValueError, match="other parameter groups"):
        other.policy.optimizer.load_state_dict(saved)


def test_a_resumed_scaled_run_continues_from_its_checkpoint(tmp_path, interrupted_train_run):
    source = _model("ppo", seed=1).policy.state_dict()
    run = RunSpec(EnvSpec("CartPole-v1"), _agent("ppo"), "freeze-features:layers=1,lr_scale=0.5",
                  2, 256, 64, 1)
    interrupted_train_run(run, tmp_path / "run", source_state=source)
    result = train_run(run, tmp_path / "run", source_state=source, resume=True)
    assert result.resumed_from == 128 and result.timesteps == 256


# --- freeze-features:layers=k ----------------------------------------------------------


def test_feature_layers_are_counted_from_the_input_along_each_path():
    assert feature_layers(_model("ppo", seed=0).policy) == {
        "mlp_extractor.policy_net.0": 1, "mlp_extractor.policy_net.2": 2,
        "mlp_extractor.value_net.0": 1, "mlp_extractor.value_net.2": 2}
    assert feature_layers(_model("dqn", seed=0).policy) == {
        "q_net.q_net.0": 1, "q_net.q_net.2": 2, "q_net_target.q_net.0": 1,
        "q_net_target.q_net.2": 2}
    sac = feature_layers(_model("sac", seed=0).policy)
    assert {name for name, depth in sac.items() if depth == 1} == {
        "actor.latent_pi.0", "critic.qf0.0", "critic.qf1.0", "critic_target.qf0.0",
        "critic_target.qf1.0"}
    td3 = feature_layers(_model("td3", seed=0).policy)
    assert {name for name, depth in td3.items() if depth == 1} == {
        "actor.mu.0", "actor_target.mu.0", "critic.qf0.0", "critic.qf1.0",
        "critic_target.qf0.0", "critic_target.qf1.0"}
    # a CNN: the extractor's layers first, then the towers after it
    cnn = PPO("CnnPolicy", FakeImageEnv(screen_height=36, screen_width=36), device="cpu",
              policy_kwargs={"net_arch": [16], "share_features_extractor": False})
    assert feature_layers(cnn.policy) == {
        "features_extractor.cnn.0": 1, "features_extractor.cnn.2": 2,
        "features_extractor.cnn.4": 3, "features_extractor.linear.0": 4,
        "vf_features_extractor.cnn.0": 1, "vf_features_extractor.cnn.2": 2,
        "vf_features_extractor.cnn.4": 3, "vf_features_extractor.linear.0": 4,
        "mlp_extractor.policy_net.0": 5, "mlp_extractor.value_net.0": 5}


def test_freezing_the_first_layers_of_a_cnn_policy():
    def cnn(seed: int) -> PPO:
        return PPO("CnnPolicy", FakeImageEnv(screen_height=36, screen_width=36), seed=seed,
                   n_steps=32, batch_size=32, n_epochs=1, device="cpu")
    source, target = cnn(1), cnn(2)
    report = apply_transfer(target, source.policy.state_dict(), "freeze-features:layers=2")
    assert [layer["layer"] for layer in report.frozen_layers] == [
        "features_extractor.cnn.0", "features_extractor.cnn.2"]
    frozen = {t.name for t in report.tensors if t.frozen}
    # the shared extractor's other names in the state dict are the same (frozen) tensors
    assert {n.split(".", 1)[1] for n in frozen} == {"cnn.0.weight", "cnn.0.bias",
                                                    "cnn.2.weight", "cnn.2.bias"}
    assert target.policy.features_extractor.cnn[4].weight.requires_grad
    assert not target.policy.features_extractor.cnn[2].weight.requires_grad


FREEZE_CASES = ["ppo", "sac"]


@pytest.mark.parametrize("algo", FREEZE_CASES)
def test_only_the_first_k_layers_stay_bit_identical(algo):
    source, target = _model(algo, seed=1), _model(algo, seed=2)
    report = apply_transfer(target, source.policy.state_dict(), "freeze-features:layers=1")
    frozen = {t.name for t in report.tensors if t.frozen}
    depth_one = {name for name, depth in feature_layers(target.policy).items() if depth == 1}
    assert {layer["layer"] for layer in report.frozen_layers} == depth_one
    assert frozen == {f"{layer}.{p}" for layer in depth_one for p in ("weight", "bias")}
    assert report.to_dict()["frozen_layers"] == report.frozen_layers
    before = {k: v.clone() for k, v in target.policy.state_dict().items()}
    target.learn(200, callback=SyncFrozenTargets(report.frozen_targets))
    after = target.policy.state_dict()
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    moved = [n for n in after if n not in frozen]
    assert moved and all(not torch.equal(after[n], before[n]) for n in moved)


def test_more_layers_than_the_network_has_is_a_one_line_error():
    source, target = _model("ppo", seed=1), _model("ppo", seed=2)
    message = ("condition 'freeze-features:layers=3': the policy has 2 feature layers from the "
               "input to its heads, so layers must be 1..2 (or left out, to freeze them all)")
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_options(target.policy, "freeze-features:layers=3")
    with pytest.raises(ConfigError, match=re.escape(message)):
        apply_transfer(target, source.policy.state_dict(), "freeze-features:layers=3")
    check_options(target.policy, "freeze-features:layers=2")
    report = apply_transfer(target, source.policy.state_dict(), "freeze-features:layers=2")
    assert len(report.frozen_layers) == 4  # layers=2 here is every feature layer
