"""qdagger (issue 21 §2): the source's Q-network teaches a DQN/QR-DQN student, offline on
transitions it collects on the target (counted toward the budget), then online with a
distillation loss whose weight decays to 0; its TensorBoard tags, transfer.json, SB3's own
load() of its model.zip, the restart of an interrupted run, and the errors that stop a study
before it writes anything."""

from __future__ import annotations

import dataclasses
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.report.runfiles import read_rows
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.strategies import hooks as strategy
from rltransfer.strategies import qdagger, replay
from rltransfer.strategies import registry as conditions
from rltransfer.training import run as training
from rltransfer.training.run import EvaluationCallback, build_model, train_run

SMALL = {"policy_kwargs": {"net_arch": [32, 32]}, "learning_starts": 50, "train_freq": 4,
         "gradient_steps": 1, "buffer_size": 10_000, "target_update_interval": 20}
QUANTILES = {**SMALL, "policy_kwargs": {"net_arch": [32, 32], "n_quantiles": 10}}


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(condition: str = "scratch", algo: str = "dqn", env: str = "CartPole-v1",
         timesteps: int = 400, eval_freq: int = 100, seed: int = 0, **extra) -> RunSpec:
    hparams = {**(QUANTILES if algo == "qrdqn" else SMALL), **extra}
    return RunSpec(EnvSpec.parse(env), AgentSpec(algo, hparams, 1, "cpu"), condition, seed,
                   timesteps, eval_freq, 2)


def _model(run: RunSpec, logs: Path | None = None):
    return build_model(run, make_vec(run.env, run.agent.n_envs, run.seed), logs)


def _teacher_state(run: RunSpec) -> dict[str, torch.Tensor]:
    """A source Q-network of the target's shape (another seed) that clearly prefers action 0:
    its softmax(Q / 0.1) puts almost all its mass there."""
    model = _model(dataclasses.replace(run, seed=run.seed + 7))
    state = {k: v.clone() for k, v in model.policy.state_dict().items()}
    for name in [n for n in state if n.endswith(".4.bias")]:
        bias = state[name].view(-1, int(model.action_space.n))  # QR-DQN's: quantiles x actions
        bias[:, 0], bias[:, 1:] = 1.0, -1.0
    return state


def _evaluation(run: RunSpec, tmp_path: Path) -> EvaluationCallback:
    env = make_vec(run.env, 2, run.seed + training.EVAL_SEED_OFFSET)
    return EvaluationCallback(env, run.eval_freq, run.eval_episodes, tmp_path / "eval.csv",
                              eval_seed=run.seed + training.EVAL_SEED_OFFSET)


def _context(run: RunSpec, state) -> strategy.Context:
    return strategy.Context(run.timesteps, str(run.env), state, "src")


def _scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _kl(model, teacher, obs) -> float:
    with torch.no_grad():
        student = qdagger.q_values(model.policy, qdagger.network_output(model.policy, obs))
        taught = qdagger.q_values(teacher, qdagger.network_output(teacher, obs))
        return float(qdagger.distillation_loss(student, taught, 0.1))


# --- the condition and its options --------------------------------------------------------

def test_qdagger_is_one_registry_entry_for_dqn_and_qrdqn():
    entry = conditions.CONDITIONS["qdagger"]
    assert entry.takes == conditions.POLICY and entry.needs_source
    assert entry.algos == ("dqn", "qrdqn") and entry.hooks == "rltransfer.strategies.qdagger:HOOKS"
    assert strategy.of("qdagger") is qdagger.HOOKS
    choice = conditions.parse("qdagger:weight=1,temperature=0.5,n=100,decay=performance")
    assert choice.label == "qdagger:n=100,temperature=0.5"  # sorted, defaults left out
    assert choice.weights is None and choice.get("norm") == "freeze"
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'qdagger' works with dqn, qrdqn only, not ppo: use --algo dqn or qrdqn, "
            "or drop qdagger")):
        conditions.check_algorithm("qdagger:n=10", "ppo")


