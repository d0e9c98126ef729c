"""sb3-contrib's algorithms (TQC, QR-DQN, CrossQ, TRPO, ARS, RecurrentPPO, MaskablePPO): each
trained through the real run path under every condition it accepts, with the tensors checked
as the run starts and after `learn()`; the conditions they refuse, refused in one line; their
checkpoints read (algorithm and network) without unpickling."""

from __future__ import annotations

import io
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("sb3_contrib")

from sb3_contrib import ARS, QRDQN, TQC, TRPO, CrossQ, MaskablePPO, RecurrentPPO  # noqa: E402

import rltransfer.training.run as training  # noqa: E402
from rltransfer.cli import main  # noqa: E402
from rltransfer.env_factory import make_vec  # noqa: E402
from rltransfer.errors import AlgorithmError, ConfigError  # noqa: E402
from rltransfer.io_utils import read_json  # noqa: E402
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec  # noqa: E402
from rltransfer.strategies import registry  # noqa: E402
from rltransfer.training import (
    algos,  # noqa: E402
    checkpoints,
)
from rltransfer.training.transfer import apply_transfer, feature_layers, load_checkpoint  # noqa: E402

# --- a tiny env with action masks ---------------------------------------------------------


class MaskedChoice(gym.Env):
    """Four actions, two of them allowed at each step (which two depends on the step); an
    action that is not allowed is an error, so a policy that ignores the masks fails here.
    Reward 1 for the allowed action that matches the observation's sign."""

    metadata: dict = {"render_modes": []}

    def __init__(self, shift: int = 0) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(4)
        self.shift, self._t, self._obs = shift, 0, np.zeros(2, np.float32)

    def action_masks(self) -> np.ndarray:
        allowed = np.zeros(4, dtype=bool)
        allowed[[(self._t + self.shift) % 4, (self._t + self.shift + 2) % 4]] = True
        return allowed

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs, {}

    def step(self, action):
        allowed = self.action_masks()
        if not allowed[int(action)]:
            raise AssertionError(f"action {action} is masked out at step {self._t}")
        good = np.flatnonzero(allowed)[int(self._obs[0] > 0)]
        reward = float(int(action) == good)
        self._t += 1
        self._obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs, reward, False, self._t >= 16, {}


for _id, _shift in (("rltransfer-test/Masked-v0", 0), ("rltransfer-test/MaskedShifted-v0", 1)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=MaskedChoice, kwargs={"shift": _shift})

# --- every algorithm, the conditions it accepts --------------------------------------------

OFF = {"learning_starts": 50, "train_freq": 4, "gradient_steps": 1, "buffer_size": 2000}
ON = {"n_steps": 32, "batch_size": 32, "n_epochs": 2}
CASES = {  # algo: (source env, target env, hyperparameters over the preset, conditions)
    "tqc": ("Pendulum-v1", "Pendulum-v1:m=1.5",
            {**OFF, "policy_kwargs": {"net_arch": [16, 16], "n_quantiles": 5}},
            ["finetune", "freeze-features", "reinit-head", "replay:n=64"]),
    "qrdqn": ("CartPole-v1", "CartPole-v1:length=1",
              {**OFF, "target_update_interval": 20,
               "policy_kwargs": {"net_arch": [16, 16], "n_quantiles": 5}},
              ["finetune", "freeze-features", "reinit-head", "replay:n=64"]),
    "crossq": ("Pendulum-v1", "Pendulum-v1:m=1.5",
               {**OFF, "policy_kwargs": {"net_arch": [16, 16]}},
               ["finetune", "freeze-features", "reinit-head", "replay:n=64"]),
    "trpo": ("CartPole-v1", "CartPole-v1:length=1",
             {"n_steps": 64, "batch_size": 64, "n_critic_updates": 2,
              "policy_kwargs": {"net_arch": [16, 16]}},
             ["finetune", "freeze-features", "reinit-head"]),
    "ars": ("CartPole-v1", "CartPole-v1:length=1",
            {"policy": "MlpPolicy", "n_delta": 2, "policy_kwargs": {"net_arch": [16]}},
            ["finetune", "reinit-head"]),
    "recurrentppo": ("CartPole-v1", "CartPole-v1:length=1",
                     {**ON, "policy_kwargs": {"net_arch": [16], "lstm_hidden_size": 8}},
                     ["finetune", "freeze-features", "freeze-features:layers=1",
                      "reinit-head"]),
    "maskableppo": ("rltransfer-test/Masked-v0", "rltransfer-test/MaskedShifted-v0",
                    {**ON, "policy_kwargs": {"net_arch": [16, 16]}},
                    ["finetune", "freeze-features", "reinit-head", "kickstart"]),
}
PAIRS = [(algo, condition) for algo, case in CASES.items() for condition in case[3]]
STEPS = 256


