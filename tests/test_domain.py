"""The shared domain measures (`rltransfer.training.domain`) on samples with known answers."""

import numpy as np
import pytest
import torch

from rltransfer.training import domain


def test_mmd2_is_zero_on_identical_samples_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(300, 4)), dtype=torch.float32)
    assert float(domain.mmd2(x, x)) == pytest.approx(0.0, abs=1e-6)
    y_near = x + 0.1
    y_far = x + 2.0
    assert 0 < float(domain.mmd2(x, y_near)) < float(domain.mmd2(x, y_far))


def test_mmd2_matches_a_hand_computed_value_with_one_bandwidth() -> None:
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[3.0]])
    # kernel sum over BANDWIDTHS with scale 1: k(a, b) = exp(-(a-b)^2 / (2 (f)^2))
    expected = 0.0
    for f in domain.BANDWIDTHS:
        k0, k1, k2, k3 = (np.exp(-d ** 2 / (2 * f * f)) for d in (0, 1, 2, 3))
        expected += (k0 * 2 + k1 * 2) / 4 + 1 - 2 * (k3 + k2) / 2
    assert float(domain.mmd2(x, y, scale=1.0)) == pytest.approx(expected, rel=1e-5)


def test_coral_matches_its_formula() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 3)), 2 * rng.normal(size=(40, 3))
    expected = np.sum((np.cov(x.T) - np.cov(y.T)) ** 2) / (4 * 9)
    got = domain.coral(torch.as_tensor(x), torch.as_tensor(y))
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.ones(3, requires_grad=True)
    domain.reverse_gradient(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))


def test_classifier_accuracy_is_chance_on_one_domain_and_high_on_two() -> None:
    rng = np.random.default_rng(2)
    same = domain.classifier_accuracy(rng.normal(size=(400, 3)), rng.normal(size=(400, 3)))
    apart = domain.classifier_accuracy(rng.normal(size=(400, 3)),
                                       rng.normal(size=(400, 3)) + [2.0, 0, 0])
    assert abs(same.accuracy - 0.5) < 0.1
    assert apart.accuracy > 0.8
    assert (apart.n_train, apart.n_test) == (280, 120)


def test_domain_distance_subsamples_reproducibly() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2000, 2)), rng.normal(size=(1500, 2)) + 1
    assert domain.domain_distance(a, b, max_samples=500) == domain.domain_distance(
        a, b, max_samples=500)
    assert domain.domain_distance(a, a[:1000]) < domain.domain_distance(a, b)


@pytest.mark.parametrize("algo", ["ppo", "sac", "td3", "dqn"])
def test_policy_features_are_the_action_heads_input(algo: str) -> None:
    import gymnasium as gym
    from stable_baselines3 import DQN, PPO, SAC, TD3

    env = gym.make("CartPole-v1" if algo in ("ppo", "dqn") else "Pendulum-v1")
    cls = {"ppo": PPO, "sac": SAC, "td3": TD3, "dqn": DQN}[algo]
    model = cls("MlpPolicy", env, policy_kwargs={"net_arch": [16, 8]}, seed=0)
    obs = torch.as_tensor(np.stack([env.observation_space.sample() for _ in range(5)]))
    features = domain.policy_features(model.policy, obs)
    assert features.shape == (5, 8)
    policy = model.policy
    if algo == "ppo":
        expected = policy.action_net(features)
        got = policy.get_distribution(obs).distribution.logits
        assert torch.allclose(torch.log_softmax(expected, -1), got, atol=1e-6)
    elif algo == "sac":
        assert torch.allclose(policy.actor.mu(features), policy.actor.get_action_dist_params(
            obs)[0], atol=1e-6)
    elif algo == "td3":
        assert torch.allclose(policy.actor.mu[-2:](features), policy.actor(obs), atol=1e-6)
    else:
        assert torch.allclose(policy.q_net.q_net[-1](features), policy.q_net(obs), atol=1e-6)
    features.sum().backward()  # differentiable: align's losses train through it
