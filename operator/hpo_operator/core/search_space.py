"""The spec's search space as Optuna distributions, and the spec's sampler.

* :func:`distributions` gives the ``fixed_distributions`` the operator passes to ``study.ask`` (the
  trial process never suggests anything: it receives the parameters in ``HPO_TRIAL_PARAMS``).
* :func:`build_sampler` gives the Optuna sampler the operator asks with.
* :func:`validate` refuses what a sampler cannot handle (a Grid over a continuous float, CMA-ES on a
  multi-objective study, sampler options the sampler does not take or of the wrong type for its
  constructor, values it refuses when it samples: see :func:`trial_run`, ...) and enqueued parameter sets
  that do not fit the space. :func:`hpo_operator.core.parse.parse_spec` calls it, so a parsed spec is
  always one the operator can run.

Every error is a :class:`~hpo_operator.core.spec.SpecError` naming the field.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import json
import logging
import math
import re
import sys
import threading
import types
import typing
import warnings
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import optuna
from hpo_trial import trainer_spec
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import ConfigDict, PydanticSchemaGenerationError, TypeAdapter, ValidationError

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
    "GP": optuna.samplers.GPSampler,
    "NSGAIII": optuna.samplers.NSGAIIISampler,
    "BruteForce": optuna.samplers.BruteForceSampler,
}
SINGLE_OBJECTIVE_ONLY = ("CMAES",)
# Samplers that walk a finite space: every parameter must be discrete.
DISCRETE_ONLY = ("Grid", "BruteForce")
# Samplers that need a package the study's environment may lack (the operator image has no torch).
NEEDS_PACKAGE = {"GP": "torch"}
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
    """One parameter → its Optuna distribution (the parameter must have passed ``parse_spec``).

    A range that is not a multiple of its step is cut here as Optuna would cut it (to the last step at
    or below ``high``: :func:`cut_high`), so Optuna has nothing to warn about on the operator's stderr;
    :func:`notes` says it to the user instead."""
    if param.type == "categorical":
        return CategoricalDistribution(list(param.choices or ()))
    assert param.low is not None and param.high is not None
    cut = cut_high(param)
    high = param.high if cut is None else cut
    if param.type == "int":
        return IntDistribution(
            int(param.low), int(high), log=param.log, step=int(param.step) if param.step else 1
        )
    return FloatDistribution(
        float(param.low), float(high), log=param.log, step=float(param.step) if param.step else None
    )


def cut_high(param: Param) -> float | int | None:
    """The ``high`` Optuna searches up to when the range is not a multiple of ``step`` (the last step
    at or below ``high``); ``None`` when the range is a multiple of it, or there is no step."""
    if param.type == "categorical" or param.step is None or param.low is None or param.high is None:
        return None
    low, high, step = Decimal(str(param.low)), Decimal(str(param.high)), Decimal(str(param.step))
    if step <= 0 or high <= low or (high - low) % step == 0:
        return None
    cut = (high - low) // step * step + low
    return int(cut) if param.type == "int" else float(cut)


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
_RESEEDED_ON_RESUME = ("TPE", "Random", "CMAES", "NSGAII", "GP", "NSGAIII", "BruteForce")


def build_sampler(spec: StudySpec, *, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded and configured with ``spec.sampler.options``.

    ``trials_so_far`` is how many trials the study already has when the sampler is (re)built: for
    samplers that draw from a seeded random stream, it shifts the seed, so a study resumed by a new
    operator process does not replay the draws of the first one. A study run by one process from start
    to end is reproducible from ``spec.sampler.seed`` alone.
    """
    return _construct(spec, _sampler_kwargs(spec, trials_so_far))