def _agent(algo: str) -> AgentSpec:
    source_env, _, extra, _ = CASES[algo]
    hparams = {**algos.preset(algo, [source_env.split(":")[0]]), **extra}
    hparams.pop("normalize", None)
    return AgentSpec(algo, hparams, 1, "cpu")


def _run(algo: str, env: str, condition: str, seed: int) -> RunSpec:
    return RunSpec(EnvSpec.parse(env), _agent(algo), condition, seed, STEPS, STEPS, 1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """Each algorithm's source policy, trained through the run path on its source env."""
    out = tmp_path_factory.mktemp("sources")
    trained = {}
    for algo, (source_env, *_) in CASES.items():
        training.train_run(_run(algo, source_env, "scratch", 0), out / algo)
        trained[algo] = load_checkpoint(out / algo / "model.zip").state_dict
    return trained


@pytest.fixture
def at_start(monkeypatch) -> dict[str, torch.Tensor]:
    """The policy's tensors as training starts (after the condition initialized it): the
    evaluation callback's first call, which every run makes before any update."""
    seen: dict[str, torch.Tensor] = {}

    class Spy(training.EvaluationCallback):
        def _on_training_start(self) -> None:
            if not seen:
                seen.update({k: v.clone() for k, v in self.model.policy.state_dict().items()})
            super()._on_training_start()

    monkeypatch.setattr(training, "EvaluationCallback", Spy)
    return seen


@pytest.mark.parametrize("algo,condition", PAIRS, ids=[f"{a}-{c}" for a, c in PAIRS])
def test_every_algorithm_trains_under_each_condition_it_accepts(algo, condition, sources,
                                                                at_start, tmp_path):
    registry.check_algorithm(condition, algo)  # the registry accepts it
    source = sources[algo]
    run = _run(algo, CASES[algo][1], condition, 1)
    result = training.train_run(run, tmp_path, source_state=source, source_label="src")
    after = load_checkpoint(tmp_path / "model.zip").state_dict
    record = read_json(tmp_path / "transfer.json")
    assert read_json(tmp_path / "status.json")["state"] == "done"
    assert result.timesteps >= STEPS
    tensors = {t["name"]: t for t in record.get("tensors", [])}
    entry = registry.parse(condition).condition
    if registry.parse(condition).weights is None:  # kickstart, replay: a fresh start
        assert not tensors
        assert all(not torch.equal(at_start[n], source[n]) for n in source
                   if n.endswith("weight"))
        if entry.name == "kickstart":
            assert record["kickstart"]["action_masks"].startswith("the training batch's")
    else:
        assert set(tensors) == set(after) == set(at_start)
        for name, t in tensors.items():
            # a frozen layer of a target network is the frozen online one (the source's)
            own = name.replace("_target.", ".") if t["frozen"] else name
            if t["status"] == "copied":  # the run starts from the source's tensor
                assert torch.equal(at_start[name], source[own]), name
            if t["frozen"]:  # and a frozen one is still the source's after learn()
                assert torch.equal(after[name], source[own]), name
        if entry.name == "reinit-head":
            heads = [n for n, t in tensors.items() if t["role"] == "head"]
            assert heads and all(tensors[n]["status"] == "reinitialized" for n in heads)
            assert all(tensors[n]["status"] == "copied" for n, t in tensors.items()
                       if t["role"] == "features")
        else:
            assert record["copied"] == record["total"]
        if entry.name == "freeze-features":
            assert any(t["frozen"] for t in tensors.values())
    trained = [n for n in after if n in at_start and at_start[n].is_floating_point()
               and "_target." not in n and not tensors.get(n, {}).get("frozen")]
    assert any(not torch.equal(after[n], at_start[n]) for n in trained)  # learn() trained
    if condition.startswith("replay"):
        assert record["replay"]["transitions"] == 64 and record["replay"]["env_steps"] == 64
    if algo == "qrdqn":  # epsilon as DQN's: a copied quantile head acts from the start
        eps = record["exploration"]
        assert (eps["initial_eps"] == eps["final_eps"]) == (entry.copies == registry.ALL)


def test_recurrent_ppo_lstms_are_features_and_layer_one(sources, tmp_path):
    """transfer.json says which RecurrentPPO tensors are features (the LSTMs, the MLP
    towers) and which are heads; layers=1 freezes exactly the LSTMs, the first layer after
    the observation."""
    run = _run("recurrentppo", "CartPole-v1:length=1", "freeze-features:layers=1", 1)
    training.train_run(run, tmp_path, source_state=sources["recurrentppo"])
    record = read_json(tmp_path / "transfer.json")
    roles = {t["name"]: t["role"] for t in record["tensors"]}
    assert {n for n, r in roles.items() if r == "head"} == {
        "action_net.weight", "action_net.bias", "value_net.weight", "value_net.bias"}
    assert all(roles[n] == "features" for n in roles if n.startswith(("lstm_", "mlp_")))
    frozen = {t["name"] for t in record["tensors"] if t["frozen"]}
    assert frozen == {n for n in roles if n.startswith(("lstm_actor.", "lstm_critic."))}
    assert {(x["layer"], x["depth"]) for x in record["frozen_layers"]} == {
        ("lstm_actor", 1), ("lstm_critic", 1)}


def test_ars_searches_from_the_transferred_weights(sources, tmp_path):
    """ARS keeps its own weight vector: with a zero step size its policy after learn() is
    exactly the one the transfer loaded (without syncing the vector it would be the fresh
    initialization again)."""
    run = _run("ars", "CartPole-v1:length=1", "finetune", 1)
    run = RunSpec(run.env, AgentSpec("ars", {**run.agent.hparams, "learning_rate": 0.0}, 1,
                                     "cpu"), "finetune", 1, STEPS, STEPS, 2)
    training.train_run(run, tmp_path, source_state=sources["ars"])
    after = load_checkpoint(tmp_path / "model.zip").state_dict
    assert set(after) == set(sources["ars"])
    for name, tensor in after.items():
        assert torch.equal(tensor, sources["ars"][name]), name


def test_masked_evaluation_and_a_maskless_env_is_refused(tmp_path):
    """Evaluations act under the env's masks (MaskedChoice raises on a masked action), and
    MaskablePPO on an env without action_masks() is one line before anything is built."""
    env = make_vec(EnvSpec("rltransfer-test/Masked-v0"), 2, 0)
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0)
    from rltransfer.training.contrib import evaluate_policy

    returns, _ = evaluate_policy(model, env, n_eval_episodes=4, return_episode_rewards=True)
    assert len(returns) == 4
    run = _run("maskableppo", "CartPole-v1", "scratch", 0)
    with pytest.raises(AlgorithmError, match=re.escape(
            "--algo maskableppo needs an env that says which actions are valid, but "
            "CartPole-v1 has no action_masks() method")):
        training.build_model(run, make_vec(run.env, 1, 0))


