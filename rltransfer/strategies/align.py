"""Feature alignment (`align`): the target fine-tunes from the source's weights with an extra
loss that pulls the features of target observations toward those of source observations, so
heads learned on the source stay valid (CORAL, Sun & Saenko 2016; MMD, e.g. Long et al.
2015; DANN, Ganin et al. 2016).

* **Start**: the source's weights, copied as finetune copies them (by name and shape).
* **Features**: `domain.policy_features`: a learning features extractor's output (NatureCNN,
  a `PixelEncoder`'s torchvision trunk), or for MLP policies the action head's input.
* **Source observations**: before training, the source policy (rebuilt from its weights,
  `rltransfer.strategies.teacher`, actions sampled as in its training) plays the study's
  SOURCE env and ``n`` of its observations are kept, plus ``measure`` more from separately
  seeded episodes, held out for the distance. These source env steps do not count toward
  --timesteps (the target's budget); transfer.json records them. They are stored with the
  run as `FILE` (compressed, in the observation space's dtype: uint8 for images; transfer.json's
  ``env_steps_outside_budget`` counts them, and the target's below), so a run
  resumed from its checkpoint, or restarted, reads them back instead of collecting again
  (when the file was made for the same source weights, envs, seed and sizes).
* **The loss**, at each update: the batch SB3 trains on (PPO's minibatch, A2C's rollout,
  SAC's replay batch) against as many source observations drawn at random from the ``n``;
  both go through the policy in one forward pass (so BatchNorm sees both domains at once)
  and ``weight x D(target features, source features)`` joins SB3's gradients before the
  optimizer's step: ``coral`` (`domain.coral`), ``mmd`` (`domain.mmd2`) or ``dann``: a
  `domain.DomainClassifier` on the features through `domain.reverse_gradient` (scale
  ``weight``), trained with its own Adam in the same step to tell the domains apart while
  the features learn to fool it. PPO and A2C clip the total gradient to ``max_grad_norm``
  again, as SB3 clips its own.
* **SAC**: the actor's features are aligned (its features extractor, and for MLP policies its
  ``latent_pi``), through the actor's optimizer; the critic's own extractor (SB3's default,
  ``share_features_extractor=False``) learns from its TD loss only. With a shared extractor,
  SB3 trains it through the actor's optimizer, so it is aligned.
* **The distance**: `domain.domain_distance` (MMD^2, median-heuristic bandwidths) between
  the policy's features (eval mode) of the ``measure`` held-out source observations and of
  ``measure`` target observations the source policy collects on the target before training
  (separately seeded; env steps outside the budget, never used by any loss), before
  training (the copied weights) and after it (the final weights): the same observations
  both times, so only the features changed.

Seams, as kickstart's (nothing of this is pickled into model.zip): PPO's and A2C's
``evaluate_actions`` and SAC's ``actor.action_log_prob`` are wrapped on the instance to keep
the training batch's observations, and a step pre-hook on the optimizer adds the loss. DANN's
classifier and its optimizer are no module of the policy; for PPO and A2C they ride in
checkpoint.pt inside the policy optimizer's state dict (state-dict hooks, removed when
``learn`` ends, so model.zip holds SB3's own), so a resumed run continues with them.
TensorBoard: ``align/loss`` (the mean alignment term since the last dump; dann: the
classifier's cross-entropy), ``align/weight``, ``align/domain_accuracy`` (dann: the
classifier's balanced accuracy on the training batches), ``align/distance_before`` (step 0)
and ``align/distance_after`` (the last step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import weakref
import zipfile
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import FlattenExtractor

from ..env_factory import make_vec
from ..errors import ConfigError
from ..io_utils import atomic_write_bytes
from ..specs import EnvSpec
from ..training import domain, vecnorm
from ..training.features import channels_first
from ..training.transfer import TransferReport, apply_transfer
from . import registry, teacher
from .hooks import OUTSIDE_BUDGET, Context, Strategy

CORAL, MMD, DANN = registry.ALIGN_METHODS
DEFAULT_WEIGHTS = {CORAL: 1000.0, MMD: 1.0, DANN: 0.1}  # align:weight left out (README)
FILE = "source_observations.npz"
FORMAT = 1
SOURCE_SEED_OFFSET = 200_000  # the source's collecting envs (evaluations use +100_000)
HELD_OUT_SEED_OFFSET = 300_000  # the held-out source episodes
TARGET_SEED_OFFSET = 400_000  # the target's measuring env
COLLECT_ENVS = 8  # envs stepped side by side while the source policy collects
CLASSIFIER_LR = 1e-3  # dann's classifier: Adam's step size
CLASSIFIER_HIDDEN = (64, 64)
CHUNK = 256  # observations per forward pass when measuring
STATE_KEY = "rltransfer_align_domain_classifier"  # in the optimizer's state dict
_LABEL = re.compile(r" \[[^\]]*\]$")  # an env's " [pixels 84px x4]" observation label


def weight_of(choice: registry.Choice) -> float:
    """The alignment loss's weight: ``weight``, else its method's default."""
    given = choice.get("weight")
    return float(given) if given is not None else DEFAULT_WEIGHTS[str(choice.get("method"))]


# --- the pre-flight check ---------------------------------------------------------------

def check(model: BaseAlgorithm, choice: registry.Choice, context: Context) -> None:
    """ConfigError (one line) unless `choice` can align `model`: the source env observes
    (and acts) as the target does, the features it aligns are trained, and, given the
    source's weights, the source policy can act in the target's network."""
    label = choice.label
    if context.source_env is None:
        raise ConfigError(f"condition {label!r} collects observations on the source env, "
                          f"which this run was not given: run it in a study (rltransfer run "
                          f"SOURCE TARGET)")
    obs_space = model.observation_space
    if not isinstance(obs_space, spaces.Box):
        raise ConfigError(f"condition {label!r} stores observations as arrays, but "
                          f"{context.target} observes {teacher.describe(obs_space)}: use "
                          f"finetune")
    source = _spaces(context.source_env)
    target = (teacher.describe(obs_space), teacher.describe(model.action_space))
    if source[0] != target[0]:
        raise ConfigError(
            f"condition {label!r}: the source {context.source_env} observes "
            f"{source[0]}, the target {context.target} {target[0]}: align passes both envs' "
            f"observations through one network, so they must observe alike: use finetune "
            f"or reinit-head, or give both the same observation options (--pixels, "
            f"--image-size, --frame-stack)")
    if source[1] != target[1]:
        raise ConfigError(
            f"condition {label!r}: the source policy collects observations by acting on "
            f"{context.source_env} in {source[1]}, but the target acts in {target[1]}: "
            f"align needs the same action space; use finetune or reinit-head")
    if not _features_train(model):
        raise ConfigError(
            f"condition {label!r} trains the policy's features, but the target's have no "
            f"trained layer (a frozen encoder, or an MLP without hidden layers): fine-tune "
            f"the encoder (--finetune-encoder), or give the policy hidden layers (--hparams "
            f"'policy_kwargs={{net_arch=[64,64]}}')")
    if context.source_state is not None:
        _source_policy(model, context, label)


def _spaces(spec: EnvSpec) -> tuple[str, str]:
    """The (observation, action) spaces a policy on `spec` reads and acts in, described."""
    venv = channels_first(make_vec(spec, 1, seed=0))
    try:
        return teacher.describe(venv.observation_space), teacher.describe(venv.action_space)
    finally:
        venv.close()


def _features_train(model: BaseAlgorithm) -> bool:
    """Whether the features align aligns depend on trained parameters (eval mode: a
    BatchNorm's statistics stay as they are)."""
    policy = model.policy
    was_training = policy.training
    policy.set_training_mode(False)
    try:
        sample = torch.zeros((2, *(model.observation_space.shape or ())), device=model.device)
        with torch.enable_grad():
            return domain.policy_features(policy, sample).requires_grad
    finally:
        policy.set_training_mode(was_training)


def _source_policy(model: BaseAlgorithm, context: Context, label: str) -> BasePolicy:
    assert context.source_state is not None
    try:
        return teacher.rebuild(model, context.source_state)
    except teacher.Misfit as misfit:
        raise ConfigError(
            f"condition {label!r}: {context.source_label or 'the source policy'} does not "
            f"fit the target's network ({misfit.first()}), so it cannot collect the source "
            f"observations: give source and target the same --algo and --hparams "
            f"policy_kwargs") from None


# --- the observations -------------------------------------------------------------------

@dataclasses.dataclass
class Observations:
    """The observations align uses: `train` (the loss's source minibatches come from them),
    `source` and `target` (held out: the distance's), raw (as the envs return them, before
    any VecNormalize), in the target policy's layout (channel-first images)."""

    train: np.ndarray
    source: np.ndarray
    target: np.ndarray
    meta: dict[str, Any]
    reused: bool = False


def _checksum(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def target_spec(context: Context) -> EnvSpec:
    """The target env as the run observes it: `context.target_env`; without it (a context
    made by hand), `context.target` (which names it with its observation label) with the
    source's observation options, which a study gives both."""
    if context.target_env is not None:
        return context.target_env
    assert context.source_env is not None
    source = context.source_env
    return dataclasses.replace(EnvSpec.parse(_LABEL.sub("", context.target)),
                               pixels=source.pixels, image_size=source.image_size,
                               grayscale=source.grayscale, frame_stack=source.frame_stack)


def collect(policy: BasePolicy, spec: EnvSpec, count: int, seed: int,
            stats: vecnorm.Stats | None, normalize: dict[str, Any] | None) -> np.ndarray:
    """`count` raw observations `policy` meets on `spec` (its actions sampled, its inputs
    scaled by `stats` when they hold observation statistics), in episodes seeded from
    `seed`; in the policy's layout and the observation space's dtype."""
    venv = channels_first(make_vec(spec, min(COLLECT_ENVS, count), seed=seed))
    acting = vecnorm.evaluation_env(venv, stats, {"normalize": normalize or True})
    normalizer = vecnorm.find(acting) if acting is not venv else None
    space = venv.observation_space
    rows: list[np.ndarray] = []
    try:
        with torch.random.fork_rng(devices=[]):  # the target's random stream stays as it was
            torch.manual_seed(seed)
            obs = acting.reset()
            while sum(len(r) for r in rows) < count:
                raw = normalizer.get_original_obs() if normalizer is not None else obs
                rows.append(np.asarray(raw, dtype=space.dtype))
                actions, _ = policy.predict(obs, deterministic=False)
                obs, _, _, _ = acting.step(actions)
    finally:
        acting.close()
    return np.concatenate(rows)[:count]


def _meta(model: BaseAlgorithm, choice: registry.Choice, context: Context) -> dict[str, Any]:
    assert context.source_env is not None and context.source_state is not None
    return {"format": FORMAT, "source_env": str(context.source_env),
            "target_env": context.target, "seed": int(model.seed or 0),
            "n": int(choice.get("n")), "measure": int(choice.get("measure")),
            "shape": list(model.observation_space.shape or ()),
            "source_sha256": _checksum(context.source_state)}


def _read(path: Any, meta: dict[str, Any]) -> Observations | None:
    """The observations stored at `path`, when they were made as `meta` says; None
    otherwise (missing, damaged, or for another source, env, seed or size)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = json.loads(str(data["meta"]))
            if stored != meta:
                return None
            return Observations(data["train"], data["source"], data["target"], stored, True)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def observations(model: BaseAlgorithm, choice: registry.Choice,
                 context: Context) -> Observations:
    """The run's stored observations (`FILE` in its folder) when they fit, else collected
    now by the source policy and stored (atomically)."""
    meta = _meta(model, choice, context)
    path = context.run_dir / FILE if context.run_dir is not None else None
    if path is not None and path.is_file():
        found = _read(path, meta)
        if found is not None:
            return found
    assert context.source_env is not None
    policy = _source_policy(model, context, choice.label)
    normalizer = vecnorm.find(model.get_env())
    normalize = ({"clip_obs": normalizer.clip_obs, "epsilon": normalizer.epsilon}
                 if normalizer is not None else None)
    seed = meta["seed"]
    target = target_spec(context)
    made = Observations(
        collect(policy, context.source_env, meta["n"], seed + SOURCE_SEED_OFFSET,
                context.source_stats, normalize),
        collect(policy, context.source_env, meta["measure"], seed + HELD_OUT_SEED_OFFSET,
                context.source_stats, normalize),
        collect(policy, target, meta["measure"], seed + TARGET_SEED_OFFSET,
                context.source_stats, normalize), meta)
    if made.target.shape[1:] != tuple(meta["shape"]):
        raise ConfigError(f"condition {choice.label!r}: {target} observes "
                          f"{made.target.shape[1:]}, not the target's {tuple(meta['shape'])}")
    if path is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, train=made.train, source=made.source, target=made.target,
                            meta=np.array(json.dumps(meta)))
        atomic_write_bytes(path, buffer.getvalue())
    return made


# --- the loss ---------------------------------------------------------------------------

def _as_input(model: BaseAlgorithm, rows: np.ndarray) -> torch.Tensor:
    """Raw observations as the policy reads them: scaled by the target env's current
    VecNormalize statistics (vectors, when it normalizes), on the policy's device."""
    normalizer = vecnorm.find(model.get_env())
    if normalizer is not None and normalizer.norm_obs:
        rows = normalizer.normalize_obs(rows)
    return torch.as_tensor(np.asarray(rows, dtype=np.float32), device=model.device)


def features_of(model: BaseAlgorithm, rows: np.ndarray) -> torch.Tensor:
    """`domain.policy_features` of raw observations, in eval mode, without gradients."""
    policy = model.policy
    was_training = policy.training
    policy.set_training_mode(False)
    try:
        with torch.no_grad():
            return torch.cat([domain.policy_features(policy, _as_input(model, rows[i:i + CHUNK]))
                              for i in range(0, len(rows), CHUNK)]).cpu()
    finally:
        policy.set_training_mode(was_training)


def distance(model: BaseAlgorithm, held_out: Observations) -> float:
    """The domain distance (`domain.domain_distance`) between the features of the held-out
    source and target observations."""
    return domain.domain_distance(features_of(model, held_out.source),
                                  features_of(model, held_out.target))


class Alignment:
    """The alignment loss on one model's updates (see the module's docstring)."""

    def __init__(self, model: BaseAlgorithm, choice: registry.Choice, stored: Observations,
                 before: float) -> None:
        self.model, self.method = model, str(choice.get("method"))
        self.weight = weight_of(choice)
        self.stored, self.before = stored, before
        self.after: float | None = None
        self.rng = np.random.default_rng([int(model.seed or 0), 0])
        self._batch: torch.Tensor | None = None
        self._handles: list[Any] = []
        self.off_policy = isinstance(model, SAC)
        normalizer = vecnorm.find(model.get_env())
        # Images (never normalized) stay on the device; vectors are scaled at each update.
        self._rows = (None if normalizer is not None and normalizer.norm_obs
                      else torch.as_tensor(stored.train, device=model.device))
        policy = model.policy
        owner: Any = policy.actor if self.off_policy else policy  # type: ignore[attr-defined]
        name = "action_log_prob" if self.off_policy else "evaluate_actions"
        wrapped = getattr(owner, name)  # the class's, bound

        def keep_batch(obs: Any, *args: Any, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():  # a training batch, not a target's or a rollout's
                self._batch = obs
            return wrapped(obs, *args, **kwargs)

        # On the instance: SB3 saves the policy as a state dict, so this is never pickled.
        setattr(owner, name, keep_batch)
        self.optimizer: torch.optim.Optimizer = owner.optimizer
        self.optimizer.register_step_pre_hook(self._before_step)
        self.classifier: domain.DomainClassifier | None = None
        self.classifier_optimizer: torch.optim.Optimizer | None = None
        if self.method == DANN:
            with torch.no_grad():
                width = int(features_of(model, stored.train[:2]).shape[1])
            with torch.random.fork_rng(devices=[]):  # the target's stream stays finetune's
                torch.manual_seed(int(model.seed or 0))
                self.classifier = domain.DomainClassifier(width, CLASSIFIER_HIDDEN).to(
                    model.device)
            self.classifier_optimizer = torch.optim.Adam(self.classifier.parameters(),
                                                         lr=CLASSIFIER_LR)
            if not self.off_policy:  # on-policy runs checkpoint; off-policy ones restart
                self._handles = [
                    self.optimizer.register_state_dict_post_hook(self._save_classifier),
                    self.optimizer.register_load_state_dict_pre_hook(self._load_classifier)]

    def reseed(self, step: int) -> None:
        """A fresh stream of source minibatches from `step` on (a resumed run's)."""
        self.rng = np.random.default_rng([int(self.model.seed or 0), step])

    def _source_batch(self, size: int, like: torch.Tensor) -> torch.Tensor:
        count = len(self.stored.train)
        index = self.rng.choice(count, size, replace=size > count)
        if self._rows is not None:
            return self._rows[torch.as_tensor(index, device=self._rows.device)].to(like.dtype)
        return _as_input(self.model, self.stored.train[index]).to(like.dtype)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        obs, self._batch = self._batch, None
        if obs is None or not isinstance(obs, torch.Tensor) or len(obs) < 2:
            return  # CORAL and the covariances need two rows of each
        model, size = self.model, len(obs)
        model.logger.record("align/weight", self.weight)
        source = self._source_batch(size, obs)
        features = domain.policy_features(model.policy, torch.cat([obs.float(),
                                                                   source.float()]))
        target_features, source_features = features[:size], features[size:]
        if self.method == CORAL:
            loss = domain.coral(target_features, source_features)
            (self.weight * loss).backward()
        elif self.method == MMD:
            loss = domain.mmd2(target_features, source_features)
            (self.weight * loss).backward()
        else:
            assert self.classifier is not None and self.classifier_optimizer is not None
            logits = self.classifier(domain.reverse_gradient(features, self.weight))
            loss = domain.DomainClassifier.loss(logits[size:], logits[:size])
            self.classifier_optimizer.zero_grad()
            loss.backward()  # the classifier's gradient, and -weight x it into the features
            self.classifier_optimizer.step()
            model.logger.record_mean("align/domain_accuracy", domain.DomainClassifier.accuracy(
                logits[size:].detach(), logits[:size].detach()))
        if not self.off_policy:  # SB3 clipped its own gradients; clip the sum again
            torch.nn.utils.clip_grad_norm_(model.policy.parameters(),
                                           model.max_grad_norm)  # type: ignore[attr-defined]
        model.logger.record_mean("align/loss", float(loss.detach()))

    def _save_classifier(self, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> dict[str, Any]:
        assert self.classifier is not None and self.classifier_optimizer is not None
        return {**state, STATE_KEY: {"classifier": self.classifier.state_dict(),
                                     "optimizer": self.classifier_optimizer.state_dict()}}

    def _load_classifier(self, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> dict[str, Any]:
        saved = state.pop(STATE_KEY, None)
        if saved is not None:
            assert self.classifier is not None and self.classifier_optimizer is not None
            self.classifier.load_state_dict(saved["classifier"])
            self.classifier_optimizer.load_state_dict(saved["optimizer"])
        return state

    def detach_state(self) -> None:
        """No more classifier in the optimizer's state dict: model.zip holds SB3's own."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def features_name(model: BaseAlgorithm) -> str:
    """What `domain.policy_features` reads for `model`, in words."""
    policy: Any = model.policy
    extractor = (policy.actor.features_extractor if isinstance(model, SAC)
                 else policy.pi_features_extractor)
    if isinstance(extractor, FlattenExtractor):
        where = "actor.latent_pi" if isinstance(model, SAC) else "mlp_extractor.policy_net"
        return f"the action head's input ({where}: MLP features)"
    kind = getattr(extractor, "encoder_name", type(extractor).__name__)
    return f"the features extractor's output ({kind}, {extractor.features_dim} features)"


# --- the hooks --------------------------------------------------------------------------

_RUNS: weakref.WeakKeyDictionary[BaseAlgorithm, Alignment] = weakref.WeakKeyDictionary()


class Logging(BaseCallback):
    """Logs the distance before training (a fresh run's step 0), reseeds the source
    minibatches of a resumed run, and takes the classifier out of the optimizer's state dict
    once ``learn`` ends."""

    def __init__(self, alignment: Alignment) -> None:
        super().__init__()
        self.alignment = alignment

    def _on_training_start(self) -> None:
        if self.num_timesteps == 0:
            self.logger.record("align/distance_before", self.alignment.before)
            self.logger.dump(0)
        else:
            self.alignment.reseed(self.num_timesteps)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.alignment.detach_state()


class Hooks(Strategy):
    """align's hooks (`rltransfer.strategies.hooks`)."""

    def check(self, target: BaseAlgorithm, choice: registry.Choice, context: Context) -> None:
        check(target, choice, context)

    def initialize(self, model: BaseAlgorithm, choice: registry.Choice,
                   context: Context) -> tuple[TransferReport, dict[str, Any]]:
        if context.source_state is None:
            raise ValueError(f"condition {choice.label} needs the source policy's weights")
        check(model, choice, context)
        report = apply_transfer(model, context.source_state, choice, context.source_label)
        record = report.to_dict()
        stored = observations(model, choice, context)
        alignment = Alignment(model, choice, stored, distance(model, stored))
        _RUNS[model] = alignment
        record["align"] = _record(model, choice, context, alignment)
        # the source env's steps, and the target's it measured with but never trained on
        measure = len(stored.target)
        record[OUTSIDE_BUDGET] = {"source": len(stored.train) + measure, "target": measure}
        return report, record

    def callbacks(self, model: BaseAlgorithm, choice: registry.Choice,
                  context: Context) -> list[BaseCallback]:
        return [Logging(_RUNS[model])]

    def after_learning(self, model: BaseAlgorithm, choice: registry.Choice,
                       context: Context) -> dict[str, Any] | None:
        alignment = _RUNS.pop(model, None)
        if alignment is None:
            return None
        alignment.after = distance(model, alignment.stored)
        model.logger.record("align/distance_after", alignment.after)
        model.logger.dump(int(model.num_timesteps))
        return {"align": _record(model, choice, context, alignment)}


def _record(model: BaseAlgorithm, choice: registry.Choice, context: Context,
            alignment: Alignment) -> dict[str, Any]:
    """transfer.json's "align"."""
    stored = alignment.stored
    n, measure = len(stored.train), len(stored.source)
    record: dict[str, Any] = {
        "method": alignment.method, "weight": alignment.weight,
        "features": features_name(model),
        "aligned": ("the actor's features (through its optimizer); the critic's extractor "
                    "learns from its TD loss only" if alignment.off_policy
                    else "the policy's features (through its optimizer)"),
        "batch": ("each update's training batch of target observations against as many "
                  "source observations drawn at random from the n stored"),
        "source_observations": {
            "file": FILE if context.run_dir is not None else None, "n": n,
            "reused": stored.reused, "env": str(context.source_env),
            "collected_by": "the source policy, actions sampled",
            "source_env_steps": n + measure, "counts_toward_budget": False},
        "distance": {
            "measure": "domain.domain_distance: MMD^2 (Gaussian kernels, median-heuristic "
                       "bandwidths) between the policy's features (eval mode) of held-out "
                       "source observations and target observations the source policy "
                       "collected on the target before training; the same observations "
                       "before and after training",
            "observations": measure, "target_env_steps": measure,
            "target_steps_count_toward_budget": False,
            "before": alignment.before, "after": alignment.after},
    }
    if alignment.method == DANN:
        record["classifier"] = {
            "hidden": list(CLASSIFIER_HIDDEN), "optimizer": f"Adam, lr {CLASSIFIER_LR:g}",
            "gradient_reversal_scale": alignment.weight,
            "resume": ("kept in checkpoint.pt" if not alignment.off_policy
                       else "off-policy runs restart from the start")}
    return record


HOOKS = Hooks()
