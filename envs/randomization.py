"""Domain randomization: a parameter given as a distribution, resampled at every episode reset.

``CartPole-v1:length=uniform(0.25,1.0)`` trains (or evaluates) on a new pole length each
episode. Four distributions: ``uniform(a,b)``, ``loguniform(a,b)`` (uniform in log space,
``0 < a``), ``choice(v1,v2,...)`` (one of the values, equally likely) and
``normal(mu,sigma)`` (clipped to the parameter's valid range).

In an `rltransfer.specs.EnvSpec` a distribution is stored as its canonical text
(`Distribution.text`), so specs stay JSON and their hashes name it like any variant.

Only parameters applied after the env is built (via "attribute" or "derive") with float values
can be randomized (`Parameter.randomizable`): "make" and "id" parameters fix the env when it is
constructed. `Randomizer` draws the values; `rltransfer.envs.family.ParamWrapper` applies them
at every reset. Its generator is its own, re-created from the seed a ``reset(seed=s)`` gets
(so a seed always gives the same sequence of contexts), never the env's ``np_random``: envs
such as LunarLander draw from that during steps, which would make later contexts depend on
the policy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rltransfer.errors import ParameterError

if TYPE_CHECKING:
    import gymnasium as gym

    from .family import Family, Parameter

# Mixed with the reset seed, so the contexts are not drawn from the same stream as the env's own
# np_random (Gymnasium seeds that with the bare seed).
SEED_SALT = 0x5EED_C0DE

_ARITY = {"uniform": 2, "loguniform": 2, "normal": 2}  # choice: one or more values
KINDS = ("uniform", "loguniform", "choice", "normal")
_CALL_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)
_EXAMPLES = "uniform(a,b), loguniform(a,b), choice(v1,v2,...) or normal(mu,sigma)"


@dataclass(frozen=True)
class Distribution:
    """A distribution of one parameter's values: `kind` and its numbers (`args`)."""

    kind: str  # "uniform" | "loguniform" | "choice" | "normal"
    args: tuple[float, ...]

    @property
    def text(self) -> str:
        """The canonical form, numbers with ``:g``: ``uniform(0.25,1)``."""
        return f"{self.kind}({','.join(f'{a:g}' for a in self.args)})"

    def __str__(self) -> str:
        return self.text

    def support(self) -> tuple[float, float]:
        """(low, high) of its values before clipping. normal: mu - 3 sigma, mu + 3 sigma
        (99.7% of its draws; the draws are then clipped to the parameter's valid range, so
        intersect with [Parameter.low, Parameter.high] for the values an env can see)."""
        if self.kind == "choice":
            return min(self.args), max(self.args)
        if self.kind == "normal":
            mu, sigma = self.args
            return mu - 3 * sigma, mu + 3 * sigma
        return self.args[0], self.args[1]

    def sample(self, rng: np.random.Generator) -> float:
        """One draw (normal's unclipped: `Randomizer` clips it to the parameter's range)."""
        a = self.args
        if self.kind == "uniform":
            return float(rng.uniform(a[0], a[1]))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))
        if self.kind == "choice":
            return float(a[int(rng.integers(len(a)))])
        return float(rng.normal(a[0], a[1]))


def parse_distribution(text: str, where: str = "") -> Distribution | None:
    """The distribution `text` writes, or None when it is not a ``name(...)`` call.

    Raises ParameterError (one line, starting with `where`, by default `text` quoted) for a
    malformed call, an unknown name, the wrong number of values, a >= b, a loguniform bound
    <= 0 or sigma <= 0."""
    match = _CALL_RE.match(text)
    if match is None:
        return None
    where = where or repr(text.strip())
    kind, inner = match.group(1), match.group(2)
    if kind not in KINDS:
        raise ParameterError(f"{where}: unknown distribution {kind!r}: use {_EXAMPLES}")
    try:
        args = tuple(float(piece) for piece in inner.split(",")) if inner.strip() else ()
    except ValueError:
        raise ParameterError(f"{where}: {kind}(...) takes numbers separated by commas, "
                             f"e.g. {_example(kind)}") from None
    want = _ARITY.get(kind)
    if (want is not None and len(args) != want) or (want is None and not args):
        count = f"{want} values" if want else "one or more values"
        raise ParameterError(f"{where}: {kind} takes {count}, got {len(args)}: write e.g. "
                             f"{_example(kind)}")
    if not all(math.isfinite(a) for a in args):
        raise ParameterError(f"{where}: every value must be a finite number")
    if kind in ("uniform", "loguniform") and args[0] >= args[1]:
        raise ParameterError(f"{where}: the low bound must be below the high bound: write "
                             f"{kind}(low,high), e.g. {_example(kind)}")
    if kind == "loguniform" and args[0] <= 0:
        raise ParameterError(f"{where}: loguniform needs bounds above 0 (it is uniform in log "
                             f"space): use uniform(...) for a range that reaches 0")
    if kind == "normal" and args[1] <= 0:
        raise ParameterError(f"{where}: sigma must be above 0: write normal(mu,sigma), e.g. "
                             f"{_example(kind)}")
    return Distribution(kind, args)


def _example(kind: str) -> str:
    return {"uniform": "uniform(0.25,1)", "loguniform": "loguniform(0.1,10)",
            "choice": "choice(0.5,1,2)", "normal": "normal(0.5,0.1)"}[kind]


