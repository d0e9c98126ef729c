"""The seam: a new strategy is one registry entry whose hooks (`rltransfer.strategies.hooks`)
say how it initializes the target, what it adds before training and what transfer.json records; the
pre-flight check and training call them and nothing else changes."""

from __future__ import annotations

import torch

from rltransfer.cli import main
from rltransfer.io_utils import read_json
from rltransfer.strategies import hooks as strategy
from rltransfer.strategies import registry as conditions

CALLS: list[tuple[str, str]] = []


class ZeroHead:
    """A demo strategy: the action head starts at zero; it notes the step it starts from."""

    def check(self, target, condition, context):
        CALLS.append(("check", condition))

    def initialize(self, model, condition, context):
        CALLS.append(("initialize", condition))
        with torch.no_grad():
            model.policy.action_net.weight.zero_()
        return None, {"condition": condition, "zeroed": ["action_net.weight"]}

    def before_learning(self, model, condition, context, evaluation):
        CALLS.append(("before_learning", condition))
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
    assert CALLS == [("check", "zero-head"), ("initialize", "zero-head"),
                     ("before_learning", "zero-head")]
    run = tmp_path / "seam" / "zero-head" / "seed_0"
    assert read_json(run / "transfer.json") == {
        "condition": "zero-head", "zeroed": ["action_net.weight"], "normalization": None,
        "started_at": 0, "budget": 256}
    assert read_json(run / "status.json")["state"] == "done"
    assert not (tmp_path / "seam" / "scratch" / "seed_0" / "transfer.json").exists()
    summary = read_json(tmp_path / "seam" / "summary.json")
    assert set(summary["metrics"]["conditions"]) == {"scratch", "zero-head"}


def test_the_built_in_strategies_name_their_hooks():
    named = {name: entry.hooks for name, entry in conditions.CONDITIONS.items()}
    assert named["scratch"] == "" and named["pretrained-encoder"] == ""
    # the source acts on the target during replay's prefill: its statistics stay frozen
    assert conditions.parse("replay").get("norm") == "freeze"
    assert conditions.parse("replay:norm=update").label == "replay:norm=update"
    for name in ("finetune", "freeze-features", "reinit-head", "kickstart", "replay"):
        hooks = strategy.of(name)
        assert all(callable(getattr(hooks, m)) for m in ("check", "initialize",
                                                          "before_learning")), name
