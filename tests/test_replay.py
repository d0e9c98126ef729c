"""Replay transfer (issue 11 §2): the target's replay buffer pre-filled by the source policy on
the target env or from a Minari dataset (DQN, SAC, TD3); the prefill counts toward the
budget and keeps scratch's evaluation steps; DQN's epsilon after a transfer; the errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError, TransferError
from rltransfer.io_utils import read_json
from rltransfer.report.runfiles import read_evaluations, read_rows
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.strategies import exploration, replay
from rltransfer.strategies import registry as conditions
from rltransfer.training.run import build_model, train_run
from rltransfer.training.transfer import apply_transfer

SMALL = {"policy_kwargs": {"net_arch": [32, 32]}, "learning_starts": 50, "train_freq": 4,
         "gradient_steps": 1, "buffer_size": 10_000}
CASES = {"dqn": ("CartPole-v1", {**SMALL, "target_update_interval": 20}),
         "sac": ("Pendulum-v1", SMALL), "td3": ("Pendulum-v1", SMALL)}
DATASET = "cartpole/replay-test-v0"


def _run(algo: str, condition: str, seed: int = 0, timesteps: int = 200, **extra) -> RunSpec:
    env, hparams = CASES[algo]
    return RunSpec(EnvSpec.parse(env), AgentSpec(algo, {**hparams, **extra}, 1, "cpu"),
                   condition, seed, timesteps, 50, 2)


def _model(run: RunSpec):
    return build_model(run, make_vec(run.env, run.agent.n_envs, run.seed))


def _source(run: RunSpec) -> dict[str, torch.Tensor]:
    """A policy of the target's network, another seed: what a source's weights look like."""
    return _model(dataclasses.replace(run, seed=run.seed + 1)).policy.state_dict()


# --- the registry ------------------------------------------------------------------------

def test_replay_is_one_registry_entry_that_takes_transitions():
    entry = conditions.CONDITIONS["replay"]
    assert entry.takes == conditions.TRANSITIONS
    assert entry.algos == ("dqn", "sac", "td3", "tqc", "qrdqn", "crossq")
    assert conditions.parse("replay").needs_source
    assert conditions.parse("replay:n=500").label == "replay:n=500"
    dataset = conditions.parse(f"replay:dataset={DATASET}")
    assert not dataset.needs_source and dataset.weights is None
    assert conditions.parse(f"replay:dataset={DATASET},init=finetune").needs_source
    assert conditions.parse("replay:init=reinit-head").weights.condition.name == "reinit-head"
    assert not conditions.needs_source(["scratch", f"replay:dataset={DATASET}"])
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'replay:init=kickstart': init must be one of scratch, finetune, "
            "freeze-features, reinit-head, got kickstart")):
        conditions.parse("replay:init=kickstart")


@pytest.mark.parametrize("text,algo,message", [
    ("replay", "ppo", "condition 'replay' works with dqn, sac, td3, tqc, qrdqn, crossq only, "
                      "not ppo: use --algo dqn, sac, td3, tqc, qrdqn or crossq, or drop replay"),
    ("replay:n=10", "A2C", "condition 'replay' works with dqn, sac, td3, tqc, qrdqn, crossq "
                           "only, not a2c"),
    ("finetune:eps=0.1", "sac", "condition 'finetune:eps=0.1': eps applies to dqn, qrdqn only, "
                                "not sac: drop eps"),
])
def test_algorithms_a_condition_or_option_does_not_fit(text, algo, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        conditions.check_algorithm(text, algo)


# --- the prefill from the source policy ---------------------------------------------------

@pytest.mark.parametrize("algo", ["dqn", "sac", "td3"])
def test_prefill_stores_what_the_source_policy_does_on_the_seeded_target(algo):
    run = _run(algo, "replay:n=40", **({"exploration_final_eps": 0.0} if algo == "dqn" else {}))
    model = _model(run)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    teacher = replay.teacher_policy(model, _source(run), "the source", str(run.env))
    rollouts: list[int] = []
    replay.prefill_from_source(model, teacher, 40, run.timesteps,
                               lambda: rollouts.append(model.num_timesteps))
    buffer = model.replay_buffer
    assert model.num_timesteps == 40 and buffer.pos == 40 and not buffer.full
    assert rollouts == list(range(0, 40, 4))  # SB3's rollout starts: train_freq 4, one env
    box = isinstance(model.action_space, gym.spaces.Box)
    env = make_vec(run.env, 1, run.seed)  # the same seeded env, stepped with the buffer's actions
    obs = env.reset()
    for t in range(40):
        np.testing.assert_array_equal(buffer.observations[t], obs)
        action = buffer.actions[t]
        greedy = teacher.predict(obs, deterministic=True)[0]
        if algo == "dqn":  # epsilon 0: the source Q-network's greedy action
            assert action.reshape(-1).tolist() == greedy.reshape(-1).tolist()
        elif algo == "td3":  # no action noise set: the source actor's action
            np.testing.assert_allclose(action, teacher.scale_action(greedy), atol=1e-6)
        else:  # SAC samples its squashed Gaussian: within a few std of the source's mean
            mean, log_std, _ = teacher.actor.get_action_dist_params(torch.as_tensor(obs))
            z = np.arctanh(np.clip(action, -0.999999, 0.999999))
            assert np.all(np.abs(z - mean.detach().numpy()) <= 6 * np.exp(log_std.detach().numpy()))
        obs, reward, done, info = env.step(model.policy.unscale_action(action) if box
                                           else action.reshape(-1))
        assert buffer.rewards[t] == pytest.approx(reward)
        np.testing.assert_allclose(buffer.next_observations[t],
                                   info[0]["terminal_observation"][None] if done[0] else obs)
        assert bool(buffer.dones[t][0]) == bool(done[0])
    for name, tensor in model.policy.state_dict().items():  # no update: the target as built
        assert torch.equal(tensor, before[name]), name


def test_sac_prefill_samples_rather_than_repeating_the_mean():
    run = _run("sac", "replay:n=20")
    model = _model(run)
    teacher = replay.teacher_policy(model, _source(run), "the source", str(run.env))
    replay.prefill_from_source(model, teacher, 20, run.timesteps, lambda: None)
    obs = model.replay_buffer.observations[:20, 0]
    greedy = teacher.scale_action(teacher.predict(obs, deterministic=True)[0])
    assert not np.allclose(model.replay_buffer.actions[:20, 0], greedy, atol=1e-3)


@pytest.mark.parametrize("algo", ["dqn", "sac", "td3"])
def test_a_replay_run_spends_the_budget_on_scratchs_evaluation_steps(tmp_path, algo):
    source = _source(_run(algo, "scratch"))
    scratch = train_run(_run(algo, "scratch"), tmp_path / "scratch")
    run = _run(algo, "replay:n=60")
    result = train_run(run, tmp_path / "replay", source_state=source, source_label="src")
    assert result.timesteps == scratch.timesteps == run.timesteps
    assert read_json(tmp_path / "replay" / "status.json")["timesteps"] == run.timesteps
    rows = read_rows(tmp_path / "replay" / "evaluations.csv")
    steps = [row["timesteps"] for row in rows]
    scratch_rows = read_rows(tmp_path / "scratch" / "evaluations.csv")
    assert steps == [row["timesteps"] for row in scratch_rows]
    assert steps[:2] == [0, 52] and steps[-1] == run.timesteps  # 52: the first rollout >= 50
    record = read_json(tmp_path / "replay" / "transfer.json")
    assert record["condition"] == "replay:n=60" and record["source"] == "src"
    assert {k: record["replay"][k] for k in ("from", "n", "transitions", "env_steps",
                                             "counts_toward_budget", "rollout_steps")} == {
        "from": "source policy", "n": 60, "transitions": 60, "env_steps": 60,
        "counts_toward_budget": True, "rollout_steps": 4}
    assert rows[0]["mean_return"] == rows[1]["mean_return"]  # no update during the prefill


def test_prefill_rounds_up_to_whole_rollouts_and_defaults_to_a_tenth():
    model = _model(_run("dqn", "replay", train_freq=16))
    assert replay.prefill_steps(model, conditions.parse("replay:n=40"), 1000) == 48
    assert replay.prefill_steps(model, conditions.parse("replay"), 1000) == 112  # 100, rounded


def test_replay_init_finetune_copies_the_weights_then_prefills(tmp_path):
    run = _run("dqn", "replay:init=finetune,n=40")
    source = _source(run)
    train_run(run, tmp_path / "run", source_state=source, source_label="src")
    record = read_json(tmp_path / "run" / "transfer.json")
    assert record["copied"] == record["total"] and record["options"] == {"init": "finetune",
                                                                          "n": 40}
    assert record["replay"]["transitions"] == 40
    assert record["exploration"]["initial_eps"] == record["exploration"]["final_eps"] == 0.05


def test_a_source_that_cannot_act_on_the_target_is_a_one_line_error():
    run = _run("dqn", "replay")
    acrobot = dataclasses.replace(run, env=EnvSpec.parse("Acrobot-v1"))
    message = ("replay: the source cannot act on Acrobot-v1 (q_net.q_net.0.weight is (32,4) in "
               "the source, (32,6) in the target): replay needs a source with the target's "
               "observation and action spaces and network; use replay:dataset=ID, or a weight "
               "condition such as reinit-head")
    with pytest.raises(TransferError, match=re.escape(message)):
        replay.check(_model(acrobot), "replay", 200, _source(run), "the source", "Acrobot-v1")


# --- DQN's epsilon after a transfer -------------------------------------------------------

def _rates(model, steps: int = 60) -> list[float]:
    from stable_baselines3.common.callbacks import BaseCallback

    seen: list[float] = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:  # the rate the step's action was taken with
            seen.append(self.model.exploration_rate)
            return True

    model.learn(steps, callback=Record())
    return seen


def test_epsilon_after_load_finetune_starts_at_the_final_scratch_at_the_initial():
    run = _run("dqn", "finetune", exploration_fraction=1.0, learning_starts=0)
    source = _source(run)
    scratch = _model(dataclasses.replace(run, condition="scratch"))
    assert exploration.apply(scratch, conditions.parse("scratch"))["initial_eps"] == 1.0
    first = _rates(scratch)
    assert first[1] == pytest.approx(1 - 0.95 * 1 / 60) and first[-1] < first[1]
    finetune = _model(run)
    apply_transfer(finetune, source, "finetune")
    assert exploration.apply(finetune, conditions.parse("finetune")) == {
        "initial_eps": 0.05, "final_eps": 0.05, "fraction": 1.0,
        "why": "the copied Q-network acts from the start: the schedule's final epsilon"}
    assert _rates(finetune) == [0.05] * 60  # the first step included
    given = _model(run)
    apply_transfer(given, source, "finetune:eps=0.3")
    exploration.apply(given, conditions.parse("finetune:eps=0.3"))
    rates = _rates(given)
    assert rates[0] == 0.3 and rates[-1] == pytest.approx(0.3 - 0.25 * 59 / 60)
    head = _model(run)
    apply_transfer(head, source, "reinit-head")
    assert exploration.apply(head, conditions.parse("reinit-head"))["initial_eps"] == 1.0


def test_a_finetune_run_records_its_epsilon_schedule(tmp_path):
    run = _run("dqn", "finetune:eps=0.02")
    train_run(run, tmp_path / "run", source_state=_source(run))
    assert read_json(tmp_path / "run" / "transfer.json")["exploration"] == {
        "initial_eps": 0.02, "final_eps": 0.02, "fraction": 0.1, "why": "eps=0.02"}


# --- Minari datasets ----------------------------------------------------------------------

def _episodes(steps: int) -> list:
    """`steps` random steps of CartPole-v1 as Minari's episode buffers (what its DataCollector
    records; the collector itself needs jax, which minari[hdf5] does not install)."""
    from minari.data_collector import EpisodeBuffer

    env = gym.make("CartPole-v1")
    env.action_space.seed(0)
    episodes, done, obs = [], True, None
    for _ in range(steps):
        if done:
            obs, _ = env.reset(seed=len(episodes))
            episodes.append({"observations": [obs], "actions": [], "rewards": [],
                             "terminations": [], "truncations": []})
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        for key, value in (("observations", obs), ("actions", action), ("rewards", reward),
                           ("terminations", terminated), ("truncations", truncated)):
            episodes[-1][key].append(value)
    env.close()
    return [EpisodeBuffer(id=i, observations=np.array(e["observations"]),
                          actions=np.array(e["actions"]), rewards=e["rewards"],
                          terminations=e["terminations"], truncations=e["truncations"],
                          infos={})
            for i, e in enumerate(episodes) if e["actions"]]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    """A local Minari folder holding DATASET: 300 random steps of CartPole-v1."""
    import minari

    folder = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(folder))
        minari.create_dataset_from_buffers(DATASET, _episodes(300), env="CartPole-v1",
                                           algorithm_name="random", author="rltransfer tests",
                                           author_email="tests@example.invalid",
                                           code_permalink="tests/test_replay.py",
                                           description="random CartPole steps",
                                           eval_env="CartPole-v1")
    return folder


def test_dataset_prefill_stores_the_datasets_transitions(datasets, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    model = _model(_run("dqn", f"replay:dataset={DATASET}"))
    added = replay.prefill_from_dataset(model, replay.load_dataset(DATASET), 120)
    buffer = model.replay_buffer
    assert added == 120 and buffer.pos == 120
    expected = [(e.observations[t], e.observations[t + 1], e.actions[t], e.rewards[t],
                 e.terminations[t] or e.truncations[t])
                for e in minari.load_dataset(DATASET).iterate_episodes() for t in range(len(e))]
    for t, (obs, next_obs, action, reward, done) in enumerate(expected[:120]):
        np.testing.assert_array_equal(buffer.observations[t, 0], obs)
        np.testing.assert_array_equal(buffer.next_observations[t, 0], next_obs)
        assert buffer.actions[t, 0, 0] == action and buffer.rewards[t, 0] == reward
        assert bool(buffer.dones[t, 0]) == bool(done)
    assert model.num_timesteps == 0  # collected elsewhere: none of the run's steps


def test_a_dataset_study_needs_no_source_and_keeps_scratchs_steps(datasets, monkeypatch,
                                                                   tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    condition = f"replay:dataset={DATASET},n=200"
    assert main(["run", "CartPole-v1", "CartPole-v1", "--algo", "dqn", "--conditions",
                 f"scratch,{condition}", "--seeds", "1", "--timesteps", "200", "--eval-freq",
                 "100", "--eval-episodes", "2", "--workers", "1", "--out", str(tmp_path),
                 "--name", "s", "--hparams", "learning_starts=0", "train_freq=4",
                 "policy_kwargs={net_arch=[32]}"]) == 0
    study = tmp_path / "s"
    assert not (study / "source").exists()  # CartPole's threshold is registered: no source
    run_dir = study / condition / "seed_0"
    record = read_json(run_dir / "transfer.json")
    assert record["source"] is None and record["replay"] == {
        "from": "minari dataset", "dataset": DATASET, "dataset_transitions": 300, "n": 200,
        "transitions": 200, "env_steps": 0, "counts_toward_budget": False}
    steps = list(read_evaluations(run_dir / "evaluations.csv")[0])
    assert steps == list(read_evaluations(study / "scratch" / "seed_0" / "evaluations.csv")[0])
    assert steps == [0, 100, 200]
    assert read_json(run_dir / "status.json")["timesteps"] == 200


# --- errors through the CLI: one line, exit 2, nothing written ----------------------------

COMMON = ["--timesteps", "200", "--source-timesteps", "200", "--eval-episodes", "2",
          "--workers", "1", "--hparams", "train_freq=4", "policy_kwargs={net_arch=[32]}"]
BAD = [
    (["CartPole-v1", "CartPole-v1", "--conditions", "scratch,replay"],
     "condition 'replay' works with dqn, sac, td3, tqc, qrdqn, crossq only, not ppo: use --algo "
     "dqn, sac, td3, tqc, qrdqn or crossq, or drop replay"),
    (["Pendulum-v1", "Pendulum-v1", "--algo", "sac", "--conditions", "scratch,finetune:eps=0.1"],
     "condition 'finetune:eps=0.1': eps applies to dqn, qrdqn only, not sac: drop eps"),
    (["CartPole-v1", "CartPole-v1", "--algo", "dqn", "--conditions",
      "scratch,replay:dataset=nobody/missing-v0"],
     "replay:dataset=nobody/missing-v0: no Minari dataset 'nobody/missing-v0' in {d} "
     "(MINARI_DATASETS_PATH, else ~/.minari/datasets): get it with `minari download "
     "nobody/missing-v0`, or set MINARI_DATASETS_PATH to the folder that holds it"),
    (["CartPole-v1", "Acrobot-v1", "--algo", "dqn", "--conditions",
      f"scratch,replay:dataset={DATASET}"],
     f"replay:dataset={DATASET}: its observation space Box shape (4,) does not match "
     "Acrobot-v1's Box shape (6,): use a dataset recorded on Acrobot-v1"),
    (["CartPole-v1", "Acrobot-v1", "--algo", "dqn", "--conditions", "scratch,replay"],
     "replay: the CartPole-v1 policy cannot act on Acrobot-v1 (q_net.q_net.0.weight is (32,4) "
     "in the source, (32,6) in the target)"),
    (["CartPole-v1", "CartPole-v1", "--algo", "dqn", "--conditions", "scratch,replay:n=250"],
     "condition 'replay:n=250': the prefill takes 252 env steps (n rounded up to whole "
     "rollouts of 4), which leaves none of --timesteps 200 to learn: lower n or raise "
     "--timesteps"),
    (["CartPole-v1", "CartPole-v1", "--algo", "dqn", "--conditions", "scratch,replay:n=150",
      *COMMON, "buffer_size=100"],
     "condition 'replay:n=150': 152 transitions do not fit the replay buffer (buffer_size "
     "100): lower n or raise --hparams buffer_size"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_replay_input_is_one_line_exit_2_and_writes_nothing(datasets, monkeypatch, capsys,
                                                               tmp_path, args, message):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(datasets))
    out = tmp_path / "runs"
    extra = [] if "--workers" in args else COMMON  # the buffer case ends with its own hparam
    assert main(["run", *args, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message.replace("{d}", str(datasets)) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_help_lists_replay_and_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse's wrap
    assert "conditions to compare: scratch, finetune, freeze-features, reinit-head" in text
    assert ", replay, qdagger" in text  # from the registry
    assert "replay:n=5000 (off-policy: the buffer pre-filled by the source policy on the " \
           "target; replay:dataset=ID from a local Minari dataset), finetune:eps=0.1" in text
