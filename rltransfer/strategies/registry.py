"""The condition registry: how each transfer condition initializes and trains a target run.

A condition is one `Condition` entry in `CONDITIONS`. It declares what it takes from the
source (nothing, its weights, its policy at train time, or its transitions), which target
tensors it copies, which it freezes, and the options it accepts. The rest of the engine asks
the registry instead of testing names: `transfer.apply_transfer` copies and freezes as the
entry says, the runner plans a source only for conditions that take one, and training writes
`transfer.json` for every condition that takes something.

On the command line a condition is ``name`` or ``name:key=value,...`` (like env variants).
`parse` checks a spelling against the registry, its option values against their ranges, and
returns its canonical form, which names the condition's run folders. Options so far:
``lr_scale`` (finetune, freeze-features, reinit-head: the copied parameters' own optimizer
group trains at that factor of the schedule's rate) and ``layers`` (freeze-features: only the
first k feature layers, counted from the input, are frozen) and ``norm`` (the conditions
that take weights: what the target does with the source's VecNormalize statistics,
`rltransfer.training.vecnorm`); kickstart's ``steps``, ``weight`` and ``init`` (its
distillation loss's schedule and how the target starts, `rltransfer.strategies.kickstart`);
replay's ``n``, ``dataset`` and ``init`` (`rltransfer.strategies.replay`); jsrl's ``switch``,
``stages``, ``horizon`` and ``tolerance`` (`rltransfer.strategies.jsrl`); align's ``method``,
``weight``, ``n`` and ``measure`` (`rltransfer.strategies.align`); qdagger's ``n``,
``updates``, ``temperature``, ``weight``, ``decay`` and ``steps``
(`rltransfer.strategies.qdagger`); darc's ``source_ratio``, ``warmup``, ``noise`` and
``init`` (`rltransfer.strategies.darc`); ``obs_map`` (the conditions that copy weights,
replay's init=...: transfer across observation and action spaces,
`rltransfer.strategies.obs_map`, `rltransfer.training.cross_space`); ``eps`` (DQN's and
QR-DQN's epsilon schedule after a transfer, `rltransfer.strategies.exploration`).

A condition or option that means nothing for an algorithm says so in its entry (``algos``:
the only ones it works with; ``refuses``: an algorithm and why not, e.g. freeze-features for
ARS, which has no gradient), and `check_algorithm` refuses it in one line with that reason.

Torch-free, so the report stage can use it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, did_you_mean
from . import obs_map

NOTHING, WEIGHTS, POLICY, TRANSITIONS = "nothing", "weights", "policy", "transitions"
ENV = "env"
"""What a condition takes from the source: nothing, its weights (copied into the target before
training), its policy, rebuilt from its weights and queried while the target trains (a
teacher), transitions: a replay buffer pre-filled by the source policy acting on the target
(or from a dataset, which needs no source), or its env: stepped by the target's policy while
the target trains (darc; its weights too with init=..., `Choice.needs_source`)."""
ALL, FEATURES, NONE = "all", "features", "none"
"""Which matching target tensors it copies / which copied tensors it freezes."""


@dataclass(frozen=True)
class Option:
    """An option of a condition: ``name:key=value``."""

    key: str
    kind: type
    default: Any  # what leaving the option out means; never written in a label
    doc: str  # one line, as the README's table of options says it
    valid: str = ""  # the values allowed, for errors and docs: "a number in (0, 1]"
    check: Callable[[Any], bool] | None = None  # whether a parsed value is allowed
    algos: tuple[str, ...] = ()  # the algorithms it applies to; () for every one
    refuses: tuple[tuple[str, str], ...] = ()  # (algorithm, why it cannot apply there)


@dataclass(frozen=True)
class Condition:
    """One transfer condition (DESIGN.md's table)."""

    name: str
    doc: str  # one line: --help and the README's table
    takes: str = NOTHING  # from the source: NOTHING, WEIGHTS, POLICY or TRANSITIONS
    copies: str = NONE  # source tensors copied by name and shape: ALL, FEATURES or NONE
    freezes: str = NONE  # copied tensors frozen: FEATURES or NONE
    options: tuple[Option, ...] = field(default_factory=tuple)
    algos: tuple[str, ...] = ()  # the algorithms it works with; () for every one
    # (algorithm, why the condition means nothing there): refused in one line with the reason
    refuses: tuple[tuple[str, str], ...] = ()
    # whether it needs a source policy given its options (replay:dataset=ID needs none);
    # None: whenever it takes something
    source_when: Callable[[Choice], bool] | None = None
    # "module:OBJECT": how it initializes the target, what it adds to training and writes
    # into transfer.json, and its pre-flight check (`rltransfer.strategies.hooks`); "" for none
    hooks: str = ""

    @property
    def needs_source(self) -> bool:
        """Whether the study may need a source policy for this condition (with some options;
        `Choice.needs_source` says for a spelled one)."""
        return self.takes != NOTHING

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by name, as the registry's entry (its checks are lambdas, which pickle
        # cannot send): a run spec's parsed condition travels to worker processes.
        return (_entry, (self.name,))


def _entry(name: str) -> Condition:
    return CONDITIONS[name]


_COUNT: dict[str, Any] = {"valid": "an integer >= 1", "check": lambda value: value >= 1}
"""An option that counts something (steps, transitions, layers): its values."""


def _scale_ok(value: float) -> bool:
    return math.isfinite(value) and 0 < value <= 1


# The algorithms, grouped by what conditions need of them (names of `rltransfer.training.algos`;
# tests check the groups against the classes).
OFF_POLICY = ("dqn", "sac", "td3", "tqc", "qrdqn", "crossq")  # learn from a replay buffer
EPSILON_GREEDY = ("dqn", "qrdqn")  # explore with an epsilon schedule
NO_GRADIENT = ("ars", "ars has no gradient and no optimizer: each update perturbs and moves its "
                      "whole weight vector at once")
TRUST_REGION = ("trpo", "trpo's policy steps are sized by its KL trust region (target_kl), not by "
                        "a learning rate")

LR_SCALE = Option(
    "lr_scale", float, 1.0,
    "copied tensors that train get their own optimizer group at lr_scale x the schedule's "
    "learning rate; fresh ones train at the full rate (1: one rate for all)",
    valid="a number in (0, 1]", check=_scale_ok, refuses=(NO_GRADIENT, TRUST_REGION))
LAYERS = Option(
    "layers", int, None,
    "freeze only the first k feature layers (Linear/Conv/LSTM), counted from the input along "
    "each path (a features extractor's layers first; the policy and value towers' first "
    "layers are both layer 1 after it, RecurrentPPO's LSTMs before them); left out: all "
    "feature layers",
    **_COUNT)
EPS = Option(
    "eps", float, None,
    "DQN, QR-DQN: the epsilon schedule starts at E and decays to the final epsilon (stays at "
    "E if E is below it); left out: a copied Q-network starts at the final epsilon, a fresh "
    "head at the target's initial one",
    valid="a number in [0, 1]", check=lambda value: 0 <= value <= 1, algos=EPSILON_GREEDY)

_NORM_DOC = ("the source's VecNormalize statistics (when the target normalizes): freeze: the "
             "source's throughout; update: start from them, keep updating; reset: fresh")
_NORM_VALID = "freeze, update or reset"


def _norm(default: str) -> Option:
    return Option("norm", str, default, _NORM_DOC, valid=_NORM_VALID,
                  check=lambda value: value in ("freeze", "update", "reset"))


# Frozen feature layers were trained on inputs scaled by the source's statistics, so
# freeze-features keeps them by default; conditions that train every layer follow the target.
NORM_UPDATE, NORM_FREEZE = _norm("update"), _norm("freeze")

OBS_MAP = Option(
    "obs_map", str, None,
    "transfer across observation spaces: which source features the target's are "
    "(KEY[a:b>c:d;...] per Dict key joined by '+', [a:b>c:d] for a Box; none: no map; "
    "leading: a grown Box or key keeps its leading features); new inputs start at zero "
    "weight; left out: the env family's map for its two ids, else shared Dict keys only "
    "(`rltransfer.strategies.obs_map`)",
    valid="KEY[a:b>c:d;...]+..., [a:b>c:d], none or leading",
    check=lambda value: obs_map.valid(value))

WEIGHTS_HOOKS = "rltransfer.strategies.weights:COPY_WEIGHTS"

_BASE = (
    Condition("scratch", "the reference: trained from a fresh initialization"),
    Condition("finetune", "every source tensor that matches by name and shape is copied; "
                          "all are trained", takes=WEIGHTS, copies=ALL,
              options=(LR_SCALE, NORM_UPDATE, EPS, OBS_MAP), hooks=WEIGHTS_HOOKS),
    Condition("freeze-features", "copied like finetune; feature layers frozen (no gradient, "
                                 "out of the optimizer, eval mode), heads trained",
              takes=WEIGHTS, copies=ALL, freezes=FEATURES,
              options=(LAYERS, LR_SCALE, NORM_FREEZE, EPS, OBS_MAP), hooks=WEIGHTS_HOOKS,
              refuses=((NO_GRADIENT[0], NO_GRADIENT[1] + ", so no layer can stay frozen"),)),
    Condition("reinit-head", "feature layers copied, action/value heads fresh; all trained",
              takes=WEIGHTS, copies=FEATURES, options=(LR_SCALE, NORM_UPDATE, EPS, OBS_MAP),
              hooks=WEIGHTS_HOOKS),
    Condition("pretrained-encoder", "pixels: a pretrained image encoder (--encoder, "
                                    "--encoder-weights), frozen or fine-tuned, fresh heads",
              hooks="rltransfer.strategies.encoder:HOOKS",
              refuses=((NO_GRADIENT[0], "ars has no image policy: its policies map a vector "
                                        "observation to actions"),)),
)
REFERENCE = "scratch"
FINETUNE = "finetune"  # copies every tensor that matches: what the pre-flight dry-runs

_INITS = (REFERENCE, *(c.name for c in _BASE if c.takes == WEIGHTS))


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


KICKSTART_OPTIONS = (
    Option("steps", int, None,
           "the distillation loss's weight decays linearly to 0 over the first N env steps; "
           "left out: half the target's budget (--timesteps)",
           **_COUNT),
    Option("weight", float, 1.0,
           "the distillation loss's weight at step 0, relative to SB3's own loss (weight 1)",
           valid="a number > 0", check=_positive),
    Option("init", str, REFERENCE,
           "how the target starts: scratch (a fresh initialization), or initialized from the "
           "source's weights as that condition does (its default options)",
           valid="one of " + ", ".join(_INITS), check=lambda value: value in _INITS),
    NORM_FREEZE,  # the teacher reads observations scaled as in its own training
)

_DATASET_ID = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*-v\d+$")
REPLAY_OPTIONS = (
    Option("n", int, None,
           "transitions collected by the source policy before training, env steps that count "
           "toward --timesteps (rounded up to whole rollouts: train_freq x n_envs); with "
           "dataset: its first n; left out: a tenth of --timesteps (dataset: all of it)",
           **_COUNT),
    Option("dataset", str, None,
           "a local Minari dataset recorded on the target, read instead of the source "
           "policy's transitions (they take none of the run's env steps)",
           valid="a Minari dataset id such as cartpole/expert-v0",
           check=lambda value: bool(_DATASET_ID.match(value))),
    Option("init", str, REFERENCE,
           "how the target's weights start: scratch (fresh), or copied from the source as "
           "that condition does (its default options)",
           valid="one of " + ", ".join(_INITS), check=lambda value: value in _INITS),
    EPS,
    NORM_FREEZE,  # the source acts on the target during the prefill, on its own scaling
    OBS_MAP,  # with init=...: its copied weights (dataset=: the source need not act)
)

JSRL_OPTIONS = (
    Option("switch", str, "curriculum",
           "how each training episode's h is chosen: curriculum (h steps from H down to 0 "
           "over the stages, the next stage once the mean return of the last 5 training "
           "episodes reaches the guide's within tolerance) or random (h uniform in 0..H for "
           "every episode: JSRL-Random)",
           valid="curriculum or random", check=lambda value: value in ("curriculum", "random")),
    Option("stages", int, 10,
           "curriculum: the number of horizons, H down to 0 in equal steps (the last: the "
           "learner alone)",
           valid="an integer >= 2", check=lambda value: value >= 2),
    Option("horizon", int, None,
           "H: the guide's steps per episode at the start (curriculum), the most drawn "
           "(random); left out: the guide's mean episode length on the target, measured by "
           "letting it play before training (env steps that count toward --timesteps)",
           **_COUNT),
    Option("tolerance", float, 0.05,
           "curriculum: a stage gives way once its training episodes' mean return is at "
           "least the guide's minus tolerance x |the guide's|",
           valid="a number in [0, 1]", check=lambda value: math.isfinite(value)
           and 0 <= value <= 1),
    NORM_FREEZE,  # the guide acts on the target, on observations scaled as in its training
)

ALIGN_METHODS = ("coral", "mmd", "dann")
ALIGN_OPTIONS = (
    Option("method", str, "mmd",
           "the alignment loss between the features of target and source observations: "
           "coral (their covariances, Sun & Saenko 2016), mmd (squared MMD, Gaussian "
           "kernels) or dann (a domain classifier through gradient reversal, Ganin et al. "
           "2016)",
           valid="coral, mmd or dann", check=lambda value: value in ALIGN_METHODS),
    Option("weight", float, None,
           "the alignment loss's weight relative to SB3's own loss (dann: the gradient "
           "reversal's scale); left out: coral 1000, mmd 1, dann 0.1",
           valid="a number > 0", check=_positive),
    Option("n", int, 2000,
           "source observations the source policy collects on the source env before "
           "training (env steps outside --timesteps), stored with the run; each update draws "
           "as many as its batch holds",
           **_COUNT),
    Option("measure", int, 500,
           "held-out observations of each env (the source policy on the source and on the "
           "target, before training; outside --timesteps) for the domain distance measured "
           "before and after training",
           valid="an integer >= 2", check=lambda value: value >= 2),
    NORM_UPDATE,
)

QDAGGER_OPTIONS = (
    Option("n", int, None,
           "transitions the teacher (the source's Q-network) collects on the target for the "
           "offline phase: env steps that count toward --timesteps, rounded up to whole "
           "rollouts (train_freq x n_envs); left out: a tenth of --timesteps",
           **_COUNT),
    Option("updates", int, None,
           "offline gradient steps on those transitions (the TD loss plus the distillation "
           "loss at full weight); left out: as many as SB3 makes over n online env steps",
           **_COUNT),
    Option("temperature", float, 0.1,
           "the softmax temperature over Q-values that the distillation loss compares",
           valid="a number > 0", check=_positive),
    Option("weight", float, 1.0,
           "the distillation loss's weight offline and when the online phase starts, "
           "relative to the TD loss (weight 1)",
           valid="a number > 0", check=_positive),
    Option("decay", str, "performance",
           "how the weight falls to 0 online: performance (with the student's evaluation "
           "return relative to the teacher's, 0 once it matches; the paper's) or linear",
           valid="performance or linear", check=lambda value: value in ("performance",
                                                                        "linear")),
    Option("steps", int, None,
           "online env steps: decay=linear reaches 0 after N (left out: half the online "
           "phase); decay=performance is 0 after N at the latest (left out: no cutoff)",
           **_COUNT),
    dataclasses.replace(EPS, doc=(
        "the student's epsilon schedule starts at E and decays to the final epsilon (stays "
        "at E if E is below it); left out: the pre-trained student starts at the final "
        "epsilon")),
    NORM_FREEZE,  # the teacher acts on the target and reads its observations
)

DARC_OPTIONS = (
    Option("source_ratio", int, 10,
           "source env steps per target env step, taken by the target's policy; the policy "
           "trains on them (as many updates per source step as scratch makes per target "
           "step), while --timesteps counts target steps",
           **_COUNT),
    Option("warmup", int, None,
           "target env steps before the classifiers' reward correction joins the policy's "
           "rewards (they train from the first update); left out: a tenth of --timesteps "
           "(the paper's 10^5 of 10^6 steps)",
           valid="an integer >= 0", check=lambda value: value >= 0),
    Option("noise", float, 1.0,
           "the standard deviation of the Gaussian noise added to the classifiers' inputs "
           "while they train (the authors' regularizer; 0: none)",
           valid="a number >= 0", check=lambda value: math.isfinite(value) and value >= 0),
    Option("init", str, REFERENCE,
           "how the target's weights start: scratch (fresh), or copied from the source as "
           "that condition does (its default options)",
           valid="one of " + ", ".join(_INITS), check=lambda value: value in _INITS),
)

CONDITIONS: dict[str, Condition] = {c.name: c for c in (
    *_BASE,
    Condition("kickstart", "distillation: trained (from scratch, or init=finetune) with an "
                           "extra loss toward the source policy's actions, its weight "
                           "decaying to 0 (PPO, A2C, MaskablePPO)",
              takes=POLICY, options=KICKSTART_OPTIONS, algos=("ppo", "a2c", "maskableppo"),
              hooks="rltransfer.strategies.kickstart:HOOKS", refuses=(
                  ("trpo", "trpo's policy step is a natural-gradient step inside a KL trust "
                           "region, with no loss a distillation term could join"),
                  ("recurrentppo", "recurrentppo's teacher would be an LSTM whose hidden "
                                   "state along the target's rollouts is never computed, so "
                                   "its actions on a training batch are not defined"),
                  (NO_GRADIENT[0], NO_GRADIENT[1] + ", so there is no loss to add to"))),
    Condition("jsrl", "jump-start RL: the source policy, a guide, acts for the first h steps "
                      "of each training episode, the learner (from scratch) after it; h "
                      "shrinks on a curriculum as the learner matches the guide's return (or "
                      "is drawn at random); evaluations are the learner's alone (DQN, SAC, "
                      "TD3, TQC, QR-DQN, CrossQ)",
              takes=POLICY, options=JSRL_OPTIONS, algos=OFF_POLICY,
              hooks="rltransfer.strategies.jsrl:HOOKS"),
    Condition("replay", "instance transfer: the replay buffer pre-filled with n transitions "
                        "the source policy collects on the target (or a Minari dataset's); "
                        "trained from scratch or init=... (DQN, SAC, TD3, TQC, QR-DQN, "
                        "CrossQ)",
              takes=TRANSITIONS, options=REPLAY_OPTIONS, algos=OFF_POLICY,
              source_when=lambda c: c.get("dataset") is None or c.get("init") != REFERENCE,
              hooks="rltransfer.strategies.replay:HOOKS"),
    Condition("qdagger", "QDagger: the source's Q-network teaches a fresh student, offline "
                         "on n transitions it collects on the target, then online with a "
                         "distillation loss whose weight decays to 0 (DQN, QR-DQN)",
              takes=POLICY, options=QDAGGER_OPTIONS, algos=EPSILON_GREEDY,
              hooks="rltransfer.strategies.qdagger:HOOKS"),
    Condition("align", "feature alignment: finetune plus a loss (coral, mmd or dann) that "
                       "pulls the features of target observations toward those of source "
                       "observations the source policy collects (PPO, A2C, SAC)",
              takes=WEIGHTS, copies=ALL, options=ALIGN_OPTIONS, algos=("ppo", "a2c", "sac"),
              hooks="rltransfer.strategies.align:HOOKS"),
    Condition("progressive", "progressive networks: the source's hidden layers kept as a "
                             "frozen column, a new column of the same shape trained beside it "
                             "with lateral adapters from each source layer, fresh heads (PPO, "
                             "A2C, SAC; MLP policies)",
              takes=WEIGHTS, options=(NORM_FREEZE,), algos=("ppo", "a2c", "sac"),
              hooks="rltransfer.strategies.progressive:HOOKS"),
    Condition("darc", "off-dynamics RL (DARC): the policy trains on the source env's "
                      "transitions (source_ratio per target step), its reward corrected by "
                      "two classifiers that tell them from the target's transitions; "
                      "evaluated on the target (SAC, TD3, TQC)",
              takes=ENV, options=DARC_OPTIONS, algos=("sac", "td3", "tqc"),
              source_when=lambda c: c.get("init") != REFERENCE,
              hooks="rltransfer.strategies.darc:HOOKS"),
)}
"""Every condition, in the order `--help` lists them."""


@dataclass(frozen=True)
class Choice:
    """A condition as a study uses it: the registry entry and its option values."""

    condition: Condition
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The canonical spelling (options sorted, defaults left out): the run folder name."""
        given = {k: v for k, v in sorted(self.options.items())
                 if v != _option(self.condition, k).default}
        if not given:
            return self.condition.name
        return self.condition.name + ":" + ",".join(f"{k}={_text(v)}" for k, v in given.items())

    def __str__(self) -> str:
        return self.label

    def get(self, key: str) -> Any:
        """The value of option `key`: as given, else its default; None for an option the
        condition does not have."""
        for option in self.condition.options:
            if option.key == key:
                return self.options.get(key, option.default)
        return None

    @property
    def needs_source(self) -> bool:
        """Whether the study must train or load a source policy for this choice."""
        if self.condition.source_when is not None:
            return self.condition.source_when(self)
        return self.condition.takes != NOTHING

    @property
    def weights(self) -> Choice | None:
        """The weight-copying condition the run starts from: itself when it takes weights,
        its ``init`` option's condition (replay:init=finetune), None for a fresh start."""
        if self.condition.takes == WEIGHTS:
            return self
        start = self.get("init")
        if start is None or start == REFERENCE:
            return None
        copies = parse(start)  # with obs_map, which applies to the weights it copies
        carried = {k: v for k, v in self.options.items() if k == OBS_MAP.key}
        return Choice(copies.condition, {**copies.options, **carried}) if carried else copies


def parse(text: str) -> Choice:
    """``name`` or ``name:key=value,...`` checked against the registry; ConfigError (one
    line, naming the fix) for an unknown condition, option or value."""
    name, _, rest = text.strip().partition(":")
    if name not in CONDITIONS:
        raise ConfigError(f"unknown condition {name!r}: choose from {', '.join(CONDITIONS)}."
                          + did_you_mean(name, list(CONDITIONS)))
    condition = CONDITIONS[name]
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"condition {text!r}: options are key=value, e.g. {name}:key=1")
        if not condition.options:
            raise ConfigError(f"condition {name!r} takes no options (got {key!r}): write "
                              f"{name}")
        option = _option(condition, key)
        try:
            value = option.kind(raw.strip())
        except ValueError:
            raise ConfigError(f"condition {text!r}: {key} must be {option.kind.__name__}, got "
                              f"{raw.strip()!r}") from None
        if option.check is not None and not option.check(value):
            raise ConfigError(f"condition {text!r}: {key} must be {option.valid}, got "
                              f"{raw.strip()}")
        values[key] = value
    return Choice(condition, values)