def _sampler_kwargs(spec: StudySpec, trials_so_far: int = 0) -> dict[str, Any]:
    kind = spec.sampler.type
    kwargs: dict[str, Any] = dict(spec.sampler.options)
    if spec.sampler.seed is not None:
        shift = trials_so_far if kind in _RESEEDED_ON_RESUME else 0
        kwargs["seed"] = (spec.sampler.seed + shift) % 2**32
    if kind == "Grid":
        grid = {p.name: grid_values(p) for p in spec.search_space}
        kwargs["search_space"] = grid
    return kwargs


# Optuna marks several samplers' arguments experimental. The filter is installed once, for good:
# ``warnings.catch_warnings`` swaps the process's filters and is not thread-safe, and the operator
# builds samplers on many threads at once.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module=r"optuna(\.|$)")
# Optuna warns that some samplers are experimental (NSGAIII, BruteForce) from the line that builds them.
warnings.filterwarnings(
    "ignore", category=optuna.exceptions.ExperimentalWarning, module=r"hpo_operator\.core\.search_space$"
)


def _construct(spec: StudySpec, kwargs: dict[str, Any]) -> optuna.samplers.BaseSampler:
    kind = spec.sampler.type
    try:
        return SAMPLER_CLASSES[kind](**kwargs)
    except (TypeError, ValueError) as e:
        raise SpecError.at("spec.sampler.options", f"the {kind} sampler refused them: {e}") from None


# Trials the spec-time trial run asks for: enough for a model-based sampler to fit on told values.
_TRIAL_RUN_TRIALS = 3


@dataclasses.dataclass(frozen=True)
class _TrialRunOutcome:
    failure: str | None  # why the sampler could not sample (None: it could)
    warnings: tuple[str, ...]  # what Optuna warned about while it sampled, each said once


# Outcomes of trial runs by what they depend on (a spec is parsed at every reconcile: the run is
# done once per distinct sampler and space, not every few seconds per study).
_TRIAL_RUNS: dict[str, _TrialRunOutcome] = {}
_TRIAL_RUNS_LOCK = threading.Lock()
_TRIAL_RUNS_MAX = 512


def trial_run(spec: StudySpec) -> None:
    """Ask the spec's sampler for a few parameter sets in a throw-away in-memory study.

    Optuna checks some options only when it samples (TPE's ``n_ei_candidates`` and ``prior_weight``,
    CMA-ES's ``popsize`` and ``x0``), so without this a bad value fails the operator's first ask, not the
    spec. The run skips the samplers' start-up phase (``n_startup_trials: 0``) so their models run at once;
    what Optuna warns or logs during the run is kept for :func:`notes`, not shown. Raises
    :class:`SpecError` naming ``spec.sampler.options``; :func:`validate` runs it when the spec gives
    options. The outcome is remembered per sampler, options, search space and directions.
    """
    failure = _tried(spec).failure
    if failure is not None:
        raise SpecError.at("spec.sampler.options", failure)


def _tried(spec: StudySpec) -> _TrialRunOutcome:
    key = json.dumps(
        [
            spec.sampler.type,
            spec.sampler.seed,
            dict(spec.sampler.options),
            [[name, repr(d)] for name, d in distributions(spec).items()],
            list(spec.directions),
        ],
        sort_keys=True,
        default=repr,
    )
    with _TRIAL_RUNS_LOCK:
        outcome = _TRIAL_RUNS.get(key)
    if outcome is None:
        warned: list[str] = []
        try:
            with _captured(warned):
                _trial_run(spec)
            outcome = _TrialRunOutcome(None, _distinct(warned))
        except SpecError as e:
            outcome = _TrialRunOutcome(e.issues[0].message, ())
        with _TRIAL_RUNS_LOCK:
            if len(_TRIAL_RUNS) >= _TRIAL_RUNS_MAX:
                _TRIAL_RUNS.clear()
            _TRIAL_RUNS[key] = outcome
    return outcome


