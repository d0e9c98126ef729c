"""The catalog: parameters reach the dynamics, derived quantities, named variants."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rltransfer import envs as catalog
from rltransfer.env_factory import make_env
from rltransfer.specs import EnvSpec

# Parameters set as attributes after gym.make; constructor ("make") and id parameters of the
# pixel families are tested in test_pixel_envs.py.
ALL_PARAMETERS = [(f, p) for f in catalog.families().values() for p in f.parameters
                  if p.via == catalog.ATTRIBUTE]


def test_catalog_has_the_five_classic_control_families():
    assert {"CartPole", "Acrobot", "Pendulum", "MountainCar",
            "MountainCarContinuous"} <= set(catalog.families())


@pytest.mark.parametrize("family,parameter", ALL_PARAMETERS,
                         ids=[f"{f.name}.{p.name}" for f, p in ALL_PARAMETERS])
def test_default_matches_gymnasium_and_value_is_set(family, parameter):
    env = gym.make(family.base_id)
    assert getattr(env.unwrapped, parameter.attribute) == pytest.approx(parameter.default)
    assert parameter.low <= parameter.default <= parameter.high
    value = parameter.default * 1.5 if parameter.default else parameter.high / 2
    if not parameter.low <= value <= parameter.high:  # e.g. LunarLander's gravity -10 -> -15
        value = (parameter.default + parameter.high) / 2
    varied = make_env(EnvSpec(family.base_id, {parameter.name: value}))
    assert getattr(varied.unwrapped, parameter.attribute) == pytest.approx(value)


def _step_from(spec: EnvSpec, state, action):
    env = make_env(spec)
    env.reset(seed=0)
    env.unwrapped.state = np.array(state, dtype=np.float64)
    obs, *_ = env.step(action)
    return np.asarray(obs, dtype=np.float64)


# (family base id, parameter, value, a state, an action) where the parameter acts in one step
DYNAMICS = [
    ("CartPole-v1", "length", 1.0, [0.0, 0.1, 0.05, -0.1], 1),
    ("CartPole-v1", "masspole", 0.5, [0.0, 0.1, 0.05, -0.1], 1),
    ("CartPole-v1", "gravity", 20.0, [0.0, 0.1, 0.05, -0.1], 1),
    ("CartPole-v1", "force_mag", 5.0, [0.0, 0.1, 0.05, -0.1], 1),
    ("Acrobot-v1", "link_mass_1", 2.0, [0.3, -0.2, 0.5, 0.1], 2),
    ("Acrobot-v1", "link_length_1", 1.5, [0.3, -0.2, 0.5, 0.1], 2),
    ("Pendulum-v1", "m", 1.5, [0.5, 0.2], np.array([1.0], dtype=np.float32)),
    ("Pendulum-v1", "g", 1.62, [0.5, 0.2], np.array([1.0], dtype=np.float32)),
    ("MountainCar-v0", "force", 0.0005, [-0.5, 0.01], 2),
    ("MountainCar-v0", "gravity", 0.004, [-0.3, 0.01], 2),
    ("MountainCarContinuous-v0", "power", 0.003, [-0.5, 0.01], np.array([1.0], np.float32)),
]


@pytest.mark.parametrize("env_id,name,value,state,action", DYNAMICS,
                         ids=[f"{d[0]}.{d[1]}" for d in DYNAMICS])
def test_parameters_change_the_next_state(env_id, name, value, state, action):
    default = _step_from(EnvSpec(env_id), state, action)
    varied = _step_from(EnvSpec(env_id, {name: value}), state, action)
    assert not np.allclose(default, varied)
    again = _step_from(EnvSpec(env_id, {name: value}), state, action)
    np.testing.assert_array_equal(varied, again)  # deterministic given state and action


def test_cartpole_derived_quantities_are_recomputed():
    env = make_env(EnvSpec("CartPole-v1", {"length": 1.0, "masspole": 0.5, "masscart": 2.0}))
    assert env.unwrapped.total_mass == pytest.approx(2.5)
    assert env.unwrapped.polemass_length == pytest.approx(0.5)


def test_observation_and_action_bounds_follow_parameters():
    pendulum = make_env(EnvSpec("Pendulum-v1", {"max_speed": 12.0, "max_torque": 3.0}))
    assert pendulum.observation_space.high[2] == pytest.approx(12.0)
    assert pendulum.action_space.high[0] == pytest.approx(3.0)
    car = make_env(EnvSpec("MountainCar-v0", {"max_position": 0.9}))
    assert car.observation_space.high[0] == pytest.approx(0.9)


def test_named_variant_is_a_gymnasium_id_and_rebuilds_from_its_spec():
    env = gym.make("rltransfer/CartPole-LongPole-v0")
    assert env.unwrapped.length == 1.0
    assert env.unwrapped.polemass_length == pytest.approx(0.1)
    rebuilt = gym.make(env.spec)
    assert rebuilt.unwrapped.length == 1.0


def test_cli_variant_records_its_wrapper_arguments():
    env = make_env(EnvSpec.parse("CartPole-v1:length=2,force_mag=5"))
    wrapper = env.spec.additional_wrappers[-1]
    assert wrapper.kwargs == {"family": "CartPole", "params": {"length": 2.0, "force_mag": 5.0}}
    rebuilt = gym.make(env.spec)
    assert (rebuilt.unwrapped.length, rebuilt.unwrapped.force_mag) == (2.0, 5.0)


def test_named_variant_accepts_extra_parameters():
    env = make_env(EnvSpec.parse("rltransfer/CartPole-LongPole-v0:force_mag=5"))
    assert (env.unwrapped.length, env.unwrapped.force_mag) == (1.0, 5.0)
    assert env.spec.max_episode_steps == 500


def test_any_registered_gymnasium_id_works_without_parameters():
    env = make_env(EnvSpec("CartPole-v0"))
    assert env.spec.max_episode_steps == 200


class _NoRenderMode(gym.Env):
    """A user's env whose constructor takes no render_mode."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 3) -> None:
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, {}


def test_an_env_without_render_mode_in_its_constructor_is_made():
    gym.register("TestNoRenderMode-v0", entry_point=_NoRenderMode)
    env = make_env(EnvSpec.parse("TestNoRenderMode-v0"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1,) and env.unwrapped.length == 3
    env.close()
