"""MuJoCo families: each parameter scales its own instance's compiled model, nothing else."""

from __future__ import annotations

import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

mujoco = pytest.importorskip("mujoco")

from rltransfer import cli  # noqa: E402
from rltransfer import envs as catalog  # noqa: E402
from rltransfer.env_factory import make_env  # noqa: E402
from rltransfer.errors import MissingDependencyError, ParameterError  # noqa: E402
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec  # noqa: E402
from rltransfer.training.run import train_run  # noqa: E402

mujoco_families = catalog.mujoco  # envs/mujoco.py
FAMILIES = tuple(mujoco_families.BODIES)
ARRAYS = ("body_mass", "body_inertia", "geom_friction", "actuator_gear", "dof_damping")


def _make(text: str) -> gym.Env:
    return make_env(EnvSpec.parse(text))


def _actions(env: gym.Env, n: int = 30) -> list[np.ndarray]:
    space = env.action_space
    rng = np.random.default_rng(3)
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n)]


def _trajectory(env: gym.Env, n: int = 30) -> np.ndarray:
    obs, _ = env.reset(seed=0)
    states = [obs]
    for action in _actions(env, n):
        obs, *_ = env.step(action)
        states.append(obs)
    return np.asarray(states, dtype=np.float64)


def _arrays(env: gym.Env) -> dict[str, np.ndarray]:
    model = env.unwrapped.model
    arrays = {name: getattr(model, name).copy() for name in ARRAYS}
    arrays["gravity"] = model.opt.gravity.copy()
    arrays["timestep"] = np.array(model.opt.timestep)
    arrays["body_subtreemass"] = model.body_subtreemass.copy()
    return arrays


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("name", FAMILIES)
def test_hard_coded_bodies_and_defaults_are_the_compiled_models(name):
    family = catalog.get_family(name)
    model = gym.make(family.base_id).unwrapped.model
    named = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) for i in range(1, model.nbody)]
    assert mujoco_families.BODIES[name] == tuple(n for n in named if n)
    assert [p for p in family.parameter_names if p.startswith("mass.")] == [
        f"mass.{body}" for body in mujoco_families.BODIES[name]]
    assert family.parameter("timestep").default == model.opt.timestep
    assert family.parameter("gravity").default == model.opt.gravity[2]


@pytest.mark.parametrize("name", FAMILIES)
def test_default_values_reproduce_gymnasium_bit_for_bit(name):
    family = catalog.get_family(name)
    values = ",".join(f"{p.name}={p.default!r}" for p in family.parameters)
    env = _make(f"{family.base_id}:{values}")
    plain = gym.make(family.base_id)
    _assert_same(_arrays(env), _arrays(plain))
    np.testing.assert_array_equal(_trajectory(env), _trajectory(plain))


@pytest.mark.parametrize("text,array,factor", [
    ("Hopper-v5:mass=2", "body_mass", 2.0),
    ("Hopper-v5:mass=0.5", "body_inertia", 0.5),
    ("HalfCheetah-v5:friction=0.5", "geom_friction", 0.5),
    ("Hopper-v5:gear=0.6", "actuator_gear", 0.6),
    ("HalfCheetah-v5:damping=3", "dof_damping", 3.0),
])
def test_a_scale_changes_its_array_by_exactly_the_factor_and_the_next_states(text, array,
                                                                             factor):
    env = _make(text)
    plain = gym.make(text.split(":")[0])
    varied, default = _arrays(env), _arrays(plain)
    np.testing.assert_array_equal(varied[array], default[array] * factor)
    for other in set(ARRAYS) - {array} - ({"body_mass", "body_inertia"} if "mass" in text
                                          else set()):
        np.testing.assert_array_equal(varied[other], default[other], err_msg=other)
    states, plain_states = _trajectory(env), _trajectory(plain)
    np.testing.assert_array_equal(states[0], plain_states[0])  # same start
    assert not np.allclose(states[1:], plain_states[1:])


def test_gravity_sets_only_the_z_component():
    env = _make("InvertedDoublePendulum-v5:gravity=-12")
    plain = gym.make("InvertedDoublePendulum-v5")
    gravity = env.unwrapped.model.opt.gravity
    assert gravity[2] == -12.0 and gravity[0] == plain.unwrapped.model.opt.gravity[0] == 1e-5
    assert not np.allclose(_trajectory(env)[1:], _trajectory(plain)[1:])


