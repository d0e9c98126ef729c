"""Wall time of one study on this machine: --workers 1 vs --workers N, and the same runs as
plain sequential Stable-Baselines3 scripts.

The study: PPO, CartPole-v1 -> CartPole-v1:length=1.0, scratch and finetune x 4 seeds (8 target
runs), RL-Zoo's preset, 20 evaluations of 10 episodes per run. The source policy is trained
once beforehand and copied into every configuration's cache, so each timing covers the same 8
target runs (the same total env steps). Each configuration gets a fresh output folder, so no
scratch run is reused from the cache. Every study runs as `python -m rltransfer run ...` in a
subprocess: process start-up is included, as a user would see it.

    python benchmarks/scaling.py                       # 8 x 50k steps, workers 1 and 2
    python benchmarks/scaling.py --timesteps 20000 --threads-grid

Not a test: it takes minutes, and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE, TARGET = "CartPole-v1", "CartPole-v1:length=1.0"

# One plain SB3 script per run, as a researcher would write it without rltransfer: the same
# preset (RL-Zoo's PPO CartPole-v1), the same budget, an EvalCallback with the same
# evaluation schedule, and for finetune the source weights loaded with set_parameters.
PLAIN_SCRIPT = r"""
import sys
import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env

condition, seed, timesteps, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def long_pole():
    env = gym.make("CartPole-v1")
    env.unwrapped.length = 1.0
    env.unwrapped.polemass_length = env.unwrapped.masspole * 1.0
    return env


def linear(start):
    return lambda progress: progress * start


env = make_vec_env(long_pole, n_envs=8, seed=seed)
eval_env = make_vec_env(long_pole, n_envs=10, seed=seed + 100_000)
model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
            n_epochs=20, ent_coef=0.0, learning_rate=linear(0.001), clip_range=linear(0.2),
            seed=seed, device="cpu", verbose=0)
if condition == "finetune":
    model.set_parameters(source, exact_match=False)
callback = EvalCallback(eval_env, n_eval_episodes=10, eval_freq=max(timesteps // 20 // 8, 1),
                        verbose=0)
model.learn(timesteps, callback=callback)
model.save(f"plain-{condition}-{seed}.zip")
"""


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def _study_command(out: Path, name: str, args: argparse.Namespace, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "rltransfer", "run", SOURCE, TARGET,
            "--conditions", "scratch,finetune", "--seeds", str(args.seeds),
            "--timesteps", str(args.timesteps), "--source-timesteps",
            str(args.source_timesteps), "--out", str(out), "--name", name, *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timesteps", type=int, default=50_000, help="steps per target run")
    parser.add_argument("--source-timesteps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="the parallel configuration (default: cores)")
    parser.add_argument("--threads-grid", action="store_true",
                        help="also time --workers N with 2 torch threads per worker "
                             "(oversubscribed on 2 cores)")
    parser.add_argument("--skip-plain", action="store_true", help="skip the plain SB3 scripts")
    parser.add_argument("--only-plain", action="store_true",
                        help="time only the plain SB3 scripts")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="rltransfer-scaling-"))
    try:
        print(f"priming the source cache ({args.source_timesteps:,} steps) in {root}")
        prime = root / "prime"
        subprocess.run(_study_command(prime, "prime", args, []) + ["--seeds", "1",
                                                                    "--timesteps", "256"],
                       check=True, stdout=subprocess.DEVNULL)
        cache = prime / ".cache" / "sources"
        source_zip = next(cache.glob("*/model.zip"))

        configs = [("workers 1", ["--workers", "1"])]
        configs.append((f"workers {args.workers}", ["--workers", str(args.workers)]))
        if args.threads_grid:
            configs.append((f"workers {args.workers}, 2 threads each",
                            ["--workers", str(args.workers), "--threads", "2"]))
        if args.only_plain:
            configs = []
        results: dict[str, float] = {}
        steps = 2 * args.seeds * args.timesteps
        for label, extra in configs:
            out = root / label.replace(" ", "_").replace(",", "")
            shutil.copytree(cache, out / ".cache" / "sources")
            seconds = _run(_study_command(out, "study", args, extra), root)
            results[label] = seconds
            print(f"{label:32s} {seconds:7.1f} s  {steps / seconds:8,.0f} env steps/s")
        if not args.skip_plain:
            plain = root / "plain"
            plain.mkdir()
            start = time.perf_counter()
            for condition in ("scratch", "finetune"):
                for seed in range(args.seeds):
                    subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, condition, str(seed),
                                    str(args.timesteps), str(source_zip)], cwd=plain, check=True)
            results["plain SB3 scripts, sequential"] = seconds = time.perf_counter() - start
            print(f"{'plain SB3 scripts, sequential':32s} {seconds:7.1f} s  "
                  f"{steps / seconds:8,.0f} env steps/s")
        if args.only_plain:
            return
        base = results["workers 1"]
        parallel = results[f"workers {args.workers}"]
        print(f"\n{2 * args.seeds} runs x {args.timesteps:,} steps "
              f"({steps:,} env steps), {os.cpu_count()} cores:")
        print(f"  speed-up, workers {args.workers} vs workers 1: {base / parallel:.2f}x")
        if "plain SB3 scripts, sequential" in results:
            plain_seconds = results["plain SB3 scripts, sequential"]
            print(f"  speed-up, workers {args.workers} vs plain sequential SB3 scripts: "
                  f"{plain_seconds / parallel:.2f}x")
            print(f"  workers 1 vs plain sequential SB3 scripts: {plain_seconds / base:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps({"steps": steps, "seconds": results},
                                                  indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
