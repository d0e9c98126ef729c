"""progressive (issue 21): the source's hidden layers as a frozen column, a new column beside it
with lateral adapters, fresh heads; PPO, A2C and SAC. The column after training, the adapters'
gradients, step 0 as scratch's twin, SB3's own load() of model.zip, resume, transfer.json, and
the refusals that stop a study before it writes anything."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.strategies import progressive, registry
from rltransfer.strategies.hooks import Context
from rltransfer.training import algos
from rltransfer.training.run import build_model, save_model, train_run

CASES = {  # tiny updates
    "ppo": ("CartPole-v1", {"n_steps": 32, "batch_size": 32, "n_epochs": 2}),
    "a2c": ("Pendulum-v1", {"n_steps": 8, "normalize": False, "use_sde": False}),
    "sac": ("Pendulum-v1", {"learning_starts": 64, "batch_size": 32, "buffer_size": 1000,
                            "policy_kwargs": {"net_arch": [32, 32]}}),
}
LOADERS = {"ppo": PPO, "sac": SAC}


class SixInputs(gym.Env):
    """A target that observes six numbers (CartPole: four); reward 1 for action 0."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(6, np.float32), {}

    def step(self, action):
        return np.zeros(6, np.float32), float(action == 0), False, False, {}


gym.register("ProgressiveSixInputs-v0", entry_point=SixInputs, max_episode_steps=8,
             reward_threshold=7.0)


def _run(algo: str, condition: str = "scratch", seed: int = 0, timesteps: int = 256,
         eval_freq: int = 128, **extra) -> RunSpec:
    env, tiny = CASES[algo]
    hparams = {**algos.preset(algo, [env]), **tiny, **extra}
    return RunSpec(EnvSpec.parse(env), AgentSpec(algo, hparams, 1, "cpu"), condition, seed,
                   timesteps, eval_freq, 1)


def _model(run: RunSpec):
    return build_model(run, make_vec(run.env, 1, run.seed))


def _source(algo: str, **extra) -> dict[str, torch.Tensor]:
    """A source policy's weights (another seed than the targets')."""
    return {k: v.clone() for k, v in _model(_run(algo, seed=7, **extra)).policy.state_dict()
            .items()}


def _progressive(algo: str, source: dict[str, torch.Tensor], **extra):
    """A progressive model, built and initialized as a run does; (model, transfer record)."""
    model = _model(_run(algo, "progressive", **extra))
    choice = registry.parse("progressive")
    _, record = progressive.HOOKS.initialize(model, choice, Context(256, "target", source, "src"))
    return model, record


def _adapters(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.policy.named_parameters() if ".lateral." in n}


# --- the condition ------------------------------------------------------------------------

def test_progressive_is_a_registry_entry_for_ppo_a2c_and_sac():
    entry = registry.CONDITIONS["progressive"]
    assert entry.takes == registry.WEIGHTS and entry.algos == ("ppo", "a2c", "sac")
    assert entry.hooks == "rltransfer.strategies.progressive:HOOKS"
    assert registry.parse("progressive").get("norm") == "freeze"  # the column reads source scaling
    assert registry.parse("progressive:norm=update").label == "progressive:norm=update"
    for algo in ("ppo", "a2c", "sac"):
        registry.check_algorithm("progressive", algo)
    with pytest.raises(ConfigError) as error:
        registry.check_algorithm("progressive", "td3")
    assert str(error.value) == ("condition 'progressive' works with ppo, a2c, sac only, not "
                                "td3: use --algo ppo, a2c or sac, or drop progressive")