def test_timestep_sets_dt_and_the_render_rate():
    env = _make("Hopper-v5:timestep=0.0025")
    assert env.unwrapped.model.opt.timestep == 0.0025
    assert env.unwrapped.dt == pytest.approx(0.0025 * 4)  # frame_skip 4
    assert env.metadata["render_fps"] == 100
    assert gym.make("Hopper-v5").metadata["render_fps"] == 125  # the class's own stays
    assert not np.allclose(_trajectory(env)[1:], _trajectory(gym.make("Hopper-v5"))[1:])


def test_per_body_mass_changes_only_that_body_and_multiplies_with_mass():
    torso = mujoco_families.BODIES["Hopper"].index("torso") + 1
    env = _make("Hopper-v5:mass.torso=1.5")
    plain = gym.make("Hopper-v5")
    mass, default = _arrays(env)["body_mass"], _arrays(plain)["body_mass"]
    assert mass[torso] == default[torso] * 1.5
    np.testing.assert_array_equal(np.delete(mass, torso), np.delete(default, torso))
    inertia = env.unwrapped.model.body_inertia
    np.testing.assert_array_equal(inertia[torso], plain.unwrapped.model.body_inertia[torso] * 1.5)
    # mj_setConst followed: the subtree masses are those of the heavier torso
    assert env.unwrapped.model.body_subtreemass[0] == pytest.approx(
        plain.unwrapped.model.body_subtreemass[0] + 0.5 * default[torso])
    assert not np.allclose(_trajectory(env)[1:], _trajectory(plain)[1:])
    both = _arrays(_make("Hopper-v5:mass=2,mass.torso=1.5"))["body_mass"]
    np.testing.assert_array_equal(both, default * 2 * np.where(np.arange(5) == torso, 1.5, 1))


def test_apply_is_idempotent_and_an_absent_parameter_is_its_default():
    family = catalog.get_family("Walker2d")
    env = gym.make("Walker2d-v5")
    original = _arrays(env)
    heavy = {"mass": 2.0, "mass.torso": 1.5, "friction": 0.3, "gear": 2.0, "damping": 4.0,
             "gravity": -20.0, "timestep": 0.003}
    family.apply(env, heavy)
    once = _arrays(env)
    family.apply(env, heavy)
    _assert_same(_arrays(env), once)  # applied twice: not compounded
    family.apply(env, {"mass": 2.0})
    assert env.unwrapped.model.body_mass[1] == original["body_mass"][1] * 2  # torso back to 1
    assert env.unwrapped.model.opt.timestep == 0.002
    family.apply(env, {})
    _assert_same(_arrays(env), original)
    np.testing.assert_array_equal(_trajectory(env), _trajectory(gym.make("Walker2d-v5")))


def test_two_variants_in_one_process_do_not_affect_each_other():
    heavy = _make("Ant-v5:mass=3,friction=0.2,gear=0.5")
    default = _make("Ant-v5")
    named = gym.make("rltransfer/Ant-Heavy-v0")
    fresh = gym.make("Ant-v5")
    _assert_same(_arrays(default), _arrays(fresh))
    np.testing.assert_array_equal(_trajectory(default), _trajectory(fresh))
    assert _arrays(named)["body_mass"][1] == _arrays(fresh)["body_mass"][1] * 1.5
    heavy_alone = _trajectory(_make("Ant-v5:mass=3,friction=0.2,gear=0.5"))
    np.testing.assert_array_equal(_trajectory(heavy), heavy_alone)
    assert not np.allclose(heavy_alone[1:], _trajectory(fresh)[1:])


def test_named_variants_rebuild_from_their_spec():
    env = gym.make("rltransfer/Hopper-HeavyTorso-v0")
    rebuilt = gym.make(env.spec)
    np.testing.assert_array_equal(_trajectory(env), _trajectory(rebuilt))
    np.testing.assert_array_equal(_trajectory(env), _trajectory(_make("Hopper-v5:mass.torso=1.5")))