def _trial_run(spec: StudySpec) -> None:
    kind = spec.sampler.type
    kwargs = _sampler_kwargs(spec)
    if "n_startup_trials" in sampler_options(kind):
        kwargs["n_startup_trials"] = 0
    dists = distributions(spec)
    sampler = _construct(spec, kwargs)
    try:
        study = optuna.create_study(directions=list(spec.directions), sampler=sampler)
        for i in range(_TRIAL_RUN_TRIALS):
            trial = study.ask(dists)
            values = [float(i)] * len(spec.objective)
            study.add_trial(
                optuna.trial.create_trial(params=trial.params, distributions=dists, values=values)
            )
    except Exception as e:  # whatever the sampler raises, its options are the cause
        raise SpecError.at(
            "spec.sampler.options",
            f"the {kind} sampler failed to sample with them: {e}",
        ) from None


# Optuna's warning that a sampler samples a parameter with its independent sampler: one per parameter
# and trial of the run; said once, naming the parameters, without the run's trial numbers.
_INDEPENDENT = re.compile(
    r"The parameter [`'](?P<name>[^`']*)[`'] in [Tt]rial#(?P<number>\d+) is sampled independently"
)
_TRIAL_NUMBER = re.compile(r"\s*(in )?[Tt]rial#\d+")
# Serializes the runs' capture of Python warnings (the hook and the filter are the process's).
_CAPTURE_LOCK = threading.Lock()


@contextlib.contextmanager
def _captured(sink: list[str]) -> Iterator[None]:
    """Collect what Optuna warns (``warnings.warn``) and logs at WARNING or above on this thread while
    inside, instead of showing it; its other log records on this thread are dropped (the run's "A new
    study created in memory" is not the user's business). Other threads' warnings and records pass as
    before. Experimental-feature warnings are not collected (the study's own sampler raises them too)."""
    me = threading.get_ident()

    class _Collect(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.thread != me or not (record.name == "optuna" or record.name.startswith("optuna.")):
                return True
            if record.levelno >= logging.WARNING:
                sink.append(record.getMessage())
            return False

    collect = _Collect()
    # Optuna's loggers (a filter on a logger sees the records made there), and the handlers its records
    # reach (for a module that makes its logger during the run); a record seen twice is collected once.
    optuna_logger = logging.getLogger("optuna")
    loggers: list[logging.Filterer] = [
        logging.getLogger(n)
        for n in list(logging.root.manager.loggerDict)
        if n == "optuna" or n.startswith("optuna.")
    ]
    loggers += [*optuna_logger.handlers, *logging.root.handlers]
    for logger in loggers:
        logger.addFilter(collect)
    with _CAPTURE_LOCK:
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if threading.get_ident() != me:
                shown(message, category, *args, **kwargs)
            elif not issubclass(category, optuna.exceptions.ExperimentalWarning):
                sink.append(str(message))

        warnings.showwarning = show
        module = r"(optuna|hpo_operator\.core\.search_space)(\.|$)"
        warnings.filterwarnings("always", module=module)
        always = ("always", None, Warning, re.compile(module), 0)  # the entry filterwarnings made
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                warnings.filters.remove(always)
            warnings.showwarning = shown
            for logger in loggers:
                logger.removeFilter(collect)


def _distinct(messages: Sequence[str]) -> tuple[str, ...]:
    """Each warning once: the independent-sampling warnings merged into one naming the parameters."""
    out: list[str] = []
    independent: list[str] = []
    template = ""
    for m in messages:
        found = _INDEPENDENT.search(m)
        if found is not None:
            # The run's first trial has no finished trial to infer the space from: every sampler
            # samples it independently, by design, in the run (n_startup_trials 0) and not in the study.
            if found["number"] != "0" and found["name"] not in independent:
                independent.append(found["name"])
            template = template or m
            continue
        m = _TRIAL_NUMBER.sub("", m).strip()
        if m not in out:
            out.append(m)
    if independent:
        names = ", ".join(repr(n) for n in independent)
        rest = template.split(" is sampled independently", 1)[1]
        which = f"the parameters {names} are" if len(independent) > 1 else f"the parameter {names} is"
        out.insert(0, f"{which} sampled independently{_TRIAL_NUMBER.sub('', rest)}")
    return tuple(out)


def validate(spec: StudySpec) -> None:
    """Raise :class:`SpecError` if the sampler cannot handle the space or an enqueued set does not fit."""
    issues = [*_check_sampler(spec)]
    for i, params in enumerate(spec.enqueue):
        issues += check_params(spec, params, f"spec.enqueue[{i}]", complete=spec.sampler.type == "Grid")
    if issues:
        raise SpecError(issues)
    build_sampler(spec)
    if spec.sampler.options:
        trial_run(spec)


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
    package = NEEDS_PACKAGE.get(kind)
    if package is not None and importlib.util.find_spec(package) is None:
        issues.append(
            FieldIssue(
                "spec.sampler.type",
                f"the {kind} sampler needs {package}, which this environment lacks (the operator image "
                f"has no {package}): install it where the study is run, or pick another sampler",
            )
        )
    if kind in DISCRETE_ONLY:
        continuous = [i for i, p in enumerate(spec.search_space) if _count_values(p) is None]
        for i in continuous:
            issues.append(
                FieldIssue(
                    f"spec.searchSpace[{i}]",
                    f"the {kind} sampler needs discrete values, but {spec.search_space[i].name!r} is a "
                    "continuous float: give it a step, or make it int or categorical",
                )
            )
        size = grid_size(spec)
        if kind == "Grid" and size is not None and size > MAX_GRID_POINTS:
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
                    f"{spec.trials.total} trials but the "
                    + ("grid" if kind == "Grid" else f"{kind} sampler's space")
                    + f" has only {size} points"
                    + (f" (plus {len(spec.enqueue)} enqueued)" if spec.enqueue else "")
                    + "; lower total or widen the "
                    + ("grid" if kind == "Grid" else "space"),
                )
            )
    issues += _check_options(spec)
    return issues


