"""Classic-control families: CartPole, Acrobot, Pendulum, MountainCar, MountainCarContinuous.

Parameters follow CARL's context features for these environments (Benjamins et al. 2023),
applied to Gymnasium's own env classes. Ranges are generous but keep the simulation sane.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from gymnasium import spaces

from .family import Family, Parameter, add_family


def _cartpole_derive(env, params: Mapping[str, float]) -> None:
    # The step function uses these products, not the raw masses and length.
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


def _acrobot_derive(env, params: Mapping[str, float]) -> None:
    high = np.array([1.0, 1.0, 1.0, 1.0, env.MAX_VEL_1, env.MAX_VEL_2], dtype=np.float32)
    env.observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)


def _pendulum_derive(env, params: Mapping[str, float]) -> None:
    high = np.array([1.0, 1.0, env.max_speed], dtype=np.float32)
    env.observation_space = spaces.Box(low=-high, high=high, dtype=np.float32)
    env.action_space = spaces.Box(
        low=-env.max_torque, high=env.max_torque, shape=(1,), dtype=np.float32
    )


def _mountain_car_derive(env, params: Mapping[str, float]) -> None:
    env.low = np.array([env.min_position, -env.max_speed], dtype=np.float32)
    env.high = np.array([env.max_position, env.max_speed], dtype=np.float32)
    env.observation_space = spaces.Box(env.low, env.high, dtype=np.float32)


def _continuous_mountain_car_derive(env, params: Mapping[str, float]) -> None:
    env.low_state = np.array([env.min_position, -env.max_speed], dtype=np.float32)
    env.high_state = np.array([env.max_position, env.max_speed], dtype=np.float32)
    env.observation_space = spaces.Box(env.low_state, env.high_state, dtype=np.float32)


_CC = "gymnasium.envs.classic_control"

CARTPOLE = add_family(Family(
    name="CartPole",
    env_ids=("CartPole-v1", "CartPole-v0"),
    entry_point=f"{_CC}.cartpole:CartPoleEnv",
    doc="Balance a pole on a cart by pushing it left or right.",
    parameters=(
        Parameter("gravity", 9.8, 0.1, 100.0, "m/s^2", "gravitational acceleration"),
        Parameter("masscart", 1.0, 0.1, 10.0, "kg", "mass of the cart"),
        Parameter("masspole", 0.1, 0.01, 10.0, "kg", "mass of the pole"),
        Parameter("length", 0.5, 0.05, 10.0, "m", "half the pole's length"),
        Parameter("force_mag", 10.0, 0.5, 100.0, "N", "magnitude of the push on the cart"),
        Parameter("tau", 0.02, 0.002, 0.2, "s", "time between state updates"),
    ),
    derive=_cartpole_derive,
    variants={
        "LongPole": {"length": 1.0},
        "ShortPole": {"length": 0.25},
        "HeavyPole": {"masspole": 0.5},
        "HeavyCart": {"masscart": 3.0},
        "WeakPush": {"force_mag": 5.0},
        "HighGravity": {"gravity": 20.0},
    },
))

ACROBOT = add_family(Family(
    name="Acrobot",
    env_ids=("Acrobot-v1",),
    entry_point=f"{_CC}.acrobot:AcrobotEnv",
    doc="Swing the end of a two-link chain above a line by torquing the middle joint.",
    parameters=(
        Parameter("link_length_1", 1.0, 0.1, 10.0, "m", "length of link 1", "LINK_LENGTH_1"),
        Parameter("link_length_2", 1.0, 0.1, 10.0, "m", "length of link 2", "LINK_LENGTH_2"),
        Parameter("link_mass_1", 1.0, 0.1, 10.0, "kg", "mass of link 1", "LINK_MASS_1"),
        Parameter("link_mass_2", 1.0, 0.1, 10.0, "kg", "mass of link 2", "LINK_MASS_2"),
        Parameter("link_com_1", 0.5, 0.0, 1.0, "m", "centre of mass of link 1",
                  "LINK_COM_POS_1"),
        Parameter("link_com_2", 0.5, 0.0, 1.0, "m", "centre of mass of link 2",
                  "LINK_COM_POS_2"),
        Parameter("link_moi", 1.0, 0.1, 10.0, "kg*m^2", "moment of inertia of both links",
                  "LINK_MOI"),
        Parameter("max_velocity_1", 4 * math.pi, 0.4 * math.pi, 40 * math.pi, "rad/s",
                  "angular velocity limit of joint 1", "MAX_VEL_1", bounds_space=True),
        Parameter("max_velocity_2", 9 * math.pi, 0.9 * math.pi, 90 * math.pi, "rad/s",
                  "angular velocity limit of joint 2", "MAX_VEL_2", bounds_space=True),
        Parameter("torque_noise_max", 0.0, 0.0, 1.0, "N*m",
                  "uniform noise added to the applied torque"),
        Parameter("dt", 0.2, 0.01, 1.0, "s", "integration time step"),
    ),
    derive=_acrobot_derive,
    variants={
        "LongLinks": {"link_length_1": 1.5, "link_length_2": 1.5},
        "HeavyLinks": {"link_mass_1": 2.0, "link_mass_2": 2.0},
        "NoisyTorque": {"torque_noise_max": 0.2},
    },
))

PENDULUM = add_family(Family(
    name="Pendulum",
    env_ids=("Pendulum-v1",),
    entry_point=f"{_CC}.pendulum:PendulumEnv",
    doc="Swing a pendulum up and keep it upright with a torque-limited motor.",
    parameters=(
        Parameter("g", 10.0, 0.1, 100.0, "m/s^2", "gravitational acceleration"),
        Parameter("m", 1.0, 0.1, 10.0, "kg", "mass of the pendulum"),
        Parameter("l", 1.0, 0.1, 10.0, "m", "length of the pendulum"),
        Parameter("max_speed", 8.0, 0.8, 80.0, "rad/s", "angular velocity limit",
                  bounds_space=True),
        Parameter("max_torque", 2.0, 0.2, 20.0, "N*m", "torque limit (the action bound)",
                  bounds_space=True),
        Parameter("dt", 0.05, 0.005, 0.5, "s", "time step"),
    ),
    derive=_pendulum_derive,
    variants={
        "Heavy": {"m": 1.5},
        "Long": {"l": 1.5},
        "Moon": {"g": 1.62},
    },
))

MOUNTAIN_CAR = add_family(Family(
    name="MountainCar",
    env_ids=("MountainCar-v0",),
    entry_point=f"{_CC}.mountain_car:MountainCarEnv",
    doc="Drive an under-powered car up a hill (discrete pushes).",
    parameters=(
        Parameter("min_position", -1.2, -10.0, 0.0, "-", "left end of the track",
                  bounds_space=True),
        Parameter("max_position", 0.6, 0.1, 10.0, "-", "right end of the track", bounds_space=True),
        Parameter("max_speed", 0.07, 0.007, 0.7, "1/step", "speed limit", bounds_space=True),
        Parameter("goal_position", 0.5, 0.0, 10.0, "-", "position of the flag"),
        Parameter("goal_velocity", 0.0, 0.0, 0.7, "1/step", "minimum speed at the flag"),
        Parameter("force", 0.001, 0.0001, 0.01, "-", "engine force per step"),
        Parameter("gravity", 0.0025, 0.00025, 0.025, "-", "gravity term of the dynamics"),
    ),
    derive=_mountain_car_derive,
    variants={
        "WeakEngine": {"force": 0.0008},
        "SteepHills": {"gravity": 0.003},
    },
))

MOUNTAIN_CAR_CONTINUOUS = add_family(Family(
    name="MountainCarContinuous",
    env_ids=("MountainCarContinuous-v0",),
    entry_point=f"{_CC}.continuous_mountain_car:Continuous_MountainCarEnv",
    doc="Drive an under-powered car up a hill (continuous throttle).",
    parameters=(
        Parameter("min_position", -1.2, -10.0, 0.0, "-", "left end of the track",
                  bounds_space=True),
        Parameter("max_position", 0.6, 0.1, 10.0, "-", "right end of the track", bounds_space=True),
        Parameter("max_speed", 0.07, 0.007, 0.7, "1/step", "speed limit", bounds_space=True),
        Parameter("goal_position", 0.45, 0.0, 10.0, "-", "position of the flag"),
        Parameter("goal_velocity", 0.0, 0.0, 0.7, "1/step", "minimum speed at the flag"),
        Parameter("power", 0.0015, 0.0001, 0.015, "-", "engine power per unit action"),
    ),
    derive=_continuous_mountain_car_derive,
    variants={
        "WeakEngine": {"power": 0.0011},
        "FarGoal": {"goal_position": 0.55},
    },
))
