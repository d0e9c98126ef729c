"""Pixel encoders: SB3 features extractors for image observations.

`PixelEncoder` turns SB3's channel-first uint8 observations (frames stacked along channels)
into features, with SB3's NatureCNN or any torchvision classification model as its trunk.
A torchvision trunk encodes each stacked frame separately and concatenates the embeddings,
as in "The Unsurprising Effectiveness of Pre-Trained Vision Models for Control" (Parisi et
al. 2022). The encoder does all input handling (scaling, ImageNet normalization), so the
policy must be built with ``normalize_images=False``; `pixel_policy_kwargs` says so.

Trunk weights: ``"none"`` (random), ``"imagenet"`` (torchvision's default weights, read from
torch hub's cache) or the path of a state dict. A frozen trunk keeps its tensors as buffers:
they are saved and loaded with the policy, but SB3 never puts them in an optimizer.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import threading
import urllib.request
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, NatureCNN
from torch import nn

from ..errors import EncoderError, did_you_mean
from ..specs import AUGMENTATIONS, NATURE_CNN
from . import optim_groups

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SHIFT_PAD = 4  # DrQ pads 84x84 images by 4 pixels
# Models with auxiliary classifiers: training-mode outputs are tuples unless aux_logits=False.
# transform_input=True always, so a file of torchvision's weights acts like weights="imagenet".
_AUX_LOGITS_MODELS = ("inception_v3", "googlenet")
_RANDOM_REGULARIZERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                        nn.FeatureAlphaDropout, torchvision.ops.StochasticDepth)


@lru_cache(maxsize=1)
def encoder_names() -> tuple[str, ...]:
    """Every valid encoder name: nature-cnn, then torchvision's classification models."""
    return (NATURE_CNN, *sorted(torchvision.models.list_models(module=torchvision.models)))


def validate(encoder_kwargs: Mapping[str, Any]) -> None:
    """Check `PixelEncoder` keyword arguments without building anything (no files read
    except for the existence of a weights path, no network)."""
    allowed = [p for p in inspect.signature(PixelEncoder.__init__).parameters
               if p not in ("self", "observation_space")]
    for key in encoder_kwargs:
        if key not in allowed:
            raise EncoderError(f"unknown encoder option {key!r}.{did_you_mean(key, allowed)} "
                               f"Options: {', '.join(allowed)}")
    encoder = encoder_kwargs.get("encoder", NATURE_CNN)
    _check_encoder(encoder)
    _check_weights(encoder, encoder_kwargs.get("weights", "none"))
    _augmentation(encoder_kwargs.get("augment"))
    frame_stack = encoder_kwargs.get("frame_stack", 1)
    if not isinstance(frame_stack, int) or isinstance(frame_stack, bool) or frame_stack < 1:
        raise EncoderError(f"frame_stack must be a positive integer, got {frame_stack!r}")


def pixel_policy_kwargs(**encoder_kwargs: Any) -> dict[str, Any]:
    """SB3 ``policy_kwargs`` for a policy whose features extractor is a `PixelEncoder`.

    ``normalize_images=False`` because the encoder scales images itself; with SB3's default
    the pixels would be divided by 255 twice.
    """
    validate(encoder_kwargs)
    return {"features_extractor_class": PixelEncoder,
            "features_extractor_kwargs": dict(encoder_kwargs),
            "normalize_images": False}


