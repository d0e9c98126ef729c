"""The plan stage: a `StudySpec` checked against the environments and algorithms, every
default filled in (`ResolvedStudySpec`), and the agents of the source and the target.

`plan` needs no file and writes none; the pre-flight checks (`rltransfer.study.preflight`) build
what it describes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..env_factory import make_env, resolve
from ..errors import ConfigError
from ..pixels import is_image_observation
from ..specs import AgentSpec, EnvSpec, RunSpec
from ..strategies import registry
from ..training import algos, checkpoints
from ..training.features import caches_features
from .study_spec import ResolvedStudySpec, StudySpec

ENCODER_OPTIONS = ("encoder", "encoder_weights", "freeze_encoder", "encoder_lr_scale")
"""The options only the pretrained-encoder condition reads."""


@dataclass(frozen=True)
class Plan:
    """A resolved study: every default filled in, the agents for source and target."""

    spec: ResolvedStudySpec
    source_agent: AgentSpec
    target_agent: AgentSpec
    encoder_agent: AgentSpec | None = None  # the target agent of the pretrained-encoder condition
    counts: tuple[tuple[str, int], ...] = ()  # --seeds auto: seeds per condition so far

    @property
    def study_dir(self) -> Path:
        return self.spec.study_dir

    def recorded_spec(self) -> dict[str, Any]:
        """study.json's "spec": the resolved spec, without the pretrained encoder's options
        when no condition uses the encoder (they would name an encoder the study never
        built; a reader fills in their defaults)."""
        data = self.spec.to_dict()
        if self.encoder_agent is None:
            for key in ENCODER_OPTIONS:
                data["transfer"].pop(key, None)
        return data

    def source_run(self) -> RunSpec:
        spec = self.spec
        return RunSpec(spec.env.source, self.source_agent, registry.REFERENCE, spec.protocol.seed,
                       spec.source_timesteps, max(spec.source_timesteps // 20, 1),
                       spec.protocol.eval_episodes)

    def agent_for(self, condition: str) -> AgentSpec:
        if registry.get(condition).image_encoder:
            if self.encoder_agent is None:  # plan() sets it whenever such a condition is listed
                raise ValueError(f"{condition} is not among this plan's conditions")
            return self.encoder_agent
        return self.target_agent

    def policy_run(self) -> RunSpec:
        """A target run that uses the policy's own network (the one source weights go into)."""
        run = self.target_runs()[0]
        return dataclasses.replace(run, agent=self.target_agent, condition=registry.REFERENCE)

    def target_runs(self) -> list[RunSpec]:
        spec = self.spec
        counts = dict(self.counts)
        first = spec.protocol.seed
        return [RunSpec(spec.env.target, self.agent_for(condition), condition, seed,
                        spec.timesteps, spec.eval_freq, spec.protocol.eval_episodes)
                for condition in spec.transfer.conditions
                for seed in range(first, first + counts.get(condition, spec.protocol.seeds))]

    def with_counts(self, counts: dict[str, int]) -> Plan:
        """This plan with `counts` seeds per condition (a ``--seeds auto`` look's batch)."""
        return dataclasses.replace(self, counts=tuple(sorted(counts.items())))


def _preset(spec: StudySpec, env: EnvSpec, algo: algos.Algorithm) -> dict[str, Any]:
    family, base_id, _ = resolve(env)
    ids = [env.id, base_id] + (list(family.env_ids) if family else [])
    if base_id.startswith("ALE/"):
        ids.append("atari")  # RL-Zoo keys its Atari hyperparameters by "atari"
    preset = algos.preset(algo.name, ids)
    given = spec.agent.hparams
    hparams = {**preset, **given}
    if isinstance(preset.get("policy_kwargs"), dict) and isinstance(
            given.get("policy_kwargs"), dict):  # override the tuned table key by key
        hparams["policy_kwargs"] = {**preset["policy_kwargs"], **given["policy_kwargs"]}
    algos.validate_hparams(algo, hparams)
    return hparams


