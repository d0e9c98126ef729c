"""LunarLander family: its parameters change the dynamics, engine powers stay per instance."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("Box2D")

import gymnasium.envs.box2d.lunar_lander as lunar_module  # noqa: E402

from rltransfer import cli  # noqa: E402
from rltransfer import envs as catalog  # noqa: E402
from rltransfer.env_factory import make_env  # noqa: E402
from rltransfer.errors import ParameterError  # noqa: E402
from rltransfer.specs import EnvSpec  # noqa: E402

MAIN, SIDE_LEFT = 2, 1  # Discrete(4): 0 noop, 1 left engine, 2 main engine, 3 right engine
ACTIONS = [MAIN, MAIN, SIDE_LEFT, MAIN, 3, MAIN]


def _trajectory(env: gym.Env, actions=ACTIONS, seed: int = 0) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    states = [obs]
    for action in actions:
        obs, *_ = env.step(action)
        states.append(obs)
    return np.asarray(states, dtype=np.float64)


def _run(text: str) -> np.ndarray:
    return _trajectory(make_env(EnvSpec.parse(text)))


def test_cli_lists_the_parameters_and_variants(capsys):
    assert cli.main(["envs", "LunarLander"]) == 0
    out = capsys.readouterr().out
    for name in ("gravity", "enable_wind", "wind_power", "turbulence_power",
                 "main_engine_power", "side_engine_power", "continuous"):
        assert name in out
    assert "[-11.99, -0.01]" in out and "m/s^2" in out
    assert "rltransfer/LunarLander-LowGravity-v0" in out


def test_defaults_match_gymnasium():
    family = catalog.get_family("LunarLander")
    plain = gym.make("LunarLander-v3").unwrapped
    for name in ("gravity", "enable_wind", "wind_power", "turbulence_power", "continuous"):
        assert family.parameter(name).default == getattr(plain, name), name
    assert family.parameter("main_engine_power").default == lunar_module.MAIN_ENGINE_POWER
    assert family.parameter("side_engine_power").default == lunar_module.SIDE_ENGINE_POWER
    # The default values leave the env exactly as Gymnasium makes it.
    np.testing.assert_array_equal(_trajectory(gym.make("LunarLander-v3")),
                                  _run("LunarLander-v3:main_engine_power=13,gravity=-10"))


@pytest.mark.parametrize("params", [
    "gravity=-5", "main_engine_power=20", "side_engine_power=1.5",
    "enable_wind=1,wind_power=20",
])
def test_parameters_change_the_next_states(params):
    default = _run("LunarLander-v3")
    varied = _run(f"LunarLander-v3:{params}")
    assert default.shape == varied.shape
    assert not np.allclose(default[1:], varied[1:])
    np.testing.assert_array_equal(varied, _run(f"LunarLander-v3:{params}"))  # deterministic


def test_stronger_main_engine_lifts_more():
    default, strong = _run("LunarLander-v3"), _run("LunarLander-v3:main_engine_power=30")
    assert strong[3, 3] > default[3, 3]  # vertical speed after three main-engine steps


def test_engine_powers_are_per_instance_and_leave_the_module_alone():
    alone_strong = _run("LunarLander-v3:main_engine_power=30,side_engine_power=2")
    alone_weak = _run("LunarLander-v3:main_engine_power=5,side_engine_power=0.2")
    default = _run("LunarLander-v3")
    # Built and stepped side by side in one process, interleaved step by step.
    envs = [make_env(EnvSpec.parse(text)) for text in
            ("LunarLander-v3:main_engine_power=30,side_engine_power=2",
             "LunarLander-v3:main_engine_power=5,side_engine_power=0.2",
             "LunarLander-v3", "rltransfer/LunarLander-WeakEngines-v0")]
    states = [[env.reset(seed=0)[0]] for env in envs]
    for action in ACTIONS:
        for env, trajectory in zip(envs, states, strict=True):
            trajectory.append(env.step(action)[0])
    np.testing.assert_array_equal(np.asarray(states[0], np.float64), alone_strong)
    np.testing.assert_array_equal(np.asarray(states[1], np.float64), alone_weak)
    np.testing.assert_array_equal(np.asarray(states[2], np.float64), default)
    assert not np.allclose(np.asarray(states[3], np.float64), default)
    assert (lunar_module.MAIN_ENGINE_POWER, lunar_module.SIDE_ENGINE_POWER) == (13.0, 0.6)
    assert "step" not in vars(envs[2].unwrapped)  # the default env keeps the class's step


def test_named_variants_rebuild_from_their_spec():
    env = gym.make("rltransfer/LunarLander-WeakEngines-v0")
    rebuilt = gym.make(env.spec)
    np.testing.assert_array_equal(_trajectory(env), _trajectory(rebuilt))
    assert not np.allclose(_trajectory(rebuilt), _trajectory(gym.make("LunarLander-v3")))
    assert gym.make("rltransfer/LunarLander-LowGravity-v0").unwrapped.gravity == -5.0
    windy = gym.make("rltransfer/LunarLander-Windy-v0").unwrapped
    assert windy.enable_wind is True and windy.wind_power == 15.0
    continuous = make_env(EnvSpec.parse("rltransfer/LunarLander-Continuous-v0"))
    assert isinstance(continuous.action_space, gym.spaces.Box)


@pytest.mark.parametrize("text,message", [
    ("LunarLander-v3:gravity=-12", "gravity=-12 is outside its valid range [-11.99, -0.01] m/s^2"),
    ("LunarLander-v3:gravity=1", "gravity=1 is outside its valid range [-11.99, -0.01] m/s^2"),
    ("LunarLander-v3:main_engine_power=50", "main_engine_power=50 is outside its valid range "
                                            "[0, 40]"),
    ("LunarLander-v3:wind_power=25", "wind_power=25 is outside its valid range [0, 20]"),
    ("LunarLander-v3:enable_wind=0.5", "enable_wind=0.5 is a switch"),
])
def test_out_of_range_values_are_one_line_errors(text, message):
    with pytest.raises(ParameterError, match=re.escape(message)) as caught:
        make_env(EnvSpec.parse(text))
    assert "\n" not in str(caught.value)
