"""The spec's search space as Optuna distributions, and the spec's sampler.

* :func:`distributions` gives the ``fixed_distributions`` the operator passes to ``study.ask`` (the
  trial process never suggests anything: it receives the parameters in ``HPO_TRIAL_PARAMS``).
* :func:`build_sampler` gives the Optuna sampler the operator asks with.
* :func:`validate` refuses what a sampler cannot handle (a Grid over a continuous float, CMA-ES on a
  multi-objective study, sampler options the sampler does not take, ...) and enqueued parameter sets
  that do not fit the space. :func:`hpo_operator.core.spec.parse_spec` calls it, so a parsed spec is
  always one the operator can run.

Every error is a :class:`~hpo_operator.core.spec.SpecError` naming the field.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hpo_operator.core.spec import FieldIssue, Param, SpecError, StudySpec

# A Grid sampler materializes every point of its grid; refuse grids too large to hold.
MAX_GRID_POINTS = 100_000

SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "TPE": optuna.samplers.TPESampler,
    "Random": optuna.samplers.RandomSampler,
    "CMAES": optuna.samplers.CmaEsSampler,
    "Grid": optuna.samplers.GridSampler,
    "QMC": optuna.samplers.QMCSampler,
    "NSGAII": optuna.samplers.NSGAIISampler,
}
SINGLE_OBJECTIVE_ONLY = ("CMAES",)
# Constructor arguments that take Python objects (callables, trials, samplers): not expressible in YAML.
_OBJECT_ARGUMENT_HINTS = (
    "Callable",
    "FrozenTrial",
    "Sampler",
    "Crossover",
    "Mutation",
    "Study",
    "RandomState",
)
# Set by other spec fields, not by options.
_RESERVED_OPTIONS = {"seed": "spec.sampler.seed", "search_space": "spec.searchSpace"}


def distribution(param: Param) -> BaseDistribution:
    """One parameter → its Optuna distribution (the parameter must have passed ``parse_spec``)."""
    if param.type == "categorical":
        return CategoricalDistribution(list(param.choices or ()))
    assert param.low is not None and param.high is not None
    if param.type == "int":
        return IntDistribution(
            int(param.low), int(param.high), log=param.log, step=int(param.step) if param.step else 1
        )
    return FloatDistribution(
        float(param.low), float(param.high), log=param.log, step=float(param.step) if param.step else None
    )


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """The study's search space, in the spec's order, for ``study.ask(fixed_distributions=...)``."""
    return {p.name: distribution(p) for p in spec.search_space}


def coerce_params(spec: StudySpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """A (valid) parameter set with each value in its distribution's type: ``{"x": 2}`` → ``{"x": 2.0}``
    for a float ``x`` (JSON does not keep ``2.0`` apart from ``2``)."""
    dists = distributions(spec)
    return {
        name: dists[name].to_external_repr(dists[name].to_internal_repr(value)) if name in dists else value
        for name, value in params.items()
    }


def grid_values(param: Param) -> list[Any] | None:
    """Every value a discrete parameter can take; ``None`` for a continuous float."""
    if param.type == "categorical":
        return list(param.choices or ())
    assert param.low is not None and param.high is not None
    if param.type == "int":
        return list(range(int(param.low), int(param.high) + 1, int(param.step or 1)))
    if param.step is None:
        return None
    low, step = Decimal(str(param.low)), Decimal(str(param.step))
    count = int((Decimal(str(param.high)) - low) / step) + 1
    return [float(low + k * step) for k in range(count)]


def grid_size(spec: StudySpec) -> int | None:
    """How many points the Grid sampler's grid has; ``None`` when a parameter is continuous."""
    size = 1
    for p in spec.search_space:
        n = _count_values(p)
        if n is None:
            return None
        size *= n
    return size


def _count_values(param: Param) -> int | None:
    if param.type == "categorical":
        return len(param.choices or ())
    assert param.low is not None and param.high is not None
    if param.type == "int":
        return (int(param.high) - int(param.low)) // int(param.step or 1) + 1
    if param.step is None:
        return None
    return int((Decimal(str(param.high)) - Decimal(str(param.low))) / Decimal(str(param.step))) + 1


# Samplers whose random stream restarts with the seed: a sampler rebuilt after an operator restart
# must not replay the stream it already used (it would propose the same parameters again). QMC and Grid
# derive their points from the trial number and the trials stored, so their seed stays as given.
_RESEEDED_ON_RESUME = ("TPE", "Random", "CMAES", "NSGAII")