class RandomShift(nn.Module):
    """DrQ's random shift (Kostrikov et al. 2020): pad each image by `pad` pixels, repeating
    the border, and crop it back to its size at a random offset drawn per sample.

    Only in training mode; in eval mode (SB3's rollouts and evaluations) it is the identity.
    """

    def __init__(self, pad: int = SHIFT_PAD) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.training or self.pad == 0:
            return images
        n, _, height, width = images.shape
        padded = F.pad(images, (self.pad,) * 4, mode="replicate").permute(0, 2, 3, 1)
        shifts = torch.randint(0, 2 * self.pad + 1, (2, n, 1, 1), device=images.device)
        rows = torch.arange(height, device=images.device).view(1, height, 1) + shifts[0]
        cols = torch.arange(width, device=images.device).view(1, 1, width) + shifts[1]
        batch = torch.arange(n, device=images.device).view(n, 1, 1)
        # Integer offsets and indexing rather than grid_sample: exact pixels, any H != W.
        return padded[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


class PixelEncoder(BaseFeaturesExtractor):
    """Encode channel-first uint8 images (values 0..255, `frame_stack` frames of 1 or 3
    channels stacked along channels) into ``features_dim`` features.

    encoder: ``"nature-cnn"`` (SB3's NatureCNN on the whole stack, ``features_dim`` outputs)
        or a torchvision classification model, head removed; each frame goes through the
        same trunk and ``features_dim = frame_stack * embedding_dim``.
    weights: ``"none"``, ``"imagenet"`` (torchvision models only) or a state dict file.
    freeze: the trunk is not trained: no gradients, not in any optimizer, BatchNorm
        statistics fixed (eval mode even while SB3 trains the policy).
    augment: ``None`` or ``"random-shift"`` (DrQ), applied in training mode only.
    """

    def __init__(self, observation_space: gym.spaces.Box, encoder: str = NATURE_CNN,
                 weights: str = "none", frame_stack: int = 1, freeze: bool = False,
                 augment: str | None = None, features_dim: int = 512) -> None:
        validate({"encoder": encoder, "weights": weights, "frame_stack": frame_stack,
                  "augment": augment})
        channels, height, width = _frame_shape(observation_space, frame_stack)
        if encoder == NATURE_CNN:
            trunk: nn.Module = NatureCNN(observation_space, features_dim, normalized_image=True)
            if weights != "none":
                _load_weights(trunk, weights, encoder)
            embedding_dim = out_dim = features_dim
        else:
            if features_dim != 512:
                warnings.warn(f"features_dim={features_dim} is ignored for {encoder}: its "
                              f"features are frame_stack × its embedding size", stacklevel=2)
            trunk = _torchvision_trunk(encoder, weights)
            embedding_dim = _embedding_dim(trunk, encoder, height, width)
            out_dim = frame_stack * embedding_dim
        super().__init__(observation_space, out_dim)
        self.encoder_name = encoder
        self.weights = str(weights)
        self.frame_stack = frame_stack
        self.frame_channels = channels
        self.frozen = freeze
        self.augmentation = augment
        self.embedding_dim = embedding_dim
        self.trunk_size = sum(p.numel() for p in trunk.parameters())
        self.augment = _augmentation(augment)
        self.trunk = trunk
        # Not persistent: constants, not weights, so state dicts hold only the trunk.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        if freeze:
            _parameters_to_buffers(trunk)
        # SB3 builds its policy around this module and then re-initializes every Conv2d and
        # Linear in it (ortho_init); `apply_pretrained` puts these tensors back afterwards.
        # A plain dict attribute, so it is in no state dict and moves with no .to().
        self._pretrained: dict[str, torch.Tensor] | None = (
            None if weights == "none" else
            {k: v.detach().clone() for k, v in trunk.state_dict().items()})
        self.train(True)

    def train(self, mode: bool = True) -> PixelEncoder:
        # SB3's policy.set_training_mode(True) reaches here; a frozen trunk stays in eval
        # mode so its BatchNorm statistics never move, while the augmentation still runs.
        super().train(mode)
        if self.frozen:
            self.trunk.eval()
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        images = self.augment(observations) / 255.0
        if self.encoder_name != NATURE_CNN:
            images = self._frames(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.trunk(images)
        # Per-frame embeddings (batch * frames, E) -> (batch, frames * E), frame k at [kE, (k+1)E).
        return features.reshape(observations.shape[0], -1)

    def _frames(self, images: torch.Tensor) -> torch.Tensor:
        """(batch, frames * c, H, W) in [0, 1] -> ImageNet-normalized (batch * frames, 3, H, W)."""
        _, _, height, width = images.shape
        frames = images.reshape(-1, self.frame_channels, height, width)
        if self.frame_channels == 1:
            frames = frames.expand(-1, 3, -1, -1)
        return (frames - self.mean) / self.std


def _frame_shape(space: gym.Space, frame_stack: int) -> tuple[int, int, int]:
    """(channels per frame, height, width) of a channel-first stacked image space."""
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
        raise EncoderError(f"pixel encoders need image observations (C, H, W), got {space}")
    if space.dtype != np.uint8:
        raise EncoderError(f"pixel encoders need uint8 images (values 0..255), got dtype "
                           f"{space.dtype}: render images as uint8")
    total, height, width = space.shape
    channels = total // frame_stack
    if total % frame_stack or channels not in (1, 3):
        hint = ""
        if space.shape[-1] % frame_stack == 0 and space.shape[-1] // frame_stack in (1, 3):
            hint = (" (it looks channel-last: SB3 transposes only uint8 images bounded 0..255, "
                    "so check the observation space's bounds)")
        raise EncoderError(f"observation shape {tuple(space.shape)} has {total} channels, which "
                           f"is not frame_stack={frame_stack} frames of 1 (grayscale) or 3 (RGB) "
                           f"channels{hint}: set frame_stack to the number of stacked frames")
    return channels, height, width


def _check_encoder(encoder: str) -> None:
    names = encoder_names()
    if encoder not in names:
        examples = ", ".join((NATURE_CNN, "resnet18", "resnet50", "mobilenet_v3_small",
                              "efficientnet_b0", "vit_b_16"))
        raise EncoderError(f"unknown encoder {encoder!r}.{did_you_mean(encoder, names)} Use "
                           f"one of {len(names)} encoders, e.g. {examples} (nature-cnn or any "
                           f"name in torchvision.models.list_models())")


def _check_weights(encoder: str, weights: str) -> None:
    if weights == "imagenet" and encoder == NATURE_CNN:
        raise EncoderError("nature-cnn has no ImageNet weights: pass weights 'none', the path of "
                           "a nature-cnn state dict, or a torchvision encoder such as resnet18")
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise EncoderError(f"encoder weights file {weights} does not exist: pass the path of a "
                           f"state dict saved with torch.save, 'imagenet' or 'none'")


def _augmentation(augment: str | None) -> nn.Module:
    if augment is None:
        return nn.Identity()
    if augment == "random-shift":
        return RandomShift(SHIFT_PAD)
    suggestion = did_you_mean(str(augment), AUGMENTATIONS)
    raise EncoderError(f"unknown augmentation {augment!r}.{suggestion} Use one of: "
                       f"{', '.join(AUGMENTATIONS)}, or none")


def _torchvision_trunk(name: str, weights: str) -> nn.Module:
    """torchvision model `name` without its classification head and random regularizers."""
    kwargs: dict[str, Any] = {}
    if name in _AUX_LOGITS_MODELS:
        kwargs["transform_input"] = True
        if weights != "imagenet":  # with weights the builder insists on its own values
            kwargs.update(aux_logits=False, init_weights=True)
    if weights == "imagenet":
        model = _imagenet_model(name, kwargs)
    else:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    if hasattr(model, "aux_logits"):
        model.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if getattr(model, aux, None) is not None:
                setattr(model, aux, None)
    _strip_head(model)
    if weights not in ("none", "imagenet"):
        _load_weights(model, weights, name)
    return model


def _strip_head(model: nn.Module) -> None:
    """Replace the classification head (the last Linear; SqueezeNet's is its last Conv2d) by
    the identity, and dropout / stochastic depth too: a policy that is random while SB3
    trains it but not while it acts would skew PPO's ratios and the value targets."""
    modules = list(model.named_modules())
    heads = [n for n, m in modules if isinstance(m, nn.Linear)]
    heads = heads or [n for n, m in modules if isinstance(m, nn.Conv2d)]
    model.set_submodule(heads[-1], nn.Identity())
    for name, module in modules:
        if isinstance(module, _RANDOM_REGULARIZERS):
            model.set_submodule(name, nn.Identity())


def _imagenet_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = weights_file("imagenet", name)
    assert cached is not None
    filename, folder = cached.name, cached.parent
    # Look in the cache first, so that an offline machine fails at once with the fix.
    if not cached.is_file() and not _reachable(weights.url):
        raise EncoderError(f"ImageNet weights for {name} are not in torch hub's cache and cannot "
                           f"be downloaded: put {filename} (from {weights.url}) into {folder}/, "
                           f"or pass --encoder-weights PATH")
    try:
        return torchvision.models.get_model(name, weights=weights, **kwargs)
    except Exception as err:  # a truncated download, a corrupt file, a dropped connection
        raise EncoderError(f"could not load ImageNet weights for {name} ({_first_line(err)}): "
                           f"put {filename} (from {weights.url}) into {folder}/, or pass "
                           f"--encoder-weights PATH") from None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether `url` answers within `timeout` seconds; a thread bounds DNS lookups too."""
    answered: list[bool] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=timeout):
                answered.append(True)
        except Exception:  # any failure means "not reachable"
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def _load_weights(module: nn.Module, path: str, encoder: str) -> None:
    """Load a state dict file into `module`: the module's own state dict, or a larger one that
    holds it (a torchvision classifier with its head, an SB3 policy's features_extractor.*)."""
    if Path(path).suffix == ".zip":  # an SB3 model.zip: its policy.pth, read as weights only
        from .transfer import load_checkpoint

        state: Any = load_checkpoint(path).state_dict
    else:
        state = _read_state(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise EncoderError(f"{path} does not hold a state dict of tensors: save one with "
                           f"torch.save(model.state_dict(), path)")
    _load_matching(module, state, path, encoder)


def _read_state(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # weights_only refuses pickled code; also corrupt files
        raise EncoderError(f"{path} is not a weights file torch.load can read safely "
                           f"({_first_line(err)}): save one with torch.save(model.state_dict(), "
                           f"path)") from None


def _load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], path: str,
                   encoder: str) -> None:
    own = module.state_dict()
    # Old torchvision files predate BatchNorm's num_batches_tracked; it is bookkeeping only.
    required = [k for k in own if not k.endswith("num_batches_tracked")]
    prefix = _key_prefix(required, state)
    if prefix is None:
        missing = [k for k in required if k not in state]
        raise EncoderError(f"{path} lacks {len(missing)} of the {len(required)} tensors of a "
                           f"{encoder} encoder (e.g. {', '.join(missing[:3])}): pass a {encoder} "
                           f"state dict")
    wrong = [k for k in required if state[prefix + k].shape != own[k].shape]
    if wrong:
        key = wrong[0]
        found, expected = tuple(state[prefix + key].shape), tuple(own[key].shape)
        raise EncoderError(f"{path} does not fit a {encoder} encoder on these images: {key} has "
                           f"shape {found}, expected {expected}")
    module.load_state_dict({k: state[prefix + k] for k in own if prefix + k in state},
                           strict=False)


def _key_prefix(required: list[str], state: Mapping[str, torch.Tensor]) -> str | None:
    """The shortest prefix p such that every required key k is in `state` as p + k."""
    anchor = required[0]
    prefixes = {key[: len(key) - len(anchor)] for key in state if key.endswith(anchor)}
    for prefix in sorted(prefixes, key=lambda p: (len(p), p)):
        if (prefix == "" or prefix.endswith(".")) and all(prefix + k in state for k in required):
            return prefix
    return None


def _embedding_dim(trunk: nn.Module, name: str, height: int, width: int) -> int:
    """Embedding size from a dummy forward pass (as SB3's NatureCNN computes its flatten size)."""
    trunk.eval()  # BatchNorm cannot take a batch of one in training mode
    try:
        with torch.no_grad():
            out = trunk(torch.zeros(1, 3, height, width))
    except (RuntimeError, ValueError, AssertionError) as err:
        raise EncoderError(f"{name} cannot encode {height}x{width} images ({_first_line(err)}): "
                           f"render larger images or choose another encoder") from None
    finally:
        trunk.train()
    return int(out.reshape(1, -1).shape[1])


def _parameters_to_buffers(module: nn.Module) -> None:
    """Turn every parameter into a buffer of the same name: still in state dicts (saved,
    loaded, transferred, moved by .to()), but never in SB3's optimizers, which take
    ``policy.parameters()``; a model reloaded with SB3's load() then matches its optimizer."""
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, param.detach())


def apply_pretrained(policy: nn.Module) -> None:
    """Load the pretrained trunk weights into every `PixelEncoder` of an SB3 policy, after SB3
    has built it: `_build()` and ``ortho_init`` re-initialize a features extractor's layers,
    and target networks (DQN's q_net_target, SAC/TD3's critic_target) copy the online ones.

    Call it once, right after the model is constructed and before any update."""
    for module in policy.modules():
        if isinstance(module, PixelEncoder) and module._pretrained is not None:
            module.trunk.load_state_dict(module._pretrained)
            module._pretrained = None  # applied; the trunk now holds these values


def trunk_checksum(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes, in name order), with
    BatchNorm's bookkeeping counter left out; equal checksums mean equal tensors."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name.endswith("num_batches_tracked"):
            continue
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def trunk_checksums(policy: nn.Module) -> dict[str, str]:
    """`trunk_checksum` of every PixelEncoder's trunk in `policy`, by its first module name
    (SB3 reaches a shared extractor by several names; it is listed once)."""
    return {name: trunk_checksum(module.trunk) for name, module in policy.named_modules()
            if isinstance(module, PixelEncoder)}


def weights_file(weights: str, encoder: str) -> Path | None:
    """The file the trunk weights come from: the path given, or for ``imagenet`` torchvision's
    file in torch hub's cache; None for random weights."""
    if weights == "none":
        return None
    if weights == "imagenet":
        url = torchvision.models.get_model_weights(encoder).DEFAULT.url
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    return Path(weights)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def encoder_parameters(policy: nn.Module) -> list[nn.Parameter]:
    """The trainable trunk parameters of every PixelEncoder in `policy` (once each, though SB3
    may reach one extractor by several names; target networks' copies included)."""
    seen: dict[int, nn.Parameter] = {}
    for module in policy.modules():
        if isinstance(module, PixelEncoder):
            for param in module.trunk.parameters():
                seen.setdefault(id(param), param)
    return list(seen.values())


def scale_encoder_lr(model: Any, scale: float) -> None:
    """Train the encoder trunk of `model` (an SB3 algorithm) with learning rate × `scale`.

    The trunk's parameters move to an optimizer group of their own in every optimizer that
    holds them (policy.optimizer; actor/critic.optimizer for SAC/TD3), which trains at
    `scale` × the rate SB3's schedule sets (`rltransfer.training.optim_groups`, the mechanism
    ``finetune:lr_scale`` uses too). model.save() writes the optimizer in SB3's layout, so
    SB3's load() reads it; call this again after loading a model to go on training it at the
    scale. Calling it again replaces the previous scale; scale=1 trains the trunk at the
    schedule's rate again.
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise EncoderError(f"encoder learning-rate scale must be a number > 0, got {scale!r} "
                           f"(to keep the encoder fixed, freeze it)")
    policy = model.policy
    optim_groups.attach(policy)  # a model SB3's load() read: the groups it was saved with
    held = optim_groups.policy_lr_factors(policy)
    trained = [p for p in encoder_parameters(policy) if id(p) in held]
    if trained:
        optim_groups.scale(policy, trained, float(scale))
    elif scale != 1:
        warnings.warn("no optimizer trains encoder parameters (is the encoder frozen?): the "
                      f"encoder learning-rate scale {scale} has no effect", stacklevel=2)


def describe(encoder: PixelEncoder | Mapping[str, Any],
             observation_space: gym.spaces.Box | None = None) -> dict[str, Any]:
    """JSON-able summary of an encoder (for transfer.json and run specs).

    Given keyword arguments rather than a built encoder, it builds one with random weights
    (sizes do not depend on the weights: nothing is read or downloaded) on
    `observation_space`, by default RGB frames of 224x224 (84x84 for nature-cnn).
    """
    if isinstance(encoder, PixelEncoder):
        built, weights = encoder, encoder.weights
    else:
        kwargs = dict(encoder)
        weights = kwargs.pop("weights", "none")
        validate({**kwargs, "weights": weights})
        if observation_space is None:
            side = 84 if kwargs.get("encoder", NATURE_CNN) == NATURE_CNN else 224
            shape = (3 * kwargs.get("frame_stack", 1), side, side)
            observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        built = PixelEncoder(observation_space, **kwargs)
    trainable = sum(p.numel() for p in built.trunk.parameters())
    summary: dict[str, Any] = {
        "encoder": built.encoder_name, "weights": weights, "frozen": built.frozen,
        "augment": built.augmentation, "frame_stack": built.frame_stack,
        "embedding_dim": built.embedding_dim, "features_dim": built.features_dim,
        "trainable_parameters": trainable, "frozen_parameters": built.trunk_size - trainable,
    }
    if weights == "imagenet":
        summary["imagenet_weights"] = str(
            torchvision.models.get_model_weights(built.encoder_name).DEFAULT)
    return summary
