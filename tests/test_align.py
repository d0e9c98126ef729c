"""align (issue 22 §2): fine-tuning with a feature-alignment loss (CORAL, MMD, DANN) toward
observations the source policy collects on the source env. It shrinks its own domain
distance on a visual change (PixelCatch red -> blue) beyond what fine-tuning does; its source
observations are stored and reused on resume; PPO, A2C and SAC train with it (MLP features,
and a torchvision encoder); its TensorBoard tags; SB3's own load() of its model.zip; and the
errors that stop a study before it writes anything."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO, SAC
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rltransfer.cli import main
from rltransfer.env_factory import make_vec
from rltransfer.errors import ConfigError
from rltransfer.io_utils import read_json
from rltransfer.report.runfiles import outside_budget
from rltransfer.specs import AgentSpec, EncoderSpec, EnvSpec, RunSpec
from rltransfer.strategies import align, registry
from rltransfer.strategies.hooks import Context
from rltransfer.training.run import build_model, train_run

RED = EnvSpec("rltransfer/PixelCatch-v0")  # 48x48 RGB frames, a red ball
BLUE = EnvSpec("rltransfer/PixelCatch-BlueBall-v0")  # the same task, a blue ball
# Tiny PPO updates; a high learning rate so 512 steps show what each loss does.
PIXELS = {"policy": "CnnPolicy", "n_steps": 32, "batch_size": 32, "n_epochs": 2,
          "learning_rate": 1e-3}
SMALL = "n=256,measure=64"  # source observations, and held-out ones per env
CONV = "features_extractor.trunk.cnn.0.weight"  # NatureCNN's first layer
MLP = {
    "ppo": ("CartPole-v1", {"n_steps": 32, "batch_size": 32, "n_epochs": 2}),
    "a2c": ("CartPole-v1", {"n_steps": 8}),
    "sac": ("Pendulum-v1", {"learning_starts": 32, "batch_size": 32, "buffer_size": 1000,
                            "policy_kwargs": {"net_arch": [32, 32]}}),
}
LOADS = {"ppo": PPO, "a2c": A2C, "sac": SAC}


pytestmark = pytest.mark.usefixtures("one_thread")


def _pixel_run(condition: str, seed: int = 0, timesteps: int = 512, **extra) -> RunSpec:
    agent = AgentSpec("ppo", {**PIXELS, **extra}, 2, "cpu", EncoderSpec())
    return RunSpec(BLUE, agent, condition, seed, timesteps, timesteps // 2, 2)


@pytest.fixture(scope="module")
def red_source() -> dict[str, torch.Tensor]:
    """A PixelCatch policy whose first layer reads the red channel only, as a policy that
    only ever saw red balls may: blind to a blue ball, so the two envs' features differ."""
    run = _pixel_run("scratch", seed=7)
    state = build_model(run, make_vec(RED, 1, 0)).policy.state_dict()
    state[CONV][:, 1:] = 0
    return state


def _train(run: RunSpec, run_dir, source, **kwargs):
    return train_run(run, run_dir, source_state=source, source_label="red source",
                     source_env=RED if run.env.id.startswith("rltransfer/Pixel") else run.env,
                     **kwargs)


def _scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


# --- the condition and its options --------------------------------------------------------

def test_align_is_a_registry_entry_that_copies_the_source_weights():
    entry = registry.CONDITIONS["align"]
    assert entry.takes == registry.WEIGHTS and entry.copies == registry.ALL
    assert entry.algos == ("ppo", "a2c", "sac") and entry.hooks.endswith("align:HOOKS")
    assert registry.parse("align:method=mmd,n=2000,weight=5").label == "align:weight=5"
    choice = registry.parse("align:method=dann")
    assert align.weight_of(choice) == align.DEFAULT_WEIGHTS["dann"]
    assert registry.split("scratch,align:method=mmd,n=500") == ["scratch",
                                                                "align:method=mmd,n=500"]