def test_recurrent_evaluation_carries_the_lstm_states(monkeypatch):
    """The run's evaluation passes RecurrentPPO its LSTM states from step to step, reset at
    each episode's start."""
    from rltransfer.training.contrib import evaluate_policy

    env = make_vec(EnvSpec("CartPole-v1"), 2, 0)
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=16, batch_size=16, seed=0,
                         policy_kwargs={"net_arch": [8], "lstm_hidden_size": 4})
    calls: list = []
    predict = model.predict

    def spy(obs, state=None, episode_start=None, deterministic=False):
        calls.append((state, None if episode_start is None else episode_start.copy()))
        return predict(obs, state=state, episode_start=episode_start,
                       deterministic=deterministic)

    monkeypatch.setattr(model, "predict", spy)
    evaluate_policy(model, env, n_eval_episodes=2)
    assert calls[0][0] is None and calls[0][1].all()  # the first step starts episodes
    assert all(state is not None for state, _ in calls[1:])  # then the states go along
    assert not calls[1][1].any()


# --- refusals, through the CLI --------------------------------------------------------------

BUDGET = ["--timesteps", "128", "--source-timesteps", "128", "--seeds", "1"]
REFUSED = [
    ("ars", "freeze-features", "condition 'freeze-features' does not work with ars: ars has no "
     "gradient and no optimizer: each update perturbs and moves its whole weight vector at "
     "once, so no layer can stay frozen; drop freeze-features"),
    ("ars", "finetune:lr_scale=0.5", "condition 'finetune:lr_scale=0.5': lr_scale does not "
     "apply to ars: ars has no gradient and no optimizer"),
    ("ars", "kickstart", "condition 'kickstart' does not work with ars: ars has no gradient"),
    ("ars", "replay", "condition 'replay' works with dqn, sac, td3, tqc, qrdqn, crossq only, "
     "not ars"),
    ("trpo", "kickstart", "condition 'kickstart' does not work with trpo: trpo's policy step "
     "is a natural-gradient step inside a KL trust region, with no loss a distillation term "
     "could join; use --algo ppo, a2c or maskableppo, or drop kickstart"),
    ("trpo", "reinit-head:lr_scale=0.1", "lr_scale does not apply to trpo: trpo's policy "
     "steps are sized by its KL trust region (target_kl), not by a learning rate"),
    ("recurrentppo", "kickstart", "condition 'kickstart' does not work with recurrentppo: "
     "recurrentppo's teacher would be an LSTM whose hidden state along the target's rollouts "
     "is never computed"),
    ("trpo", "replay", "condition 'replay' works with dqn, sac, td3, tqc, qrdqn, crossq only"),
    ("ars", "pretrained-encoder", "condition 'pretrained-encoder' does not work with ars: ars "
     "has no image policy"),
    ("tqc", "kickstart", "condition 'kickstart' works with ppo, a2c, maskableppo only, not tqc"),
    ("tqc", "finetune:eps=0.1", "condition 'finetune:eps=0.1': eps applies to dqn, qrdqn "
     "only, not tqc: drop eps"),
]


