"""PPO env steps/s on a pixel target: NatureCNN vs frozen vs fine-tuned ResNet-18, CPU vs GPU.

Uses rltransfer's own code path (env factory, pixel pipeline, frame stacking, encoders,
model construction). Each configuration runs one warm-up rollout, then `--rollouts` timed
rollouts with PPO's updates (RL-Zoo's Atari settings: n_steps 128, batch 256, 4 epochs),
and reports env steps per second of wall time. Not a test: `python benchmarks/pixel_throughput.py`.
"""

from __future__ import annotations

import argparse
import time

import torch

from rltransfer import algos
from rltransfer.env_factory import make_vec
from rltransfer.specs import AgentSpec, EnvSpec, RunSpec
from rltransfer.training import build_model

ENCODERS = {
    "NatureCNN": {"encoder": "nature-cnn"},
    "ResNet-18 frozen": {"encoder": "resnet18", "weights": "none", "freeze": True},
    "ResNet-18 fine-tuned": {"encoder": "resnet18", "weights": "none", "freeze": False,
                             "lr_scale": 0.1},
}


def measure(env: EnvSpec, encoder: dict, device: str, n_envs: int, rollouts: int) -> float:
    hparams = {**algos.preset("ppo", ["atari"]), "policy": "CnnPolicy",
               "policy_kwargs": {"features_extractor": {**encoder,
                                                        "frame_stack": env.frame_stack}}}
    steps_per_rollout = n_envs * hparams["n_steps"]
    run = RunSpec(env, AgentSpec("ppo", hparams, n_envs, device), "scratch", 0,
                  steps_per_rollout * (rollouts + 1), steps_per_rollout, 1)
    venv = make_vec(env, n_envs, seed=0)
    model = build_model(run, venv)
    model.learn(steps_per_rollout)  # warm-up: allocation, cuDNN autotuning, first rollout
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.learn(steps_per_rollout * rollouts, reset_num_timesteps=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    venv.close()
    return steps_per_rollout * rollouts / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="rltransfer/PixelCatch-v0",
                        help="an env spec, e.g. CartPole-v1 with --pixels")
    parser.add_argument("--pixels", action="store_true", help="observe rendered frames")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--frame-stack", type=int, default=4)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    args = parser.parse_args()
    env = EnvSpec.parse(args.env)
    env = EnvSpec(env.id, env.params, pixels=args.pixels, image_size=args.image_size,
                  frame_stack=args.frame_stack)
    print(f"PPO on {env}, {args.n_envs} envs, n_steps 128, batch 256, 4 epochs; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    for name in args.encoders.split(","):
        for device in args.devices.split(","):
            rate = measure(env, ENCODERS[name], device, args.n_envs, args.rollouts)
            print(f"{name:22s} {device:5s} {rate:9,.0f} env steps/s", flush=True)


if __name__ == "__main__":
    main()
