"""kickstart (issue 11): a distillation loss toward the source policy, its weight decaying
linearly to 0 over ``steps`` env steps; PPO and A2C, discrete and Gaussian actions; its
TensorBoard tags, its transfer.json record, resume, SB3's own load() of its model.zip, and
the errors that stop a study before it writes anything."""

from __future__ import annotations

import json
import math
import re
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.strategies import registry
from rltransfer.strategies.kickstart import (
    build_teacher,
    check_teacher,
    distillation_loss,
    kickstart,
)
from rltransfer.training import algos
from rltransfer.training.run import build_model, train_run

# Tiny updates.
CASES = {
    ("ppo", "CartPole-v1"): {"n_steps": 32, "batch_size": 32, "n_epochs": 2},
    ("a2c", "CartPole-v1"): {"n_steps": 8},
    ("ppo", "Pendulum-v1"): {"n_steps": 32, "batch_size": 32, "n_epochs": 2},
    ("a2c", "Pendulum-v1"): {"n_steps": 8},
}
IDS = [f"{algo}-{env.split('-')[0]}" for algo, env in CASES]


def _agent(algo: str, env: str, **extra) -> AgentSpec:
    hparams = {**algos.preset(algo, [env]), **CASES[algo, env], **extra}
    if hparams.get("normalize"):  # RL-Zoo's A2C Pendulum: these sources have no statistics
        hparams["normalize"] = False
    return AgentSpec(algo, hparams, 1, "cpu")


def _run(algo: str, env: str, condition: str = "scratch", seed: int = 0, timesteps: int = 256,
         eval_freq: int = 128, **extra) -> RunSpec:
    return RunSpec(EnvSpec.parse(env), _agent(algo, env, **extra), condition, seed, timesteps,
                   eval_freq, 1)


def _model(run: RunSpec):
    return build_model(run, make_vec(run.env, 1, run.seed))


def _teacher_state(algo: str, env: str) -> dict[str, torch.Tensor]:
    """A source policy with a clear preference, unlike a fresh one's near-uniform actions:
    action 0 (CartPole), a mean action of +1 with a small spread (Pendulum)."""
    state = {k: v.clone() for k, v in _model(_run(algo, env, seed=7)).policy.state_dict().items()}
    if env.startswith("CartPole"):
        state["action_net.bias"] = torch.tensor([3.0, -3.0])
    else:
        state["action_net.bias"].fill_(1.0)
        state["log_std"].fill_(-1.0)
    return state


def _scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


# --- the condition and its options --------------------------------------------------------

def test_kickstart_is_a_registry_entry_that_takes_the_source_policy():
    entry = registry.CONDITIONS["kickstart"]
    assert entry.takes == registry.POLICY and entry.needs_source
    assert registry.needs_source(["scratch", "kickstart"])
    assert registry.parse("kickstart:weight=1,steps=500,init=finetune").label == (
        "kickstart:init=finetune,steps=500")  # sorted, defaults left out
    assert registry.split("scratch,kickstart:steps=5000,init=finetune") == [
        "scratch", "kickstart:steps=5000,init=finetune"]