# --- the columns --------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_the_source_column_is_the_source_bit_for_bit_after_learn_and_sb3_loads_it(
        tmp_path, algo):
    source = _source(algo)
    model, record = _progressive(algo, source)
    new_before = {n: t.clone() for n, t in model.policy.state_dict().items() if ".new." in n}
    model.learn(160)
    save_model(model, tmp_path / "model.zip")
    loaded = LOADERS[algo].load(tmp_path / "model.zip", device="cpu")  # SB3's own load()
    assert type(loaded.policy) is type(model.policy)
    copied = record["progressive"]["copied_from"]
    assert copied and set(copied) == set(record["progressive"]["columns"]["source"])
    for policy in (model.policy, loaded.policy):
        state = policy.state_dict()
        for name, source_name in copied.items():
            assert torch.equal(state[name], source[source_name]), name
        # frozen: buffers, no gradient, in no optimizer, eval mode
        assert not [n for n, _ in policy.named_parameters() if ".source." in n]
        optimizers = ([policy.optimizer] if algo == "ppo"
                      else [policy.actor.optimizer, policy.critic.optimizer])
        optimized = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
        assert optimized == {id(p) for n, p in policy.named_parameters()
                             if not n.startswith("critic_target.")}
        policy.set_training_mode(True)
        assert all(not m.training for n, m in policy.named_modules() if n.endswith(".source"))
    if algo == "sac":  # the target networks' column is the online Q-networks'
        assert copied["critic_target.qf1.0.source.2.weight"] == "critic.qf1.2.weight"
    assert all(not torch.equal(model.policy.state_dict()[n], t) for n, t in new_before.items()
               if n.endswith("weight") and not n.startswith("critic_target."))
    obs = np.stack([model.observation_space.sample() for _ in range(16)])
    actions = model.predict(obs, deterministic=True)[0]
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    if algo == "ppo":  # and in a process that never imported rltransfer
        np.save(tmp_path / "obs.npy", obs)
        script = ("import sys, numpy as np; from stable_baselines3 import PPO; "
                  "m = PPO.load(sys.argv[1] + '/model.zip'); "
                  "print(m.predict(np.load(sys.argv[1] + '/obs.npy'), deterministic=True)[0]"
                  ".tolist()); print(type(m.policy).__module__)")
        out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                             capture_output=True, text=True).stdout.splitlines()
        assert json.loads(out[0]) == actions.tolist()
        assert out[1] == "rltransfer.strategies.progressive"


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_the_lateral_adapters_get_gradients_and_train(algo):
    model, _ = _progressive(algo, _source(algo))
    before = _adapters(model)
    assert before and all(torch.count_nonzero(t) == 0 for n, t in before.items()
                          if n.endswith(".u.weight"))  # U starts at 0 (step 0: scratch's twin)
    if algo == "ppo":  # SB3's loss on a batch: U gets gradients from the first update on
        policy = model.policy
        obs = torch.as_tensor(np.stack([model.observation_space.sample() for _ in range(32)]))
        values, log_prob, _ = policy.evaluate_actions(obs, torch.randint(0, 2, (32,)))
        (values.pow(2).mean() - log_prob.mean()).backward()
        grads = {n: p.grad for n, p in policy.named_parameters()}
        for name in before:
            if name.endswith(".u.weight"):
                assert torch.count_nonzero(grads[name]) > 0, name
        for head in ("action_net.weight", "value_net.weight"):  # the output layer's U
            assert torch.count_nonzero(grads[head][:, 64:]) > 0, head
        policy.optimizer.zero_grad()
    model.learn(160)
    after = _adapters(model)
    for name, tensor in before.items():
        if not name.startswith("critic_target."):  # the target networks follow by Polyak
            assert not torch.equal(after[name], tensor), name
    head = "action_net.weight" if algo == "ppo" else "actor.mu.weight"
    width = 64 if algo == "ppo" else 32
    assert torch.count_nonzero(model.policy.state_dict()[head][:, width:]) > 0


@pytest.mark.parametrize("algo", ["ppo", "a2c", "sac"])
def test_step_zero_is_scratchs_twin(algo):
    """The new column and the heads are scratch's (same seed), the adapters' U at 0: the first
    forward is scratch's up to float rounding, and the random stream is scratch's."""
    scratch = _model(_run(algo))
    after_scratch = torch.rand(4)
    source = _source(algo)
    model = _model(_run(algo, "progressive"))
    assert torch.equal(torch.rand(4), after_scratch)  # built on scratch's random stream
    progressive.HOOKS.initialize(model, registry.parse("progressive"),
                                 Context(256, "target", source, "src"))
    state, twin = model.policy.state_dict(), scratch.policy.state_dict()
    heads = 0
    for name, tensor in twin.items():
        parts = name.split(".")
        if name.startswith("mlp_extractor.") or name.startswith("actor.latent_pi."):
            mine = state[".".join(parts[:2] + ["new"] + parts[2:])]
        elif parts[0].startswith("critic") and int(parts[2]) < 4:  # a Q-network's hidden layer
            mine = state[".".join(parts[:2] + ["0", "new"] + parts[2:])]
        elif parts[0].startswith("critic"):  # its Q-value head, reading [h_L, adapter]
            mine = state[".".join(parts[:2] + ["1", parts[3]])]
        else:
            mine = state[name]
        if mine.shape != tensor.shape:  # a head: scratch's columns, then zeros for the adapter
            heads += 1
            assert torch.equal(mine[:, :tensor.shape[1]], tensor), name
            assert torch.count_nonzero(mine[:, tensor.shape[1]:]) == 0, name
        else:
            assert torch.equal(mine, tensor), name
    assert heads == {"ppo": 2, "a2c": 2, "sac": 2 + 2 * 2}[algo]
    obs = torch.as_tensor(np.stack([model.observation_space.sample() for _ in range(16)]))
    if algo == "sac":
        for mine, theirs in zip(model.policy.actor.get_action_dist_params(obs)[:2],
                                scratch.policy.actor.get_action_dist_params(obs)[:2],
                                strict=True):
            torch.testing.assert_close(mine, theirs)
        actions = torch.rand(16, 1) * 4 - 2
        torch.testing.assert_close(model.policy.critic(obs, actions),
                                   scratch.policy.critic(obs, actions))
    else:
        mine, theirs = model.policy.get_distribution(obs), scratch.policy.get_distribution(obs)
        for attribute in ("mean", "stddev") if algo == "a2c" else ("probs",):
            torch.testing.assert_close(getattr(mine.distribution, attribute),
                                       getattr(theirs.distribution, attribute))
        torch.testing.assert_close(model.policy.predict_values(obs),
                                   scratch.policy.predict_values(obs))