def _observe(spec: StudySpec, env: EnvSpec, hparams: dict[str, Any],
             algo: algos.Algorithm) -> tuple[EnvSpec, bool]:
    """`env` with the study's observation options, and whether it observes images."""
    env = dataclasses.replace(env, pixels=spec.env.pixels, image_size=spec.env.image_size,
                              grayscale=spec.env.grayscale)
    probe = make_env(env)
    try:
        algos.check_action_space(algo, probe.action_space, str(env))
        image = is_image_observation(probe.observation_space)
    finally:
        probe.close()
    default_stack = int(hparams.get("frame_stack", 4 if image else 1))
    return dataclasses.replace(env, frame_stack=spec.env.frame_stack or default_stack), image


def _agent(spec: StudySpec, hparams: dict[str, Any], env: EnvSpec, image: bool,
           algo: algos.Algorithm, encoder: dict[str, Any] | None = None) -> AgentSpec:
    hparams = dict(hparams)
    if image:
        if hparams.get("policy", "MlpPolicy") == "MlpPolicy":
            hparams["policy"] = "CnnPolicy"
        encoder = encoder or {"encoder": "nature-cnn"}
        hparams["policy_kwargs"] = {
            **(hparams.get("policy_kwargs") or {}),
            "features_extractor": {**encoder, "frame_stack": env.frame_stack,
                                   "augment": spec.agent.augment},
        }
    return AgentSpec(algo.name, hparams, spec.agent.n_envs or hparams.get("n_envs", 1),
                     spec.agent.device)


def plan(spec: StudySpec) -> Plan:
    """Validate `spec` against the environments and algorithms and fill in every default."""
    spec.validate()
    weights = spec.transfer.encoder_weights
    if weights not in ("imagenet", "none"):  # workers may run in other folders
        spec = spec.update(encoder_weights=str(Path(weights).resolve()))
    algo = algos.get_algorithm(spec.agent.algo)
    source_hparams = _preset(spec, spec.env.source, algo)
    target_hparams = _preset(spec, spec.env.target, algo)
    if spec.transfer.source_model is not None:  # its network, for the source and every target
        source_hparams, target_hparams = checkpoints.adopt_network(
            spec.transfer.source_model, algo, spec.agent.hparams, source_hparams, target_hparams)
    source, source_image = _observe(spec, spec.env.source, source_hparams, algo)
    target, target_image = _observe(spec, spec.env.target, target_hparams, algo)
    source_agent = _agent(spec, source_hparams, source, source_image, algo)
    target_agent = _agent(spec, target_hparams, target, target_image, algo)
    encoder_agent = None
    if any(registry.get(c).image_encoder for c in spec.transfer.conditions):
        if not target_image:
            raise ConfigError(f"the pretrained-encoder condition needs image observations, but "
                              f"{spec.env.target} observes vectors: add --pixels")
        encoder_agent = _agent(spec, target_hparams, target, True, algo,
                               spec.transfer.encoder_config())
    algos.resolve_device(spec.agent.device,
                         str(target_agent.hparams.get("policy", "MlpPolicy")))
    protocol = spec.protocol
    timesteps = protocol.timesteps or target_hparams.get("n_timesteps", 100_000)
    name = spec.output.name or "{}--{}--{}-{}".format(
        spec.env.source.slug, spec.env.target.slug, algo.name, time.strftime("%Y%m%d-%H%M%S"))
    given = spec.update(
        algo=algo.name, source=source, target=target, timesteps=timesteps,
        source_timesteps=protocol.source_timesteps or source_hparams.get("n_timesteps",
                                                                         100_000),
        eval_freq=protocol.eval_freq or max(timesteps // 20, 1),
        n_envs=target_agent.n_envs, name=name, frame_stack=target.frame_stack)
    resolved = ResolvedStudySpec(given.env, given.agent, given.transfer, given.protocol,
                                 given.output)
    return Plan(resolved, source_agent, target_agent, encoder_agent)


def encoder_note(plan_: Plan) -> str | None:
    """One line on how the pretrained-encoder condition computes its features, or None."""
    if plan_.encoder_agent is None:
        return None
    encoder = algos.encoder_config(dict(plan_.encoder_agent.hparams)) or {}
    if caches_features(encoder):
        return ("pretrained-encoder: the frozen encoder's features are computed once per "
                "observation and reused by every update")
    if encoder.get("freeze"):
        return (f"warning: --augment {encoder.get('augment')} changes the images at every "
                f"update, so the frozen encoder's features cannot be cached: it runs again on "
                f"every sample of every update (several times slower)")
    return None