def help_text(width: int = 88) -> str:
    """Every condition and its options, from the registry, as `run --help` lists them."""
    import textwrap

    lines = ["conditions (--conditions NAME or NAME:key=value,...):"]

    def wrap(text: str, first: str, rest: str) -> None:
        lines.extend(textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest))

    for condition in CONDITIONS.values():
        only = _which(condition.algos, condition.refuses)
        wrap(f"{condition.name}{only}: {condition.doc}", "  ", "      ")
        for option in condition.options:
            default = "" if option.default is None else f"; default {_text(option.default)}"
            only = _which(option.algos, option.refuses)
            wrap(f"{option.key}={option.valid or option.kind.__name__}{default}{only}: "
                 f"{option.doc}", "    ", "        ")
    return "\n".join(lines)


_CONTINUES = re.compile(r"^[A-Za-z_]\w*=")
"""A ``key=value`` piece of a condition list (its value may hold ':', as obs_map's do)."""


def split(text: str) -> list[str]:
    """Split a comma-separated list of conditions: ``scratch,freeze-features:layers=1,
    lr_scale=0.5`` is two conditions, since a ``key=value`` piece continues the condition
    before it (as in env lists)."""
    pieces: list[str] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        if _CONTINUES.match(token) and pieces and ":" in pieces[-1]:
            pieces[-1] += "," + token
        else:
            pieces.append(token)
    return pieces