def fallback(spec: StudySpec) -> str | None:
    """What the sampler cannot model in this space and samples at random instead (``None``: nothing).

    CMA-ES models int and float parameters only: Optuna samples the categorical ones with its
    independent sampler (RandomSampler), apart from the others; with only categorical parameters
    CMA-ES does nothing at all. A study may want that, so it is said (a condition), not refused.
    """
    if spec.sampler.type != "CMAES":
        return None
    categorical = [p.name for p in spec.search_space if p.type == "categorical"]
    if not categorical:
        return None
    names = ", ".join(repr(n) for n in categorical)
    if len(categorical) == len(spec.search_space):
        return (
            f"the CMAES sampler cannot sample categorical parameters, and every parameter is one "
            f"({names}): Optuna samples them all at random (RandomSampler); pick TPE, GP or Random"
        )
    return (
        f"the CMAES sampler cannot sample categorical parameters ({names}): Optuna samples them at "
        "random (RandomSampler), independently of the others, which CMA-ES models"
    )


@dataclasses.dataclass(frozen=True)
class Notes:
    """What the study will not do as written, accepted but said (a condition and an Event on the
    HPOStudy, a line of ``hpo validate`` and ``hpo run``): each a field and a message."""

    space: tuple[FieldIssue, ...] = ()  # ranges Optuna cuts to a multiple of their step
    sampler: tuple[FieldIssue, ...] = ()  # what the sampler samples at random, what Optuna warned

    def __iter__(self) -> Iterator[FieldIssue]:
        return iter((*self.space, *self.sampler))