def build_sampler(spec: StudySpec, *, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded and configured with ``spec.sampler.options``.

    ``trials_so_far`` is how many trials the study already has when the sampler is (re)built: for
    samplers that draw from a seeded random stream, it shifts the seed, so a study resumed by a new
    operator process does not replay the draws of the first one. A study run by one process from start
    to end is reproducible from ``spec.sampler.seed`` alone.
    """
    kind = spec.sampler.type
    kwargs: dict[str, Any] = dict(spec.sampler.options)
    if spec.sampler.seed is not None:
        shift = trials_so_far if kind in _RESEEDED_ON_RESUME else 0
        kwargs["seed"] = (spec.sampler.seed + shift) % 2**32
    if kind == "Grid":
        grid = {p.name: grid_values(p) for p in spec.search_space}
        kwargs["search_space"] = grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return SAMPLER_CLASSES[kind](**kwargs)
        except (TypeError, ValueError) as e:
            raise SpecError.at("spec.sampler.options", f"the {kind} sampler refused them: {e}") from None


def validate(spec: StudySpec) -> None:
    """Raise :class:`SpecError` if the sampler cannot handle the space or an enqueued set does not fit."""
    issues = [*_check_sampler(spec)]
    for i, params in enumerate(spec.enqueue):
        issues += check_params(spec, params, f"spec.enqueue[{i}]", complete=spec.sampler.type == "Grid")
    if issues:
        raise SpecError(issues)
    build_sampler(spec)


def check_params(
    spec: StudySpec, params: Mapping[str, Any], path: str, *, complete: bool = False
) -> list[FieldIssue]:
    """Problems with a parameter set (``{"learning_rate": 3e-5}``) against the search space.

    ``complete`` requires every parameter to be given (the Grid sampler cannot fill in the rest).
    """
    issues = []
    dists = distributions(spec)
    for name, value in params.items():
        if name not in dists:
            issues.append(
                FieldIssue(
                    f"{path}.{name}",
                    f"not a parameter of spec.searchSpace (those are: {', '.join(dists)})",
                )
            )
            continue
        problem = _value_problem(dists[name], value)
        if problem:
            where = f"spec.searchSpace[{spec.param_index(name)}]"
            issues.append(FieldIssue(f"{path}.{name}", f"{problem} ({where})"))
    if complete:
        missing = [n for n in dists if n not in params]
        if missing:
            issues.append(
                FieldIssue(
                    path,
                    "the Grid sampler needs every parameter of an enqueued set; "
                    f"missing: {', '.join(missing)}",
                )
            )
    return issues


def _value_problem(dist: BaseDistribution, value: Any) -> str | None:
    if isinstance(dist, CategoricalDistribution):
        if not any(type(value) is type(c) and value == c for c in dist.choices):
            return f"{value!r} is not one of the choices {list(dist.choices)!r}"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"must be a number, got {value!r}"
    if isinstance(dist, IntDistribution) and float(value) != int(value):
        return f"must be a whole number, got {value!r}"
    assert isinstance(dist, IntDistribution | FloatDistribution)
    if not dist.low <= value <= dist.high:
        return f"{value!r} is outside [{dist.low!r}, {dist.high!r}]"
    if not dist._contains(dist.to_internal_repr(value)):
        return f"{value!r} is not on the step {dist.step!r} from {dist.low!r}"
    return None


def _check_sampler(spec: StudySpec) -> list[FieldIssue]:
    kind = spec.sampler.type
    issues = []
    if kind in SINGLE_OBJECTIVE_ONLY and spec.multi_objective:
        issues.append(
            FieldIssue(
                "spec.sampler.type",
                f"the {kind} sampler cannot optimize {len(spec.objective)} objectives; "
                "use NSGAII, TPE, Random or QMC for a multi-objective study",
            )
        )
    if kind == "Grid":
        continuous = [i for i, p in enumerate(spec.search_space) if _count_values(p) is None]
        for i in continuous:
            issues.append(
                FieldIssue(
                    f"spec.searchSpace[{i}]",
                    f"the Grid sampler needs discrete values, but {spec.search_space[i].name!r} is a "
                    "continuous float: give it a step, or make it int or categorical",
                )
            )
        size = grid_size(spec)
        if size is not None and size > MAX_GRID_POINTS:
            issues.append(
                FieldIssue(
                    "spec.searchSpace",
                    f"the grid has {size} points; the Grid sampler takes at most {MAX_GRID_POINTS}",
                )
            )
        elif size is not None and spec.trials.total > size + len(spec.enqueue):
            issues.append(
                FieldIssue(
                    "spec.trials.total",
                    f"{spec.trials.total} trials but the grid has only {size} points"
                    + (f" (plus {len(spec.enqueue)} enqueued)" if spec.enqueue else "")
                    + "; lower total or widen the grid",
                )
            )
    issues += _check_options(spec)
    return issues


def sampler_options(kind: str) -> dict[str, inspect.Parameter]:
    """The constructor arguments of a sampler that ``spec.sampler.options`` may set."""
    params = inspect.signature(SAMPLER_CLASSES[kind].__init__).parameters
    out = {}
    for name, p in params.items():
        if name == "self" or name in _RESERVED_OPTIONS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if any(h in str(p.annotation) for h in _OBJECT_ARGUMENT_HINTS):
            continue
        out[name] = p
    return out


def _check_options(spec: StudySpec) -> list[FieldIssue]:
    kind = spec.sampler.type
    allowed = sampler_options(kind)
    issues = []
    for name in spec.sampler.options:
        if name in _RESERVED_OPTIONS:
            issues.append(
                FieldIssue(
                    f"spec.sampler.options.{name}", f"set by {_RESERVED_OPTIONS[name]}, not by options"
                )
            )
        elif name not in allowed:
            issues.append(
                FieldIssue(
                    f"spec.sampler.options.{name}",
                    f"not an option of the {kind} sampler (those are: {', '.join(sorted(allowed))})",
                )
            )
    return issues
