"""Raw env steps/s of the catalog's families against what training on them reaches.

For each env: random actions through the env alone (`env_factory.make_env`, one env, one
core), then `training.train_run` (the whole run path: vectorized envs, evaluation, logging)
with the algorithm's preset for that env and 1 torch thread, in steps per second of its
training time (`status.json`'s `steps_per_second`). An off-policy learner's
``learning_starts`` is capped at a twentieth of the run (SB3's default, 100, at 2,000 steps),
so it updates during it rather than only after RL-Zoo's 10,000 random steps. The ratio says
how far the learner is from the simulator's own limit.

    python benchmarks/env_speed.py                      # every env below
    python benchmarks/env_speed.py --envs LunarLander-v3 --steps 5000
    python benchmarks/env_speed.py --envs HalfCheetah-v5 Hopper-v5 --steps 2000

Not a test: its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rltransfer.env_factory import make_env
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training import algos
from rltransfer.training.run import train_run

# env, the algorithm trained on it (RL-Zoo has a preset for each, or its default)
ENVS = {"LunarLander-v3": "ppo", "LunarLander-v3:main_engine_power=9": "ppo",
        "LunarLander-v3:continuous=1": "sac", "BipedalWalker-v3": "sac",
        "BipedalWalker-v3:friction=1": "sac", "CartPole-v1": "ppo", "Pendulum-v1": "sac",
        "HalfCheetah-v5": "sac", "Hopper-v5": "ppo", "Hopper-v5:mass.torso=1.5": "ppo",
        "Walker2d-v5": "sac", "Ant-v5": "sac", "InvertedPendulum-v5": "ppo",
        "InvertedDoublePendulum-v5": "ppo"}


def raw_steps_per_second(spec: EnvSpec, steps: int) -> float:
    env = make_env(spec)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def training_steps_per_second(spec: EnvSpec, algo: str, steps: int) -> float:
    hparams = algos.preset(algo, [spec.id])
    n_envs = int(hparams.pop("n_envs", 1))
    hparams.pop("n_timesteps", None)
    if "learning_starts" in hparams:  # off-policy: update during the run (see the top)
        hparams["learning_starts"] = min(int(hparams["learning_starts"]), steps // 20)
    run = RunSpec(spec, AgentSpec(algo, hparams, n_envs, "cpu"), "scratch", 0, steps,
                  max(steps // 4, 1), 2)
    with tempfile.TemporaryDirectory() as folder:
        result = train_run(run, Path(folder) / "run")
    return result.steps_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), metavar="ENV",
                        help="envs (with parameters) to measure (default: all of ENVS)")
    parser.add_argument("--steps", type=int, default=3000,
                        help="env steps per measurement (default: 3000)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| env | raw env steps/s (random actions, 1 env) | algorithm | training steps/s | "
          "share of raw |")
    print("| --- | ---: | --- | ---: | ---: |")
    for text in args.envs:
        spec = EnvSpec.parse(text)
        algo = ENVS.get(text, "ppo")
        raw = raw_steps_per_second(spec, args.steps * 5)
        trained = training_steps_per_second(spec, algo, args.steps)
        print(f"| `{text}` | {raw:,.0f} | {algo} | {trained:,.0f} | {trained / raw:.1%} |",
              flush=True)


if __name__ == "__main__":
    main()
