"""BipedalWalker family: its parameters change the dynamics, module constants stay per instance."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("Box2D")

import gymnasium.envs.box2d.bipedal_walker as walker_module  # noqa: E402

from rltransfer import cli  # noqa: E402
from rltransfer import envs as catalog  # noqa: E402
from rltransfer.env_factory import make_env  # noqa: E402
from rltransfer.errors import ParameterError  # noqa: E402
from rltransfer.specs import EnvSpec  # noqa: E402

# Box(4): hip 1, knee 1, hip 2, knee 2 torques in [-1, 1]; a fixed, varied sequence.
ACTIONS = [np.array(a, dtype=np.float32) for a in np.random.default_rng(3).uniform(
    -1.0, 1.0, size=(40, 4))]
MODULE_CONSTANTS = {"FRICTION": 2.5, "MOTORS_TORQUE": 80, "SPEED_HIP": 4, "SPEED_KNEE": 6,
                    "LIDAR_RANGE": 160 / 30.0}


def _trajectory(env: gym.Env, actions=ACTIONS, seed: int = 0) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    states = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        states.append(obs)
    return np.asarray(states, dtype=np.float64)


def _run(text: str) -> np.ndarray:
    return _trajectory(make_env(EnvSpec.parse(text)))


def _module_constants() -> dict[str, float]:
    return {name: getattr(walker_module, name) for name in MODULE_CONSTANTS}


def test_cli_lists_the_parameters_and_variants(capsys):
    assert cli.main(["envs", "BipedalWalker"]) == 0
    out = capsys.readouterr().out
    for name in ("hardcore", "friction", "motors_torque", "speed_hip", "speed_knee",
                 "lidar_range"):
        assert name in out
    assert "[0, 200]" in out and "N*m" in out and "rad/s" in out
    for variant in ("Hardcore", "Slippery", "WeakMotors"):
        assert f"rltransfer/BipedalWalker-{variant}-v0" in out


def test_defaults_match_gymnasium():
    family = catalog.get_family("BipedalWalker")
    plain = gym.make("BipedalWalker-v3").unwrapped
    assert family.parameter("hardcore").default == plain.hardcore
    assert family.parameter("friction").default == walker_module.FRICTION
    assert family.parameter("friction").default == plain.fd_polygon.friction
    assert family.parameter("motors_torque").default == walker_module.MOTORS_TORQUE
    assert family.parameter("speed_hip").default == walker_module.SPEED_HIP
    assert family.parameter("speed_knee").default == walker_module.SPEED_KNEE
    assert family.parameter("lidar_range").default == walker_module.LIDAR_RANGE
    # The default values, given explicitly, leave the env exactly as Gymnasium makes it.
    default = _run("BipedalWalker-v3:friction=2.5,motors_torque=80,speed_hip=4,speed_knee=6")
    np.testing.assert_array_equal(_trajectory(gym.make("BipedalWalker-v3")), default)
    env = make_env(EnvSpec.parse("BipedalWalker-v3:motors_torque=80")).unwrapped
    assert "step" not in vars(env) and "reset" not in vars(env)


@pytest.mark.parametrize("params", [
    "hardcore=1", "friction=0.2", "motors_torque=30", "speed_hip=1.5", "speed_knee=2",
    "lidar_range=2",
])
def test_parameters_change_the_next_states(params):
    default = _run("BipedalWalker-v3")
    varied = _run(f"BipedalWalker-v3:{params}")
    assert default.shape == varied.shape
    assert not np.allclose(default[1:], varied[1:])
    np.testing.assert_array_equal(varied, _run(f"BipedalWalker-v3:{params}"))  # deterministic


FULL = np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32)


def _torques_after_full_action(env: gym.Env) -> tuple[list[float], float]:
    """The joints' torque limits and the reward after one full-torque step from the start."""
    env.reset(seed=0)
    reward = env.step(FULL)[1]
    return [joint.GetMaxMotorTorque() for joint in env.unwrapped.joints], reward


