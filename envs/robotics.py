"""Gymnasium-Robotics suites: PointMaze and AntMaze layouts, FrankaKitchen task sets, Fetch
tasks, as families whose parameters pick the suite's registered envs.

* **PointMaze** / **AntMaze**: ``layout`` picks ``PointMaze_<layout>-v3`` /
  ``AntMaze_<layout>-v5`` (only the maze map differs); ``dense=1`` the ``...Dense`` id
  (reward exp(-distance to the goal) instead of 1 within 0.45 of it). Goal-conditioned dict
  observations (observation, achieved_goal, desired_goal); reaching the goal does not end
  the episode (a continuing task: the sparse reward is 1 at every step there) before the
  layout's limit (PointMaze: UMaze and Open 300 steps, Medium 600, Large 800; AntMaze: 700,
  Medium and Large 1000). ``info["success"]``: within 0.45 of the goal.
* **FrankaKitchen**: ``tasks`` is a set of the kitchen's tasks joined by '+'
  (``tasks=kettle+microwave``; light_switch for 'light switch'). Its goals are nested
  dicts, one entry per task, which SB3 cannot take: `FlatGoals` concatenates them (tasks
  sorted) into Box entries and sets ``info["success"]`` when every chosen task is done. The
  episode ends then, or after 280 steps.
* **Fetch**: ``task`` picks ``Fetch<task>-v4`` (Reach, Push, Slide, PickAndPlace),
  ``dense=1`` the Dense id; 50 steps, ``info["is_success"]``. Reach's 10 observation values
  are 10 of the other tasks' 25 (`fetch_observation_map`); Push, Slide and PickAndPlace share
  all 25.

Needs ``pip install 'rltransfer[robotics]'``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from .family import ENV_ID, MAKE_KWARG, Family, Parameter, add_family, name_parameter

REQUIRES = "gymnasium_robotics"
EXTRA = "robotics"

LAYOUTS = ("UMaze", "Open", "Open_Diverse_G", "Open_Diverse_GR", "Medium", "Medium_Diverse_G",
           "Medium_Diverse_GR", "Large", "Large_Diverse_G", "Large_Diverse_GR")
"""The maze maps gymnasium_robotics registers (Diverse_G: goals anywhere; Diverse_GR: goals
and resets anywhere)."""
_MAZE_ID = re.compile(r"^(PointMaze|AntMaze)_([A-Za-z_]+?)(Dense)?-v(\d+)$")


def _dense(kind: str) -> Parameter:
    return Parameter("dense", 0, 0, 1, "-", f"1: the {kind}Dense id (dense reward), 0: sparse",
                     via=ENV_ID, value_type=bool)


def maze_id(base_id: str, chosen: Mapping[str, Any]) -> str:
    """The maze id for `chosen` layout and dense values; the rest as `base_id` has them."""
    match = _MAZE_ID.match(base_id)
    assert match is not None, base_id
    robot, layout, dense, version = match.groups()
    layout = chosen.get("layout", layout)
    dense = chosen.get("dense", bool(dense))
    return f"{robot}_{layout}{'Dense' if dense else ''}-v{version}"


def _maze(robot: str, version: int, entry_point: str, doc: str) -> Family:
    return add_family(Family(
        name=robot,
        env_ids=(f"{robot}_UMaze-v{version}",),
        entry_point=entry_point,
        doc=doc,
        parameters=(
            name_parameter("layout", "UMaze", LAYOUTS,
                           f"the maze map (picks {robot}_<layout>-v{version})", via=ENV_ID),
            _dense(f"{robot}_<layout>"),
        ),
        id_for=maze_id,
        requires=REQUIRES,
        extra=EXTRA,
    ))


POINT_MAZE = _maze("PointMaze", 3, "gymnasium_robotics.envs.maze.point_maze:PointMazeEnv",
                   "a 2-D force-actuated ball reaching goals in a maze (dict observations)")
ANT_MAZE = _maze("AntMaze", 5, "gymnasium_robotics.envs.maze.ant_maze_v5:AntMazeEnv",
                 "MuJoCo's Ant reaching goals in a maze (dict observations)")


KITCHEN_TASKS = ("bottom_burner", "hinge_cabinet", "kettle", "light_switch", "microwave",
                 "slide_cabinet", "top_burner")
"""FrankaKitchen's tasks (its OBS_ELEMENT_GOALS, spaces as underscores)."""


def kitchen_tasks(text: str) -> list[str]:
    """A `tasks` value as FrankaKitchen's tasks_to_complete: 'light_switch+microwave' ->
    ['light switch', 'microwave']."""
    return [name.replace("_", " ") for name in text.split("+")]