@pytest.mark.parametrize("algo", ["a2c", "sac"])
def test_gsde_noise_reads_the_wider_latent(algo):
    """gSDE's exploration matrix has a row per latent feature: the adapter's too."""
    model, _ = _progressive(algo, _source(algo, use_sde=True), use_sde=True)
    policy = model.policy.actor if algo == "sac" else model.policy
    width = 32 if algo == "sac" else 64
    assert policy.log_std.shape[0] == 2 * width == policy.action_dist.latent_sde_dim
    model.learn(96)
    assert torch.isfinite(policy.log_std).all()
    assert policy.action_dist.exploration_mat.shape[0] == 2 * width


# --- transfer.json, resume ----------------------------------------------------------------

def test_a_resumed_run_keeps_the_column_frozen(tmp_path, interrupted_train_run):
    source = _source("ppo")
    run = _run("ppo", "progressive", timesteps=320, eval_freq=64)
    interrupted_train_run(run, tmp_path, source_state=source)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    result = train_run(run, tmp_path, source_state=source, resume=True)
    assert result.resumed_from == 128 and result.timesteps == 320
    record = read_json(tmp_path / "transfer.json")
    loaded = PPO.load(tmp_path / "model.zip", device="cpu").policy.state_dict()
    for name, source_name in record["progressive"]["copied_from"].items():
        assert torch.equal(checkpoint["policy"][name], source[source_name])
        assert torch.equal(loaded[name], source[source_name])
    trained = [n for n in loaded if ".new." in n or ".lateral." in n]
    assert any(not torch.equal(loaded[n], checkpoint["policy"][n]) for n in trained)


def test_a_study_with_progressive_records_its_columns(tmp_path):
    assert main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--conditions",
                 "scratch,progressive", "--seeds", "1", "--workers", "1", "--timesteps", "256",
                 "--source-timesteps", "256", "--eval-freq", "128", "--eval-episodes", "2",
                 "--n-envs", "2", "--hparams", "n_steps=64", "batch_size=64", "n_epochs=2",
                 "--out", str(tmp_path), "--name", "pnn"]) == 0
    run = tmp_path / "pnn" / "progressive" / "seed_0"
    assert read_json(run / "status.json")["state"] == "done"
    record = read_json(run / "transfer.json")
    assert record["condition"] == "progressive" and record["normalization"]["mode"] == "freeze"
    assert record["summary"] == ("progressive: source column 8 tensors copied and frozen; new "
                                 "column 8, adapters 14, fresh heads 4 tensors trained")
    columns = record["progressive"]["columns"]
    assert columns["heads"] == ["action_net.weight", "action_net.bias", "value_net.weight",
                                "value_net.bias"]
    tensors = {t["name"]: t for t in record["tensors"]}
    assert all(tensors[n]["status"] == "copied" and tensors[n]["frozen"]
               and tensors[n]["lr_scale"] is None for n in columns["source"])
    assert all(tensors[n]["status"] == "reinitialized" and not tensors[n]["frozen"]
               and tensors[n]["lr_scale"] == 1.0
               for n in columns["new"] + columns["adapters"] + columns["heads"])
    assert tensors["action_net.weight"]["shape"] == [2, 128]  # [new column, source adapter]
    source = PPO.load(next((tmp_path / ".cache" / "sources").glob("*/model.zip")),
                      device="cpu").policy.state_dict()
    target = PPO.load(run / "model.zip", device="cpu").policy.state_dict()
    for name, source_name in record["progressive"]["copied_from"].items():
        assert torch.equal(target[name], source[source_name])
    # step 0 is scratch's twin: the same first evaluation
    first = [read_json_rows(tmp_path / "pnn" / c / "seed_0")[0] for c in ("scratch",
                                                                           "progressive")]
    assert first[0] == first[1]


