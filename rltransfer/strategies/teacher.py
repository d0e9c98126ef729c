"""The source policy rebuilt to act or teach on the target: kickstart's teacher, replay's
behaviour policy during the prefill, and any strategy that queries the source while the
target trains.

It is rebuilt from weights only (nothing is unpickled): the target model's policy class,
built with the target's spaces and policy kwargs, the source's state dict loaded strictly; on
the target's device, in eval mode, without gradients. It is built under a forked random
stream, so the target's own stream stays as a scratch run's, and it is no module of the
target policy, so neither model.zip nor a checkpoint holds it.

Each strategy words its own refusal when the source does not fit (`Misfit` carries the two
networks' shapes): kickstart suggests other conditions, replay a dataset.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

from ..errors import ConfigError

Shapes = dict[str, tuple[int, ...]]


class Misfit(Exception):
    """The source's tensors do not fit the target's network: name -> shape of each."""

    def __init__(self, expected: Shapes, given: Shapes) -> None:
        super().__init__("the source's tensors do not fit the target's network")
        self.expected, self.given = expected, given  # the target's, the source's

    def first(self) -> str:
        """The first tensor that differs, as ``name: (2, 32) in the source, (2, 64) in the
        target`` (``missing`` on the side that lacks it)."""
        expected, given = self.expected, self.given
        differs = sorted(set(expected) ^ set(given)) or sorted(
            name for name in expected if expected[name] != given[name])
        name = differs[0]
        return (f"{name}: {given.get(name, 'missing')} in the source, "
                f"{expected.get(name, 'missing')} in the target")

    def describe(self) -> str:
        """The first shape that differs (``name is (32,4) in the source, (32,6) in the
        target``), else how many tensors one side lacks."""
        for name, shape in self.expected.items():
            if name in self.given and self.given[name] != shape:
                return (f"{name} is {_shape(self.given[name])} in the source, "
                        f"{_shape(shape)} in the target")
        missing = [n for n in self.expected if n not in self.given]
        extra = [n for n in self.given if n not in self.expected]
        if missing:
            return f"{len(missing)} tensors missing in the source, e.g. {missing[0]}"
        return f"{len(extra)} source tensors the target does not have, e.g. {extra[0]}"


def spaces_differ(model: BaseAlgorithm, source_spaces: tuple[Any, Any] | None
                  ) -> tuple[str, str, str, str] | None:
    """None when the source's (observation, action) spaces are `model`'s (or unknown), else
    (source observation, source action, target observation, target action), described as
    `describe` says."""
    if source_spaces is None:
        return None
    source = tuple(describe(space) for space in source_spaces)
    target = (describe(model.observation_space), describe(model.action_space))
    return None if source == target else (*source, *target)  # type: ignore[return-value]


def check_distillation_spaces(model: BaseAlgorithm, source_spaces: tuple[Any, Any] | None,
                              condition: str) -> None:
    """ConfigError (one line) unless a teacher with the source's spaces can distil into
    `model` (kickstart, qdagger): the same observation and action spaces."""
    differ = spaces_differ(model, source_spaces)
    if differ is not None:
        raise ConfigError(
            f"condition {condition!r}: distillation needs the source's observation and action "
            f"spaces, but the source policy observes {differ[0]} and acts in {differ[1]} "
            f"while the target observes {differ[2]} and acts in {differ[3]}: use finetune or "
            f"reinit-head, or a SOURCE with the target's spaces")


def describe(space: spaces.Space) -> str:
    """What acting or distilling needs of a space, as text: two spaces with the same
    description have observations the source can read, or actions whose distributions
    compare."""
    if isinstance(space, spaces.Box):
        return f"Box{tuple(space.shape)}"
    if isinstance(space, spaces.Discrete):
        return f"Discrete({int(space.n)})"
    if isinstance(space, spaces.MultiDiscrete):
        return f"MultiDiscrete({space.nvec.tolist()})"
    if isinstance(space, spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {describe(v)}" for k, v in space.spaces.items()) + ")"
    return str(space)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def rebuild(model: BaseAlgorithm, source_state: dict[str, torch.Tensor]) -> BasePolicy:
    """The source policy in `source_state`, rebuilt as `model`'s policy (see the module's
    docstring); `Misfit` when its tensors are not exactly those of `model`'s network."""
    kwargs = dict(model.policy_kwargs)
    if "use_sde" in inspect.signature(model.policy_class).parameters:
        kwargs.setdefault("use_sde", model.use_sde)  # on-policy: SB3 passes it on its own
    with torch.random.fork_rng(devices=[]):  # the target's random stream stays as it was
        policy = model.policy_class(model.observation_space, model.action_space,  # type: ignore[call-arg]
                                    lambda _: 0.0, **kwargs)
    expected = {name: tuple(t.shape) for name, t in policy.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in source_state.items()}
    if expected != given:
        raise Misfit(expected, given)
    policy.load_state_dict(source_state, strict=True)
    policy.to(model.device)
    policy.set_training_mode(False)
    policy.requires_grad_(False)
    return policy