def is_distribution(value: Any) -> bool:
    """Whether a parameter value is a distribution (a Distribution or its text)."""
    if isinstance(value, Distribution):
        return True
    if not isinstance(value, str):
        return False
    try:
        return parse_distribution(value) is not None
    except ParameterError:
        return False


def not_randomizable(family: Family, parameter: Parameter) -> str:
    """Why `parameter` of `family` cannot be a distribution, and which ones can (one line)."""
    why = {"make": "it is a gym.make argument, fixed when the env is built",
           "id": "it picks the registered env id, fixed when the env is built"}.get(
        parameter.via, f"it takes {parameter.value_type.__name__} values")
    if parameter.bounds_space and parameter.via in ("attribute", "derive"):
        why = ("it sets the bounds of the env's observation or action space, which stay fixed "
               "for a run")
    can = [p.name for p in family.parameters if p.randomizable]
    others = (f"parameters of {family.name} that can be: {', '.join(can)}" if can
              else f"{family.name} has no parameter that can be randomized")
    return f"{family.name}.{parameter.name} cannot be randomized: {why}; {others}"


def check(parameter: Parameter, distribution: Distribution, env: str = "") -> str | None:
    """Why `distribution` does not fit `parameter`'s valid range (one line, naming `env`, the
    spec it is in, when given), or None. uniform and loguniform: both bounds inside; choice:
    every value valid (`Parameter.check`); normal: mu inside (its draws are clipped)."""
    unit = f" {parameter.unit}" if parameter.unit and parameter.unit != "-" else ""
    valid = f"[{parameter.low:g}, {parameter.high:g}]{unit}"
    where = f"{parameter.name}={distribution.text}" + (f" in {env}" if env else "")
    if distribution.kind == "choice":
        for value in distribution.args:
            problem = parameter.check(value)
            if problem:
                return (f"{problem} in {env or distribution.text}: keep every value of "
                        f"{distribution.text} inside the range")
        return None
    if distribution.kind == "normal":
        mu = distribution.args[0]
        if not parameter.low <= mu <= parameter.high:
            return (f"{where} has its mean outside its valid range {valid}: keep mu inside "
                    f"(draws are clipped to the range)")
        return None
    low, high = distribution.args
    if low < parameter.low or high > parameter.high:
        return f"{where} reaches outside its valid range {valid}: keep both bounds inside"
    return None


def distributions(family: Family, params: Mapping[str, float | str]) -> dict[str, Distribution]:
    """The distributions among `params` (text values), each checked to be randomizable."""
    found = {}
    for name, value in params.items():
        if not isinstance(value, str):
            continue
        parameter = family.parameter(name)
        if parameter is None:
            raise KeyError(f"{family.name} has no parameter {name!r}")
        if not parameter.randomizable:
            raise ParameterError(not_randomizable(family, parameter))
        distribution = parse_distribution(value)
        if distribution is None:
            raise ParameterError(f"{name}={value!r} is neither a number nor a distribution")
        found[name] = distribution
    return found


def check_spaces(family: Family, env: gym.Env, fixed: Mapping[str, float],
                 distributions: Mapping[str, Distribution]) -> None:
    """Refuse a randomized parameter that changes the env's observation or action space
    (e.g. Pendulum's max_torque, its action bound): a vectorized env reads its spaces once, so
    they must stay the same for the whole run. Leaves the env at each distribution's low."""
    ends = {}
    for name, distribution in distributions.items():
        parameter = family.parameter(name)
        assert parameter is not None
        low, high = distribution.support()
        ends[name] = (max(low, parameter.low), min(high, parameter.high))
    lows = {name: low for name, (low, _) in ends.items()}
    unwrapped = env.unwrapped

    def spaces(values: Mapping[str, float]) -> tuple[Any, Any]:
        family.apply(env, {**fixed, **values})
        return unwrapped.observation_space, unwrapped.action_space

    reference = spaces(lows)
    for name, (_, high) in ends.items():
        if spaces({**lows, name: high}) != reference:
            family.apply(env, {**fixed, **lows})
            raise ParameterError(
                f"{family.name}.{name} cannot be randomized: it sets the bounds of the env's "
                f"observation or action space, which stay fixed for a run; give it one value")
    family.apply(env, {**fixed, **lows})


class Randomizer:
    """Draws a context (one value per randomized parameter) at every reset, from a generator
    of its own re-created from each reset seed, so a seed gives the same contexts."""

    def __init__(self, family: Family, distributions: Mapping[str, Distribution]) -> None:
        self.distributions = dict(distributions)
        self.bounds = {}
        for name in self.distributions:
            parameter = family.parameter(name)
            assert parameter is not None and parameter.randomizable, name
            self.bounds[name] = (parameter.low, parameter.high)
        self.rng: np.random.Generator | None = None

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng([SEED_SALT, int(seed)])

    def draw(self, fallback: np.random.Generator) -> dict[str, float]:
        """The next context; an unseeded first draw seeds from `fallback` (the env's np_random,
        one draw from it, only then)."""
        if self.rng is None:
            self.seed(int(fallback.integers(2**62)))
        assert self.rng is not None
        context = {}
        for name, distribution in self.distributions.items():
            low, high = self.bounds[name]
            context[name] = float(np.clip(distribution.sample(self.rng), low, high))
        return context