@pytest.mark.parametrize("spelled,message", [
    ("qdagger:temperature=0", "condition 'qdagger:temperature=0': temperature must be a number "
                              "> 0, got 0"),
    ("qdagger:decay=exponential", "condition 'qdagger:decay=exponential': decay must be "
                                  "performance or linear, got exponential"),
    ("qdagger:updates=0", "condition 'qdagger:updates=0': updates must be an integer >= 1, "
                          "got 0"),
    ("qdagger:eps=2", "condition 'qdagger:eps=2': eps must be a number in [0, 1], got 2"),
])
def test_bad_options_are_one_line_errors(spelled, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        conditions.parse(spelled)


# --- the decay ----------------------------------------------------------------------------

def test_the_performance_factor_is_the_share_of_the_way_left_to_the_teacher():
    assert qdagger.performance_factor(10, 110, 10) == 1.0  # where it started
    assert qdagger.performance_factor(60, 110, 10) == pytest.approx(0.5)
    assert qdagger.performance_factor(110, 110, 10) == 0.0  # matched: done
    assert qdagger.performance_factor(150, 110, 10) == 0.0
    assert qdagger.performance_factor(5, 110, 10) == 1.0  # worse than at the start: at most 1
    assert qdagger.performance_factor(-300, -100, -500) == pytest.approx(0.5)  # negative returns
    assert qdagger.performance_factor(-200, -150, -100) == 1.0  # a teacher no better than the
    assert qdagger.performance_factor(-150, -150, -100) == 0.0  # start: 1 until matched


def test_the_performance_weight_follows_evaluations_and_stays_zero_once_it_got_there():
    run = _run()
    model = _model(run)
    evaluation = SimpleNamespace(rows=[{"mean_return": 10.0}])
    loss = qdagger.QDagger(model, qdagger.build_teacher(model, _teacher_state(run), "qdagger"),
                           qdagger.Schedule(2.0, qdagger.PERFORMANCE, None), 0.1, evaluation)
    loss.teacher_return = 110.0
    assert loss.weight() == 2.0  # offline: full weight
    loss.go_online()
    assert loss.weight() == 2.0  # no evaluation since the offline phase
    for student, expected in [(60.0, 1.0), (35.0, 1.5), (120.0, 0.0), (20.0, 0.0)]:
        evaluation.rows.append({"mean_return": student})
        assert loss.weight() == pytest.approx(expected), student
    cut = qdagger.QDagger(model, loss.teacher, qdagger.Schedule(1.0, qdagger.PERFORMANCE, 50),
                          0.1, SimpleNamespace(rows=[{"mean_return": 10.0}]))
    cut.teacher_return = 110.0
    cut.go_online()
    model.num_timesteps += 49
    assert cut.weight() == 1.0
    model.num_timesteps += 1  # steps=50 online env steps: the cutoff
    assert cut.weight() == 0.0


# --- the offline phase --------------------------------------------------------------------

def test_the_offline_phase_counts_its_steps_and_makes_its_updates(tmp_path):
    spelled = "qdagger:n=40,updates=30"
    run = _run(spelled, timesteps=800, train_freq=16, gradient_steps=2,
               target_update_interval=40)
    model = _model(run, tmp_path)  # logging as a run does
    evaluation = _evaluation(run, tmp_path)
    record = qdagger.HOOKS.before_learning(model, conditions.parse(spelled),
                                           _context(run, _teacher_state(run)), evaluation)
    offline = record["qdagger"]["offline"]
    assert model.num_timesteps == 48  # 40 rounded up to whole rollouts of 16
    assert model.replay_buffer.pos == 48 and model._n_updates == 30
    # target_update_interval 40 env steps = 40 x 2 / 16 = 5 gradient steps
    assert {k: offline[k] for k in ("transitions", "env_steps", "counts_toward_budget",
                                    "rollout_steps", "gradient_steps", "target_update_period",
                                    "target_updates")} == {
        "transitions": 48, "env_steps": 48, "counts_toward_budget": True, "rollout_steps": 16,
        "gradient_steps": 30, "target_update_period": 5, "target_updates": 6}
    assert [row["timesteps"] for row in evaluation.rows] == [0]  # eval_freq 100: none yet
    # the target network was updated last after the last offline step: it equals the student
    for online, target in zip(model.q_net.parameters(), model.q_net_target.parameters(),
                              strict=True):
        assert torch.equal(online, target)
    default = _model(_run("qdagger", timesteps=800, train_freq=16, gradient_steps=2))
    assert replay.prefill_steps(default, conditions.parse("qdagger"), 800) == 80  # a tenth
    assert qdagger.offline_updates(default, conditions.parse("qdagger"), 80) == 10  # as online


@pytest.mark.parametrize("spelled,first", [("qdagger:n=40", 0.05), ("qdagger:eps=0.5,n=40", 0.5)])
def test_the_students_epsilon_starts_the_online_phase_at_the_final_or_at_eps(tmp_path, spelled,
                                                                              first):
    run = _run(spelled, timesteps=440, exploration_fraction=0.5)
    model = _model(run, tmp_path)
    record = qdagger.HOOKS.before_learning(model, conditions.parse(spelled),
                                           _context(run, _teacher_state(run)),
                                           _evaluation(run, tmp_path))
    assert record["exploration"]["initial_eps"] == first
    assert record["exploration"]["final_eps"] == 0.05
    rates: list[float] = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:  # the rate the step's action was taken with
            rates.append(self.model.exploration_rate)
            return True

    model.learn(400, reset_num_timesteps=False, callback=Record())
    assert model.num_timesteps == 440 and len(rates) == 400
    # from the online phase's first step, linearly to 0.05 over half of its 400 steps
    expected = [max(0.05, first - (first - 0.05) * t / 200) for t in range(400)]
    assert rates == pytest.approx(expected, abs=1e-9)


def test_the_distillation_moves_the_students_q_values_toward_the_teachers(tmp_path):
    """Same seed, same transitions, same number of updates: with the distillation loss the
    student's softmax(Q / τ) ends close to the teacher's on a fixed batch of observations
    and it picks the teacher's action; with SB3's TD loss alone it does not."""
    run = _run("qdagger:n=64", learning_rate=3e-3)
    state = _teacher_state(run)
    models = []
    for distil in (True, False):
        model = _model(run)
        teacher = qdagger.build_teacher(model, state, "qdagger")
        loss = qdagger.QDagger(model, teacher, qdagger.Schedule(1.0, qdagger.LINEAR, 10), 0.1)
        replay.prefill_from_source(model, teacher, 64, run.timesteps, lambda: None)
        if distil:
            loss.train_offline(60)
        else:  # SB3's update alone (the loss's hook sees no batch)
            model.replay_buffer.sample = type(model.replay_buffer).sample.__get__(
                model.replay_buffer)
            model.train(gradient_steps=60, batch_size=model.batch_size)
        models.append((model, teacher))
    (student, teacher), (td_only, _) = models
    obs = torch.as_tensor(student.replay_buffer.observations[:64, 0])
    assert torch.equal(obs, torch.as_tensor(td_only.replay_buffer.observations[:64, 0]))
    before = _kl(_model(run), teacher, obs)  # the student as built
    distilled, undistilled = _kl(student, teacher, obs), _kl(td_only, teacher, obs)
    assert distilled < 0.25 * before and distilled < 0.25 * undistilled
    with torch.no_grad():
        greedy = student.policy.q_net(obs).argmax(dim=1)
    assert (greedy == 0).float().mean() > 0.95  # the teacher's action, on (almost) every one
    for name, tensor in teacher.state_dict().items():  # the teacher never moves
        assert torch.equal(tensor, state[name]), name


@pytest.mark.parametrize("algo", ["dqn", "qrdqn"])
def test_the_logged_td_loss_is_sb3s_own(algo):
    run = _run("qdagger", algo=algo)
    model = _model(run)
    teacher = qdagger.build_teacher(model, _teacher_state(run), "qdagger")
    loss = qdagger.QDagger(model, teacher, qdagger.Schedule(1.0, qdagger.LINEAR, 10), 0.1)
    replay.prefill_from_source(model, teacher, 64, run.timesteps, lambda: None)
    model.train(gradient_steps=5, batch_size=model.batch_size)
    logged = model.logger.name_to_value
    assert logged["qdagger/td_loss"] == pytest.approx(logged["train/loss"], rel=1e-5)
    assert logged["qdagger/weight"] == 1.0 and logged["qdagger/distill_loss"] > 0
    assert len(loss.offline_losses) == 5  # one (td, distill) pair per gradient step


# --- whole runs -----------------------------------------------------------------------------

def test_a_qdagger_run_spends_the_budget_logs_its_tags_and_saves_a_model_sb3_loads(tmp_path):
    spelled = "qdagger:decay=linear,n=60,steps=200"
    run = _run(spelled)
    state = _teacher_state(run)
    result = train_run(run, tmp_path / "q", source_state=state, source_label="src")
    scratch = train_run(_run(), tmp_path / "s")
    assert result.timesteps == run.timesteps == scratch.timesteps
    assert read_json(tmp_path / "q" / "status.json")["timesteps"] == run.timesteps
    steps = [row["timesteps"] for row in read_rows(tmp_path / "q" / "evaluations.csv")]
    assert steps == [row["timesteps"] for row in read_rows(tmp_path / "s" / "evaluations.csv")]
    record = read_json(tmp_path / "q" / "transfer.json")
    assert record["condition"] == spelled and record["source"] == "src"
    info = record["qdagger"]
    assert info["offline"]["env_steps"] == 60 and info["offline"]["gradient_steps"] == 15
    assert (info["decay"], info["steps"], info["temperature"], info["initial_weight"]) == (
        "linear", 200, 0.1, 1.0)
    assert record["exploration"]["initial_eps"] == record["exploration"]["final_eps"] == 0.05
    weights = _scalars(tmp_path / "q", "qdagger/weight")
    assert weights[0] == (60, 1.0)  # the offline phase, dumped at its last env step
    assert [w for _, w in weights] == sorted((w for _, w in weights), reverse=True)
    assert all(w == pytest.approx(max(0.0, 1 - (s - 60) / 200), abs=0.03) for s, w in weights)
    assert weights[-1][1] == 0.0  # reached 0 at 260 env steps, before the end
    assert _scalars(tmp_path / "q", "qdagger/td_loss")[0][0] == 60
    distill = _scalars(tmp_path / "q", "qdagger/distill_loss")
    assert distill[0][0] == 60 and max(s for s, _ in distill) <= 300  # none once it is 0
    with zipfile.ZipFile(tmp_path / "q" / "model.zip") as archive:
        data = archive.read("data").decode()
    assert "qdagger" not in data and "sample_and_keep" not in data  # nothing of it pickled
    loaded = DQN.load(tmp_path / "q" / "model.zip", device="cpu")  # SB3's own loader
    assert loaded.policy.q_net.q_net[0].weight.shape == (32, 4)
    assert loaded.predict(make_vec(run.env, 1, 0).reset(), deterministic=True)[0].shape == (1,)


def test_the_performance_weight_reaches_zero_when_the_student_matches_the_teacher(tmp_path):
    """MountainCar: a teacher that never reaches the flag scores -200, the lowest return
    there is, so the student matches it at its first evaluation after the offline phase."""
    run = _run("qdagger:n=100", env="MountainCar-v0", timesteps=600, eval_freq=200)
    train_run(run, tmp_path / "q", source_state=_teacher_state(run), source_label="src")
    record = read_json(tmp_path / "q" / "transfer.json")["qdagger"]
    assert record["teacher_return"] == -200.0 and record["decay"] == "performance"
    weights = _scalars(tmp_path / "q", "qdagger/weight")
    assert weights[0] == (100, 1.0)  # offline
    assert [w for s, w in weights if s > 200] and all(w == 0.0 for s, w in weights if s > 200)


def test_qrdqn_distils_its_mean_over_quantiles(tmp_path):
    run = _run("qdagger:n=60", algo="qrdqn", timesteps=200)
    result = train_run(run, tmp_path / "q", source_state=_teacher_state(run))
    assert result.timesteps == 200
    record = read_json(tmp_path / "q" / "transfer.json")["qdagger"]
    assert record["q_values"] == "mean over the quantiles"
    assert record["offline"]["distill_loss"]["last_tenth"] < record["offline"][
        "distill_loss"]["first_tenth"]


def test_an_interrupted_qdagger_run_restarts_from_the_start(tmp_path, monkeypatch):
    run = _run("qdagger:n=60")
    state = _teacher_state(run)

    class StopAt200(EvaluationCallback):
        def _evaluate(self) -> None:
            if self.num_timesteps >= 200:
                raise KeyboardInterrupt
            super()._evaluate()

    with monkeypatch.context() as patch:
        patch.setattr(training, "EvaluationCallback", StopAt200)
        with pytest.raises(KeyboardInterrupt):
            train_run(run, tmp_path / "q", source_state=state)
    assert read_json(tmp_path / "q" / "status.json")["state"] == "interrupted"
    notes: list = []
    result = train_run(run, tmp_path / "q", source_state=state, resume=True,
                       notify=lambda kind, value: notes.append((kind, value)))
    start = dict(notes)["start"]
    assert start["resumed_from"] == 0 and start["note"] == (
        "restarts from the start (dqn would also need its replay buffer, which checkpoints "
        "do not hold)")
    assert result.resumed_from is None and result.timesteps == run.timesteps
    steps = [row["timesteps"] for row in read_rows(tmp_path / "q" / "evaluations.csv")]
    assert steps == [0, 100, 200, 300, 400]  # once each: the first attempt's rows are gone
    assert read_json(tmp_path / "q" / "transfer.json")["qdagger"]["offline"]["env_steps"] == 60
    assert len(list((tmp_path / "q").glob("events.out.tfevents.*"))) == 1


# --- errors before the study writes anything ----------------------------------------------

def test_a_source_that_cannot_teach_is_a_one_line_error():
    run = _run("qdagger")
    model = _model(run)
    other = _model(_run(policy_kwargs={"net_arch": [16]}))
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'qdagger': src does not fit the target's Q-network (q_net.q_net.0.weight "
            "is (16,4) in the source, (32,4) in the target): give source and target the same "
            "--algo and --hparams policy_kwargs")):
        qdagger.HOOKS.check(model, conditions.parse("qdagger"), strategy.Context(
            400, "CartPole-v1", other.policy.state_dict(), "src",
            (other.observation_space, other.action_space)))
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'qdagger:n=400': the teacher's 400 transitions (n rounded up to whole "
            "rollouts of 4) take all of --timesteps 400, which leaves no online phase: lower n "
            "or raise --timesteps")):
        qdagger.HOOKS.check(model, conditions.parse("qdagger:n=400"), _context(run, None))


