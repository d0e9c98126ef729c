"""Robot task suites as families (Meta-World MT1, PointMaze/AntMaze, FrankaKitchen, Fetch):
name-valued parameters on the command line and in stored specs, bad names refused in one
line, seeding, Kitchen's flattened goals and success flag, Fetch's observation map, and a
tiny study per suite."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from rltransfer import cli
from rltransfer import envs as catalog
from rltransfer.env_factory import make_env, resolve
from rltransfer.errors import ParameterError
from rltransfer.specs import EnvSpec, stable_hash
from rltransfer.strategies import obs_map
from rltransfer.study import preflight
from rltransfer.study.study_spec import flat_spec

pytestmark = pytest.mark.usefixtures("one_thread")

SUITES = ("Meta-World", "PointMaze", "AntMaze", "FrankaKitchen", "Fetch")


@pytest.fixture(scope="module", autouse=True)
def packages():
    """The suites' packages, imported as the catalog does (quietly)."""
    for name in ("Meta-World", "Fetch"):
        catalog.get_family(name).load()


def _make(text: str) -> gym.Env:
    return make_env(EnvSpec.parse(text))


def _study(tmp_path: Path, monkeypatch, source: str, target: str, algo: str,
           hparams: list[str], timesteps: int = 200, threshold: str = "") -> Path:
    """A one-seed study of scratch and finetune; the random policy's return over one
    episode (100 by default: 50,000 Meta-World steps), so the test stays tiny."""
    monkeypatch.setattr(preflight, "RANDOM_EPISODES", 1)
    out = tmp_path / "runs"
    code = cli.main(["run", source, target, "--algo", algo, "--seeds", "1",
                     "--conditions", "scratch,finetune", "--timesteps", str(timesteps),
                     "--source-timesteps", str(timesteps), "--eval-freq", str(timesteps),
                     "--eval-episodes", "1", "--n-envs", "1", "--out", str(out),
                     "--name", "s", *(["--threshold", threshold] if threshold else []),
                     "--hparams", *hparams])
    assert code == 0
    return out / "s"


def _evaluated_steps(run: Path) -> list[int]:
    with open(run / "evaluations.csv", newline="") as handle:
        return [int(row["timesteps"]) for row in csv.DictReader(handle)]


# --- listing and parsing -------------------------------------------------------------------

def test_envs_lists_the_suites_and_their_valid_names(capsys):
    assert cli.main(["envs"]) == 0
    listing = capsys.readouterr().out
    for name in SUITES:
        assert name in listing
    expected = {"Meta-World": ["push-v3", "reach-v3", "pick-place-v3", "window-open-v3"],
                "PointMaze": ["UMaze", "Medium_Diverse_GR", "Large"],
                "FrankaKitchen": ["microwave", "light_switch", "joined by '+'"],
                "Fetch": ["Reach", "Push", "Slide", "PickAndPlace"]}
    for family, names in expected.items():
        assert cli.main(["envs", family]) == 0
        detail = capsys.readouterr().out
        for name in names:
            assert name in detail, (family, name)


