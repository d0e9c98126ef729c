"""Jump-start RL (issue 21 §2): the source policy guides the first h steps of each training
episode, h on a curriculum or drawn at random; the guide's steps count toward the budget,
evaluations are the learner's alone, the horizon is logged, a resumed run restarts as
other off-policy runs do, and bad input is a one-line error before anything is written."""

from __future__ import annotations

import dataclasses
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rltransfer.training.run as training
from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.report.runfiles import read_rows
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.strategies import jsrl
from rltransfer.strategies import registry as conditions
from rltransfer.strategies.hooks import Context
from rltransfer.strategies.teacher import rebuild
from rltransfer.training.run import build_model, train_run


class Ones(gym.Env):
    """Reward 1 for action 1, 0 for action 0, for 10 steps (its time limit); it observes the
    share of them played. A guide that always takes 1 is recognisable in the buffer."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t / 10, np.float32), float(action == 1), False, False, {}


ONES = "JsrlOnes-v0"
gym.register(ONES, entry_point=Ones, max_episode_steps=10, reward_threshold=9.0)

# No updates (gradient_steps=0) and no epsilon: the learner acts as its Q-network says.
STILL = {"policy_kwargs": {"net_arch": []}, "learning_starts": 0, "train_freq": 1,
         "gradient_steps": 0, "buffer_size": 1_000, "exploration_initial_eps": 0.0,
         "exploration_final_eps": 0.0}
PENDULUM = {"policy_kwargs": {"net_arch": [32, 32]}, "learning_starts": 0, "train_freq": 4,
            "gradient_steps": 0, "buffer_size": 1_000}  # the learner samples its Gaussian


def _run(condition: str, env: str = ONES, algo: str = "dqn", timesteps: int = 200,
         n_envs: int = 1, **hparams) -> RunSpec:
    base = PENDULUM if algo == "sac" else STILL
    return RunSpec(EnvSpec.parse(env), AgentSpec(algo, {**base, **hparams}, n_envs, "cpu"),
                   condition, 0, timesteps, 40, 2)


def _model(run: RunSpec):
    return build_model(run, make_vec(run.env, run.agent.n_envs, run.seed))


def _always(model, action: int) -> None:
    """`model`'s Q-networks (one Linear each) prefer `action` whatever they observe."""
    with torch.no_grad():
        for net in (model.q_net.q_net[0], model.q_net_target.q_net[0]):
            net.weight.zero_()
            net.bias.copy_(torch.tensor([5.0, -5.0] if action == 0 else [-5.0, 5.0]))


def _guide_of(run: RunSpec) -> dict[str, torch.Tensor]:
    """A source policy that always takes action 1."""
    source = _model(dataclasses.replace(run, seed=7))
    _always(source, 1)
    return {k: v.clone() for k, v in source.policy.state_dict().items()}


class _Idle(BaseCallback):
    def _on_step(self) -> bool:
        return True


def _learn(model, condition: str, source, timesteps: int) -> dict:
    """The hooks as training calls them (`rltransfer.training.run`), on a built model."""
    choice = conditions.parse(condition)
    context = Context(timesteps, "the target", source, "src")
    callbacks = jsrl.HOOKS.callbacks(model, choice, context)
    record = jsrl.HOOKS.before_learning(model, choice, context, _Idle())
    model.learn(timesteps - model.num_timesteps, callback=CallbackList(callbacks),
                reset_num_timesteps=model.num_timesteps == 0)
    return record["jsrl"]


def _episodes(model, env: int = 0) -> list[list[int]]:
    """The actions of each whole episode env `env` played, from the replay buffer."""
    buffer = model.replay_buffer
    episodes, current = [], []
    for action, done in zip(buffer.actions[:buffer.pos, env].reshape(-1),
                            buffer.dones[:buffer.pos, env], strict=True):
        current.append(int(action))
        if done:
            episodes.append(current)
            current = []
    return episodes


def _guided(episode: list[int]) -> int:
    """The guide's steps of an episode: its leading 1s (the learner here only takes 0)."""
    h = episode.index(0) if 0 in episode else len(episode)
    assert all(a == 0 for a in episode[h:]), episode  # the learner keeps the episode's rest
    return h


def _scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


# --- the condition ------------------------------------------------------------------------

