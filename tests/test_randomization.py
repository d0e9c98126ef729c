"""Domain randomization: distributions as parameter values, drawn at every reset, recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rltransfer.envs import get_family
from rltransfer.envs.randomization import Distribution, is_distribution, parse_distribution

from rltransfer.cli import main
from rltransfer.env_factory import make_env, make_vec, resolve
from rltransfer.errors import ParameterError
from rltransfer.io_utils import read_json
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training.contexts import FILE as CONTEXTS
from rltransfer.training.run import EVAL_SEED_OFFSET, train_run

RANDOM_POLE = "CartPole-v1:length=uniform(0.25,1.0)"


def _contexts(spec: str, seed: int, episodes: int, key: str = "length") -> list[float]:
    env = make_env(EnvSpec.parse(spec))
    values = []
    for episode in range(episodes):
        _, info = env.reset(seed=seed if episode == 0 else None)
        values.append(info["context"][key])
    env.close()
    return values


@pytest.mark.parametrize("text,kind,args,canonical", [
    ("uniform(0.25, 1.0)", "uniform", (0.25, 1.0), "uniform(0.25,1)"),
    ("loguniform(0.1,10)", "loguniform", (0.1, 10.0), "loguniform(0.1,10)"),
    ("choice(0.5,1.0,2.0)", "choice", (0.5, 1.0, 2.0), "choice(0.5,1,2)"),
    ("normal(0.5,0.1)", "normal", (0.5, 0.1), "normal(0.5,0.1)"),
])
def test_parse_distribution_and_canonical_text(text, kind, args, canonical):
    distribution = parse_distribution(text)
    assert distribution == Distribution(kind, args)
    assert distribution.text == canonical
    assert parse_distribution(canonical) == distribution
    assert is_distribution(text) and is_distribution(distribution)


def test_support():
    assert parse_distribution("uniform(0.25,1)").support() == (0.25, 1.0)
    assert parse_distribution("choice(2,0.5,1)").support() == (0.5, 2.0)
    assert parse_distribution("normal(1,0.1)").support() == pytest.approx((0.7, 1.3))


@pytest.mark.parametrize("text", ["1.5", "abc", "uniform"])
def test_what_is_not_a_distribution(text):
    assert parse_distribution(text) is None
    assert not is_distribution(text) and not is_distribution(1.5)


@pytest.mark.parametrize("text,message", [
    ("uniform(1,0.25)", "'uniform(1,0.25)': the low bound must be below the high bound"),
    ("uniform(0.5,0.5)", "'uniform(0.5,0.5)': the low bound must be below the high bound"),
    ("uniform(1)", "'uniform(1)': uniform takes 2 values, got 1: write e.g. uniform(0.25,1)"),
    ("loguniform(0,1)", "'loguniform(0,1)': loguniform needs bounds above 0"),
    ("normal(1,0)", "'normal(1,0)': sigma must be above 0"),
    ("choice()", "'choice()': choice takes one or more values, got 0"),
    ("gauss(0,1)", "'gauss(0,1)': unknown distribution 'gauss': use uniform(a,b), "
                   "loguniform(a,b), choice(v1,v2,...) or normal(mu,sigma)"),
    ("uniform(a,1)", "'uniform(a,1)': uniform(...) takes numbers separated by commas"),
])
def test_malformed_distributions(text, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        parse_distribution(text)


def test_env_spec_keeps_the_canonical_text_and_round_trips():
    spec = EnvSpec.parse("CartPole-v1:length=uniform(0.25, 1.0),masspole=0.2")
    assert spec.params == {"length": "uniform(0.25,1)", "masspole": 0.2}
    assert str(spec) == "CartPole-v1:length=uniform(0.25,1),masspole=0.2"
    assert spec.slug == "CartPole-v1_length_uniform_0.25_1_masspole_0.2"
    assert EnvSpec.parse(str(spec)) == spec
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["params"] == {"length": "uniform(0.25,1)", "masspole": 0.2}
    assert EnvSpec.from_dict(data) == spec


def test_a_distribution_changes_the_cache_key_and_fixed_ones_do_not_move():
    agent = AgentSpec("ppo", {"n_steps": 32}, 1)

    def key(env: str) -> str:
        return RunSpec(EnvSpec.parse(env), agent, "scratch", 0, 1000, 100, 5).cache_key

    assert key(RANDOM_POLE) != key("CartPole-v1:length=1.0")
    assert key(RANDOM_POLE) != key("CartPole-v1:length=uniform(0.25,0.9)")
    assert key(RANDOM_POLE) == key("CartPole-v1:length=uniform(0.25, 1)")
    assert EnvSpec.parse("CartPole-v1:length=1.0").to_dict() == {"id": "CartPole-v1",
                                                                "params": {"length": 1.0}}


def test_grid_in_an_env_spec_points_to_matrix():
    with pytest.raises(ParameterError, match=re.escape(
            "length=grid(...) in 'CartPole-v1:length=grid(0.25,1,4)' is a sweep of several envs: "
            "give it to matrix --sources/--targets, which expand it")):
        EnvSpec.parse("CartPole-v1:length=grid(0.25,1,4)")


def test_randomizable_parameters():
    assert get_family("CartPole").parameter("length").randomizable
    lander = get_family("LunarLander")
    assert [p.name for p in lander.parameters if p.randomizable] == [
        "gravity", "wind_power", "turbulence_power", "main_engine_power", "side_engine_power"]
    pixel = get_family("PixelCatch")
    assert [p.name for p in pixel.parameters if p.randomizable] == [
        "ball_speed", "ball_drift", "paddle_speed", "ball_hue", "background"]
    assert not any(p.randomizable for p in get_family("DoorKey").parameters)


def test_pixel_catch_draws_its_visuals_per_episode():
    env = make_env(EnvSpec.parse("rltransfer/PixelCatch-v0:background=uniform(0,0.8),"
                                 "ball_hue=choice(0,0.67)"))
    env.reset(seed=0)
    backgrounds, hues = set(), set()
    for _ in range(6):
        frame, info = env.reset()
        grey = round(info["context"]["background"] * 255)
        assert (frame[-1] == grey).all()  # the bottom row, under the paddle, is background
        hue = info["context"]["ball_hue"]
        blue = hue == 0.67
        assert tuple(env.unwrapped._ball_colour) == ((5, 0, 255) if blue else (255, 0, 0))
        backgrounds.add(grey)
        hues.add(hue)
    assert len(backgrounds) == 6 and hues == {0.0, 0.67}
    env.close()


def test_same_seed_same_contexts_other_seed_others():
    first = _contexts(RANDOM_POLE, 3, 6)
    assert first == _contexts(RANDOM_POLE, 3, 6)
    assert first != _contexts(RANDOM_POLE, 4, 6)
    assert len(set(first)) == 6 and all(0.25 <= v <= 1.0 for v in first)


def test_every_distribution_stays_in_its_values():
    assert all(0.1 <= v <= 0.4 for v in _contexts("CartPole-v1:length=loguniform(0.1,0.4)", 0, 30))
    chosen = _contexts("CartPole-v1:length=choice(0.5,1,2)", 0, 30)
    assert set(chosen) == {0.5, 1.0, 2.0}
    # normal(0.06, 1) on [0.05, 10]: most draws are below 0.05 and clipped to it
    clipped = _contexts("CartPole-v1:length=normal(0.06,1)", 0, 40)
    assert min(clipped) == 0.05 and clipped.count(0.05) > 10 and max(clipped) <= 10


def test_the_env_runs_with_the_drawn_value_every_episode():
    env = make_env(EnvSpec.parse("CartPole-v1:length=uniform(0.25,1.0),masspole=0.2"))
    env.reset(seed=0)
    seen = set()
    for _ in range(4):
        _, info = env.reset()
        length = info["context"]["length"]
        assert env.unwrapped.length == length and env.unwrapped.masspole == 0.2
        assert env.unwrapped.polemass_length == pytest.approx(0.2 * length)  # derive ran
        _, _, _, _, step_info = env.step(0)
        assert step_info["context"] == {"length": length}
        seen.add(length)
    assert len(seen) == 4
    env.close()


def test_the_context_generator_is_not_the_envs_own():
    env = make_env(EnvSpec.parse(RANDOM_POLE))
    env.reset(seed=5)
    before = env.unwrapped.np_random.bit_generator.state
    _, info = env.reset()
    assert info["context"]["length"] == _contexts(RANDOM_POLE, 5, 2)[1]
    plain = make_env(EnvSpec.parse("CartPole-v1"))
    plain.reset(seed=5)
    assert before == plain.unwrapped.np_random.bit_generator.state  # no draw from it


def test_lunar_lander_gravity_is_drawn_into_each_episodes_world():
    pytest.importorskip("Box2D")
    env = make_env(EnvSpec.parse("LunarLander-v3:gravity=uniform(-11,-2)"))
    seen = set()
    for seed in (0, None, None):
        _, info = env.reset(seed=seed)
        drawn = info["context"]["gravity"]
        assert -11 <= drawn <= -2 and env.unwrapped.world.gravity.y == pytest.approx(drawn)
        seen.add(drawn)
    assert len(seen) == 3
    env.close()


def test_contexts_do_not_depend_on_the_policy_of_an_env_that_draws_while_stepping():
    """LunarLander draws from its np_random at every step (the engines' dispersion), so
    contexts drawn from it would follow the actions taken; the randomizer's own do not."""
    pytest.importorskip("Box2D")

    def contexts(action: int) -> list[float]:
        env = make_env(EnvSpec.parse("LunarLander-v3:side_engine_power=uniform(0.2,1.5)"))
        _, info = env.reset(seed=3)
        drawn = [info["context"]["side_engine_power"]]
        for _ in range(3):
            for _ in range(40):
                env.step(action)
            _, info = env.reset()
            drawn.append(info["context"]["side_engine_power"])
        env.close()
        return drawn

    assert contexts(0) == contexts(2)  # no-op against the main engine: different np_random use


def test_lunar_lander_keeps_the_fixed_power_while_the_other_is_drawn():
    pytest.importorskip("Box2D")
    env = make_env(EnvSpec.parse("LunarLander-v3:main_engine_power=20,"
                                 "side_engine_power=uniform(0.2,1.5)"))
    env.reset(seed=0)
    for _ in range(3):
        _, info = env.reset()
        step = env.unwrapped.step
        constants = step.__func__.__globals__
        assert constants["MAIN_ENGINE_POWER"] == 20.0
        assert constants["SIDE_ENGINE_POWER"] == info["context"]["side_engine_power"]
    env.close()


def test_every_evaluation_plays_the_same_contexts(tmp_path):
    run = RunSpec(EnvSpec.parse(RANDOM_POLE), AgentSpec("ppo", {"n_steps": 64, "batch_size": 64,
                                                                "n_epochs": 1}, 2),
                  "scratch", 0, 256, 128, 3)
    train_run(run, tmp_path)
    record = read_json(tmp_path / CONTEXTS)
    steps = [int(line.split(",")[0])
             for line in (tmp_path / "evaluations.csv").read_text().splitlines()[1:]]
    assert record["evaluations"] == steps == [0, 128, 256]
    assert record["randomized"] == {"length": "uniform(0.25,1)"}
    # one eval env per episode, env i seeded with eval seed + i: its first context
    eval_seed = run.seed + EVAL_SEED_OFFSET
    assert record["evaluation"] == [{"length": _contexts(RANDOM_POLE, eval_seed + i, 1)[0]}
                                    for i in range(3)]
    training = record["training"]
    assert training["episodes"] > 5
    assert 0.25 <= training["length"]["min"] < training["length"]["mean"] \
        < training["length"]["max"] <= 1.0


def test_a_resumed_run_continues_its_context_record(tmp_path, interrupted_train_run):
    run = RunSpec(EnvSpec.parse(RANDOM_POLE), AgentSpec("ppo", {"n_steps": 64, "batch_size": 64,
                                                                "n_epochs": 1}, 2),
                  "scratch", 0, 256, 128, 2)
    interrupted_train_run(run, tmp_path)
    interrupted = read_json(tmp_path / CONTEXTS)
    assert interrupted["evaluations"] == [0, 128]
    result = train_run(run, tmp_path, resume=True)
    assert result.resumed_from == 128
    resumed = read_json(tmp_path / CONTEXTS)
    assert resumed["evaluations"] == [0, 128, 256]
    assert resumed["evaluation"] == interrupted["evaluation"]
    assert resumed["training"]["episodes"] > interrupted["training"]["episodes"]
    assert resumed["training"]["length"]["min"] <= interrupted["training"]["length"]["min"]


def test_a_vec_env_reseeded_replays_its_contexts():
    venv = make_vec(EnvSpec.parse(RANDOM_POLE), 2, seed=7)
    rounds = []
    for _ in range(2):
        venv.seed(7)
        venv.reset()
        rounds.append([info["context"] for info in venv.reset_infos])
    assert rounds[0] == rounds[1] and rounds[0][0] != rounds[0][1]
    venv.close()


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _study(tmp_path: Path, source: str, target: str) -> int:
    return main(["run", source, target, "--seeds", "1", "--conditions", "scratch,finetune",
                 "--out", str(tmp_path), "--name", "dr",
                 "--timesteps", "256", "--source-timesteps", "256", "--eval-freq", "128",
                 "--hparams", "n_steps=64", "batch_size=64", "n_epochs=2", "--n-envs", "2",
                 "--eval-episodes", "2"])


def test_cli_study_with_a_randomized_source(tmp_path):
    assert _study(tmp_path, RANDOM_POLE, "CartPole-v1:length=1.0") == 0
    study = tmp_path / "dr"
    record = read_json(study / "study.json")
    assert record["spec"]["env"]["source"]["params"] == {"length": "uniform(0.25,1)"}
    source = read_json(study / "source" / CONTEXTS)
    assert source["randomized"] == {"length": "uniform(0.25,1)"} and len(source["evaluation"]) == 2
    assert not (study / "scratch" / "seed_0" / CONTEXTS).exists()  # the target is fixed
    assert "`length`: uniform(0.25,1) → 1 m" in (study / "report.md").read_text()


def test_cli_study_with_a_randomized_target_evaluates_every_condition_alike(tmp_path):
    assert _study(tmp_path, "CartPole-v1", "CartPole-v1:length=uniform(0.5,1.5)") == 0
    study = tmp_path / "dr"
    scratch, finetune = (read_json(study / c / "seed_0" / CONTEXTS) for c in ("scratch",
                                                                             "finetune"))
    assert scratch["evaluation"] == finetune["evaluation"] and len(scratch["evaluation"]) == 2
    assert scratch["evaluations"] == finetune["evaluations"] == [0, 128, 256]
    assert not (study / "source" / CONTEXTS).exists()


@pytest.mark.parametrize("source,message", [
    ("CartPole-v1:length=uniform(0.01,1)",
     "length=uniform(0.01,1) in CartPole-v1:length=uniform(0.01,1) reaches outside its valid "
     "range [0.05, 10] m: keep both bounds inside"),
    ("CartPole-v1:length=choice(0.5,20)",
     "length=20 is outside its valid range [0.05, 10] m in CartPole-v1:length=choice(0.5,20): "
     "keep every value of choice(0.5,20) inside the range"),
    ("CartPole-v1:length=normal(20,1)",
     "length=normal(20,1) in CartPole-v1:length=normal(20,1) has its mean outside its valid "
     "range [0.05, 10] m: keep mu inside (draws are clipped to the range)"),
    ("LunarLander-v3:enable_wind=choice(0,1)",
     "LunarLander.enable_wind cannot be randomized: it is a gym.make argument, fixed when the env "
     "is built; parameters of LunarLander that can be: gravity, wind_power, turbulence_power, "
     "main_engine_power, side_engine_power"),
    ("MiniGrid-DoorKey-5x5-v0:size=choice(5,6)",
     "DoorKey.size cannot be randomized: it picks the registered env id, fixed when the env is "
     "built; DoorKey has no parameter that can be randomized"),
    ("Pendulum-v1:max_torque=uniform(1,3)",
     "Pendulum.max_torque cannot be randomized: it sets the bounds of the env's observation or "
     "action space, which stay fixed for a run; parameters of Pendulum that can be: g, m, l, dt"),
    ("CartPole-v1:length=uniform(1,0.25)",
     "length=uniform(1,0.25) in 'CartPole-v1:length=uniform(1,0.25)': the low bound must be "
     "below the high bound: write uniform(low,high), e.g. uniform(0.25,1)"),
    ("CartPole-v1:length=grid(0.25,1,3)",
     "length=grid(...) in 'CartPole-v1:length=grid(0.25,1,3)' is a sweep of several envs"),
])
def test_cli_errors_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, source, message):
    if source.startswith("MiniGrid"):
        pytest.importorskip("minigrid")
    if source.startswith("LunarLander"):
        pytest.importorskip("Box2D")
    out = tmp_path / "runs"
    out.mkdir()
    target = source.split(":")[0]
    code = main(["run", source, target, "--timesteps", "256", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _snapshot(out) == []


def test_resolve_returns_the_canonical_text():
    family, base_id, params = resolve(EnvSpec.parse("CartPole-v1:length=choice(0.5, 1)"))
    assert family.name == "CartPole" and base_id == "CartPole-v1"
    assert params == {"length": "choice(0.5,1)"}


def test_a_space_bound_not_declared_as_one_is_refused_when_the_env_is_built():
    """bounds_space marks the catalog's space bounds; check_spaces is the net for one that a
    family forgot to mark: it builds the env at each end of the distribution."""
    import dataclasses

    import gymnasium as gym
    from rltransfer.envs.randomization import check_spaces

    pendulum = get_family("Pendulum")
    unmarked = dataclasses.replace(pendulum, parameters=tuple(
        dataclasses.replace(p, bounds_space=False) for p in pendulum.parameters))
    env = gym.make("Pendulum-v1")
    with pytest.raises(ParameterError, match="Pendulum.max_torque cannot be randomized: it sets "
                                             "the bounds"):
        check_spaces(unmarked, env, {}, {"max_torque": parse_distribution("uniform(1,3)")})
    check_spaces(unmarked, env, {}, {"m": parse_distribution("uniform(1,3)")})  # no bound: fine


def test_envs_lists_which_parameters_can_be_randomized(capsys):
    assert main(["envs", "Pendulum"]) == 0
    rows = {line.split("│")[1].strip(): line.split("│")[5].strip()
            for line in capsys.readouterr().out.splitlines() if line.count("│") >= 6}
    assert rows["m"] == "yes" and rows["dt"] == "yes"
    assert rows["max_torque"] == "no" and rows["max_speed"] == "no"


@pytest.mark.parametrize("command", ["run", "matrix"])
def test_help_explains_distributions(capsys, command):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "length=uniform(0.25,1.0)" in out
    if command == "run":
        assert "loguniform(a,b), choice(x,y,...), normal(mu,sigma)" in out