def notes(spec: StudySpec) -> Notes:
    """The :class:`Notes` of a valid spec: each range that is not a multiple of its step, what the
    sampler cannot model (:func:`fallback`) and every warning Optuna raised or logged when the sampler
    was tried (:func:`trial_run`, remembered per sampler and space)."""
    space = []
    for i, p in enumerate(spec.search_space):
        cut = cut_high(p)
        if cut is None:
            continue
        assert p.low is not None and p.high is not None and p.step is not None
        # As the parameter's type: a float's 0 (JSON keeps no 0.0 apart from 0) is said 0.0.
        as_type = int if p.type == "int" else float
        low, high, step = as_type(p.low), as_type(p.high), as_type(p.step)
        above = as_type(Decimal(str(cut)) + Decimal(str(p.step)))
        space.append(
            FieldIssue(
                f"spec.searchSpace[{i}].step",
                f"the range [{low!r}, {high!r}] of {p.name!r} is not a multiple of step {step!r}: "
                f"Optuna searches [{low!r}, {cut!r}] and never tries {high!r}; "
                f"make high {cut!r} or {above!r}",
            )
        )
    sampler = []
    falls_back = fallback(spec)
    if falls_back is not None:
        sampler.append(FieldIssue("spec.sampler.type", falls_back))
    kind = spec.sampler.type
    for warned in _tried(spec).warnings:
        if falls_back is not None and "sampled independently" in warned:
            continue  # the fallback says it, in the spec's words
        sampler.append(
            FieldIssue("spec.sampler", f"Optuna warned when the {kind} sampler was tried: {warned}")
        )
    return Notes(tuple(space), tuple(sampler))


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


# What a spec may give an option: JSON values as they are (no "5" for 5, no 1 for true), finite numbers.
_STRICT = ConfigDict(strict=True, allow_inf_nan=False, arbitrary_types_allowed=True)


@functools.cache
def option_adapter(kind: str, name: str) -> TypeAdapter[Any] | None:
    """A pydantic validator for the ``name`` option of the ``kind`` sampler, from the constructor's type
    hint; ``None`` when the hint cannot be resolved or pydantic cannot check it (the constructor then
    has the last word, when :func:`build_sampler` runs at spec-check time)."""
    cls = SAMPLER_CLASSES[kind]
    param = sampler_options(kind).get(name)
    if param is None or param.annotation is inspect.Parameter.empty:
        return None
    # Optuna's modules import the names of their hints under TYPE_CHECKING only (``Callable``,
    # ``Sequence``, ...); the typing and collections.abc names fill that gap.
    module = sys.modules[cls.__init__.__module__]
    known = {**_public(collections.abc), **_public(typing)}
    holder = types.SimpleNamespace(__annotations__={name: param.annotation})
    try:
        hint = typing.get_type_hints(holder, globalns=dict(vars(module)), localns=known)[name]
        return TypeAdapter(hint, config=_STRICT)
    except (NameError, TypeError, AttributeError, SyntaxError, PydanticSchemaGenerationError):
        return None


def _public(module: types.ModuleType) -> dict[str, Any]:
    return {k: v for k, v in vars(module).items() if not k.startswith("_")}


def _option_problem(kind: str, name: str, value: Any) -> str | None:
    adapter = option_adapter(kind, name)
    if adapter is None:
        return None
    try:
        adapter.validate_python(value)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err["loc"])
        annotation = sampler_options(kind)[name].annotation
        if not where:
            return f"{trainer_spec.pydantic_message(err)} (the {kind} sampler's {name} takes {annotation})"
        return (
            f"must be {annotation} (the {kind} sampler's {name}), got {value!r}: "
            f"item {where} {trainer_spec.pydantic_message(err)}"
        )
    return None


def _check_options(spec: StudySpec) -> list[FieldIssue]:
    kind = spec.sampler.type
    allowed = sampler_options(kind)
    issues = []
    for name, value in spec.sampler.options.items():
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
                    f"not an option of the {kind} sampler{trainer_spec.suggest(name, allowed)} "
                    f"(those are: {', '.join(sorted(allowed))})",
                )
            )
        else:
            problem = _option_problem(kind, name, value)
            if problem:
                issues.append(FieldIssue(f"spec.sampler.options.{name}", problem))
    return issues
