"""Throughput of one training run: plain SB3 vs the same run inside rltransfer.

rltransfer adds evaluation (at step 0 and every eval_freq steps), CSV and TensorBoard writing
to a plain `model.learn`. This measures what that costs, in env steps per second of wall time.
Not a test: run it with `make bench` (or `python benchmarks/throughput.py --help`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from stable_baselines3.common.env_util import make_vec_env

from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training import algos
from rltransfer.training.run import build_model, train_run


def plain_sb3(env_id: str, hparams: dict, n_envs: int, steps: int, seed: int) -> float:
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    run = RunSpec(EnvSpec(env_id), AgentSpec("ppo", hparams, n_envs, "cpu"), "scratch", seed,
                  steps, steps, 1)
    model = build_model(run, env)
    start = time.perf_counter()
    model.learn(steps)
    return model.num_timesteps / (time.perf_counter() - start)


def in_rltransfer(env_id: str, hparams: dict, n_envs: int, steps: int, seed: int,
                  eval_freq: int, eval_episodes: int) -> float:
    run = RunSpec(EnvSpec(env_id), AgentSpec("ppo", hparams, n_envs, "cpu"), "scratch", seed,
                  steps, eval_freq, eval_episodes)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = train_run(run, Path(folder) / "run")
        return result.timesteps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    hparams = algos.preset("ppo", [args.env])
    n_envs = int(hparams["n_envs"])
    print(f"PPO {args.env}, {args.steps:,} steps, n_envs {n_envs}, torch threads "
          f"{torch.get_num_threads()}, best of {args.repeats}")
    plain = max(plain_sb3(args.env, hparams, n_envs, args.steps, s) for s in range(args.repeats))
    print(f"plain SB3 model.learn            {plain:8,.0f} steps/s")
    for evals in (20, 5):
        rate = max(in_rltransfer(args.env, hparams, n_envs, args.steps, s, args.steps // evals,
                                 args.eval_episodes) for s in range(args.repeats))
        print(f"rltransfer run, {evals:2d} evaluations     {rate:8,.0f} steps/s "
              f"({rate / plain:.0%} of plain)")


if __name__ == "__main__":
    main()