def get(text: str) -> Condition:
    """The registry entry of a spelled condition."""
    return parse(text).condition


def choice_of(condition: str | Choice) -> Choice:
    """A parsed condition: `condition` itself, or its spelling parsed (`parse`)."""
    return condition if isinstance(condition, Choice) else parse(condition)


def needs_source(conditions: tuple[str, ...] | list[str]) -> bool:
    """Whether any of the spelled conditions takes something from a source policy."""
    return any(parse(c).needs_source for c in conditions)


def check_algorithm(condition: str | Choice, algo: str) -> None:
    """ConfigError (one line) when the condition (spelled or parsed), or one of its options,
    does not work with `algo`."""
    choice, algo = choice_of(condition), algo.lower()
    text = condition if isinstance(condition, str) else choice.label
    entry = choice.condition
    why = dict(entry.refuses).get(algo)
    if why is not None:
        fits = f"use --algo {_either(entry.algos)}, or drop" if entry.algos else "drop"
        raise ConfigError(f"condition {entry.name!r} does not work with {algo}: {why}; "
                          f"{fits} {entry.name}")
    if entry.algos and algo not in entry.algos:
        raise ConfigError(f"condition {entry.name!r} works with {', '.join(entry.algos)} "
                          f"only, not {algo}: use --algo {_either(entry.algos)}, or drop "
                          f"{entry.name}")
    for option in entry.options:
        if option.key not in choice.options:
            continue
        why = dict(option.refuses).get(algo)
        if why is not None:
            raise ConfigError(f"condition {text!r}: {option.key} does not apply to {algo}: "
                              f"{why}; drop {option.key}")
        if option.algos and algo not in option.algos:
            raise ConfigError(f"condition {text!r}: {option.key} applies to "
                              f"{', '.join(option.algos)} only, not {algo}: drop {option.key}")


def _option(condition: Condition, key: str) -> Option:
    for option in condition.options:
        if option.key == key:
            return option
    keys = [o.key for o in condition.options]
    raise ConfigError(f"condition {condition.name!r} has no option {key!r}: valid options "
                      f"are {', '.join(keys)}." + did_you_mean(key, keys))


def _which(algos: tuple[str, ...], refuses: tuple[tuple[str, str], ...]) -> str:
    """" [ppo, a2c only]", " [not ars]" or "": the algorithms, as --help lists them."""
    if algos:
        return f" [{', '.join(algos)} only]"
    if refuses:
        return f" [not {', '.join(algo for algo, _ in refuses)}]"
    return ""


def _either(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def format_value(value: Any) -> str:
    """An option's value as a label and --help write it (1.0 as 1, 0.10 as 0.1)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


_text = format_value