def test_without_the_package_the_suite_is_listed_and_a_run_names_the_extra(
        monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "metaworld", None)  # `import metaworld` now fails
    assert cli.main(["envs", "Meta-World"]) == 0
    listing = capsys.readouterr().out  # the table may wrap the hint
    assert "rltransfer[metaworld]" in listing and "assembly-v3" not in listing
    out = tmp_path / "runs"
    assert cli.main(["run", "Meta-World/MT1:task=reach-v3", "Meta-World/MT1:task=push-v3",
                     "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "rltransfer: error: Meta-World environments need the metaworld package: "
        "pip install 'rltransfer[metaworld]'")
    assert not out.exists()


@pytest.mark.parametrize("bare,quoted,stored", [
    ("Meta-World/MT1:task=push-v3", 'Meta-World/MT1:task="push-v3"', '"push-v3"'),
    ("PointMaze_UMaze-v3:layout=Medium", "PointMaze_UMaze-v3:layout='Medium'", '"Medium"'),
    ("FrankaKitchen-v1:tasks=microwave+light switch",
     'FrankaKitchen-v1:tasks="light_switch+microwave"', '"light_switch+microwave"'),
    ("FetchReach-v4:task=Push,dense=1", 'FetchReach-v4:dense=1,task="Push"', '"Push"'),
])
def test_a_bare_name_parses_as_its_quoted_form_and_round_trips(bare, quoted, stored):
    spec = EnvSpec.parse(bare)
    assert spec == EnvSpec.parse(quoted)
    name = "tasks" if "Kitchen" in bare else "layout" if "Maze" in bare else "task"
    assert spec.params[name] == stored
    assert EnvSpec.parse(str(spec)) == spec
    assert EnvSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert "/" not in spec.slug and '"' not in spec.slug


def test_a_config_tables_plain_string_is_a_name():
    table = {"id": "FrankaKitchen-v1", "params": {"tasks": "kettle+microwave"}}
    assert EnvSpec.from_dict(table) == EnvSpec.parse("FrankaKitchen-v1:tasks=microwave+kettle")
    with pytest.raises(ParameterError, match=re.escape("length='long' in")):
        EnvSpec.from_dict({"id": "CartPole-v1", "params": {"length": "long"}})


def test_an_id_without_a_version_works_after_a_module():
    spec = EnvSpec.parse("metaworld:Meta-World/MT1:task=push-v3")
    assert (spec.id, spec.params) == ("metaworld:Meta-World/MT1", {"task": '"push-v3"'})
    family, base_id, _ = resolve(spec)
    assert (family.name, base_id) == ("Meta-World", "Meta-World/MT1")
    assert spec.slug == "metaworld_Meta-World_MT1_task_push-v3"


def test_float_parameters_store_and_hash_as_before():
    spec = EnvSpec.parse("CartPole-v1:length=1,force_mag=5")
    assert spec.to_dict() == {"id": "CartPole-v1", "params": {"force_mag": 5.0, "length": 1.0}}
    assert stable_hash(spec.to_dict()) == stable_hash(
        {"id": "CartPole-v1", "params": {"length": 1.0, "force_mag": 5.0}})


def test_a_bare_word_for_a_number_is_still_an_error():
    with pytest.raises(ParameterError, match=re.escape(
            "length='long' in 'CartPole-v1:length=long' is not a number")):
        EnvSpec.parse("CartPole-v1:length=long")


def test_the_names_are_the_packages():
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import OBS_ELEMENT_GOALS
    from metaworld import MT1

    task = catalog.get_family("Meta-World").parameter("task")
    assert task.valid_names() == tuple(sorted(MT1.ENV_NAMES)) and len(task.valid_names()) == 50
    kitchen = catalog.get_family("FrankaKitchen").parameter("tasks")
    assert set(kitchen.valid_names()) == {t.replace(" ", "_") for t in OBS_ELEMENT_GOALS}
    for robot, version in (("PointMaze", 3), ("AntMaze", 5)):
        for layout in catalog.get_family(robot).parameter("layout").valid_names():
            for dense in ("", "Dense"):
                assert f"{robot}_{layout}{dense}-v{version}" in gym.registry


@pytest.mark.parametrize("text,made", [
    ("PointMaze_UMaze-v3:layout=Large_Diverse_GR", "PointMaze_Large_Diverse_GR-v3"),
    ("PointMaze_MediumDense-v3:layout=Open", "PointMaze_OpenDense-v3"),
    ("AntMaze_UMaze-v5:layout=Medium,dense=1", "AntMaze_MediumDense-v5"),
    ("FetchReachDense-v4:task=PickAndPlace", "FetchPickAndPlaceDense-v4"),
    ("FetchPush-v4:dense=1", "FetchPushDense-v4"),
    ("FetchSlide-v4", "FetchSlide-v4"),
])
def test_a_parameter_picks_the_registered_id(text, made):
    family, base_id, params = resolve(EnvSpec.parse(text))
    assert family.env_id(base_id, params) == made


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad,good,names,guess", [
    ("Meta-World/MT1:task=pussh-v3", "Meta-World/MT1", "push-back-v3, push-v3", "push-v3"),
    ("PointMaze_UMaze-v3:layout=Medum", "PointMaze_UMaze-v3", "UMaze, Open", "Medium"),
    ("FrankaKitchen-v1:tasks=microwave+kettel", "FrankaKitchen-v1", "kettle, light_switch",
     "kettle"),
    ("FetchReach-v4:task=Pusch", "FetchPush-v4", "Reach, Push, Slide, PickAndPlace", "Push"),
])
def test_a_bad_name_is_one_line_listing_the_valid_ones(capsys, tmp_path, bad, good, names,
                                                       guess):
    out = tmp_path / "runs"
    assert cli.main(["run", good, bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rltransfer: error: ")
    assert "is not one of its valid names" in err and names in err
    assert f"Did you mean {guess!r}" in err
    assert not out.exists()


@pytest.mark.parametrize("text,message", [
    ("PointMaze_UMaze-v3:layout=uniform(0,1)",
     "PointMaze.layout cannot be randomized: it picks the registered env id"),
    ("FetchReach-v4:task=3",
     "task=3 in FetchReach-v4:task=3: Fetch's task is a name, one of: Reach, Push, Slide, "
     "PickAndPlace"),
    ("FrankaKitchen-v1:tasks=kettle+kettle", "tasks=kettle+kettle names kettle twice"),
])
def test_a_name_that_is_no_name_is_refused(text, message):
    with pytest.raises(ParameterError, match=re.escape(message)) as caught:
        resolve(EnvSpec.parse(text))
    assert "\n" not in str(caught.value)


# --- seeding -------------------------------------------------------------------------------

def _flat(obs) -> np.ndarray:
    if isinstance(obs, dict):
        return np.concatenate([np.ravel(obs[k]) for k in sorted(obs)])
    return np.asarray(obs)


@pytest.mark.parametrize("text", ["Meta-World/MT1:task=push-v3", "PointMaze_UMaze-v3",
                                  "FetchPush-v4", "FrankaKitchen-v1:tasks=microwave"])
def test_the_same_seed_gives_the_same_episode(text):
    first, second = _make(text), _make(text)
    actions = np.random.default_rng(0).uniform(-1, 1, (5, *first.action_space.shape))
    trajectories = []
    for env in (first, second):
        obs, _ = env.reset(seed=7)
        steps = [_flat(obs)] + [_flat(env.step(a.astype(np.float32))[0]) for a in actions]
        trajectories.append(np.array(steps))
    np.testing.assert_array_equal(trajectories[0], trajectories[1])
    if "Kitchen" not in text:  # goals are drawn per episode: another seed, another goal
        goal = (lambda o: o[-3:]) if "Meta" in text else (lambda o: o["desired_goal"])
        assert not np.array_equal(goal(first.reset(seed=7)[0]), goal(first.reset(seed=8)[0]))


def test_meta_world_goals_follow_the_reset_seed_and_lie_in_the_space():
    """MT1 picks a goal before the env's own reset, which ignores its seed: the family seeds
    it first, so fresh envs reset with different seeds start at different goals."""
    env = _make("Meta-World/MT1:task=reach-v3")
    other = _make("Meta-World/MT1:task=reach-v3")
    obs, _ = env.reset(seed=0)
    assert not np.array_equal(obs[-3:], other.reset(seed=1)[0][-3:])
    assert env.observation_space.shape == (39,) and env.observation_space.contains(obs)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and "success" in info


# --- suite specifics -----------------------------------------------------------------------

def test_kitchen_goals_are_flat_boxes_and_success_means_every_chosen_task():
    from gymnasium_robotics.envs.franka_kitchen.kitchen_env import (
        OBS_ELEMENT_GOALS,
        OBS_ELEMENT_INDICES,
    )

    env = _make("FrankaKitchen-v1:tasks=microwave+kettle")
    space = env.observation_space
    assert set(space.spaces) == {"observation", "achieved_goal", "desired_goal"}
    assert all(isinstance(s, gym.spaces.Box) for s in space.spaces.values())
    assert space["achieved_goal"].shape == space["desired_goal"].shape == (8,)  # 7 + 1
    obs, _ = env.reset(seed=0)
    assert space.contains(obs)
    kitchen = env.unwrapped
    np.testing.assert_array_equal(obs["achieved_goal"], np.concatenate(
        [kitchen.data.qpos[OBS_ELEMENT_INDICES[t]] for t in ("kettle", "microwave")]))
    np.testing.assert_array_equal(obs["desired_goal"], np.concatenate(
        [OBS_ELEMENT_GOALS["kettle"], OBS_ELEMENT_GOALS["microwave"]]))
    still = np.zeros(env.action_space.shape, dtype=np.float32)
    successes = []
    for task in ("microwave", "kettle"):  # one chosen task done, then both
        kitchen.data.qpos[OBS_ELEMENT_INDICES[task]] = OBS_ELEMENT_GOALS[task]
        mujoco.mj_forward(kitchen.model, kitchen.data)
        _, _, terminated, _, info = env.step(still)
        successes.append((info["success"], terminated))
    assert successes == [(False, False), (True, True)]


def _set_robot(env: gym.Env, rng: np.random.Generator) -> None:
    """The same random arm state in every Fetch env (rng re-created per env)."""
    model, data = env.unwrapped.model, env.unwrapped.data
    for j in range(model.njnt):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
        if name.startswith("robot0:"):
            finger = name.endswith("finger_joint")
            data.qpos[model.jnt_qposadr[j]] = rng.uniform(0, 0.04) if finger else rng.uniform(
                -0.3, 0.3)
            data.qvel[model.jnt_dofadr[j]] = rng.uniform(-0.5, 0.5)
    mujoco.mj_forward(model, data)


@pytest.mark.parametrize("source,target", [("Reach", "Push"), ("Reach", "PickAndPlace"),
                                           ("Slide", "Reach")])
def test_fetchs_observation_map_joins_the_same_quantities(source, target):
    family = catalog.get_family("Fetch")
    text = family.observation_map(f"Fetch{source}-v4", f"Fetch{target}-v4")
    parsed = obs_map.parse(text)
    assert list(parsed.keys) == ["observation"]
    observations = []
    for task in (source, target):
        env = _make(f"FetchReach-v4:task={task}")
        env.reset(seed=0)
        _set_robot(env, np.random.default_rng(3))
        observations.append(env.unwrapped._get_obs()["observation"])
    mapped = 0
    for span in parsed.keys["observation"]:
        a = observations[0][span.source:span.source + span.length]
        b = observations[1][span.target:span.target + span.length]
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
        mapped += span.length
    assert mapped == 10  # all of Reach's observation
    assert family.observation_map("FetchPush-v4", "FetchSlideDense-v4") is None


# --- a tiny study per suite ----------------------------------------------------------------

def test_a_meta_world_study_from_reach_to_push(tmp_path, monkeypatch):
    study = _study(tmp_path, monkeypatch, "Meta-World/MT1:task=reach-v3",
                   "Meta-World/MT1:task=push-v3", "ppo",
                   ["n_steps=100", "batch_size=50", "n_epochs=1"])
    spec = flat_spec(json.loads((study / "study.json").read_text())["spec"])
    assert spec["source"]["params"] == {"task": '"reach-v3"'}
    assert spec["target"]["params"] == {"task": '"push-v3"'}
    for condition in ("scratch", "finetune"):
        assert _evaluated_steps(study / condition / "seed_0") == [0, 200]
    copied = json.loads((study / "finetune" / "seed_0" / "transfer.json").read_text())
    assert "copied" in json.dumps(copied)
    assert (study / "summary.json").exists()


@pytest.mark.parametrize("source,target", [
    ("PointMaze_UMaze-v3", "PointMaze_UMaze-v3:layout=Open"),
    ("FetchPush-v4", "FetchPush-v4:task=Slide"),
    ("FrankaKitchen-v1:tasks=microwave", "FrankaKitchen-v1:tasks=slide_cabinet"),
])
def test_a_goal_suite_study(tmp_path, monkeypatch, source, target):
    # Sparse rewards: a tiny source scores what a random policy does, so the test gives a
    # threshold above any return these rewards reach in so few steps.
    # No policy given: the dict observations get MultiInputPolicy by themselves.
    study = _study(tmp_path, monkeypatch, source, target, "ppo",
                   ["n_steps=50", "batch_size=50", "n_epochs=1"], timesteps=100, threshold="1")
    for condition in ("scratch", "finetune"):
        assert _evaluated_steps(study / condition / "seed_0") == [0, 100]
    agent = json.loads((study / "study.json").read_text())["target_agent"]
    assert agent["hparams"]["policy"] == "MultiInputPolicy"
    assert (study / "summary.json").exists()