def test_jsrl_is_a_registry_entry_for_off_policy_algorithms():
    entry = conditions.CONDITIONS["jsrl"]
    assert entry.takes == conditions.POLICY and entry.algos == conditions.OFF_POLICY
    choice = conditions.parse("jsrl")
    assert choice.needs_source and choice.weights is None
    assert (choice.get("switch"), choice.get("stages"), choice.get("horizon"),
            choice.get("tolerance"), choice.get("norm")) == ("curriculum", 10, None, 0.05,
                                                             "freeze")
    assert conditions.parse("jsrl:switch=random,horizon=50").label == \
        "jsrl:horizon=50,switch=random"
    assert jsrl.schedule(10, 3) == [10, 5, 0]
    assert jsrl.schedule(200, 10) == [200, 178, 156, 133, 111, 89, 67, 44, 22, 0]
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'jsrl:stages=1': stages must be an integer >= 2, got 1")):
        conditions.parse("jsrl:stages=1")
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'jsrl:switch=reverse': switch must be curriculum or random, got "
            "reverse")):
        conditions.parse("jsrl:switch=reverse")


# --- who acts -----------------------------------------------------------------------------

@pytest.mark.parametrize("tolerance,guided,reached", [
    # threshold 10 - 0.5 x 10 = 5: h = 5 returns 5, enough for the last stage
    (0.5, [10] * 5 + [5] * 5 + [0] * 5, [(0, 10, 50), (1, 5, 100), (2, 0, 150)]),
    # threshold 6: the learner, who takes 0, never brings h = 5 up to it
    (0.4, [10] * 5 + [5] * 10, [(0, 10, 50), (1, 5, 100)]),
])
def test_the_guide_acts_for_the_first_h_steps_of_each_episode_on_the_curriculum(
        tolerance, guided, reached):
    run = _run("jsrl")
    model = _model(run)
    _always(model, 0)
    record = _learn(model, f"jsrl:stages=3,tolerance={tolerance}", _guide_of(run), 200)
    # 5 episodes of the guide alone (its measurement), then the curriculum's
    assert [_guided(e) for e in _episodes(model)] == [10] * 5 + guided
    assert model.num_timesteps == 200
    assert record["measurement"] == {"episodes": 5, "mean_length": 10.0, "mean_return": 10.0,
                                     "env_steps": 50, "counts_toward_budget": True,
                                     "rollout_steps": 1}
    assert record["horizon"] == 10 and record["schedule"] == [10, 5, 0]
    assert record["threshold"] == pytest.approx(10 - tolerance * 10)
    assert [(s["stage"], s["horizon"], s["step"]) for s in record["stages_reached"]] == reached
    assert record["guide_steps"] == 50 + sum(guided) and record["env_steps"] == 200
    assert "_sample_action" not in vars(model)  # nothing of the switch is left to pickle


def test_each_env_counts_its_own_episode_and_random_draws_h_in_0_to_H():
    run = _run("jsrl:switch=random", n_envs=2)
    model = _model(run)
    _always(model, 0)
    record = _learn(model, "jsrl:switch=random", _guide_of(run), 800)
    assert record["horizon"] == 10 and "schedule" not in record  # H: the guide's episodes
    assert record["measurement"]["env_steps"] == 60  # 3 rounds of 2 envs: 6 episodes >= 5
    draws = []
    for env in (0, 1):
        episodes = _episodes(model, env)
        assert [_guided(e) for e in episodes[:3]] == [10, 10, 10]  # the measurement
        draws.append([_guided(e) for e in episodes[3:]])
    assert len(draws[0]) == len(draws[1]) == 37
    every = draws[0] + draws[1]
    assert 0 <= min(every) and max(every) <= 10 and len(set(every)) >= 8  # uniform in 0..10
    assert draws[0] != draws[1]  # each env's episodes have their own h
    assert record["guide_steps"] == 60 + sum(every)


def test_random_with_a_given_horizon_measures_nothing_and_the_guide_starts_each_episode():
    condition = "jsrl:horizon=3,switch=random"
    run = _run(condition)
    model = _model(run)
    _always(model, 0)
    record = _learn(model, condition, _guide_of(run), 200)
    assert record["measurement"] is None and record["horizon_from"] == "horizon=3"
    guided = [_guided(e) for e in _episodes(model)]
    assert len(guided) == 20 and set(guided) == {0, 1, 2, 3}  # from the first step on
    assert record["guide_steps"] == sum(guided) and record["env_steps"] == 200