@pytest.mark.parametrize("algo,condition,message", REFUSED,
                         ids=[f"{a}-{c}" for a, c, _ in REFUSED])
def test_a_condition_that_means_nothing_is_refused_in_one_line(algo, condition, message,
                                                               tmp_path, capsys):
    code = main(["run", "CartPole-v1", "CartPole-v1", "--algo", algo, "--conditions",
                 f"scratch,{condition}", "--out", str(tmp_path / "runs"), *BUDGET])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_ars_linear_policy_has_no_features_for_reinit_head(tmp_path, capsys):
    code = main(["run", "CartPole-v1", "CartPole-v1", "--algo", "ars", "--conditions",
                 "scratch,reinit-head", "--out", str(tmp_path / "runs"), *BUDGET])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("condition 'reinit-head': the policy has no feature layers (its observation goes "
            "straight into its heads, e.g. ARS's LinearPolicy or net_arch=[]), so reinit-head "
            "would copy nothing") in err
    assert not (tmp_path / "runs").exists()


def test_maskable_ppo_on_an_env_without_masks_is_one_line(tmp_path, capsys):
    code = main(["run", "CartPole-v1", "CartPole-v1", "--algo", "maskableppo",
                 "--out", str(tmp_path / "runs"), *BUDGET])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "CartPole-v1 has no action_masks() method: add one to the env" in err
    assert not (tmp_path / "runs").exists()


