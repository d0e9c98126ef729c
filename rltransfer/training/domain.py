"""Two domains, source and target: how far apart their samples are, and how well a classifier
tells them apart. Shared by the methods that adapt across domains (`darc`'s classifiers,
`align`'s losses) and by the study's similarity measures, so each number means one thing.

* `mmd2`: the squared maximum mean discrepancy between two samples with a sum of Gaussian
  kernels (Gretton et al. 2012; bandwidths: the pooled samples' median pairwise distance times
  `BANDWIDTHS`), the biased V-statistic, differentiable: `align:method=mmd`'s loss and the
  domain distance every run and study reports (`domain_distance`, on features).
* `coral`: Sun & Saenko's (2016) CORAL loss, the squared Frobenius distance between the two
  samples' covariances over 4 d^2, differentiable.
* `reverse_gradient`: Ganin et al.'s (2016) gradient reversal layer, identity forward and
  -scale x the gradient backward (DANN's encoder learns to fool its domain classifier).
* `DomainClassifier`: a small MLP that outputs the logit of "target" (log p(target | x) -
  log p(source | x)), with optional Gaussian noise on its inputs while training (DARC's
  regularizer). `classifier_accuracy` fits a fresh one on two samples and returns its
  accuracy on held-out samples: 0.5 when the domains cannot be told apart, 1 when always;
  `held_out_accuracy` does the same with the held-out rows given (transitions held out by
  episode: the study's similarity measure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

BANDWIDTHS = (0.5, 1.0, 2.0)  # multiples of the median pairwise distance: mmd2's kernels


def _pairwise_sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, y).pow(2)


def mmd2(x: torch.Tensor, y: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Squared MMD between samples `x` (n, d) and `y` (m, d), a sum of Gaussian kernels at
    `BANDWIDTHS` x `scale` (default: the median distance between the pooled samples, taken
    without gradient). 0 for identical samples; differentiable in both."""
    x, y = x.flatten(1).float(), y.flatten(1).float()
    xx, yy, xy = _pairwise_sq(x, x), _pairwise_sq(y, y), _pairwise_sq(x, y)
    if scale is None:
        with torch.no_grad():
            pooled = torch.cat([xx.flatten(), yy.flatten(), xy.flatten()])
            positive = pooled[pooled > 0]
            scale = float(positive.median().sqrt()) if positive.numel() else 1.0
    total = x.new_zeros(())
    for factor in BANDWIDTHS:
        gamma = 1.0 / (2.0 * (factor * max(scale, 1e-8)) ** 2)
        total = total + (torch.exp(-gamma * xx).mean() + torch.exp(-gamma * yy).mean()
                         - 2.0 * torch.exp(-gamma * xy).mean())
    return total.clamp_min(0.0)


