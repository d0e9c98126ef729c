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

from gymnasium import spaces

from ..env_factory import make_env, resolve
from ..errors import HyperparameterError
from ..pixels import is_image_observation
from ..specs import NATURE_CNN, AgentSpec, EncoderSpec, EnvSpec, RunSpec
from ..strategies import hooks as strategy
from ..strategies import registry
from ..training import algos, checkpoints
from ..training.features import caches_features
from .study_spec import ResolvedStudySpec, StudySpec

ENCODER_OPTIONS = ("encoder", "encoder_weights", "freeze_encoder", "encoder_lr_scale")
"""The options of the study's pretrained image encoder (`Plan.encoder`), which only a
condition that builds its agent with it reads (pretrained-encoder)."""


@dataclass(frozen=True)
class Plan:
    """A resolved study: every default filled in, the parsed conditions, the agents for
    source and target, and each condition's own agent where its hooks configure one."""

    spec: ResolvedStudySpec
    source_agent: AgentSpec
    target_agent: AgentSpec
    # the study's conditions, parsed (in the order of spec.transfer.conditions)
    conditions: tuple[registry.Choice, ...] = ()
    # the study's pretrained image encoder on the target's images (ENCODER_OPTIONS); None
    # when the target observes vectors
    encoder: EncoderSpec | None = None
    # (condition label, its agent) where the condition's hooks configure an agent other than
    # target_agent (`Strategy.configure_agent`)
    agents: tuple[tuple[str, AgentSpec], ...] = ()
    counts: tuple[tuple[str, int], ...] = ()  # --seeds auto: seeds per condition so far

    @property
    def study_dir(self) -> Path:
        return self.spec.study_dir

    @property
    def encoder_agent(self) -> AgentSpec | None:
        """The agent built with the study's pretrained encoder (`encoder`), when a condition
        trains one; None otherwise."""
        return next((agent for _, agent in self.agents
                     if self.encoder is not None and agent.encoder == self.encoder), None)

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
        return RunSpec(spec.env.source, self.source_agent, registry.parse(registry.REFERENCE),
                       spec.protocol.seed, spec.source_timesteps,
                       max(spec.source_timesteps // 20, 1), spec.protocol.eval_episodes)

    def agent_for(self, condition: registry.Choice) -> AgentSpec:
        """The agent `condition` trains: its own (`agents`), else the target's."""
        return dict(self.agents).get(condition.label, self.target_agent)

    def policy_run(self) -> RunSpec:
        """A target run that uses the policy's own network (the one source weights go into)."""
        run = self.target_runs()[0]
        return dataclasses.replace(run, agent=self.target_agent,
                                   condition=registry.parse(registry.REFERENCE))

    def target_runs(self) -> list[RunSpec]:
        spec = self.spec
        counts = dict(self.counts)
        first = spec.protocol.seed
        return [RunSpec(spec.env.target, self.agent_for(choice), choice, seed,
                        spec.timesteps, spec.eval_freq, spec.protocol.eval_episodes)
                for choice in self.conditions
                for seed in range(first, first + counts.get(choice.label, spec.protocol.seeds))]

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


@dataclass(frozen=True)
class Observed:
    """What an env observes, as far as the agent's policy and replay buffer care."""

    image: bool  # one image: CnnPolicy with the study's NatureCNN encoder
    keys: tuple[str, ...] | None = None  # a Dict observation's keys: MultiInputPolicy
    goal: bool = False  # a goal env (achieved/desired goal, compute_reward): HER can relabel
    horizon: int | None = None  # its registered max_episode_steps


def _observe(spec: StudySpec, env: EnvSpec, hparams: dict[str, Any],
             algo: algos.Algorithm) -> tuple[EnvSpec, Observed]:
    """`env` with the study's observation options, and what it observes."""
    env = dataclasses.replace(env, pixels=spec.env.pixels, image_size=spec.env.image_size,
                              grayscale=spec.env.grayscale)
    probe = make_env(env)
    try:
        algos.check_action_space(algo, probe.action_space, str(env))
        space = probe.observation_space
        image = is_image_observation(space)
        keys = tuple(space.spaces) if isinstance(space, spaces.Dict) else None
        horizon = probe.spec.max_episode_steps if probe.spec is not None else None
        observed = Observed(image, keys, algos.is_goal_env(space, probe), horizon)
    finally:
        probe.close()
    default_stack = int(hparams.get("frame_stack", 4 if image else 1))
    return (dataclasses.replace(env, frame_stack=spec.env.frame_stack or default_stack),
            observed)


def _dict_agent(spec: StudySpec, hparams: dict[str, Any], env: EnvSpec, observed: Observed,
                algo: algos.Algorithm) -> dict[str, Any]:
    """`hparams` for an env that observes a Dict: SB3's MultiInputPolicy (a preset's
    MlpPolicy is for the zoo's vector envs; an explicit other policy cannot take a Dict),
    and on a goal env an off-policy agent relabels with HER as RL-Zoo's robotics presets do,
    unless ``--hparams replay_buffer_class=none`` (or another class) says otherwise."""
    keys = ", ".join(observed.keys or ())
    recurrent = str(hparams.get("policy", "")).endswith("LstmPolicy")
    policy = "MultiInputLstmPolicy" if recurrent else "MultiInputPolicy"
    if policy not in algo.cls.policy_aliases:
        others = [a.name for a in algos.ALGORITHMS.values()
                  if any(p.startswith("MultiInput") for p in a.cls.policy_aliases)]
        raise HyperparameterError(
            f"--algo {algo.name} has no policy for a Dict observation (no {policy}), but {env} "
            f"observes one ({keys}): use --algo {', '.join(others)}")
    given = spec.agent.hparams.get("policy")
    if given not in (None, policy):
        raise HyperparameterError(
            f"--hparams policy={given}: {env} observes a Dict ({keys}), which only {policy} "
            f"takes: drop policy from --hparams")
    hparams = {**hparams, "policy": policy}
    buffer = hparams.get("replay_buffer_class")
    if buffer == "none":  # the algorithm's own buffer (SB3 picks DictReplayBuffer)
        hparams.pop("replay_buffer_class")
        if "replay_buffer_kwargs" not in spec.agent.hparams:
            hparams.pop("replay_buffer_kwargs", None)  # HER's, from the preset
    elif observed.goal and buffer is None and algos.takes_replay_buffer(algo):
        hparams["replay_buffer_class"] = algos.HER
        hparams["replay_buffer_kwargs"] = {**algos.HER_DEFAULTS,
                                           **hparams.get("replay_buffer_kwargs", {})}
    if hparams.get("replay_buffer_class") == algos.HER and not observed.goal:
        raise HyperparameterError(
            f"--hparams replay_buffer_class={algos.HER}: {env} is not a goal env (HER needs "
            f"achieved_goal and desired_goal keys and compute_reward): drop replay_buffer_class")
    if hparams.get("replay_buffer_class") == algos.HER and observed.horizon:
        # HER samples only from finished episodes: SB3 raises mid-run before the first ends
        episode = observed.horizon * int(spec.agent.n_envs or hparams.get("n_envs", 1))
        if "learning_starts" not in hparams:  # the algorithm's default (SAC's 100)
            hparams["learning_starts"] = max(episode, 100)
        elif int(hparams["learning_starts"]) < episode:
            raise HyperparameterError(
                f"--hparams learning_starts={hparams['learning_starts']}: HER samples only "
                f"finished episodes, and {env}'s take {observed.horizon} steps (per env): give "
                f"learning_starts={episode} or more")
    return hparams


def _agent(spec: StudySpec, hparams: dict[str, Any], env: EnvSpec, observed: Observed,
           algo: algos.Algorithm) -> AgentSpec:
    """The agent on `env`: an image policy gets a fresh NatureCNN encoder, a Dict
    observation MultiInputPolicy (`_dict_agent`)."""
    hparams = dict(hparams)
    encoder = None
    if observed.keys is not None:
        hparams = _dict_agent(spec, hparams, env, observed, algo)
    elif hparams.get("replay_buffer_class") == algos.HER:
        raise HyperparameterError(
            f"--hparams replay_buffer_class={algos.HER}: {env} observes a vector, not a goal "
            f"env's Dict: drop replay_buffer_class")
    if observed.image:
        if hparams.get("policy", "MlpPolicy") == "MlpPolicy":
            hparams["policy"] = "CnnPolicy"
        encoder = EncoderSpec(NATURE_CNN, augment=spec.agent.augment,
                              frame_stack=env.frame_stack)
    return AgentSpec(algo.name, hparams, spec.agent.n_envs or hparams.get("n_envs", 1),
                     spec.agent.device, encoder)


def _pretrained(spec: StudySpec, target: EnvSpec) -> EncoderSpec:
    """The study's pretrained image encoder (ENCODER_OPTIONS) on `target`'s images."""
    transfer = spec.transfer
    return EncoderSpec(transfer.encoder, transfer.encoder_weights, transfer.freeze_encoder,
                       transfer.encoder_lr_scale, spec.agent.augment, target.frame_stack)


def _condition_agents(conditions: tuple[registry.Choice, ...], target_agent: AgentSpec,
                      context: strategy.Context) -> tuple[tuple[str, AgentSpec], ...]:
    """(label, agent) of each condition whose hooks configure an agent of their own."""
    agents = []
    for choice in conditions:
        hooks = strategy.of(choice)
        agent = (hooks.configure_agent(target_agent, choice, context) if hooks is not None
                 else target_agent)
        if agent != target_agent:
            agents.append((choice.label, agent))
    return tuple(agents)


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
    source, source_observed = _observe(spec, spec.env.source, source_hparams, algo)
    target, target_observed = _observe(spec, spec.env.target, target_hparams, algo)
    source_agent = _agent(spec, source_hparams, source, source_observed, algo)
    target_agent = _agent(spec, target_hparams, target, target_observed, algo)
    protocol = spec.protocol
    timesteps = protocol.timesteps or target_hparams.get("n_timesteps", 100_000)
    conditions = tuple(registry.parse(c) for c in spec.transfer.conditions)  # checked: valid
    encoder = _pretrained(spec, target) if target_observed.image else None
    agents = _condition_agents(conditions, target_agent, strategy.Context(
        timesteps, str(spec.env.target), encoder=encoder))
    algos.resolve_device(spec.agent.device,
                         str(target_agent.hparams.get("policy", "MlpPolicy")))
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
    return Plan(resolved, source_agent, target_agent, conditions, encoder, agents)


def encoder_note(plan_: Plan) -> str | None:
    """One line on how the condition that trains with the study's pretrained encoder
    computes its features, or None."""
    agent = plan_.encoder_agent
    if agent is None or agent.encoder is None:
        return None
    encoder = agent.encoder
    if caches_features(encoder):
        label = next(label for label, other in plan_.agents if other == agent)
        return (f"{label}: the frozen encoder's features are computed once per observation "
                f"and reused by every update")
    if encoder.freeze:
        return (f"warning: --augment {encoder.augment} changes the images at every update, so "
                f"the frozen encoder's features cannot be cached: it runs again on every "
                f"sample of every update (several times slower)")
    return None