def test_ars_on_images_is_one_line(tmp_path, capsys):
    code = main(["run", "CartPole-v1", "CartPole-v1", "--algo", "ars", "--pixels",
                 "--out", str(tmp_path / "runs"), *BUDGET])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("--algo ars has no image policy (its policies map a vector observation to actions, "
            "without a features extractor), but CartPole-v1 [pixels 84px x4] observes "
            "images") in err
    assert not (tmp_path / "runs").exists()


def test_rl_zoo_names_point_to_ours():
    with pytest.raises(AlgorithmError, match=re.escape(
            "unknown algorithm 'ppo_lstm': choose from ppo, a2c, dqn, sac, td3, tqc, qrdqn, "
            "crossq, trpo, ars, recurrentppo, maskableppo. RL-Zoo's ppo_lstm is --algo "
            "recurrentppo.")):
        algos.get_algorithm("ppo_lstm")


_NO_CONTRIB = """
import sys
sys.modules["sb3_contrib"] = None  # as if sb3-contrib were not installed
import torch
torch.set_num_threads(1)
from rltransfer.cli import main
code = main(["run", "CartPole-v1", "CartPole-v1", "--algo", "tqc", "--out", sys.argv[1]])
print("exit", code)
from rltransfer.training import algos  # the run path imports
from rltransfer.training import contrib
from rltransfer.study import preflight
from rltransfer.training import transfer
from rltransfer.env_factory import make_vec
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training.run import build_model
hparams = {**algos.preset("ppo", ["CartPole-v1"]), "n_steps": 32, "batch_size": 32,
           "n_epochs": 1}
run = RunSpec(EnvSpec("CartPole-v1"), AgentSpec("ppo", hparams, 1, "cpu"), "scratch", 0, 64,
              64, 1)
env = make_vec(run.env, 1, 0)
model = build_model(run, env).learn(64)
returns, _ = contrib.evaluate_policy(model, env, n_eval_episodes=1, return_episode_rewards=True)
print("ppo", model.num_timesteps, len(returns))
"""


def test_without_sb3_contrib_its_algorithms_are_one_line_and_the_others_work(tmp_path):
    out = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-c", _NO_CONTRIB, str(out)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].endswith(
        "--algo tqc needs sb3-contrib, which is not installed: pip install "
        "'rltransfer[contrib]'")
    assert "exit 2" in done.stdout and "ppo 64 1" in done.stdout
    assert not (out / "CartPole-v1--CartPole-v1--tqc").exists()


def test_the_registry_groups_match_the_classes():
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    names = set(algos.ALGORITHMS)
    off = {name for name, a in algos.ALGORITHMS.items()
           if issubclass(a.cls, OffPolicyAlgorithm)}
    assert set(registry.OFF_POLICY) == off
    for condition in registry.CONDITIONS.values():
        assert set(condition.algos) <= names and {a for a, _ in condition.refuses} <= names
        for option in condition.options:
            assert set(option.algos) <= names and {a for a, _ in option.refuses} <= names
    assert {name for name in names if hasattr(algos.ALGORITHMS[name].cls,
                                             "exploration_schedule")} <= set(
        registry.EPSILON_GREEDY)


# --- checkpoints: the algorithm and network, read without unpickling ------------------------

