"""Off-dynamics RL with domain classifiers (issue 22 §1): the policy trains on the source
env's transitions with the reward corrected by two classifiers; the budget, the evaluation
grid and the evaluations are the target's, as scratch's; Δr is near 0 when source and target
are one env and clearly negative on source transitions under a gravity change; init=finetune
starts from the source's weights; a restarted run ends as an uninterrupted one; bad input is
a one-line error before anything is written."""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import CallbackList
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rltransfer.training.run as training
from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.report.runfiles import read_rows
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.strategies import darc
from rltransfer.strategies import registry as conditions
from rltransfer.strategies.hooks import Context
from rltransfer.training.run import build_model, train_run

PENDULUM, HEAVY = "Pendulum-v1", "Pendulum-v1:g=60"
# One update per target vec step (x source_ratio), small networks and batches: the
# classifiers see 8 envs' target transitions, so none is one episode they could memorize.
SMALL = {"policy_kwargs": {"net_arch": [32, 32]}, "learning_starts": 0, "train_freq": 1,
         "gradient_steps": 1, "batch_size": 64, "buffer_size": 20_000}


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(condition: str, timesteps: int = 800, n_envs: int = 8, seed: int = 0,
         algo: str = "sac", **extra) -> RunSpec:
    return RunSpec(EnvSpec.parse(PENDULUM), AgentSpec(algo, {**SMALL, **extra}, n_envs, "cpu"),
                   condition, seed, timesteps, timesteps // 2, 2)


def _model(run: RunSpec):
    return build_model(run, make_vec(run.env, run.agent.n_envs, run.seed))


def _scalars(run_dir, tag: str) -> list[float]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


# --- the registry ------------------------------------------------------------------------

def test_darc_is_a_registry_entry_that_takes_the_source_env():
    entry = conditions.CONDITIONS["darc"]
    assert entry.takes == conditions.ENV and entry.algos == ("sac", "td3", "tqc")
    assert entry.needs_source  # with init=finetune it may
    choice = conditions.parse("darc")
    assert not choice.needs_source and choice.weights is None  # the source env only
    assert (choice.get("source_ratio"), choice.get("warmup"), choice.get("noise"),
            choice.get("init")) == (10, None, 1.0, "scratch")
    finetuned = conditions.parse("darc:init=finetune,source_ratio=4")
    assert finetuned.needs_source and finetuned.weights.condition.name == "finetune"
    assert finetuned.label == "darc:init=finetune,source_ratio=4"
    assert not conditions.needs_source(["scratch", "darc:warmup=0"])
    assert darc.warmup_steps(choice, 1_000) == 100 and darc.warmup_steps(
        conditions.parse("darc:warmup=0"), 1_000) == 0


@pytest.mark.parametrize("text,message", [
    ("darc:source_ratio=0", "condition 'darc:source_ratio=0': source_ratio must be an integer "
                            ">= 1, got 0"),
    ("darc:warmup=-1", "condition 'darc:warmup=-1': warmup must be an integer >= 0, got -1"),
    ("darc:noise=-0.5", "condition 'darc:noise=-0.5': noise must be a number >= 0, got -0.5"),
    ("darc:init=kickstart", "condition 'darc:init=kickstart': init must be one of scratch, "
                            "finetune, freeze-features, reinit-head, got kickstart"),
    ("darc:ratio=3", "condition 'darc' has no option 'ratio': valid options are source_ratio, "
                     "warmup, noise, init."),
])
def test_bad_darc_option_values_are_refused(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        conditions.parse(text)


# --- the classifiers ---------------------------------------------------------------------

def _random_transitions(env: str, n: int, seed: int) -> ReplayBuffer:
    """`n` transitions of uniformly random actions on 8 copies of `env`, stored as SB3
    stores them (actions scaled to [-1, 1])."""
    venv = make_vec(EnvSpec.parse(env), 8, seed)
    buffer = ReplayBuffer(n, venv.observation_space, venv.action_space, device="cpu",
                          n_envs=8)
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    for _ in range(n // 8):
        scaled = rng.uniform(-1, 1, (8, 1)).astype(np.float32)
        new, rewards, dones, infos = venv.step(2 * scaled)
        buffer.add(obs, new, scaled, rewards, dones, infos)
        obs = new
    return buffer


# seeds 0-2 gave |Δr| <= 0.05 for one env, Δr from -0.47 to -0.61 under 6 x gravity
@pytest.mark.parametrize("target,low,high", [(PENDULUM, -0.1, 0.1), (HEAVY, -10, -0.25)])
def test_delta_r_of_trained_classifiers_is_0_for_one_env_and_negative_under_more_gravity(
        target, low, high):
    np.random.seed(0)  # the buffers' sampling
    source, held_out = _random_transitions(PENDULUM, 2_000, 1), _random_transitions(PENDULUM,
                                                                                    800, 3)
    targets = _random_transitions(target, 2_000, 2)
    classifiers = darc.Classifiers(3, 1, noise=1.0, device=torch.device("cpu"), seed=0)
    for _ in range(400):
        _, stats = classifiers.update(source.sample(64), targets.sample(64))
    delta_r = float(classifiers.delta_r(held_out.sample(800)).mean())
    assert low < delta_r < high, delta_r
    # Δr is the (s, a, s') classifier's logit minus the (s, a) one's, both "target"; the
    # first is the second's plus the residual's, without noise when scored
    batch = held_out.sample(16)
    sas, sa = classifiers.inputs(batch)
    assert sas.shape == (16, 3 + 1 + 3) and sa.shape == (16, 3 + 1)
    delta_r = classifiers.delta_r(batch)
    assert not classifiers.sa.training and not classifiers.residual.training
    with torch.no_grad():
        sas_logit, sa_logit = classifiers.logits(sas, sa)
        torch.testing.assert_close(sas_logit - sa_logit, delta_r)
        torch.testing.assert_close(classifiers.residual(sas), delta_r)
    assert classifiers.sa.noise == classifiers.residual.noise == 1.0


# --- a run: Δr, the budget, the evaluations, TensorBoard, model.zip ------------------------

def test_darc_runs_on_scratchs_budget_and_grid_and_its_correction_sees_the_gravity(tmp_path):
    run = _run("darc:source_ratio=4")
    heavy = train_run(run, tmp_path / "heavy", source_env=EnvSpec.parse(HEAVY))
    same = train_run(run, tmp_path / "same", source_env=EnvSpec.parse(PENDULUM))
    scratch = train_run(dataclasses.replace(run, condition="scratch"), tmp_path / "scratch")

    # the budget is target steps: scratch's, on scratch's evaluation grid
    assert heavy.timesteps == same.timesteps == scratch.timesteps == 800
    steps = [r["timesteps"] for r in read_rows(tmp_path / "scratch" / "evaluations.csv")]
    assert steps == [0, 400, 800]
    for folder in ("heavy", "same"):
        assert [r["timesteps"] for r in read_rows(tmp_path / folder / "evaluations.csv")] == steps
        assert read_json(tmp_path / folder / "status.json")["timesteps"] == 800

    records = {f: read_json(tmp_path / f / "transfer.json") for f in ("heavy", "same")}
    for folder, record in records.items():
        assert record["condition"] == "darc:source_ratio=4" and record["source"] is None
        assert record["normalization"] is None
        own = record["darc"]
        assert own["source_steps"] == 4 * 800 and own["target_steps"] == 800
        assert own["updates"] == 4 * 800 // 8  # one per source vec step
        # updates after the vec steps that end at 80, 88, ..., 800 target steps
        assert own["warmup"] == 80 and own["corrected_updates"] == 4 * ((800 - 80) // 8 + 1)
        assert own["source_env"] == (HEAVY if folder == "heavy" else PENDULUM)
    heavy_last, same_last = records["heavy"]["darc"]["last_updates"], \
        records["same"]["darc"]["last_updates"]
    assert heavy_last["n"] == same_last["n"] == darc.RECENT
    # seeds 0-3 gave |Δr| <= 0.03 for one env, Δr from -0.23 to -0.38 under 6 x gravity
    assert abs(same_last["delta_r"]) < 0.08  # one env: nothing to correct
    assert heavy_last["delta_r"] < -0.15  # source transitions the target would not make
    assert heavy_last["sas_accuracy"] > 0.65 > same_last["sas_accuracy"]

    # TensorBoard: the classifiers, the correction, the source steps
    tags = ("darc/sas_loss", "darc/sa_loss", "darc/sas_accuracy", "darc/sa_accuracy",
            "darc/delta_r", "darc/corrected", "darc/source_steps")
    for tag in tags:
        assert _scalars(tmp_path / "heavy", tag), tag
    assert all(0 <= v <= 1 for v in _scalars(tmp_path / "heavy", "darc/sas_accuracy"))
    assert _scalars(tmp_path / "heavy", "darc/source_steps")[-1] == 4 * 800
    assert np.mean(_scalars(tmp_path / "heavy", "darc/delta_r")[-3:]) < -0.15

    # model.zip is a plain SAC: SB3 loads it, with the trained weights and nothing of darc
    loaded = SAC.load(tmp_path / "heavy" / "model.zip", device="cpu")
    with zipfile.ZipFile(tmp_path / "heavy" / "model.zip") as archive:
        data = json.loads(archive.read("data"))
    assert "train" not in data and "replay_buffer" not in data
    assert loaded.gradient_steps == 1 and loaded.num_timesteps == 800
    assert loaded.policy.actor.mu.weight.abs().sum() > 0


def test_the_source_acts_with_the_target_policy_and_the_router_is_gone_after_learn():
    run = _run("darc:source_ratio=3,warmup=0", timesteps=48, n_envs=2, learning_starts=10)
    model = _model(run)
    choice = conditions.parse("darc:source_ratio=3,warmup=0")
    context = Context(48, PENDULUM, source_env=EnvSpec.parse(HEAVY))
    darc.HOOKS.check(model, choice, context)
    own_buffer = model.replay_buffer
    callbacks = darc.HOOKS.callbacks(model, choice, context)
    state = darc._RUNS[model]
    calls = []
    sample = state.sample

    def watched(batch_size, env=None):
        calls.append(model.num_timesteps)
        return sample(batch_size, env)

    state.sample = watched
    model.learn(48, callback=CallbackList(callbacks))
    # 3 source vec steps per target vec step
    assert state.source.pos == 3 * 24 and own_buffer.pos == 24
    assert state.source_steps == 3 * 48
    # SB3 updates after each vec step past learning_starts, 3 x its gradient_steps
    assert len(calls) == 3 * len([t for t in range(2, 49, 2) if t > 10])
    assert model.replay_buffer is own_buffer and "train" not in vars(model)
    record = darc.HOOKS.after_learning(model, choice, context)["darc"]
    assert record["source_steps"] == 144 and record["updates"] == len(calls)
    assert record["corrected_updates"] == len(calls)  # warmup=0: from the first update
    assert model not in darc._RUNS


@pytest.mark.parametrize("algo,extra", [
    ("td3", {"noise_type": "normal", "noise_std": 0.1}),  # its action noise acts on both envs
    ("tqc", {"policy_kwargs": {"net_arch": [32, 32], "n_quantiles": 5}}),
])
def test_td3_and_tqc_train_on_the_source_and_save_what_their_own_load_reads(tmp_path, algo,
                                                                            extra):
    from rltransfer.training import algos

    run = _run("darc:source_ratio=2", timesteps=64, n_envs=2, algo=algo, learning_starts=16,
               **extra)
    result = train_run(run, tmp_path / algo, source_env=EnvSpec.parse(HEAVY))
    record = read_json(tmp_path / algo / "transfer.json")["darc"]
    assert result.timesteps == 64 and record["source_steps"] == 128
    assert record["updates"] == 2 * len(range(18, 65, 2))  # after each vec step past 16
    assert record["last_updates"]["n"] == min(record["updates"], darc.RECENT)
    loaded = algos.get_algorithm(algo).cls.load(tmp_path / algo / "model.zip", device="cpu")
    assert loaded.num_timesteps == 64


# --- init=finetune ---------------------------------------------------------------------------

def test_init_finetune_starts_from_the_source_weights_and_then_trains():
    condition = "darc:init=finetune,source_ratio=2"
    run = _run(condition, timesteps=64, n_envs=2)
    model = _model(run)
    source = {k: v.clone() for k, v in _model(dataclasses.replace(run, seed=7)
                                              ).policy.state_dict().items()}
    choice = conditions.parse(condition)
    context = Context(64, PENDULUM, source, "src", source_env=EnvSpec.parse(HEAVY))
    report, record = darc.HOOKS.start(model, choice, context)
    assert record["condition"] == condition and record["source"] == "src"
    assert record["darc"]["init"] == "finetune" and report.copied == len(report.tensors)
    for name, tensor in model.policy.state_dict().items():
        torch.testing.assert_close(tensor, source[name], msg=name)
    model.learn(64, callback=CallbackList(darc.HOOKS.callbacks(model, choice, context)))
    trained = model.policy.state_dict()
    assert not torch.equal(trained["actor.mu.weight"], source["actor.mu.weight"])
    assert not torch.equal(trained["critic.qf0.0.weight"], source["critic.qf0.0.weight"])


# --- resume ------------------------------------------------------------------------------

def test_an_interrupted_darc_run_restarts_and_ends_as_an_uninterrupted_one(tmp_path,
                                                                           monkeypatch):
    run = _run("darc:source_ratio=2", timesteps=64, n_envs=2, learning_starts=16)
    run = dataclasses.replace(run, eval_freq=16)
    heavy = EnvSpec.parse(HEAVY)

    class StopAt32(training.EvaluationCallback):
        def _evaluate(self) -> None:
            super()._evaluate()
            if self.num_timesteps >= 32:
                raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(training, "EvaluationCallback", StopAt32)
        with pytest.raises(KeyboardInterrupt):
            train_run(run, tmp_path / "run", source_env=heavy)
    assert read_json(tmp_path / "run" / "status.json")["state"] == "interrupted"
    notes = []
    result = train_run(run, tmp_path / "run", source_env=heavy, resume=True,
                       notify=lambda kind, value: notes.append((kind, value)))
    assert result.resumed_from is None and result.timesteps == 64
    assert notes[0][1]["note"] == ("restarts from the start (sac would also need its replay "
                                   "buffer, which checkpoints do not hold)")
    whole = train_run(run, tmp_path / "whole", source_env=heavy)
    assert whole.final_return == result.final_return

    def rows(folder):
        return [(r["timesteps"], r["mean_return"])
                for r in read_rows(tmp_path / folder / "evaluations.csv")]

    assert rows("run") == rows("whole") and len(rows("run")) == 5  # none doubled
    assert read_json(tmp_path / "run" / "transfer.json") == \
        read_json(tmp_path / "whole" / "transfer.json")


# --- refusals ------------------------------------------------------------------------------

def test_a_source_with_other_spaces_is_refused():
    model = _model(_run("darc", n_envs=1))
    choice = conditions.parse("darc")
    for source, message in [
        ("MountainCarContinuous-v0",
         "condition 'darc': the target's policy learns from MountainCarContinuous-v0's "
         "transitions, but it observes Box(2,) and acts in Box(1,) while Pendulum-v1 observes "
         "Box(3,) and acts in Box(1,): give darc a SOURCE with the target's spaces (the same "
         "env with other parameters), or use finetune"),
        ("Pendulum-v1:max_torque=3",
         "condition 'darc': the target's policy learns from Pendulum-v1:max_torque=3's "
         "transitions, but it observes Box(3,) and acts in Box(1,) while Pendulum-v1 observes "
         "Box(3,) and acts in Box(1,) (their bounds differ): give darc a SOURCE with the "
         "target's spaces"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            darc.HOOKS.check(model, choice, Context(800, PENDULUM,
                                                    source_env=EnvSpec.parse(source)))


BAD = [
    (["--conditions", "scratch,darc"],
     "condition 'darc' works with sac, td3, tqc only, not ppo: use --algo sac, td3 or tqc, "
     "or drop darc"),
    (["--algo", "sac", "--conditions", "scratch,darc:source_ratio=0"],
     "condition 'darc:source_ratio=0': source_ratio must be an integer >= 1, got 0"),
    (["--algo", "sac", "--conditions", "scratch,darc:warmup=400"],
     "condition 'darc:warmup=400': warmup=400 leaves none of --timesteps 400 with the reward "
     "correction: lower warmup or raise --timesteps"),
    (["--algo", "sac", "--conditions", "scratch,darc", "--hparams", "normalize=true"],
     "condition 'darc' does not work with --hparams normalize: the source env's transitions "
     "would be scaled by statistics of the target's observations and rewards: drop normalize "
     "(or set normalize=false)"),
    (["--algo", "sac", "--conditions", "scratch,darc", "--hparams", "n_steps=3"],
     "condition 'darc' corrects one-step rewards sampled from SB3's ReplayBuffer, not a "
     "NStepReplayBuffer: drop n_steps and replay_buffer_class from --hparams"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_darc_input_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, args, message):
    out = tmp_path / "runs"
    assert main(["run", PENDULUM, HEAVY, *args, "--timesteps", "400", "--source-timesteps",
                 "200", "--eval-episodes", "2", "--workers", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_spaces_that_differ_stop_the_study_before_anything_is_written(capsys, tmp_path):
    out = tmp_path / "runs"
    assert main(["run", "MountainCarContinuous-v0", PENDULUM, "--algo", "sac", "--conditions",
                 "scratch,darc", "--timesteps", "400", "--source-timesteps", "200",
                 "--eval-episodes", "2", "--workers", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "condition 'darc': the target's policy learns from MountainCarContinuous-v0's" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


# --- the CLI -------------------------------------------------------------------------------

def test_a_darc_study_from_the_command_line(tmp_path):
    assert main(["run", HEAVY, PENDULUM, "--algo", "sac", "--conditions",
                 "scratch,darc:source_ratio=2", "--seeds", "1", "--timesteps", "200",
                 "--source-timesteps", "200", "--eval-freq", "100", "--eval-episodes", "2",
                 "--workers", "1", "--threshold", "-200", "--out", str(tmp_path), "--name", "d",
                 "--hparams", "learning_starts=50", "train_freq=4", "batch_size=32",
                 "policy_kwargs={net_arch=[16]}"]) == 0
    study = tmp_path / "d"
    run_dir = study / "darc:source_ratio=2" / "seed_0"
    assert read_json(run_dir / "status.json")["state"] == "done"
    assert read_json(run_dir / "status.json")["timesteps"] == 200
    record = read_json(run_dir / "transfer.json")["darc"]
    assert record["source_env"] == HEAVY and record["source_steps"] == 400
    steps = [r["timesteps"] for r in read_rows(run_dir / "evaluations.csv")]
    assert steps == [r["timesteps"] for r in read_rows(study / "scratch" / "seed_0" /
                                                       "evaluations.csv")] == [0, 100, 200]
    assert "darc:source_ratio=2" in read_json(study / "summary.json")["metrics"]["conditions"]
    # the report states the source steps next to the target budget
    summary = read_json(study / "summary.json")
    assert summary["runs"]["darc:source_ratio=2"]["outside_budget"] == {"source": [400, 400]}
    assert "outside_budget" not in summary["runs"]["scratch"]
    assert ("darc:source_ratio=2 also took 400 source env steps per run, outside the target "
            "budget") in (study / "report.md").read_text()