@pytest.mark.parametrize("spelled,message", [
    ("align:method=cmd", "condition 'align:method=cmd': method must be coral, mmd or dann, "
                         "got cmd"),
    ("align:weight=0", "condition 'align:weight=0': weight must be a number > 0, got 0"),
    ("align:n=0", "condition 'align:n=0': n must be an integer >= 1, got 0"),
    ("align:measure=1", "condition 'align:measure=1': measure must be an integer >= 2, got 1"),
    ("align:methods=mmd", "condition 'align' has no option 'methods': valid options are "
                          "method, weight, n, measure, norm"),
])
def test_bad_options_are_one_line_errors(spelled, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        registry.parse(spelled)


# --- the loss shrinks the distance on a visual change -------------------------------------

@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, red_source):
    """finetune on the blue target, same seed and budget: what training alone does."""
    folder = tmp_path_factory.mktemp("finetune")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(_pixel_run("finetune"), folder, red_source)
    finally:
        torch.set_num_threads(threads)
    return PPO.load(folder / "model.zip", device="cpu")


def _stored(run_dir) -> align.Observations:
    with np.load(run_dir / align.FILE, allow_pickle=False) as data:
        return align.Observations(data["train"], data["source"], data["target"],
                                  json.loads(str(data["meta"])))


@pytest.mark.parametrize("condition", [f"align:method=coral,weight=100000,{SMALL}",
                                       f"align:{SMALL}",  # mmd
                                       f"align:method=dann,{SMALL}"],
                         ids=["coral", "mmd", "dann"])
def test_align_shrinks_its_distance_on_a_visual_change(tmp_path, red_source, finetuned,
                                                       condition):
    """Red -> blue ball: the distance between the features of held-out source and target
    observations falls well below where it started, and below where fine-tuning alone
    (the same seed and budget) takes it on the same observations."""
    _train(_pixel_run(condition), tmp_path, red_source)
    distance = read_json(tmp_path / "transfer.json")["align"]["distance"]
    alone = align.distance(finetuned, _stored(tmp_path))
    # measured (seeds 0-2): after / before 0.06-0.4, after / finetune's 0.1-0.65; finetune's
    # own after / before 0.58-0.8
    assert distance["after"] < 0.6 * distance["before"], distance
    assert distance["after"] < 0.75 * alone, (distance, alone)
    assert _scalars(tmp_path, "align/distance_before") == [(0, pytest.approx(
        distance["before"]))]
    assert _scalars(tmp_path, "align/distance_after") == [(512, pytest.approx(
        distance["after"]))]


def test_the_target_starts_as_the_source_and_its_features_train(tmp_path, red_source):
    """Every tensor is copied as finetune copies it; the source observations are collected
    by the source policy (red balls on the source env, blue on the target's) and stored;
    after learn() the features extractor is no longer the source's."""
    run = _pixel_run(f"align:{SMALL}", timesteps=128)
    model = build_model(run, make_vec(BLUE, 2, 0))
    context = Context(128, str(BLUE), red_source, "red source", source_env=RED,
                      run_dir=tmp_path)
    report, record = align.HOOKS.initialize(model, run.condition, context)
    assert report.copied == len(report.tensors) == len(red_source)
    for name, tensor in model.policy.state_dict().items():
        assert torch.equal(tensor, red_source[name]), name
    stored = _stored(tmp_path)
    assert stored.train.shape == (256, 3, 48, 48) and stored.train.dtype == np.uint8
    assert stored.source.shape == stored.target.shape == (64, 3, 48, 48)
    red, blue = (np.array([255, 0, 0]), np.array(align_colour(0.67)))
    assert _has(stored.train, red) and not _has(stored.train, blue)
    assert _has(stored.target, blue) and not _has(stored.target, red)
    assert stored.meta["n"] == 256 and stored.meta["source_env"] == str(RED)
    entry = record["align"]
    assert entry["method"] == "mmd" and entry["weight"] == align.DEFAULT_WEIGHTS["mmd"]
    assert entry["features"] == "the features extractor's output (nature-cnn, 512 features)"
    assert entry["source_observations"] == {
        "file": align.FILE, "n": 256, "reused": False, "env": str(RED),
        "collected_by": "the source policy, actions sampled", "source_env_steps": 320,
        "counts_toward_budget": False}
    assert entry["distance"]["observations"] == 64 and entry["distance"]["after"] is None
    assert entry["distance"]["before"] == pytest.approx(align.distance(model, stored))

    _train(run, tmp_path / "run", red_source)
    trained = PPO.load(tmp_path / "run" / "model.zip", device="cpu").policy.state_dict()
    extractor = [n for n in trained if n.startswith("features_extractor.")]
    assert extractor and all(not torch.equal(trained[n], red_source[n]) for n in extractor
                             if n.endswith("weight"))
    assert read_json(tmp_path / "run" / "status.json")["timesteps"] == 128  # no source step