def test_building_every_family_env_is_silent_and_writes_no_log(capfd, monkeypatch, tmp_path):
    # As in a fresh process: no warning callback yet (HalfCheetah's XML then prints a
    # 'settotalmass' deprecation and writes MUJOCO_LOG.TXT into the working directory).
    monkeypatch.setitem(mujoco_families._quiet, "installed", False)
    monkeypatch.chdir(tmp_path)
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(None)
    try:
        for name in FAMILIES:
            family = catalog.get_family(name)
            make_env(EnvSpec.parse(family.base_id)).reset(seed=0)
            gym.make(family.variant_id(next(iter(family.variants)))).reset(seed=0)
    finally:
        mujoco.set_mju_user_warning(previous)
    assert capfd.readouterr() == ("", "")
    assert list(tmp_path.iterdir()) == []


def test_cli_lists_the_parameters_ranges_units_and_variants(capsys):
    assert cli.main(["envs", "Hopper"]) == 0
    out = capsys.readouterr().out
    for name in ("gravity", "mass", "mass.torso", "mass.thigh", "mass.leg", "mass.foot",
                 "friction", "gear", "damping", "timestep"):
        assert re.search(rf"│ {re.escape(name)} +│", out), name
    assert "[-30, -0.1]" in out and "m/s^2" in out and "[0.001, 0.003]" in out
    assert "[0.1, 10]" in out
    for variant in ("HeavyTorso", "Slippery", "LowGravity"):
        assert f"rltransfer/Hopper-{variant}-v0" in out
    assert "Hopper-v5:mass.torso=1.5" in out


def test_unknown_body_is_a_one_line_error_naming_the_bodies(capsys, tmp_path):
    out = tmp_path / "runs"
    assert cli.main(["run", "Hopper-v5:mass.torsoo=2", "Hopper-v5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("Hopper has no body 'torsoo' (mass.torsoo): its bodies are torso, "
                        "thigh, leg, foot; write mass.<body>=SCALE")
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_out_of_range_value_is_a_one_line_error():
    message = "timestep=0.01 is outside its valid range [0.001, 0.003] s"
    with pytest.raises(ParameterError, match=re.escape(message)) as caught:
        _make("Hopper-v5:timestep=0.01")
    assert "\n" not in str(caught.value)


def test_catalog_lists_the_families_and_bodies_without_mujoco():
    code = ("import sys\n"
            "sys.modules['mujoco'] = None\n"
            "from rltransfer import envs\n"
            "print(envs.get_family('Ant').parameter_names)\n"
            "print(sorted(envs.families()))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "'mass.aux_4'" in result.stdout
    assert all(f"'{name}'" in result.stdout for name in FAMILIES)


@pytest.mark.parametrize("spec", ["Hopper-v5:mass=2", "rltransfer/HalfCheetah-Slippery-v0"])
def test_missing_mujoco_is_a_one_line_install_hint(monkeypatch, spec):
    monkeypatch.setitem(sys.modules, "mujoco", None)  # `import mujoco` now fails
    hint = "Hopper" if spec.startswith("Hopper") else "HalfCheetah"
    message = f"{hint} environments need the mujoco package: pip install 'rltransfer[mujoco]'"
    with pytest.raises(MissingDependencyError, match=re.escape(message)) as caught:
        _make(spec)
    assert "\n" not in str(caught.value)


def test_ppo_trains_on_a_heavier_inverted_pendulum(tmp_path, tiny_agent):
    agent = AgentSpec("ppo", tiny_agent.hparams, n_envs=2, device="cpu")
    run = RunSpec(EnvSpec.parse("InvertedPendulum-v5:mass=2"), agent, "scratch", 0, 256, 128, 2)
    result = train_run(run, tmp_path / "run")
    assert result.timesteps == 256
    assert (tmp_path / "run" / "model.zip").exists()


def test_missing_mujoco_stops_a_study_before_anything_is_written(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mujoco", None)
    out = tmp_path / "runs"
    code = cli.main(["run", "Hopper-v5", "Hopper-v5:mass=2", "--timesteps", "256",
                     "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("rltransfer: error: Hopper environments need the mujoco package: "
                   "pip install 'rltransfer[mujoco]'")
    assert not out.exists()


@pytest.mark.parametrize("name", FAMILIES)
def test_hard_coded_joints_are_the_compiled_models(name):
    model = gym.make(catalog.get_family(name).base_id).unwrapped.model
    joint = lambda i: mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, i)  # noqa: E731
    hinges = [i for i in range(model.njnt) if int(model.jnt_type[i]) in (
        int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))]
    joints = mujoco_families.JOINTS[name]
    assert joints["gear"] == tuple(joint(model.actuator_trnid[a, 0]) for a in range(model.nu))
    assert sorted(joints["damping"]) == sorted(joint(i) for i in hinges)
    assert sorted(joints["range"]) == sorted(joint(i) for i in hinges if model.jnt_limited[i])


def _step_forces(env: gym.Env) -> np.ndarray:
    env.reset(seed=0)
    env.step(np.ones(env.action_space.shape, dtype=env.action_space.dtype))
    return env.unwrapped.data.qfrc_actuator.copy()


def test_a_broken_motor_applies_no_force_and_the_others_are_unchanged():
    intact = _step_forces(_make("HalfCheetah-v5"))
    broken_env = gym.make("rltransfer/HalfCheetah-BrokenBackThigh-v0")
    broken = _step_forces(broken_env)
    model = broken_env.unwrapped.model
    bthigh = model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "bthigh")]
    assert intact[bthigh] != 0 and broken[bthigh] == 0  # its joint gets no actuator force
    others = [d for d in range(6, model.nv) if d != bthigh]  # the other five motors' joints
    assert np.all(broken[others] != 0)
    gears = _make("HalfCheetah-v5").unwrapped.model.actuator_gear[:, 0].copy()  # 120, 90, ...
    assert model.actuator_gear[0, 0] == 0
    np.testing.assert_array_equal(model.actuator_gear[1:, 0], gears[1:])  # the others' own
    half = _make("HalfCheetah-v5:gear=0.5,gear.bshin=0.5").unwrapped.model
    assert half.actuator_gear[1, 0] == gears[1] * 0.25  # multiplies with gear
    assert half.actuator_gear[0, 0] == gears[0] * 0.5