class FlatGoals(gym.Wrapper):
    """FrankaKitchen with flat goals: ``achieved_goal`` and ``desired_goal`` (a dict of one
    array per chosen task) become one Box each, the tasks' arrays concatenated in sorted
    order, and ``info["success"]`` says whether every chosen task has been done this
    episode (the kitchen lists them in ``info["episode_task_completions"]``)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Dict), space
        self.tasks = sorted(space["desired_goal"].keys())
        self.observation_space = gym.spaces.Dict({
            "observation": space["observation"],
            "achieved_goal": self._flat_space(space["achieved_goal"]),
            "desired_goal": self._flat_space(space["desired_goal"]),
        })

    def _flat_space(self, space: gym.spaces.Dict) -> gym.spaces.Box:
        parts = [space[task] for task in self.tasks]
        return gym.spaces.Box(np.concatenate([p.low for p in parts]),
                              np.concatenate([p.high for p in parts]), dtype=np.float64)

    def _flat(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return {"observation": np.asarray(obs["observation"], dtype=np.float64),
                **{key: np.concatenate([np.asarray(obs[key][task], dtype=np.float64).ravel()
                                        for task in self.tasks])
                   for key in ("achieved_goal", "desired_goal")}}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return self._flat(obs), {**info, "success": False}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = super().step(action)
        done = set(info.get("episode_task_completions", ()))
        success = all(task.replace("_", " ") in done for task in self.tasks)
        return self._flat(obs), reward, terminated, truncated, {**info, "success": success}


KITCHEN = add_family(Family(
    name="FrankaKitchen",
    env_ids=("FrankaKitchen-v1",),
    entry_point="gymnasium_robotics.envs.franka_kitchen:KitchenEnv",
    doc="a Franka arm in a kitchen: a set of tasks to complete (goals flattened); 280 steps",
    parameters=(
        name_parameter("tasks", "+".join(KITCHEN_TASKS), KITCHEN_TASKS,
                       "the tasks to complete, joined by '+', e.g. kettle+microwave",
                       via=MAKE_KWARG, attr="tasks_to_complete", separator="+",
                       to_env=kitchen_tasks),
    ),
    wrap=FlatGoals,
    # Gymnasium's checker warns that the kitchen's goal dict is the same object at reset and
    # step: FlatGoals builds new arrays each time, so nothing downstream shares it.
    make_kwargs={"disable_env_checker": True},
    requires=REQUIRES,
    extra=EXTRA,
))


FETCH_TASKS = ("Reach", "Push", "Slide", "PickAndPlace")
_FETCH_ID = re.compile(r"^Fetch(Reach|Push|Slide|PickAndPlace)(Dense)?-v(\d+)$")
_REACH_IN_OBJECT_TASKS = ((0, 3, 0, 3), (3, 5, 9, 11), (5, 8, 20, 23), (8, 10, 23, 25))
"""Reach's observation (grip_pos 3, gripper_state 2, grip_velp 3, gripper_vel 2) in the object
tasks' (grip_pos 3, object_pos 3, object_rel_pos 3, gripper_state 2, object_rot 3,
object_velp 3, object_velr 3, grip_velp 3, gripper_vel 2): (Reach start, end, theirs)."""


def fetch_id(base_id: str, chosen: Mapping[str, Any]) -> str:
    """The Fetch id for `chosen` task and dense values; the rest as `base_id` has them."""
    match = _FETCH_ID.match(base_id)
    assert match is not None, base_id
    task, dense, version = match.groups()
    task = chosen.get("task", task)
    dense = chosen.get("dense", bool(dense))
    return f"Fetch{task}{'Dense' if dense else ''}-v{version}"


def fetch_observation_map(source_id: str, target_id: str) -> str | None:
    """The obs_map from Reach's observation to an object task's, or back; None between tasks
    whose observations already line up (the object tasks share all 25 values)."""
    source, target = _FETCH_ID.match(source_id), _FETCH_ID.match(target_id)
    if source is None or target is None:
        return None
    reach = (source.group(1) == "Reach", target.group(1) == "Reach")
    if reach == (True, False):
        pairs = [f"{a}:{b}>{c}:{d}" for a, b, c, d in _REACH_IN_OBJECT_TASKS]
    elif reach == (False, True):
        pairs = [f"{c}:{d}>{a}:{b}" for a, b, c, d in _REACH_IN_OBJECT_TASKS]
    else:
        return None
    return f"observation[{';'.join(pairs)}]"


FETCH = add_family(Family(
    name="Fetch",
    env_ids=tuple(f"Fetch{task}{dense}-v4" for task in FETCH_TASKS for dense in ("", "Dense")),
    entry_point="",  # one env class per task: found by its ids
    doc="a Fetch arm reaching, pushing, sliding or picking a block to a goal; 50 steps",
    parameters=(
        name_parameter("task", "Reach", FETCH_TASKS, "the Fetch task (picks Fetch<task>-v4)",
                       via=ENV_ID),
        _dense("Fetch<task>"),
    ),
    id_for=fetch_id,
    observation_map=fetch_observation_map,
    requires=REQUIRES,
    extra=EXTRA,
))