SAVED = [  # algo, class, env, policy, policy_kwargs, what read_architecture must find
    ("tqc", TQC, "Pendulum-v1", "MlpPolicy", {"net_arch": [12, 12], "n_quantiles": 7},
     {"net_arch": [12, 12], "n_quantiles": 7, "n_critics": 2}),
    ("qrdqn", QRDQN, "CartPole-v1", "MlpPolicy", {"net_arch": [12], "n_quantiles": 6},
     {"net_arch": [12], "n_quantiles": 6}),
    ("crossq", CrossQ, "Pendulum-v1", "MlpPolicy", {"net_arch": [12]},
     {"net_arch": [12], "n_critics": 2}),
    ("trpo", TRPO, "CartPole-v1", "MlpPolicy", {"net_arch": [12]}, {"net_arch": [12]}),
    ("ars", ARS, "CartPole-v1", "MlpPolicy", {"net_arch": [12]},
     {"net_arch": [12], "with_bias": True}),
    ("ars", ARS, "CartPole-v1", "LinearPolicy", None, {"net_arch": [], "with_bias": False}),
    ("recurrentppo", RecurrentPPO, "CartPole-v1", "MlpLstmPolicy",
     {"net_arch": [12], "lstm_hidden_size": 6, "enable_critic_lstm": False},
     {"net_arch": [12], "lstm_hidden_size": 6, "n_lstm_layers": 1, "enable_critic_lstm": False,
      "shared_lstm": False}),
    ("maskableppo", MaskablePPO, "rltransfer-test/Masked-v0", "MlpPolicy", {"net_arch": [12]},
     {"net_arch": [12]}),
]


@pytest.mark.parametrize("algo,cls,env,policy,kwargs,expected", SAVED,
                         ids=[f"{s[0]}-{s[3]}" for s in SAVED])
def test_a_checkpoint_is_recognized_and_its_network_adopted(algo, cls, env, policy, kwargs,
                                                            expected, tmp_path, monkeypatch):
    model = cls(policy, make_vec(EnvSpec(env), 1, 0), policy_kwargs=kwargs, seed=0,
                **({"n_steps": 16, "batch_size": 16} if algo in ("trpo", "recurrentppo",
                                                                  "maskableppo") else {}))
    buffer = io.BytesIO()
    model.save(buffer)
    path = tmp_path / f"{algo}.zip"
    path.write_bytes(buffer.getvalue())

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    with monkeypatch.context() as patch:  # nothing of the zip is unpickled
        patch.setattr(pickle, "loads", refuse)
        patch.setattr(pickle, "load", refuse)
        patch.setattr(pickle, "Unpickler", refuse)
        checkpoint = load_checkpoint(path)
        architecture = checkpoints.read_architecture(checkpoint)
    assert checkpoint.algo == algo
    assert {k: architecture.policy_kwargs[k] for k in expected} == expected
    # the study's network (the preset, with the checkpoint's adopted) takes every tensor
    target = algos.get_algorithm(algo)
    hparams = checkpoints.adopt(algos.preset(algo, [env]), architecture, {}, target)
    run = RunSpec(EnvSpec(env), AgentSpec(algo, hparams, 1, "cpu"), "finetune", 0, 64, 64, 1)
    built = training.build_model(run, make_vec(run.env, 1, 0))
    fit = apply_transfer(built, checkpoint.state_dict, "finetune", str(path))
    assert fit.copied == len(fit.tensors) == len(checkpoint.state_dict)