def align_colour(hue: float) -> list[int]:
    from rltransfer.envs.pixel_catch import _rgb

    return _rgb(hue).tolist()


def _has(frames: np.ndarray, colour: np.ndarray) -> bool:
    """Whether any pixel of the (N, 3, H, W) frames has exactly `colour`."""
    return bool((frames == colour.reshape(1, 3, 1, 1)).all(axis=1).any())


def test_the_target_env_is_rebuilt_with_the_studys_observation_options():
    pixels = EnvSpec("Pendulum-v1", {"g": 12.0}, pixels=True, image_size=36, frame_stack=2)
    source = EnvSpec("Pendulum-v1", pixels=True, image_size=36, frame_stack=2)
    assert align.target_spec(Context(1, str(pixels), source_env=source)) == pixels
    stacked = EnvSpec(BLUE.id, frame_stack=4)
    assert align.target_spec(Context(1, str(stacked), source_env=EnvSpec(
        RED.id, frame_stack=4))) == stacked


# --- resume -------------------------------------------------------------------------------

def _mlp_run(algo: str, condition: str, timesteps: int = 256, eval_freq: int = 128,
             seed: int = 0) -> RunSpec:
    env, hparams = MLP[algo]
    return RunSpec(EnvSpec.parse(env), AgentSpec(algo, hparams, 1, "cpu"), condition, seed,
                   timesteps, eval_freq, 2)


def _mlp_source(algo: str) -> dict[str, torch.Tensor]:
    run = _mlp_run(algo, "scratch", seed=7)
    return {k: v.clone() for k, v in build_model(run, make_vec(run.env, 1, 0))
            .policy.state_dict().items()}


def test_a_resumed_run_reuses_its_observations_and_its_classifier(tmp_path, monkeypatch,
                                                                  interrupted_train_run):
    source = _mlp_source("ppo")
    run = _mlp_run("ppo", "align:method=dann,n=200,measure=20", timesteps=320, eval_freq=64)
    interrupted_train_run(run, tmp_path, source_state=source, source_env=run.env)
    path = tmp_path / align.FILE
    written, inode = path.read_bytes(), path.stat().st_ino
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]
    classifier = saved[align.STATE_KEY]["classifier"]
    assert classifier and saved[align.STATE_KEY]["optimizer"]["state"]  # trained, with Adam
    loaded = []
    real = align.Alignment._load_classifier

    def spy(self, optimizer, state):
        state = real(self, optimizer, state)
        loaded.append({k: v.clone() for k, v in self.classifier.state_dict().items()})
        return state

    monkeypatch.setattr(align.Alignment, "_load_classifier", spy)
    result = train_run(run, tmp_path, source_state=source, source_env=run.env, resume=True)
    assert result.resumed_from == 128 and result.timesteps == 320
    assert path.read_bytes() == written and path.stat().st_ino == inode  # not collected again
    record = read_json(tmp_path / "transfer.json")["align"]
    assert record["source_observations"]["reused"] is True
    assert record["classifier"]["resume"] == "kept in checkpoint.pt"
    assert record["distance"]["after"] is not None
    assert len(loaded) == 1 and all(torch.equal(loaded[0][k], classifier[k])
                                    for k in classifier)
    assert [s for s, _ in _scalars(tmp_path, "align/domain_accuracy") if s > 128]
    assert _scalars(tmp_path, "align/distance_before") == [
        (0, pytest.approx(record["distance"]["before"]))]  # logged once, by the first attempt
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:  # SB3's own optimizer state
        optimizer = torch.load(io.BytesIO(archive.read("policy.optimizer.pth")),
                               weights_only=True)
    assert align.STATE_KEY not in optimizer
    PPO.load(tmp_path / "model.zip", device="cpu")