def test_a_box_guide_acts_as_its_deterministic_actor_through_sbs_scaling():
    condition = "jsrl:horizon=50,stages=2"
    run = _run(condition, env="Pendulum-v1", algo="sac", timesteps=400)
    model = _model(run)
    source = _model(dataclasses.replace(run, seed=7)).policy.state_dict()
    record = _learn(model, condition, source, 400)
    assert record["measurement"]["env_steps"] == 200  # one episode: a quarter is 100 steps
    guide = rebuild(model, source)
    buffer = model.replay_buffer
    obs = buffer.observations[:400, 0]
    expected = guide.scale_action(guide.predict(obs, deterministic=True)[0])
    # the measurement's episode and the first 50 steps of the next: the guide's action
    np.testing.assert_allclose(buffer.actions[:250, 0], expected[:250], atol=1e-5)
    differs = np.abs(buffer.actions[250:400, 0] - expected[250:]).max(axis=1) > 1e-3
    assert differs.mean() > 0.9  # then the learner, sampling its own
    assert [s["step"] for s in record["stages_reached"]] == [200]  # its window never filled


# --- a run: the budget, the evaluations, TensorBoard, resume ---------------------------

def test_a_jsrl_run_spends_the_budget_on_scratchs_steps_and_evaluates_the_learner_alone(
        tmp_path, monkeypatch):
    # seed 1: a learner whose greedy actions score 7 of the guide's 10
    run = dataclasses.replace(_run("jsrl", train_freq=4), seed=1)
    source = _guide_of(run)
    evaluating, guide_calls = [False], []
    evaluate, act = training.EvaluationCallback._evaluate, jsrl.Jump.guide_actions

    def watched_evaluate(self):
        evaluating[0] = True
        try:
            evaluate(self)
        finally:
            evaluating[0] = False

    def watched_act(self):
        guide_calls.append(evaluating[0])
        return act(self)

    monkeypatch.setattr(training.EvaluationCallback, "_evaluate", watched_evaluate)
    monkeypatch.setattr(jsrl.Jump, "guide_actions", watched_act)
    result = train_run(run, tmp_path / "jsrl", source_state=source, source_label="src")
    scratch = train_run(dataclasses.replace(run, condition="scratch"), tmp_path / "scratch")
    assert guide_calls and not any(guide_calls)  # the guide acted, never in an evaluation
    assert result.timesteps == scratch.timesteps == 200
    assert read_json(tmp_path / "jsrl" / "status.json")["timesteps"] == 200
    rows = read_rows(tmp_path / "jsrl" / "evaluations.csv")
    scratch_rows = read_rows(tmp_path / "scratch" / "evaluations.csv")
    # no update (gradient_steps=0): the learner is scratch's policy as built, and so are
    # its evaluations, though the guide (return 10) played in training
    assert [(r["timesteps"], r["mean_return"]) for r in rows] == \
        [(r["timesteps"], r["mean_return"]) for r in scratch_rows]
    assert [r["timesteps"] for r in rows] == [0, 40, 80, 120, 160, 200]
    record = read_json(tmp_path / "jsrl" / "transfer.json")
    assert record["condition"] == "jsrl" and record["source"] == "src"
    measured = record["jsrl"]["measurement"]
    assert measured["env_steps"] == 52 and measured["mean_return"] == 10.0  # 50, to a rollout
    assert rows[0]["mean_return"] == 7.0  # a guide in an evaluation would show
    assert record["jsrl"]["env_steps"] == 200 and record["jsrl"]["schedule"][0] == 10
    horizons = _scalars(tmp_path / "jsrl", "jsrl/horizon")
    assert horizons and horizons[0][1] == 10
    assert {v for _, v in horizons} <= set(record["jsrl"]["schedule"])
    fractions = _scalars(tmp_path / "jsrl", "jsrl/guide_fraction")
    assert fractions[0] == (40, 1.0)  # the measurement: the guide alone
    assert all(0 <= v <= 1 for _, v in fractions)


def test_an_interrupted_jsrl_run_restarts_from_the_start_as_off_policy_runs_do(tmp_path,
                                                                                monkeypatch):
    run = _run("jsrl:stages=3", gradient_steps=1, train_freq=4, exploration_initial_eps=1.0,
               exploration_final_eps=0.05, learning_starts=20)
    source = _guide_of(run)

    class StopAt100(training.EvaluationCallback):
        def _evaluate(self) -> None:
            super()._evaluate()
            if self.num_timesteps >= 100:
                raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(training, "EvaluationCallback", StopAt100)
        with pytest.raises(KeyboardInterrupt):
            train_run(run, tmp_path / "run", source_state=source, source_label="src")
    assert read_json(tmp_path / "run" / "status.json")["state"] == "interrupted"
    notes = []
    result = train_run(run, tmp_path / "run", source_state=source, source_label="src",
                       resume=True, notify=lambda kind, value: notes.append((kind, value)))
    assert result.resumed_from is None and result.timesteps == 200
    assert notes[0][1]["note"] == ("restarts from the start (dqn would also need its replay "
                                   "buffer, which checkpoints do not hold)")
    whole = train_run(run, tmp_path / "whole", source_state=source, source_label="src")
    assert whole.final_return == result.final_return

    def rows(folder):
        return [(r["timesteps"], r["mean_return"])
                for r in read_rows(tmp_path / folder / "evaluations.csv")]

    assert rows("run") == rows("whole")  # no row doubled, the same run as uninterrupted
    assert read_json(tmp_path / "run" / "transfer.json") == \
        read_json(tmp_path / "whole" / "transfer.json")