def coral(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CORAL: ||C_x - C_y||_F^2 / (4 d^2) between the covariances of `x` (n, d) and
    `y` (m, d); needs n, m >= 2."""
    x, y = x.flatten(1).float(), y.flatten(1).float()
    d = x.shape[1]

    def covariance(z: torch.Tensor) -> torch.Tensor:
        centered = z - z.mean(dim=0, keepdim=True)
        return centered.T @ centered / (z.shape[0] - 1)

    return (covariance(x) - covariance(y)).pow(2).sum() / (4.0 * d * d)


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: D102
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by -`scale` (DANN's layer)."""
    return _Reverse.apply(x, scale)


class DomainClassifier(nn.Module):
    """An MLP from an input vector to the logit of "target" (vs "source"). `noise`: the
    standard deviation of Gaussian noise added to inputs in training mode (DARC uses 1 on
    its standardized inputs); none in eval mode."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (64, 64), noise: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).float()
        if self.training and self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        return self.net(x).squeeze(-1)

    @staticmethod
    def loss(source_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with source labelled 0 and target 1, each domain weighted
        equally whatever the sample sizes."""
        bce = nn.functional.binary_cross_entropy_with_logits
        return 0.5 * (bce(source_logits, torch.zeros_like(source_logits))
                      + bce(target_logits, torch.ones_like(target_logits)))

    @staticmethod
    def accuracy(source_logits: torch.Tensor, target_logits: torch.Tensor) -> float:
        """The balanced accuracy: the mean of each domain's share classified right."""
        return 0.5 * (float((source_logits < 0).float().mean())
                      + float((target_logits > 0).float().mean()))


@dataclass(frozen=True)
class Fit:
    """A classifier fitted on two samples: its held-out balanced accuracy and loss."""

    accuracy: float
    loss: float
    n_train: int  # samples per domain it was trained on
    n_test: int  # held-out samples per domain it was scored on


def classifier_accuracy(source: np.ndarray, target: np.ndarray, *, steps: int = 300,
                        holdout: float = 0.3, seed: int = 0,
                        hidden: tuple[int, ...] = (64, 64)) -> Fit:
    """Fit a fresh `DomainClassifier` to tell rows of `source` from rows of `target` (each
    (n, d); inputs standardized by the training rows' pooled mean and std) with Adam for
    `steps` full-batch steps, and score it on the held-out share `holdout` of each."""
    if len(source) < 4 or len(target) < 4:
        raise ValueError("classifier_accuracy needs at least 4 samples per domain")
    rng = np.random.default_rng(seed)

    def split(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
        order = rng.permutation(len(rows))
        cut = max(1, int(round(len(rows) * holdout)))
        return torch.as_tensor(rows[order[cut:]]), torch.as_tensor(rows[order[:cut]])

    source_train, source_test = split(source)
    target_train, target_test = split(target)
    return held_out_accuracy(source_train, target_train, source_test, target_test,
                             steps=steps, seed=seed, hidden=hidden)


def held_out_accuracy(source_train: np.ndarray | torch.Tensor,
                      target_train: np.ndarray | torch.Tensor,
                      source_test: np.ndarray | torch.Tensor,
                      target_test: np.ndarray | torch.Tensor, *, steps: int = 300,
                      seed: int = 0, hidden: tuple[int, ...] = (64, 64)) -> Fit:
    """`classifier_accuracy` with the held-out rows given: for samples whose rows are not
    independent (transitions of one episode), held out by episode rather than by row."""
    generator = torch.Generator().manual_seed(seed)

    def rows(sample: np.ndarray | torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(sample, dtype=torch.float32)
        return tensor.reshape(len(tensor), -1)

    source_train, target_train = rows(source_train), rows(target_train)
    source_test, target_test = rows(source_test), rows(target_test)
    if min(len(source_train), len(target_train), len(source_test), len(target_test)) < 1:
        raise ValueError("held_out_accuracy needs training and held-out rows of each domain")
    pooled = torch.cat([source_train, target_train])
    mean, std = pooled.mean(dim=0), pooled.std(dim=0).clamp_min(1e-6)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        classifier = DomainClassifier(pooled.shape[1], hidden)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
        for _ in range(steps):
            loss = DomainClassifier.loss(classifier((source_train - mean) / std),
                                         classifier((target_train - mean) / std))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        classifier.eval()
        with torch.no_grad():
            s, t = classifier((source_test - mean) / std), classifier((target_test - mean) / std)
            return Fit(DomainClassifier.accuracy(s, t), float(DomainClassifier.loss(s, t)),
                       len(source_train), len(source_test))


def domain_distance(source: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                    max_samples: int = 1000, seed: int = 0) -> float:
    """`mmd2` between two samples of features (at most `max_samples` rows of each, drawn
    without replacement with `seed`): the domain distance runs and studies report."""
    rng = np.random.default_rng(seed)

    def rows(sample: np.ndarray | torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(sample.detach().cpu() if isinstance(
            sample, torch.Tensor) else sample, dtype=np.float32))
        tensor = tensor.reshape(len(tensor), -1)
        if len(tensor) > max_samples:
            tensor = tensor[torch.as_tensor(rng.choice(len(tensor), max_samples,
                                                       replace=False))]
        return tensor

    with torch.no_grad():
        return float(mmd2(rows(source), rows(target)))


def policy_features(policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """The features a policy's action head reads its observations through, for one batch of
    (preprocessed-as-SB3-does) observations; differentiable. What `align` aligns and the
    study's feature distance compares:

    * a features extractor that learns (an image encoder, a dict's combined extractor): its
      output, ``extract_features`` as SB3 computes it;
    * MLP features (SB3's `FlattenExtractor`, which only flattens): the last hidden layer
      before the action head: an actor-critic's ``latent_pi``, SAC's (TQC's, CrossQ's)
      ``actor.latent_pi``, TD3's actor network without its output layer, DQN's (QR-DQN's)
      Q-network without its output layer.
    """
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.preprocessing import preprocess_obs
    from stable_baselines3.common.torch_layers import FlattenExtractor

    actor = getattr(policy, "actor", None)
    q_net = getattr(policy, "q_net", None)
    if isinstance(policy, ActorCriticPolicy):
        extractor = policy.pi_features_extractor
        head = policy.mlp_extractor.forward_actor
    elif actor is not None and hasattr(actor, "latent_pi"):  # SAC, TQC, CrossQ
        extractor, head = actor.features_extractor, actor.latent_pi
    elif actor is not None and hasattr(actor, "mu"):  # TD3, DDPG: mu ends Linear, Tanh
        extractor, head = actor.features_extractor, actor.mu[:-2]
    elif q_net is not None:  # DQN; QR-DQN's quantile net
        inner = getattr(q_net, "q_net", None) or getattr(q_net, "quantile_net", None)
        if inner is None:
            raise TypeError(f"no features known for {type(policy).__name__}")
        extractor, head = q_net.features_extractor, inner[:-1]
    else:
        raise TypeError(f"no features known for {type(policy).__name__}")
    features = extractor(preprocess_obs(obs, policy.observation_space,
                                        normalize_images=policy.normalize_images))
    return head(features) if isinstance(extractor, FlattenExtractor) else features
