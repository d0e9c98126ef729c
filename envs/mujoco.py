"""MuJoCo locomotion and balance tasks (Gymnasium's v5 envs), from their state vectors.

Every parameter is a "derive" parameter set on the compiled ``MjModel`` of *that* env instance
(``env.unwrapped.model``): each env compiles its own model from the XML, so variants side by
side in one process never share arrays, and no XML file or module global is touched.

* ``gravity``: the z component of ``opt.gravity`` (x and y stay the model's).
* ``mass``: scales every body's ``body_mass`` *and* ``body_inertia`` by the same factor, a
  uniformly denser robot (same shape, same centres of mass). ``mass.<body>`` scales one named
  body the same way and multiplies with ``mass``. Ant's four feet have no name in its XML,
  so only ``mass`` reaches them.
* ``friction``: scales all three columns of ``geom_friction`` (sliding, torsional, rolling) of
  every geom, the floor included. MuJoCo takes the larger of two geoms' coefficients for a
  contact, so every contact's friction scales by the factor; these models use condim 1 or 3,
  where only the sliding column acts.
* ``gear``: scales ``actuator_gear`` (every actuator's strength: torque per unit of action).
  ``gear.<joint>`` scales the actuator that drives that joint (named by the joint, since
  Hopper's, Walker2d's and Ant's actuators have no names of their own) and multiplies with
  ``gear``; ``gear.<joint>=0`` is a broken motor, which applies no force at all.
* ``damping``: scales ``dof_damping`` (joint damping); ``damping.<joint>`` one joint's.
* ``range.<joint>``: scales a limited joint's range (``jnt_range``) about its reference
  position 0, in (0, 1]: 0.5 lets the joint move half as far either way (a stiff or
  restrained joint). Only joints the model limits have one.
* ``timestep``: ``opt.timestep`` in seconds; Gymnasium's ``env.dt`` (timestep x frame_skip)
  and so the reward's velocities follow, and the env's ``render_fps`` is updated with it.

After the arrays are set, ``mj_setConst`` recomputes what the compiler derives from them
(subtree masses, which ``subtree_com`` divides by, the inverse inertias that scale contact
softness, actuator accelerations), as a model compiled with those masses would have.

The apply contract: `_derive` is idempotent and cheap (well under a millisecond) because
domain randomization calls it again at every reset. The first call keeps a copy of the
instance's original arrays on the unwrapped env; every call sets array = original x scale
from the complete mapping it is given, a parameter absent from it meaning its default.

HalfCheetah's XML uses the deprecated ``settotalmass`` compiler attribute, about which
MuJoCo's C library prints a warning on every compile and appends it to ``MUJOCO_LOG.TXT`` in
the working directory. `quiet_compiler` (run when a family loads mujoco) drops that one
message; any other MuJoCo warning becomes a Python ``RuntimeWarning``. Needs ``pip install
'rltransfer[mujoco]'``; without it the families are listed but making one of their envs raises
MissingDependencyError.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from .family import DERIVE, Family, Parameter, add_family

GRAVITY = -9.81  # every one of these models' opt.gravity z
ARRAYS = {"friction": "geom_friction", "gear": "actuator_gear", "damping": "dof_damping"}
_ORIGINAL = "_rltransfer_mujoco_original"  # attribute on the unwrapped env: its own arrays
_SILENCED = "'settotalmass' is deprecated"
_quiet = {"installed": False}


def _mujoco_warning(message: str) -> None:
    if _SILENCED in message:
        return
    warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)


def quiet_compiler() -> None:
    """Route MuJoCo's C warnings through Python (once per process): the ``settotalmass``
    deprecation HalfCheetah's XML triggers on every compile is dropped, others are warned.
    Without a callback, MuJoCo prints each one and writes ``MUJOCO_LOG.TXT`` in the cwd."""
    if _quiet["installed"]:
        return
    import mujoco

    if mujoco.get_mju_user_warning() is None:  # leave a callback someone else set alone
        mujoco.set_mju_user_warning(_mujoco_warning)
    _quiet["installed"] = True


def _original(env: Any) -> dict[str, Any]:
    """The instance's arrays as compiled, copied on the first call (and a scratch MjData)."""
    saved = vars(env).get(_ORIGINAL)
    if saved is None:
        import mujoco

        model = env.model
        saved = {name: getattr(model, name).copy()
                 for name in ("body_mass", "body_inertia", "jnt_range", *ARRAYS.values())}
        saved["gravity"] = model.opt.gravity.copy()
        saved["timestep"] = float(model.opt.timestep)
        saved["metadata"] = dict(env.metadata)
        saved["scratch"] = mujoco.MjData(model)  # mj_setConst's workspace, not the env's data
        setattr(env, _ORIGINAL, saved)
    return saved