def read_json_rows(run_dir) -> list[tuple[str, str]]:
    lines = (run_dir / "evaluations.csv").read_text().splitlines()[1:]
    return [tuple(line.split(",")[:3]) for line in lines]


# --- refusals before anything is written --------------------------------------------------

BUDGET = ["--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
          "--seeds", "1", "--eval-episodes", "10"]


@pytest.mark.parametrize("args,message", [
    (["CartPole-v1", "CartPole-v1", "--algo", "dqn", "--conditions", "scratch,progressive"],
     "condition 'progressive' works with ppo, a2c, sac only, not dqn: use --algo ppo, a2c or "
     "sac, or drop progressive"),
    (["CartPole-v1", "ProgressiveSixInputs-v0", "--conditions", "progressive", "--n-envs", "1",
      "--hparams", "n_steps=64", "batch_size=64"],
     "condition 'progressive': the CartPole-v1 policy's policy network reads 4 inputs "
     "(observation), the target's 6: the frozen source column reads the target's observation, "
     "so their sizes must be the source's: use finetune or reinit-head, which copy what fits"),
    (["MountainCarContinuous-v0", "Pendulum-v1", "--algo", "sac", "--conditions",
      "progressive"],
     "condition 'progressive': the MountainCarContinuous-v0 policy's actor (actor.latent_pi) "
     "has hidden layers [64, 64], the target's [256, 256]: the source column keeps the "
     "source's layers beside a new column of the same shape, so source and target need the "
     "same network: give both --hparams 'policy_kwargs={net_arch=[256, 256]}'"),
    (["CartPole-v1", "CartPole-v1", "--conditions", "progressive", "--hparams",
      "policy_kwargs={net_arch=[]}"],
     "condition 'progressive': the target's policy network has no hidden layer (net_arch), so "
     "there is no source layer to keep as a column: give it hidden layers (--hparams "
     "'policy_kwargs={net_arch=[64,64]}'), or use finetune"),
    (["rltransfer/PixelCatch-v0", "rltransfer/PixelCatch-v0", "--conditions", "progressive",
      "--n-envs", "1", "--hparams", "n_steps=64", "batch_size=64"],
     "condition 'progressive' builds its columns from MLP layers on vector observations, but "
     "this study's policy is a CnnPolicy on images: use vector observations (no --pixels), or "
     "finetune, freeze-features or reinit-head"),
], ids=["dqn", "observation", "net_arch", "no-hidden-layer", "pixels"])
def test_refusals_are_one_line_errors_before_anything_is_written(tmp_path, capsys, args,
                                                                 message):
    out = tmp_path / "runs"
    assert main(["run", *args, *BUDGET, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"rltransfer: error: {message}\n"
    assert not out.exists() or list(out.rglob("*")) == []


def test_a_source_with_another_network_does_not_fit_the_column():
    model = _model(_run("ppo", "progressive"))
    other = _model(_run("ppo", policy_kwargs={"net_arch": [32, 32]}))
    with pytest.raises(ConfigError) as error:
        progressive.HOOKS.check(model, registry.parse("progressive"), Context(
            256, "target", other.policy.state_dict(), "src"))
    assert str(error.value) == (
        "condition 'progressive': src's policy network has hidden layers [32, 32], the "
        "target's [64, 64]: the source column keeps the source's layers beside a new column "
        "of the same shape, so source and target need the same network: give both --hparams "
        "'policy_kwargs={net_arch=[64, 64]}'")


def test_a_cached_source_that_does_not_fit_is_refused_before_anything_is_written(tmp_path,
                                                                                 capsys):
    out = tmp_path / "runs"
    common = ["--algo", "sac", *BUDGET, "--out", str(out)]
    # a first study caches the source (its target has the source's network)
    assert main(["run", "MountainCarContinuous-v0", "MountainCarContinuous-v0", *common,
                 "--conditions", "finetune", "--name", "first"]) == 0
    capsys.readouterr()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main(["run", "MountainCarContinuous-v0", "Pendulum-v1", *common, "--conditions",
                 "progressive", "--name", "second"]) == 2
    assert capsys.readouterr().err.startswith(
        "rltransfer: error: condition 'progressive': the cached MountainCarContinuous-v0 "
        "policy's actor (actor.latent_pi) has hidden layers [64, 64], the target's [256, 256]")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written