def test_observations_made_for_another_source_are_collected_again(tmp_path):
    source = _mlp_source("ppo")
    run = _mlp_run("ppo", "align:n=50,measure=10", timesteps=64, eval_freq=64)
    train_run(run, tmp_path, source_state=source, source_env=run.env)
    inode, first = (tmp_path / align.FILE).stat().st_ino, _stored(tmp_path).meta
    other = {k: v + 0.01 for k, v in source.items()}
    train_run(run, tmp_path, source_state=other, source_env=run.env, resume=True)
    record = read_json(tmp_path / "transfer.json")["align"]
    assert record["source_observations"]["reused"] is False
    assert (tmp_path / align.FILE).stat().st_ino != inode  # written again
    again = _stored(tmp_path).meta
    assert again["source_sha256"] != first["source_sha256"]
    assert {k: v for k, v in again.items() if k != "source_sha256"} == {
        k: v for k, v in first.items() if k != "source_sha256"}
    (tmp_path / align.FILE).write_bytes(b"PK\x03\x04 cut short")  # damaged: made anew
    train_run(run, tmp_path, source_state=other, source_env=run.env, resume=True)
    assert read_json(tmp_path / "transfer.json")["align"]["source_observations"]["reused"] is False
    assert _stored(tmp_path).meta == again


# --- the algorithms, their logs, SB3's load -----------------------------------------------

@pytest.mark.parametrize("algo,method", [("ppo", "coral"), ("a2c", "mmd"), ("sac", "dann")])
def test_each_algorithm_trains_with_mlp_features_and_logs_the_loss(tmp_path, algo, method):
    source = _mlp_source(algo)
    run = _mlp_run(algo, f"align:method={method},n=200,measure=20", timesteps=192,
                   eval_freq=96)
    _train(run, tmp_path, source)
    record = read_json(tmp_path / "transfer.json")["align"]
    where = "actor.latent_pi" if algo == "sac" else "mlp_extractor.policy_net"
    assert record["features"] == f"the action head's input ({where}: MLP features)"
    assert record["method"] == method and record["distance"]["after"] is not None
    losses = _scalars(tmp_path, "align/loss")
    assert losses and all(np.isfinite(v) and v >= 0 for _, v in losses)
    weights = [v for _, v in _scalars(tmp_path, "align/weight")]
    assert weights == pytest.approx([align.DEFAULT_WEIGHTS[method]] * len(weights))
    accuracy = (_scalars(tmp_path, "align/domain_accuracy") if method == "dann" else [])
    assert all(0 <= v <= 1 for _, v in accuracy) and (method != "dann" or accuracy)
    model = LOADS[algo].load(tmp_path / "model.zip", device="cpu")  # SB3's own load
    assert set(model.policy.state_dict()) == set(source)
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        assert "align" not in archive.read("data").decode().lower()
    stored = np.load(tmp_path / align.FILE)
    assert stored["train"].shape == (200, *model.observation_space.shape)


def test_a_torchvision_encoder_is_aligned(tmp_path):
    """The agent's features extractor is a fine-tuned torchvision trunk (a PixelEncoder):
    its output is what align aligns, and its trunk trains."""
    encoder = EncoderSpec("mobilenet_v3_small")
    agent = AgentSpec("ppo", {**PIXELS, "n_steps": 16, "batch_size": 16, "n_epochs": 1}, 2,
                      "cpu", encoder)
    source_run = RunSpec(RED, agent, "scratch", 7, 64, 32, 1)
    source = build_model(source_run, make_vec(RED, 1, 0)).policy.state_dict()
    run = RunSpec(BLUE, agent, "align:measure=16,n=64", 0, 64, 32, 1)
    _train(run, tmp_path, source)
    record = read_json(tmp_path / "transfer.json")["align"]
    assert record["features"] == ("the features extractor's output (mobilenet_v3_small, "
                                  "1024 features)")
    assert _scalars(tmp_path, "align/loss")
    trained = PPO.load(tmp_path / "model.zip", device="cpu").policy.state_dict()
    first = "features_extractor.trunk.features.0.0.weight"  # the trunk's first conv
    assert not torch.equal(trained[first], source[first])