def _derive(env: gym.Env, params: Mapping[str, float]) -> None:
    import mujoco

    model = env.model
    original = _original(env)
    body_scale = np.full(model.nbody, float(params.get("mass", 1.0)))
    for name, value in params.items():
        if name.startswith("mass."):
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name[5:])
            assert body > 0, f"{name}: the model has no such body"  # resolve() says so first
            body_scale[body] *= value
    model.body_mass[:] = original["body_mass"] * body_scale
    model.body_inertia[:] = original["body_inertia"] * body_scale[:, None]
    for name, array in ARRAYS.items():
        getattr(model, array)[:] = original[array] * float(params.get(name, 1.0))
    model.jnt_range[:] = original["jnt_range"]
    for name, value in params.items():
        kind, _, joint_name = name.partition(".")
        if kind not in ("gear", "damping", "range") or not joint_name:
            continue
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint_name)
        assert joint >= 0, f"{name}: the model has no such joint"  # resolve() says so first
        if kind == "gear":  # the actuators whose transmission is this joint
            model.actuator_gear[model.actuator_trnid[:, 0] == joint] *= value
        elif kind == "damping":
            model.dof_damping[model.jnt_dofadr[joint]] *= value
        else:
            model.jnt_range[joint] = original["jnt_range"][joint] * value
    model.opt.gravity[:] = original["gravity"]
    model.opt.gravity[2] = float(params.get("gravity", GRAVITY))
    model.opt.timestep = float(params.get("timestep", original["timestep"]))
    env.metadata = {**original["metadata"], "render_fps": int(np.round(1.0 / env.dt))}
    mujoco.mj_setConst(model, original["scratch"])  # bit for bit a no-op on the compiled values


def unknown_body(family: str, bodies: tuple[str, ...]):
    """The one-line reason for ``mass.<name>`` with a name the model has no body for, and for
    ``gear.``, ``damping.`` and ``range.<name>`` with a joint the family has none of."""
    joints = JOINTS.get(family, {})

    def reason(name: str) -> str | None:
        kind, _, part = name.partition(".")
        if kind == "mass":
            return (f"{family} has no body {part!r} ({name}): its bodies are "
                    f"{', '.join(bodies)}; write mass.<body>=SCALE")
        if kind in joints:
            what = {"gear": "actuated joints", "damping": "joints",
                    "range": "limited joints"}[kind]
            return (f"{family} has no {what[:-1]} {part!r} ({name}): its {what} are "
                    f"{', '.join(joints[kind])}; write {kind}.<joint>=SCALE")
        return None
    return reason


def _joint_parameters(joints: dict[str, tuple[str, ...]]) -> tuple[Parameter, ...]:
    return (
        *(Parameter(f"gear.{joint}", 1.0, 0.0, 5.0, "x",
                    f"scale of the gear of the actuator on joint {joint} (0: a broken motor; "
                    f"multiplies gear)", via=DERIVE) for joint in joints["gear"]),
        *(Parameter(f"damping.{joint}", 1.0, 0.0, 10.0, "x",
                    f"scale of joint {joint}'s damping (multiplies damping)", via=DERIVE)
          for joint in joints["damping"]),
        *(Parameter(f"range.{joint}", 1.0, 0.05, 1.0, "x",
                    f"scale of joint {joint}'s range about 0 (a restrained joint)",
                    via=DERIVE) for joint in joints["range"]),
    )


def _parameters(bodies: tuple[str, ...], timestep: float, frame_skip: int,
                joints: dict[str, tuple[str, ...]]) -> tuple[Parameter, ...]:
    return (
        Parameter("gravity", GRAVITY, -30.0, -0.1, "m/s^2",
                  "vertical (z) gravity of this env's model", via=DERIVE),
        Parameter("mass", 1.0, 0.1, 10.0, "x",
                  "scale of every body's mass and inertia (a uniformly denser robot)", via=DERIVE),
        *(Parameter(f"mass.{body}", 1.0, 0.1, 10.0, "x",
                    f"scale of body {body}'s mass and inertia (multiplies mass)", via=DERIVE)
          for body in bodies),
        Parameter("friction", 1.0, 0.0, 10.0, "x",
                  "scale of every geom's friction (all columns; floor included)", via=DERIVE),
        Parameter("gear", 1.0, 0.0, 5.0, "x",
                  "scale of every actuator's gear (strength per unit of action)", via=DERIVE),
        Parameter("damping", 1.0, 0.0, 10.0, "x", "scale of every joint's damping", via=DERIVE),
        Parameter("timestep", timestep, 0.5 * timestep, 1.5 * timestep, "s",
                  f"simulation step; env.dt = timestep x {frame_skip} (frame_skip) follows",
                  via=DERIVE),
        *_joint_parameters(joints),
    )


def _family(name: str, module: str, cls: str, doc: str, bodies: tuple[str, ...],
            timestep: float, frame_skip: int, variants: dict[str, dict[str, float]]) -> Family:
    return add_family(Family(
        name=name,
        env_ids=(f"{name}-v5",),
        entry_point=f"gymnasium.envs.mujoco.{module}:{cls}",
        doc=doc,
        parameters=_parameters(bodies, timestep, frame_skip, JOINTS[name]),
        derive=_derive,
        variants=variants,
        requires="mujoco",
        extra="mujoco",
        on_load=quiet_compiler,
        unknown_parameter=unknown_body(name, bodies),
    ))


