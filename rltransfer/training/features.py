"""Frozen image features as preprocessing: a frozen encoder's output is computed once per
observation, when the env produces it, instead of once per epoch and minibatch.

A frozen trunk (no gradient, BatchNorm in eval mode, no augmentation) is a fixed function of
the observation, so running it again in every PPO epoch or on every replay sample only
repeats work. `FrozenFeatures` is a VecEnv wrapper that replaces each batch of images by the
encoder's embeddings; the policy is then SB3's ``MlpPolicy`` on those embeddings, with the
same ``net_arch`` the image policy would have had (SB3 picks its default from the features
extractor class, and `PixelEncoder` is not NatureCNN, so both get the MLP default). Rollout
and replay buffers hold embeddings instead of frames.

With augmentation the trunk must see each update's fresh random shift, so it cannot be
cached: `caches_features` says when the cache applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecTransposeImage
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

if TYPE_CHECKING:  # torchvision is imported only where an encoder is built
    from ..specs import EncoderSpec
    from .encoders import PixelEncoder


def caches_features(encoder: EncoderSpec | None) -> bool:
    """Whether an image policy's encoder is computed once per observation: frozen and
    without augmentation."""
    return encoder is not None and encoder.freeze and encoder.augment is None


def mlp_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters of the policy on cached embeddings: ``MlpPolicy``, the same
    ``policy_kwargs`` (SB3 normalizes no embedding as an image)."""
    result = dict(hparams)
    result["policy"] = "MlpPolicy"
    policy_kwargs = {k: v for k, v in dict(hparams.get("policy_kwargs") or {}).items()
                     if k != "normalize_images"}
    if policy_kwargs:
        result["policy_kwargs"] = policy_kwargs
    else:
        result.pop("policy_kwargs", None)
    return result


def channels_first(venv: VecEnv) -> VecEnv:
    """`venv` with channel-first images, as SB3 itself would wrap it before a CNN."""
    if is_image_space_channels_first(venv.observation_space):  # type: ignore[arg-type]
        return venv
    return VecTransposeImage(venv)


def frozen_encoder(venv: VecEnv, encoder: EncoderSpec, device: str) -> PixelEncoder:
    """The frozen `PixelEncoder` for `venv`'s (channel-first) images, weights loaded, in eval
    mode on `device`. It is not part of any SB3 policy, so nothing re-initializes it."""
    from .encoders import PixelEncoder

    built = PixelEncoder(channels_first(venv).observation_space,  # type: ignore[arg-type]
                         **{**encoder.extractor_kwargs, "freeze": True})
    built._pretrained = None  # the trunk holds the file's weights; no SB3 build will reset them
    return built.to(device).eval()


class FrozenFeatures(VecEnvWrapper):
    """Observations are `encoder`'s features of the images `venv` returns (each observation
    passes the trunk once, batched across the envs), terminal observations included, since
    SB3 bootstraps truncated episodes from them and replay buffers store them."""

    def __init__(self, venv: VecEnv, encoder: PixelEncoder) -> None:
        if not encoder.frozen or encoder.augmentation is not None:
            raise ValueError("only a frozen encoder without augmentation can be cached")
        self.encoder = encoder
        self.device = encoder.mean.device
        space = spaces.Box(-np.inf, np.inf, (encoder.features_dim,), np.float32)
        super().__init__(channels_first(venv), observation_space=space)

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> np.ndarray:
        batch = torch.as_tensor(images, device=self.device).float()
        return self.encoder(batch).to("cpu").numpy().astype(np.float32, copy=False)

    def reset(self) -> np.ndarray:  # type: ignore[override]
        return self.encode(self.venv.reset())  # type: ignore[arg-type]

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        ended = [i for i, info in enumerate(infos) if "terminal_observation" in info]
        if ended:
            features = self.encode(np.stack([infos[i]["terminal_observation"] for i in ended]))
            for i, feature in zip(ended, features, strict=True):
                infos[i]["terminal_observation"] = feature
        return self.encode(observations), rewards, dones, infos  # type: ignore[arg-type]