@pytest.mark.parametrize("spelled,message", [
    ("kickstart:steps=0", "condition 'kickstart:steps=0': steps must be an integer >= 1, got 0"),
    ("kickstart:steps=1.5", "condition 'kickstart:steps=1.5': steps must be int, got '1.5'"),
    ("kickstart:weight=0", "condition 'kickstart:weight=0': weight must be a number > 0, got 0"),
    ("kickstart:weight=nan", "weight must be a number > 0, got nan"),
    ("kickstart:init=pretrained-encoder", "init must be one of scratch, finetune, "
                                          "freeze-features, reinit-head, got pretrained-encoder"),
    ("kickstart:step=5", "condition 'kickstart' has no option 'step': valid options are steps, "
                         "weight, init"),
])
def test_bad_options_are_one_line_errors(spelled, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        registry.parse(spelled)


# --- the loss ----------------------------------------------------------------------------

def _distance(model, teacher, obs) -> float:
    with torch.no_grad():
        return float(distillation_loss(model.policy.get_distribution(obs),
                                       teacher.get_distribution(obs)))


@pytest.mark.parametrize("algo,env", list(CASES), ids=IDS)
def test_the_loss_pulls_the_student_toward_the_teacher(algo, env):
    """Same seed, same budget: with a large weight the kickstarted student ends much closer to
    the teacher (cross-entropy / KL on fixed observations) than the run without the loss,
    and the teacher itself never moves."""
    source = _teacher_state(algo, env)
    fast = {"learning_rate": 1e-2, **({"n_epochs": 8} if algo == "ppo" else {})}
    run = _run(algo, env, "kickstart:weight=50,steps=100000", timesteps=320, **fast)
    student, plain = _model(run), _model(_run(algo, env, timesteps=320, **fast))
    distil, report, record = kickstart(student, source, run.condition, run.timesteps, "teacher")
    teacher = distil.teacher
    assert report is None and record["kickstart"]["init"] == "scratch"
    student.observation_space.seed(0)
    obs = torch.as_tensor(np.stack([student.observation_space.sample() for _ in range(64)]))
    start = _distance(student, teacher, obs)
    assert start == pytest.approx(_distance(plain, teacher, obs))  # same fresh init
    student.learn(run.timesteps)
    plain.learn(run.timesteps)
    pulled, alone = _distance(student, teacher, obs), _distance(plain, teacher, obs)
    # measured: 0.04-0.36 x where it started, 0.03-0.26 x the plain run's
    assert pulled < 0.5 * start and pulled < 0.5 * alone, (start, pulled, alone)
    for name, tensor in teacher.state_dict().items():  # the teacher: as loaded, frozen
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert set(student.policy.state_dict()) == set(source)  # no teacher.* in policy.pth


@pytest.mark.parametrize("algo,env", list(CASES), ids=IDS)
def test_the_weight_is_logged_and_decays_to_zero_at_steps(tmp_path, algo, env):
    steps, weight = 192, 2.0
    run = _run(algo, env, f"kickstart:steps={steps},weight={weight:g}", timesteps=384)
    rollout = CASES[algo, env]["n_steps"]
    train_run(run, tmp_path, source_state=_teacher_state(algo, env), source_label="teacher")
    weights = _scalars(tmp_path, "kickstart/weight")
    losses = _scalars(tmp_path, "kickstart/loss")

    def at(t: int) -> float:
        return weight * max(0.0, 1 - t / steps)
    # SB3 dumps a record after the update it was made in, or at the next rollout's end
    for step, value in weights:
        assert any(math.isclose(value, at(t), rel_tol=1e-6, abs_tol=1e-7)
                   for t in (step, step - rollout)), (step, value)
    values = [v for _, v in weights]
    assert values == sorted(values, reverse=True)
    # PPO dumps after every rollout (its first update's weight comes first); A2C every 100
    # (learn's log_interval), so between its evaluations' dumps only their update's shows
    assert values[0] > 0 and (algo != "ppo" or values[0] == pytest.approx(at(rollout)))
    assert values[-1] == 0 and all(v == 0 for s, v in weights if s >= steps + rollout)
    assert losses and all(math.isfinite(v) and v > -1e-6 for _, v in losses)
    # the loss: the mean over the updates since the last dump whose weight was above 0
    assert max(s for s, _ in losses) <= min(s for s, v in weights if v == 0)
    record = read_json(tmp_path / "transfer.json")
    assert record["condition"] == run.condition.label and record["source"] == "teacher"
    assert record["kickstart"] == {
        "teacher": "teacher", "init": "scratch", "steps": steps, "initial_weight": weight,
        "loss": "cross-entropy" if env.startswith("CartPole") else "kl(teacher||target)",
        "schedule": "weight x max(0, 1 - t / steps) at the update after t env steps"}
    cls = {"ppo": PPO, "a2c": A2C}[algo]
    loaded = cls.load(tmp_path / "model.zip", device="cpu")  # SB3's own load
    assert set(loaded.policy.state_dict()) == set(_teacher_state(algo, env))
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = archive.read("data").decode()
    assert "kickstart" not in data.lower() and "teacher" not in data  # nothing of it pickled
    assert set(json.loads(data)) == set(json.loads(_saved_data(algo, env, tmp_path)))


def _saved_data(algo: str, env: str, tmp_path) -> str:
    """The data JSON of a scratch model trained the same way: kickstart adds nothing to it."""
    model = _model(_run(algo, env, timesteps=64))
    model.learn(64)
    model.save(tmp_path / "plain.zip")
    with zipfile.ZipFile(tmp_path / "plain.zip") as archive:
        return archive.read("data").decode()


def test_default_steps_are_half_the_budget_and_init_copies_the_source():
    source = _teacher_state("ppo", "CartPole-v1")
    model = _model(_run("ppo", "CartPole-v1", "kickstart"))
    _, report, record = kickstart(model, source, "kickstart", 1000, "teacher")
    assert record["kickstart"]["steps"] == 500 and record["kickstart"]["initial_weight"] == 1.0
    assert report is None and not torch.equal(model.policy.action_net.bias, source[
        "action_net.bias"])
    finetuned = _model(_run("ppo", "CartPole-v1", "kickstart:init=finetune"))
    _, report, record = kickstart(finetuned, source, "kickstart:init=finetune", 1000, "teacher")
    assert report is not None and report.copied == len(report.tensors) == len(source)
    assert record["condition"] == "kickstart:init=finetune" and record["copied"] == len(source)
    assert record["options"] == {"init": "finetune"} and record["kickstart"]["init"] == "finetune"
    for name, tensor in finetuned.policy.state_dict().items():
        torch.testing.assert_close(tensor, source[name])
    frozen = _model(_run("ppo", "CartPole-v1", "kickstart:init=freeze-features"))
    _, report, _ = kickstart(frozen, source, "kickstart:init=freeze-features", 1000, "teacher")
    assert {t.name for t in report.tensors if t.frozen} == {
        n for n in source if n.startswith("mlp_extractor.")}


def test_a_resumed_run_continues_the_decay(tmp_path, interrupted_train_run):
    source = _teacher_state("ppo", "CartPole-v1")
    run = _run("ppo", "CartPole-v1", "kickstart:steps=256", timesteps=320, eval_freq=64)
    train_run(run, tmp_path / "whole", source_state=source)
    interrupted_train_run(run, tmp_path / "resumed", source_state=source)
    result = train_run(run, tmp_path / "resumed", source_state=source, resume=True)
    assert result.resumed_from == 128 and result.timesteps == 320
    resumed = _scalars(tmp_path / "resumed", "kickstart/weight")
    assert [s for s, _ in resumed if s > 128]  # logged after the resume, too
    whole = _scalars(tmp_path / "whole", "kickstart/weight")
    assert [s for s, _ in resumed] == [s for s, _ in whole]
    assert [v for _, v in resumed] == pytest.approx([v for _, v in whole], abs=1e-7)


# --- errors before the study writes anything ---------------------------------------------

BUDGET = ["--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
          "--seeds", "1", "--eval-episodes", "1"]


@pytest.mark.parametrize("args,message", [
    (["CartPole-v1", "Acrobot-v1", "--conditions", "scratch,kickstart", "--hparams",
      "n_steps=16"],  # Acrobot's rollout (256 x 16 envs) fits the tiny budget
     "rltransfer: error: condition 'kickstart': distillation needs the source's observation "
     "and action spaces, but the source policy observes Box(4,) and acts in Discrete(2) while "
     "the target observes Box(6,) and acts in Discrete(3): use finetune or reinit-head, or a "
     "SOURCE with the target's spaces\n"),
    (["CartPole-v1", "CartPole-v1", "--conditions", "kickstart:weight=-2"],
     "rltransfer: error: condition 'kickstart:weight=-2': weight must be a number > 0, got -2\n"),
], ids=["spaces", "option"])
def test_a_teacher_that_cannot_teach_is_an_error_before_anything_is_written(
        tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    assert main(["run", *args, *BUDGET, "--out", str(out)]) == 2
    assert capsys.readouterr().err == message
    assert not out.exists() or list(out.rglob("*")) == []


def test_kickstart_distils_actor_critics_only():
    # checked with the spec
    assert registry.CONDITIONS["kickstart"].algos == ("ppo", "a2c", "maskableppo")
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'kickstart' works with ppo, a2c, maskableppo only, not dqn: use --algo "
            "ppo, a2c or maskableppo, or drop kickstart")):
        registry.check_algorithm("kickstart:init=finetune", "dqn")
    dqn = build_model(RunSpec(EnvSpec.parse("CartPole-v1"), AgentSpec("dqn", {}, 1, "cpu"),
                              "scratch", 0, 256, 128, 1), make_vec(EnvSpec.parse("CartPole-v1"),
                                                                   1, 0))
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'kickstart' distils an actor-critic's actions: use --algo ppo, a2c "
            "or maskableppo (not dqn)")):
        build_teacher(dqn, dqn.policy.state_dict(), "kickstart")


def test_a_source_with_another_network_does_not_fit():
    model = _model(_run("ppo", "CartPole-v1"))
    other = _model(_run("ppo", "CartPole-v1", policy_kwargs={"net_arch": [32, 32]}))
    spaces = (other.observation_space, other.action_space)
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'kickstart': src does not fit the target's network (action_net.weight: "
            "(2, 32) in the source, (2, 64) in the target): give source and target the same "
            "--algo and --hparams policy_kwargs")):
        check_teacher(model, other.policy.state_dict(), spaces, "kickstart", "src")
    teacher = build_teacher(model, model.policy.state_dict(), "kickstart")
    assert teacher is not model.policy and not teacher.training