# --- the CLI -------------------------------------------------------------------------------

def test_a_jsrl_study_from_the_command_line(tmp_path):
    assert main(["run", ONES, ONES, "--algo", "dqn", "--conditions", "scratch,jsrl:stages=3",
                 "--seeds", "1", "--timesteps", "200", "--source-timesteps", "200",
                 "--eval-freq", "100", "--eval-episodes", "2", "--workers", "1", "--out",
                 str(tmp_path), "--name", "j", "--hparams", "learning_starts=0",
                 "train_freq=4", "policy_kwargs={net_arch=[16]}"]) == 0
    study = tmp_path / "j"
    run_dir = study / "jsrl:stages=3" / "seed_0"
    assert read_json(run_dir / "status.json")["state"] == "done"
    assert read_json(run_dir / "status.json")["timesteps"] == 200
    record = read_json(run_dir / "transfer.json")["jsrl"]
    assert len(record["schedule"]) == 3 and record["schedule"][-1] == 0
    assert record["measurement"]["counts_toward_budget"] and record["env_steps"] == 200
    steps = [r["timesteps"] for r in read_rows(run_dir / "evaluations.csv")]
    assert steps == [r["timesteps"] for r in read_rows(study / "scratch" / "seed_0" /
                                                       "evaluations.csv")] == [0, 100, 200]
    assert "jsrl:stages=3" in read_json(study / "summary.json")["metrics"]["conditions"]


def test_a_guide_with_another_network_is_refused_before_the_study():
    run = _run("jsrl")
    model = _model(run)
    other = _model(dataclasses.replace(run, agent=dataclasses.replace(
        run.agent, hparams={**STILL, "policy_kwargs": {"net_arch": [8]}})))
    context = Context(200, ONES, other.policy.state_dict(), "the source",
                      (other.observation_space, other.action_space))
    with pytest.raises(ConfigError) as error:
        jsrl.HOOKS.check(model, conditions.parse("jsrl"), context)
    assert str(error.value) == (
        "condition 'jsrl': the source does not fit the target's network (q_net.q_net.2.bias: "
        "(2,) in the source, missing in the target): give source and target the same --algo "
        "and --hparams policy_kwargs")


BAD = [
    ([ONES, ONES, "--conditions", "scratch,jsrl"],
     "condition 'jsrl' works with dqn, sac, td3, tqc, qrdqn, crossq only, not ppo: use --algo "
     "dqn, sac, td3, tqc, qrdqn or crossq, or drop jsrl"),
    (["CartPole-v1", "Acrobot-v1", "--algo", "dqn", "--conditions",
      "scratch,jsrl:horizon=5,switch=random"],
     "condition 'jsrl:horizon=5,switch=random': the guide is the source policy acting on "
     "Acrobot-v1, but it observes Box(4,) and acts in Discrete(2) while Acrobot-v1 observes "
     "Box(6,) and acts in Discrete(3): use finetune or reinit-head, or a SOURCE with the "
     "target's spaces"),
    ([ONES, ONES, "--algo", "dqn", "--conditions", "scratch,jsrl:stages=3,switch=random"],
     "condition 'jsrl:stages=3,switch=random': stages applies to switch=curriculum only: drop "
     "stages"),
    (["CartPole-v1", "CartPole-v1", "--algo", "dqn", "--conditions", "scratch,jsrl"],
     "condition 'jsrl': before training, the guide plays whole episodes of CartPole-v1 to "
     "measure its length and return, and one may last 500 steps (its time limit) on each of "
     "1 envs: raise --timesteps to at least 1,000, or give jsrl:horizon=H,switch=random"),
    ([ONES, ONES, "--algo", "dqn", "--conditions", "scratch,jsrl:tolerance=2"],
     "condition 'jsrl:tolerance=2': tolerance must be a number in [0, 1], got 2"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_jsrl_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, args, message):
    out = tmp_path / "runs"
    assert main(["run", *args, "--timesteps", "400", "--source-timesteps", "200",
                 "--eval-episodes", "2", "--workers", "1", "--hparams", "train_freq=4",
                 "policy_kwargs={net_arch=[32]}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []
