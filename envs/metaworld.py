"""Meta-World (v3): 50 manipulation tasks of one Sawyer arm, as MT1 single-task envs.

``Meta-World/MT1:task=push-v3`` is ``gym.make("Meta-World/MT1", env_name="push-v3")``: one
task, whose object and goal positions are drawn at every reset from a fixed set of 50 (its
MT1 "tasks"). Every task has the same spaces (observation Box(39,): hand position, gripper
opening, two objects' poses, the previous step's 18 values and the goal; action Box(4,):
hand motion and gripper), so a policy moves between tasks without an observation map.
Episodes are 500 steps (truncated; success does not end them); ``info["success"]`` is 1.0
while the task is solved. Rewards are Meta-World's v2 shaped rewards in [0, 10].

Seeding. Meta-World's env ignores ``reset(seed=...)`` (its ``seed()`` method seeds it), and
MT1 picks each episode's goal *before* the env's reset. So the family seeds the env (and
through it the goal choice) in ``reset(seed=...)``, and builds the set of 50 goals with a
fixed benchmark seed (`GOALS_SEED`), like a benchmark's fixed levels: two envs reset with the
same seed give the same episodes, and every run of a study draws from the same 50 goals.

Needs ``pip install 'rltransfer[metaworld]'``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from .family import Family, add_family, name_parameter

GOALS_SEED = 0
"""The seed MT1 draws a task's 50 goals with (the make kwarg ``seed``); runs seed episodes."""
DEFAULT_TASK = "reach-v3"


def task_names() -> tuple[str, ...]:
    """Meta-World's v3 task names, from the package (imported here, not with the catalog)."""
    META_WORLD.load()
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(sorted(ALL_V3_ENVIRONMENTS))


class SeededTasks(gym.Wrapper):
    """Seeds Meta-World's env at ``reset(seed=...)``, which it otherwise ignores, before MT1
    picks the episode's goal from the env's generator; and declares the observation space
    MT1 observes. The env is built partially observable (goal bounds 0) and MT1's task
    makes it fully observable (the goal in the last 3 values) only at the first reset, after
    a vectorized env has read the space: its goal bounds are the task's goal space."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        unwrapped = env.unwrapped
        space, goal = unwrapped.observation_space, unwrapped.goal_space
        low, high = space.low.copy(), space.high.copy()
        low[-3:], high[-3:] = goal.low, goal.high
        unwrapped.observation_space = gym.spaces.Box(low, high, dtype=space.dtype)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.env.unwrapped.seed(seed)
        return super().reset(seed=seed, options=options)


META_WORLD = add_family(Family(
    name="Meta-World",
    env_ids=("Meta-World/MT1",),
    entry_point="",  # registered with a lambda: found by its id
    doc="Meta-World v3 MT1: one Sawyer arm task (of 50), goals drawn per episode; 500 steps.",
    parameters=(
        name_parameter("task", DEFAULT_TASK, task_names,
                       "the Meta-World v3 task (python -m rltransfer envs Meta-World lists "
                       "them), e.g. push-v3", attr="env_name"),
    ),
    wrap=SeededTasks,
    # The checker would warn of the goal bounds SeededTasks corrects (built after it checks).
    make_kwargs={"env_name": DEFAULT_TASK, "seed": GOALS_SEED, "disable_env_checker": True},
    requires="metaworld",
    extra="metaworld",
))