def test_crossq_is_not_mistaken_for_td3_nor_recurrent_for_ppo(tmp_path):
    """CrossQ writes TD3's policy_delay, RecurrentPPO PPO's clip_range: the policy class's
    module (readable text in data) tells them apart."""
    for cls, env, policy, algo in ((CrossQ, "Pendulum-v1", "MlpPolicy", "crossq"),
                                   (RecurrentPPO, "CartPole-v1", "MlpLstmPolicy",
                                    "recurrentppo")):
        buffer = io.BytesIO()
        cls(policy, env, policy_kwargs={"net_arch": [8]}).save(buffer)
        path = tmp_path / f"{algo}.zip"
        path.write_bytes(buffer.getvalue())
        assert load_checkpoint(path).algo == algo
        with zipfile.ZipFile(path) as archive:
            assert b"policy_delay" in archive.read("data") or algo == "recurrentppo"


def test_a_tqc_checkpoint_is_a_source_model_through_the_cli(tmp_path, capsys):
    model = TQC("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [12], "n_quantiles": 5},
                learning_starts=0, seed=0)
    buffer = io.BytesIO()
    model.save(buffer)
    path = tmp_path / "tqc-Pendulum-v1.zip"
    path.write_bytes(buffer.getvalue())
    code = main(["run", "Pendulum-v1", "Pendulum-v1:m=1.5", "--algo", "tqc", "--source-model",
                 str(path), "--conditions", "scratch,freeze-features", "--seeds", "1",
                 "--timesteps", "128", "--eval-episodes", "1", "--workers", "1",
                 "--threshold", "-200", "--hparams", "learning_starts=50", "buffer_size=1000",
                 "--out", str(tmp_path / "runs"), "--name", "s"])
    assert code == 0, capsys.readouterr().err
    study = tmp_path / "runs" / "s"
    adopted = read_json(study / "source" / "source.json")["adopted"]
    assert adopted["policy_kwargs"]["n_quantiles"] == 5
    assert adopted["read_from"]["n_quantiles"] == "data"
    transfer = read_json(study / "freeze-features" / "seed_0" / "transfer.json")
    assert transfer["copied"] == transfer["total"]
    frozen = {t["name"] for t in transfer["tensors"] if t["frozen"]}
    trained = load_checkpoint(study / "freeze-features" / "seed_0" / "model.zip").state_dict
    source = load_checkpoint(path).state_dict
    assert frozen and all(torch.equal(trained[n], source[n.replace("_target.", ".")])
                          for n in frozen)
    assert all(not n.startswith(("critic.qf0.1", "actor.mu")) for n in frozen)  # heads train


def test_feature_depths_of_the_contrib_policies():
    qrdqn = QRDQN("MlpPolicy", "CartPole-v1", policy_kwargs={"net_arch": [8, 8]})
    assert feature_layers(qrdqn.policy) == {
        "quantile_net.quantile_net.0": 1, "quantile_net.quantile_net.2": 2,
        "quantile_net_target.quantile_net.0": 1, "quantile_net_target.quantile_net.2": 2}
    shared = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", policy_kwargs={
        "net_arch": [8], "lstm_hidden_size": 4, "shared_lstm": True,
        "enable_critic_lstm": False})
    assert feature_layers(shared.policy) == {"lstm_actor": 1, "mlp_extractor.policy_net.0": 2,
                                             "mlp_extractor.value_net.0": 2}


def test_kickstart_check_names_the_distribution(tmp_path):
    """MaskablePPO with MultiDiscrete actions: distillation compares Discrete ones only."""
    from rltransfer.strategies.kickstart import build_teacher

    class Multi(MaskedChoice):
        def __init__(self) -> None:
            super().__init__()
            self.action_space = gym.spaces.MultiDiscrete([2, 2])

        def action_masks(self) -> np.ndarray:
            return np.ones(4, dtype=bool)

    model = MaskablePPO("MlpPolicy", Multi(), n_steps=16, batch_size=16)
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'kickstart' distils Discrete or Box actions; the target acts in "
            "MultiDiscrete([2, 2]): use finetune")):
        build_teacher(model, model.policy.state_dict(), "kickstart")


def _frozen(path: Path) -> set[str]:
    return {t["name"] for t in read_json(path)["tensors"] if t["frozen"]}