BUDGET = ["--timesteps", "200", "--source-timesteps", "200", "--eval-freq", "100",
          "--eval-episodes", "2", "--seeds", "1", "--workers", "1", "--hparams",
          "train_freq=4", "gradient_steps=1", "learning_starts=50",
          "policy_kwargs={net_arch=[32]}"]


@pytest.mark.parametrize("args,message", [
    (["CartPole-v1", "CartPole-v1", "--conditions", "scratch,qdagger"],
     "rltransfer: error: condition 'qdagger' works with dqn, qrdqn only, not ppo: use --algo "
     "dqn or qrdqn, or drop qdagger\n"),
    (["CartPole-v1", "Acrobot-v1", "--algo", "dqn", "--conditions", "scratch,qdagger"],
     "rltransfer: error: condition 'qdagger': distillation needs the source's observation and "
     "action spaces, but the source policy observes Box(4,) and acts in Discrete(2) while the "
     "target observes Box(6,) and acts in Discrete(3): use finetune or reinit-head, or a SOURCE "
     "with the target's spaces\n"),
], ids=["ppo", "spaces"])
def test_a_refused_qdagger_study_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    assert main(["run", *args, *BUDGET, "--out", str(out)]) == 2
    assert capsys.readouterr().err == message
    assert not out.exists() or list(out.rglob("*")) == []


def test_a_qdagger_study_through_the_cli(tmp_path):
    assert main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--algo", "dqn",
                 "--conditions", "scratch,qdagger:n=40", *BUDGET, "--out", str(tmp_path),
                 "--name", "q"]) == 0
    study = tmp_path / "q"
    run_dir = study / "qdagger:n=40" / "seed_0"
    assert read_json(run_dir / "status.json")["state"] == "done"
    record = read_json(run_dir / "transfer.json")
    assert record["qdagger"]["offline"]["env_steps"] == 40
    assert record["qdagger"]["teacher"] == record["source"] != ""
    assert [row["timesteps"] for row in read_rows(run_dir / "evaluations.csv")] == [0, 100, 200]
    summary = read_json(study / "summary.json")
    assert set(summary["metrics"]["conditions"]) == {"scratch", "qdagger:n=40"}