def test_motor_torque_reaches_the_joints_and_the_reward():
    weak, weak_reward = _torques_after_full_action(
        make_env(EnvSpec.parse("BipedalWalker-v3:motors_torque=30")))
    default, default_reward = _torques_after_full_action(gym.make("BipedalWalker-v3"))
    assert weak == pytest.approx([30.0] * 4) and default == pytest.approx([80.0] * 4)
    # The torque charge in the reward scales with MOTORS_TORQUE: the same first action on the
    # same start costs less with weaker motors.
    assert weak_reward > default_reward


def test_friction_reaches_the_terrain():
    env = make_env(EnvSpec.parse("BipedalWalker-v3:friction=0.7")).unwrapped
    env.reset(seed=0)
    frictions = {round(fixture.friction, 6) for body in env.terrain for fixture in body.fixtures}
    assert frictions == {0.7}


def test_constants_are_per_instance_and_leave_the_module_alone():
    texts = ("BipedalWalker-v3:motors_torque=30,speed_hip=2,friction=0.5",
             "BipedalWalker-v3:motors_torque=150,speed_knee=10,lidar_range=3",
             "BipedalWalker-v3", "rltransfer/BipedalWalker-Slippery-v0",
             "rltransfer/BipedalWalker-WeakMotors-v0")
    alone = [_run(text) for text in texts]
    # Built together, then reset and stepped side by side in one process, interleaved.
    envs = [make_env(EnvSpec.parse(text)) for text in texts]
    states = [[env.reset(seed=0)[0]] for env in envs]
    for action in ACTIONS:
        for env, trajectory in zip(envs, states, strict=True):
            trajectory.append(env.step(action)[0])
    for text, solo, together in zip(texts, alone, states, strict=True):
        np.testing.assert_array_equal(np.asarray(together, np.float64), solo, err_msg=text)
    for other in alone[:2] + alone[3:]:
        assert not np.allclose(other, alone[2])
    assert _module_constants() == MODULE_CONSTANTS
    plain = envs[2].unwrapped
    assert "step" not in vars(plain) and "reset" not in vars(plain)  # the class's own methods
    assert type(plain).step is walker_module.BipedalWalker.step
    # A fresh plain env still gets Gymnasium's values.
    fresh = gym.make("BipedalWalker-v3")
    assert _torques_after_full_action(fresh)[0] == pytest.approx([80.0] * 4)
    assert fresh.unwrapped.fd_edge.friction == 2.5


def test_named_variants_rebuild_from_their_spec():
    env = gym.make("rltransfer/BipedalWalker-WeakMotors-v0")
    rebuilt = gym.make(env.spec)
    np.testing.assert_array_equal(_trajectory(env), _trajectory(rebuilt))
    assert not np.allclose(_trajectory(rebuilt), _trajectory(gym.make("BipedalWalker-v3")))
    assert gym.make("rltransfer/BipedalWalker-Hardcore-v0").unwrapped.hardcore is True
    assert gym.make("rltransfer/BipedalWalker-Slippery-v0").unwrapped.fd_polygon.friction == 1.0


@pytest.mark.parametrize("text,message", [
    ("BipedalWalker-v3:friction=-1", "friction=-1 is outside its valid range [0, 10]"),
    ("BipedalWalker-v3:motors_torque=500", "motors_torque=500 is outside its valid range "
                                           "[0, 200] N*m"),
    ("BipedalWalker-v3:speed_hip=0", "speed_hip=0 is outside its valid range [0.5, 10] rad/s"),
    ("BipedalWalker-v3:speed_knee=20", "speed_knee=20 is outside its valid range [0.5, 12]"),
    ("BipedalWalker-v3:lidar_range=0", "lidar_range=0 is outside its valid range [1, 20] m"),
    ("BipedalWalker-v3:hardcore=0.5", "hardcore=0.5 is a switch"),
])
def test_out_of_range_values_are_one_line_errors(text, message):
    with pytest.raises(ParameterError, match=re.escape(message)) as caught:
        make_env(EnvSpec.parse(text))
    assert "\n" not in str(caught.value)
