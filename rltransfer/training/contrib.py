"""What sb3-contrib's algorithms need of a run beyond SB3's own seams.

* **MaskablePPO** acts only among the actions its env allows: every env it trains or is
  evaluated on must have an ``action_masks()`` method (sb3-contrib's ``ActionMasker`` wrapper
  adds one), checked when the model is built; its evaluations pass the masks
  (sb3-contrib's maskable `evaluate_policy`).
* **RecurrentPPO** carries LSTM states: SB3's `evaluate_policy` passes them along
  (``predict(state=..., episode_start=...)``), so its evaluations need nothing more.
* **ARS** keeps the policy's weights as one flat vector (``model.weights``), which each update
  perturbs and loads back into the policy: weights loaded into the policy after the model is
  built (a transfer) must be written into that vector too, or ARS's first update would bring
  back the fresh initialization (`sync_weights`).
* **TRPO** differentiates every actor parameter the policy lists, which fails for a parameter
  without a gradient: a frozen policy lists only the parameters that train (`list_trainable`).

Nothing here imports sb3-contrib: a model is recognized by its class's module.
"""

from __future__ import annotations

from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from ..errors import AlgorithmError

MASKS = "action_masks"


def name_of(model: BaseAlgorithm) -> str:
    """The registry name of `model`'s algorithm (``tqc``, ``maskableppo``, ``ppo``, ...)."""
    return type(model).__name__.lower()


def needs_masks(algo: str) -> bool:
    """Whether `algo` acts on the env's action masks."""
    return algo == "maskableppo"


def check_env(algo: str, env: VecEnv, label: str) -> None:
    """AlgorithmError (one line) when `algo` needs something of `env` that it lacks:
    MaskablePPO's ``action_masks()``."""
    if needs_masks(algo) and not env.has_attr(MASKS):
        raise AlgorithmError(
            f"--algo {algo} needs an env that says which actions are valid, but {label} has no "
            f"action_masks() method: add one to the env (or wrap it in sb3_contrib's "
            f"ActionMasker), or use --algo ppo")


def evaluate_policy(model: BaseAlgorithm, env: VecEnv, **kwargs: Any) -> Any:
    """SB3's `evaluate_policy`, or for MaskablePPO sb3-contrib's, which passes the env's
    action masks to the policy (the same arguments and results)."""
    if needs_masks(name_of(model)):
        from sb3_contrib.common.maskable.evaluation import evaluate_policy as masked

        return masked(model, env, **kwargs)  # type: ignore[arg-type]
    from stable_baselines3.common.evaluation import evaluate_policy as plain

    return plain(model, env, **kwargs)


def sync_weights(model: BaseAlgorithm) -> None:
    """ARS: its weight vector from the policy's (current) parameters, after weights were
    loaded into the policy; a no-op for other algorithms."""
    if name_of(model) == "ars":
        vector = torch.nn.utils.parameters_to_vector(model.policy.parameters()).detach()
        model.weights = vector  # type: ignore[attr-defined]


def list_trainable(model: BaseAlgorithm) -> None:
    """TRPO: the policy lists only its parameters that train (``requires_grad``), so TRPO's
    natural-gradient step (which differentiates each listed actor parameter) leaves frozen
    ones alone. On the instance: SB3 saves the policy as a state dict, which is unchanged
    (it holds every tensor), so nothing of this is pickled. A no-op for other algorithms."""
    if name_of(model) != "trpo":
        return
    policy = model.policy
    every = type(policy).named_parameters

    def named_parameters(*args: Any, **kwargs: Any) -> Any:
        return ((name, p) for name, p in every(policy, *args, **kwargs) if p.requires_grad)

    policy.named_parameters = named_parameters  # type: ignore[method-assign]