# Body names (all but world) as each env's XML names them; test_mujoco_family checks them
# against the compiled models, so the catalog can list them without mujoco installed.
BODIES = {
    "HalfCheetah": ("torso", "bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"),
    "Hopper": ("torso", "thigh", "leg", "foot"),
    "Walker2d": ("torso", "thigh", "leg", "foot", "thigh_left", "leg_left", "foot_left"),
    "Ant": ("torso", "front_left_leg", "aux_1", "front_right_leg", "aux_2", "back_leg",
            "aux_3", "right_back_leg", "aux_4"),
    "InvertedPendulum": ("cart", "pole"),
    "InvertedDoublePendulum": ("cart", "pole", "pole2"),
}



def _joints(actuated: tuple[str, ...], unactuated: tuple[str, ...] = (),
            unlimited: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """A family's joints by what can change: ``gear`` (the actuated ones), ``damping``
    (every hinge and slide joint), ``range`` (the limited ones)."""
    every = (*unactuated, *actuated)
    return {"gear": actuated, "damping": every,
            "range": tuple(j for j in every if j not in unlimited)}


# Joint names (hinge and slide joints; no free joint) as each env's XML names them, and which
# are actuated and limited; test_mujoco_family checks them against the compiled models.
_ROOT = ("rootx", "rootz", "rooty")
JOINTS = {
    "HalfCheetah": _joints(("bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"), _ROOT,
                           _ROOT),
    "Hopper": _joints(("thigh_joint", "leg_joint", "foot_joint"), _ROOT, _ROOT),
    "Walker2d": _joints(("thigh_joint", "leg_joint", "foot_joint", "thigh_left_joint",
                         "leg_left_joint", "foot_left_joint"), _ROOT, _ROOT),
    "Ant": _joints(("hip_4", "ankle_4", "hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3",
                    "ankle_3")),
    "InvertedPendulum": _joints(("slider",), ("hinge",)),
    "InvertedDoublePendulum": _joints(("slider",), ("hinge", "hinge2"), ("hinge", "hinge2")),
}

HALF_CHEETAH = _family(
    "HalfCheetah", "half_cheetah_v5", "HalfCheetahEnv",
    "Run a planar cheetah forward from its 17-dim state (MuJoCo); gravity, masses, friction, "
    "gear, damping, timestep.", BODIES["HalfCheetah"], 0.01, 5,
    {"Slippery": {"friction": 0.5}, "HeavyTorso": {"mass.torso": 1.5},
     "WeakMotors": {"gear": 0.6}, "BrokenBackThigh": {"gear.bthigh": 0.0}})
HOPPER = _family(
    "Hopper", "hopper_v5", "HopperEnv",
    "Hop a one-legged robot forward from its 11-dim state (MuJoCo); gravity, masses, "
    "friction, gear, damping, timestep.", BODIES["Hopper"], 0.002, 4,
    {"HeavyTorso": {"mass.torso": 1.5}, "Slippery": {"friction": 0.5},
     "LowGravity": {"gravity": -5.0}})
WALKER2D = _family(
    "Walker2d", "walker2d_v5", "Walker2dEnv",
    "Walk a planar biped forward from its 17-dim state (MuJoCo); gravity, masses, friction, "
    "gear, damping, timestep.", BODIES["Walker2d"], 0.002, 4,
    {"HeavyTorso": {"mass.torso": 1.5}, "HeavyLeftLeg": {"mass.thigh_left": 2.0,
                                                         "mass.leg_left": 2.0},
     "Slippery": {"friction": 0.5}})
ANT = _family(
    "Ant", "ant_v5", "AntEnv",
    "Walk a four-legged ant forward from its 105-dim state (MuJoCo); gravity, masses, "
    "friction, gear, damping, timestep.", BODIES["Ant"], 0.01, 5,
    {"Heavy": {"mass": 1.5}, "WeakLegs": {"gear": 0.6}, "Slippery": {"friction": 0.5},
     "BrokenHip": {"gear.hip_1": 0.0}})
INVERTED_PENDULUM = _family(
    "InvertedPendulum", "inverted_pendulum_v5", "InvertedPendulumEnv",
    "Balance a pole on a cart from its 4-dim state (MuJoCo); gravity, masses, friction, "
    "gear, damping, timestep.", BODIES["InvertedPendulum"], 0.02, 2,
    {"HeavyPole": {"mass.pole": 2.0}, "WeakMotor": {"gear": 0.5},
     "HighGravity": {"gravity": -15.0}})
INVERTED_DOUBLE_PENDULUM = _family(
    "InvertedDoublePendulum", "inverted_double_pendulum_v5", "InvertedDoublePendulumEnv",
    "Balance two stacked poles on a cart from its 9-dim state (MuJoCo); gravity, masses, "
    "friction, gear, damping, timestep.", BODIES["InvertedDoublePendulum"], 0.01, 5,
    {"HeavyPole": {"mass.pole2": 1.5}, "WeakMotor": {"gear": 0.7},
     "HighGravity": {"gravity": -12.0}, "StiffCart": {"damping.slider": 5.0}})
