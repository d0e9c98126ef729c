"""The seam: a new strategy is one registry entry whose hooks (`rltransfer.strategies.hooks`)
say how it initializes the target, what it adds before training and what transfer.json records; the
pre-flight check and training call them and nothing else changes."""

from __future__ import annotations

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from rltransfer.cli import main
from rltransfer.io_utils import read_json
from rltransfer.strategies import hooks as strategy
from rltransfer.strategies import registry as conditions

CALLS: list[tuple[str, str]] = []


class Steps(BaseCallback):
    """The demo's own callback: it counts the steps of learn() it saw."""

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        CALLS.append(("callback", str(self.num_timesteps)))


class ZeroHead(strategy.Strategy):
    """A demo strategy: a narrower network whose action head starts at zero; it notes the
    step it starts from."""

    def configure(self, hparams, choice):
        CALLS.append(("configure", choice.label))
        return {**hparams, "policy_kwargs": {"net_arch": [8]}}

    def check(self, target, choice, context):
        CALLS.append(("check", choice.label))

    def initialize(self, model, choice, context):
        CALLS.append(("initialize", choice.label))
        with torch.no_grad():
            model.policy.action_net.weight.zero_()
        return None, {"condition": choice.label, "zeroed": ["action_net.weight"]}

    def callbacks(self, model, choice, context):
        return [Steps()]

    def before_learning(self, model, choice, context, evaluation):
        CALLS.append(("before_learning", choice.label))
        return {"started_at": int(model.num_timesteps), "budget": context.timesteps}


HOOKS = ZeroHead()


def test_a_new_strategy_is_one_registry_entry(tmp_path, monkeypatch):
    entry = conditions.Condition("zero-head", "demo: the action head starts at zero",
                                 hooks=f"{__name__}:HOOKS")
    monkeypatch.setattr(conditions, "CONDITIONS", dict(conditions.CONDITIONS, **{
        "zero-head": entry}))
    assert strategy.of("zero-head") is HOOKS and strategy.of("scratch") is None
    CALLS.clear()
    assert main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--conditions",
                 "scratch,zero-head", "--seeds", "1", "--workers", "1", "--timesteps", "256",
                 "--eval-freq", "128", "--eval-episodes", "2", "--n-envs", "2", "--hparams",
                 "n_steps=64", "batch_size=64", "n_epochs=2", "--out", str(tmp_path),
                 "--name", "seam"]) == 0
    # the pre-flight builds the condition's own probe (configured), checks it; the run
    # configures, builds, initializes, adds its callback, fills nothing before learn()
    assert CALLS == [("configure", "zero-head"), ("configure", "zero-head"),
                     ("check", "zero-head"), ("configure", "zero-head"),
                     ("initialize", "zero-head"), ("before_learning", "zero-head"),
                     ("callback", "256")]
    run = tmp_path / "seam" / "zero-head" / "seed_0"
    assert read_json(run / "transfer.json") == {
        "condition": "zero-head", "zeroed": ["action_net.weight"], "normalization": None,
        "started_at": 0, "budget": 256}
    assert read_json(run / "status.json")["state"] == "done"
    widths = {name: tuple(tensor.shape) for name, tensor in
              PPO.load(run / "model.zip").policy.state_dict().items()}
    assert widths["action_net.weight"] == (2, 8)  # as configured, not the preset's 64
    scratch = PPO.load(tmp_path / "seam" / "scratch" / "seed_0" / "model.zip")
    assert tuple(scratch.policy.action_net.weight.shape) == (2, 64)
    assert not (tmp_path / "seam" / "scratch" / "seed_0" / "transfer.json").exists()
    summary = read_json(tmp_path / "seam" / "summary.json")
    assert set(summary["metrics"]["conditions"]) == {"scratch", "zero-head"}


def test_the_built_in_strategies_name_their_hooks():
    named = {name: entry.hooks for name, entry in conditions.CONDITIONS.items()}
    assert named["scratch"] == ""
    # pretrained-encoder's effect is its agent's image encoder, configured by its own hooks
    assert named["pretrained-encoder"] == "rltransfer.strategies.encoder:HOOKS"
    # the source acts on the target during replay's prefill: its statistics stay frozen
    assert conditions.parse("replay").get("norm") == "freeze"
    assert conditions.parse("replay:norm=update").label == "replay:norm=update"
    for name in ("finetune", "freeze-features", "reinit-head", "kickstart", "replay"):
        hooks = strategy.of(name)
        assert all(callable(getattr(hooks, m)) for m in ("check", "initialize",
                                                          "before_learning")), name