def test_sac_aligns_its_actors_image_features(tmp_path):
    """SAC on pixels: the actor's NatureCNN is aligned through the actor's optimizer."""
    source_env = EnvSpec("Pendulum-v1", pixels=True, image_size=36)
    target = EnvSpec("Pendulum-v1", {"g": 12.0}, pixels=True, image_size=36)
    agent = AgentSpec("sac", {"policy": "CnnPolicy", "learning_starts": 16, "batch_size": 8,
                              "buffer_size": 200, "train_freq": 4}, 1, "cpu", EncoderSpec())
    source = build_model(RunSpec(source_env, agent, "scratch", 7, 64, 32, 1),
                         make_vec(source_env, 1, 0)).policy.state_dict()
    train_run(RunSpec(target, agent, "align:method=coral,n=32,measure=8", 0, 64, 32, 1),
              tmp_path, source_state=source, source_env=source_env)
    record = read_json(tmp_path / "transfer.json")["align"]
    assert record["features"] == "the features extractor's output (nature-cnn, 512 features)"
    assert record["aligned"].startswith("the actor's features")
    assert record["source_observations"]["env"] == "Pendulum-v1 [pixels 36px]"
    assert _scalars(tmp_path, "align/loss")
    trained = SAC.load(tmp_path / "model.zip", device="cpu").policy.state_dict()
    first = "actor.features_extractor.trunk.cnn.0.weight"
    assert not torch.equal(trained[first], source[first])


def test_features_that_do_not_train_are_refused(red_source):
    frozen = AgentSpec("ppo", PIXELS, 1, "cpu", EncoderSpec(freeze=True, augment="random-shift"))
    run = RunSpec(BLUE, frozen, "align", 0, 128, 64, 1)
    model = build_model(run, make_vec(BLUE, 1, 0))
    with pytest.raises(ConfigError, match=re.escape(
            "condition 'align' trains the policy's features, but the target's have no "
            "trained layer (a frozen encoder, or an MLP without hidden layers)")):
        align.HOOKS.check(model, run.condition, Context(128, str(BLUE), source_env=RED))


# --- errors before the study writes anything ----------------------------------------------

BUDGET = ["--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
          "--seeds", "1", "--eval-episodes", "1"]


@pytest.mark.parametrize("args,message", [
    (["CartPole-v1", "CartPole-v1", "--algo", "dqn", "--conditions", "scratch,align"],
     "condition 'align' works with ppo, a2c, sac only, not dqn: use --algo ppo, a2c or sac, "
     "or drop align"),
    (["CartPole-v1", "MountainCar-v0", "--conditions", "scratch,align", "--hparams",
      "n_steps=16"],
     "condition 'align': the source CartPole-v1 observes Box(4,), the target MountainCar-v0 "
     "Box(2,): align passes both envs' observations through one network, so they must "
     "observe alike: use finetune or reinit-head, or give both the same observation options "
     "(--pixels, --image-size, --frame-stack)"),
    (["CartPole-v1", "CartPole-v1", "--conditions", "align:method=cmd"],
     "condition 'align:method=cmd': method must be coral, mmd or dann, got cmd"),
], ids=["algorithm", "spaces", "option"])
def test_refusals_are_one_line_errors_before_anything_is_written(tmp_path, capsys, args,
                                                                 message):
    out = tmp_path / "runs"
    assert main(["run", *args, *BUDGET, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"rltransfer: error: {message}\n"
    assert not out.exists() or list(out.rglob("*")) == []


def test_a_study_with_align_stores_its_source_observations(tmp_path):
    assert main(["run", "CartPole-v1", "CartPole-v1:length=1.0", "--conditions",
                 "align:measure=20,method=coral,n=100", "--seeds", "1", "--workers",
                 "1", "--timesteps", "256", "--source-timesteps", "256", "--eval-freq",
                 "128", "--eval-episodes", "2", "--n-envs", "2", "--hparams", "n_steps=64",
                 "batch_size=64", "n_epochs=2", "--out", str(tmp_path), "--name", "al"]) == 0
    runs = tmp_path / "al"
    run = runs / "align:measure=20,method=coral,n=100" / "seed_0"
    assert read_json(run / "status.json")["state"] == "done"
    assert read_json(run / "status.json")["timesteps"] == 256  # source steps not counted
    record = read_json(run / "transfer.json")
    assert record["copied"] == len(record["tensors"])
    assert record["align"]["source_observations"]["env"] == "CartPole-v1"
    assert record["align"]["source_observations"]["source_env_steps"] == 120
    assert outside_budget(run) == {"source": 120, "target": 20}  # what the report states
    stored = _stored(run)
    assert stored.meta["target_env"] == "CartPole-v1:length=1"
    steps = [line.split(",")[0] for line in (run / "evaluations.csv").read_text().split()[1:]]
    assert steps == ["0", "128", "256"]  # where any condition's evaluations fall
