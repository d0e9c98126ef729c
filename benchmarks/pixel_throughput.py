"""PPO env steps/s on a pixel target: NatureCNN, frozen ResNet-18 (features computed once per
observation) and fine-tuned ResNet-18; for the frozen encoder, beside its physical limit.

Uses rltransfer's own code path (env factory, pixel pipeline, frame stacking, encoders,
`training.frozen_features`, `training.build_model`). Each configuration runs one warm-up
rollout, then `--rollouts` timed rollouts with PPO's updates (RL-Zoo's Atari settings: n_steps
128, batch 256, 4 epochs), and reports env steps per second of wall time.

The *limit* of a frozen encoder is the trunk's forward pass alone, over the very observations
the timed rollouts produced, batched as in the rollout (one batch of `--n-envs` images per
step), measured in the same process right after. Every observation must pass the trunk at
least once, so PPO with a frozen encoder cannot beat it; `ratio` says how close it comes.
Not a test: `python benchmarks/pixel_throughput.py --help`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rltransfer.env_factory import make_vec
from rltransfer.specs import AgentSpec, EncoderSpec, EnvSpec, RunSpec
from rltransfer.training import algos
from rltransfer.training.features import FrozenFeatures, channels_first
from rltransfer.training.run import build_model, frozen_features

ENCODERS = {
    "NatureCNN": {"encoder": "nature-cnn"},
    "ResNet-18 frozen": {"encoder": "resnet18", "weights": "none", "freeze": True},
    "ResNet-18 fine-tuned": {"encoder": "resnet18", "weights": "none", "freeze": False,
                             "lr_scale": 0.1},
}


class Recorder(VecEnvWrapper):
    """Keeps a copy of every batch of observations while `recording`."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.recording = False
        self.batches: list[np.ndarray] = []

    def reset(self) -> Any:
        return self._keep(self.venv.reset())

    def step_wait(self) -> Any:
        observations, rewards, dones, infos = self.venv.step_wait()
        return self._keep(observations), rewards, dones, infos

    def _keep(self, observations: Any) -> Any:
        if self.recording:
            self.batches.append(np.array(observations))
        return observations


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(env: EnvSpec, encoder: dict, device: str, n_envs: int, n_steps: int,
            rollouts: int) -> dict[str, float]:
    hparams = {**algos.preset("ppo", ["atari"]), "policy": "CnnPolicy", "n_steps": n_steps}
    extractor = EncoderSpec.from_dict({**encoder, "frame_stack": env.frame_stack})
    steps_per_rollout = n_envs * n_steps
    run = RunSpec(env, AgentSpec("ppo", hparams, n_envs, device, extractor), "scratch", 0,
                  steps_per_rollout * (rollouts + 1), steps_per_rollout, 1)
    # Channel-first below the recorder, so it keeps exactly what the trunk is given.
    recorder = Recorder(channels_first(make_vec(env, n_envs, seed=0)))
    venv, frozen = frozen_features(run, recorder)
    model = build_model(run, venv)
    model.learn(steps_per_rollout)  # warm-up: allocation, cuDNN autotuning, first rollout
    passes: list[int] = []
    trunk = frozen.trunk if frozen is not None else model.policy.features_extractor.trunk
    hook = trunk.register_forward_hook(lambda m, args, out: passes.append(args[0].shape[0]))
    recorder.recording = True
    _sync(device)
    start = time.perf_counter()
    model.learn(steps_per_rollout * rollouts, reset_num_timesteps=False)
    _sync(device)
    seconds = time.perf_counter() - start
    recorder.recording = False
    hook.remove()
    steps = steps_per_rollout * rollouts
    frames_per_obs = 1 if encoder["encoder"] == "nature-cnn" else env.frame_stack
    result = {"steps_per_s": steps / seconds,
              "trunk_passes_per_step": sum(passes) / frames_per_obs / steps}
    if frozen is not None:
        result["limit"] = _limit(recorder.batches, venv, device)  # type: ignore[arg-type]
    venv.close()
    return result


def _limit(batches: list[np.ndarray], features: FrozenFeatures, device: str) -> float:
    """Observations per second through the frozen trunk alone (`FrozenFeatures.encode`, as
    the rollout calls it), batch by batch as recorded."""
    features.encode(batches[0])  # warm-up
    _sync(device)
    start = time.perf_counter()
    for batch in batches:
        features.encode(batch)
    _sync(device)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="rltransfer/PixelCatch-v0",
                        help="an env spec, e.g. CartPole-v1 with --pixels")
    parser.add_argument("--pixels", action="store_true", help="observe rendered frames")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--frame-stack", type=int, default=4)
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--n-steps", type=int, default=128, help="PPO steps per env per rollout")
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (default: all cores)")
    parser.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = EnvSpec.parse(args.env)
    env = EnvSpec(env.id, env.params, pixels=args.pixels, image_size=args.image_size,
                  frame_stack=args.frame_stack)
    print(f"PPO on {env}, {args.n_envs} envs, n_steps {args.n_steps}, batch 256, 4 epochs; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    for name in args.encoders.split(","):
        for device in args.devices.split(","):
            result = measure(env, ENCODERS[name], device, args.n_envs, args.n_steps,
                             args.rollouts)
            line = (f"{name:22s} {device:5s} {result['steps_per_s']:9,.1f} env steps/s, "
                    f"{result['trunk_passes_per_step']:.2f} trunk passes per step")
            if "limit" in result:
                line += (f"; limit (trunk alone) {result['limit']:9,.1f} obs/s, ratio "
                         f"{result['steps_per_s'] / result['limit']:.2f}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