def test_a_joints_damping_and_range_scale_only_that_joint_and_reset_to_the_original():
    plain = _make("Hopper-v5").unwrapped.model
    env = _make("Hopper-v5:damping.foot_joint=4,range.thigh_joint=0.5")
    model = env.unwrapped.model
    foot = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "foot_joint")
    thigh = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "thigh_joint")
    damping = plain.dof_damping.copy()
    damping[model.jnt_dofadr[foot]] *= 4
    np.testing.assert_array_equal(model.dof_damping, damping)
    ranges = plain.jnt_range.copy()
    ranges[thigh] *= 0.5
    np.testing.assert_array_equal(model.jnt_range, ranges)
    env.reset(seed=1)  # applied again at every reset: the same arrays, not scaled twice
    np.testing.assert_array_equal(model.jnt_range, ranges)
    np.testing.assert_array_equal(model.dof_damping, damping)


def test_a_broken_motor_can_be_randomized_per_episode():
    env = _make("HalfCheetah-v5:gear.bthigh=uniform(0,1)")
    gears = set()
    for seed in range(4):
        env.reset(seed=seed)
        gears.add(float(env.unwrapped.model.actuator_gear[0, 0]))
    assert len(gears) == 4 and all(0 <= g <= 120 for g in gears)  # bthigh's gear: 120
    assert env.unwrapped.model.actuator_gear[1, 0] == 90  # bshin's own, unchanged


@pytest.mark.parametrize("text,message", [
    ("HalfCheetah-v5:gear.knee=0", "HalfCheetah has no actuated joint 'knee' (gear.knee): its "
     "actuated joints are bthigh, bshin, bfoot, fthigh, fshin, ffoot; write "
     "gear.<joint>=SCALE"),
    ("InvertedDoublePendulum-v5:range.hinge=0.5", "InvertedDoublePendulum has no limited joint "
     "'hinge' (range.hinge): its limited joints are slider; write range.<joint>=SCALE"),
])
def test_an_unknown_joint_is_a_one_line_error_naming_the_valid_ones(capsys, tmp_path, text,
                                                                     message):
    out = tmp_path / "runs"
    assert cli.main(["run", text, "HalfCheetah-v5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(message) and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
