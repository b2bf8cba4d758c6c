"""The search-space parameters against the recipe: names, types, bounds and choices; whether the
study's pruner can compare the recipe's trials; a trial's parameters split by what they set."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hpo_trial.trainer_spec.arguments import (
    IDENTIFIER,
    RESERVED_ARGUMENTS,
    TRAINING_ARGUMENTS,
    Arg,
    KnownArguments,
    arg_of,
    training_argument_problem,
    warmup_ratio_problem,
)
from hpo_trial.trainer_spec.checks import effective_arguments, validate_trainer
from hpo_trial.trainer_spec.errors import TrainerSpecError, suggest
from hpo_trial.trainer_spec.models import TrainerSpec

# The ``path`` that stands for a trial's own parameters (``HPO_TRIAL_PARAMS``) rather than the spec's
# search space: the trial gets them sorted by name, so an error names the parameter, not an index.
TRIAL_PARAMS_PATH = "HPO_TRIAL_PARAMS"


def param_location(path: str, index: int, name: str) -> str:
    """Where a search-space parameter's name is: ``searchSpace[0].name``, or for the trial's own
    parameters (``path`` :data:`TRIAL_PARAMS_PATH`) ``searchSpace[name='learning_rat'].name``."""
    if path == TRIAL_PARAMS_PATH:
        return f"searchSpace[name={name!r}].name"
    return f"{path}[{index}].name"


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Trial parameters → (training arguments, ``loss.<arg>`` values, ``loss.inner.<arg>`` values)."""
    training: dict[str, Any] = {}
    loss: dict[str, Any] = {}
    inner: dict[str, Any] = {}
    for name, value in params.items():
        if name.startswith("loss.inner."):
            inner[name[len("loss.inner.") :]] = value
        elif name.startswith("loss."):
            loss[name[len("loss.") :]] = value
        else:
            training[name] = value
    return training, loss, inner


def check_pruning(
    trainer: TrainerSpec | Mapping[str, Any],
    pruner: Mapping[str, Any] | None,
    params: Mapping[str, Any] | None = None,
    path: str = "trainer",
) -> str | None:
    """Check that the study's pruner can compare this recipe's trials (single-objective studies).

    The pruner compares the values trials report at the *same* step. The runner reports at hundredths of
    an epoch: ``evalEveryEpochs`` marks and whole epochs (``eval_strategy: epoch``) land on the same steps
    in every trial, but evaluations every N optimizer steps (``eval_strategy: steps``) land on epochs that
    depend on the batch size and the data, so trials rarely share a step and the pruner never acts.
    That combination raises :class:`TrainerSpecError` naming ``<path>.evalEveryEpochs``. A recipe that never
    evaluates during training is allowed (the study may keep its pruner for other recipes) and gets a
    warning message back; otherwise None.
    """
    kind = str((pruner or {}).get("type", "None"))
    if kind == "None":
        return None
    spec = trainer if isinstance(trainer, TrainerSpec) else validate_trainer(trainer, path)
    if spec.eval_every_epochs is not None:
        return None
    arguments = {**spec.arguments, **dict(params or {})}
    strategy = str(arguments.get("eval_strategy", "no")).lower()
    if strategy == "steps":
        every = arguments.get("eval_steps", "logging_steps")
        raise TrainerSpecError(
            f"{path}.evalEveryEpochs",
            f"the study has a {kind} pruner, which compares trials at equal "
            f"reporting steps, but the recipe evaluates every {every} optimizer steps "
            f"({path}.arguments.eval_strategy 'steps'), at epochs that depend on the batch size, so trials "
            f"would rarely report at the same step and the pruner would never act; set "
            f"{path}.evalEveryEpochs (for example 0.25) and remove {path}.arguments.eval_strategy",
        )
    if strategy == "epoch":
        return None
    return (
        f"the study has a {kind} pruner but the recipe never evaluates during training, so the pruner never "
        f"sees a value; set {path}.evalEveryEpochs (for example 0.25) to let it act"
    )


def validate_param_names(
    trainer: TrainerSpec | Mapping[str, Any],
    names: Iterable[str],
    path: str = "searchSpace",
    known_arguments: KnownArguments | None = TRAINING_ARGUMENTS,
) -> None:
    """Check search-space parameter names against the recipe.

    A name is a training-argument name (``learning_rate``: a field of ``known_arguments``), ``loss.<arg>``
    for an argument of the recipe's loss, or ``loss.inner.<arg>`` for the loss a wrapper loss wraps.
    ``known_arguments`` is as for :func:`validate_trainer`: the table (skipped with ``checkArguments:
    false``), the installed library's names (:func:`hpo_trial.recipe.check_param_names`, at the start of the
    trial), or None (no training-argument names checked). Errors start with ``searchSpace[<index>].name``;
    with ``path`` :data:`TRIAL_PARAMS_PATH` (the names of a trial's ``HPO_TRIAL_PARAMS``, which the trial
    receives sorted, not in the spec's order) they name the parameter instead:
    ``searchSpace[name='learning_rat'].name``.
    """
    spec = (
        trainer if isinstance(trainer, TrainerSpec) else validate_trainer(trainer, "trainer", known_arguments)
    )
    known = effective_arguments(spec, known_arguments)
    names = list(names)

    def at(i: int) -> str:
        return param_location(path, i, names[i])

    warmup = [n for n in ("warmup_ratio", "warmup_steps") if n in names or n in spec.arguments]
    if len(warmup) == 2:
        where = at(names.index("warmup_ratio" if "warmup_ratio" in names else "warmup_steps"))
        raise TrainerSpecError(
            where,
            "warmup_ratio and warmup_steps are both set (in the search space or "
            "trainer.arguments); keep one, the other would be ignored",
        )
    for i, name in enumerate(names):
        where = at(i)
        if name.startswith("loss."):
            loss = spec.loss
            arg = name[len("loss.") :]
            if arg.startswith("inner."):
                if loss.inner is None:
                    raise TrainerSpecError(where, f"{name!r}: {loss.name} does not wrap another loss")
                loss, arg = loss.inner, arg[len("inner.") :]
            loss_args = loss.info.args  # not `known`: that is the training arguments' table
            if arg not in loss_args:
                if loss.inner is not None and arg in loss.inner.info.args:
                    raise TrainerSpecError(
                        where,
                        f"{name!r}: {loss.name} has no argument {arg!r}; "
                        f"for the wrapped {loss.inner.name} write 'loss.inner.{arg}'",
                    )
                tunable = ", ".join(sorted(k for k, a in loss_args.items() if a.tunable)) or "(none)"
                raise TrainerSpecError(
                    where,
                    f"{name!r}: {loss.name} has no argument {arg!r}; its tunable arguments are: {tunable}",
                )
            if not loss_args[arg].tunable:
                raise TrainerSpecError(where, f"{name!r}: the list argument {arg!r} cannot be tuned")
            if arg in loss.args:
                raise TrainerSpecError(
                    where, f"{name!r} is also fixed in trainer.loss.args; remove one of the two"
                )
            continue
        if not IDENTIFIER.match(name):
            raise TrainerSpecError(
                where, f"{name!r} is neither a training-argument name (like learning_rate) nor loss.<arg>"
            )
        if name in RESERVED_ARGUMENTS:
            raise TrainerSpecError(where, f"{name!r} is set by the runner ({RESERVED_ARGUMENTS[name]})")
        problem = (
            training_argument_problem(name, known=known, owner=spec.kind_info.arguments_class)
            if known is not None
            else None
        )
        if problem:
            raise TrainerSpecError(where, f"{name!r} is {problem}")
        if name in spec.arguments:
            raise TrainerSpecError(
                where, f"{name!r} is also fixed in trainer.arguments; remove one of the two"
            )


def validate_search_space(
    trainer: TrainerSpec | Mapping[str, Any],
    params: Sequence[Mapping[str, Any]],
    path: str = "searchSpace",
    known_arguments: KnownArguments | None = TRAINING_ARGUMENTS,
) -> None:
    """Check search-space parameters (``{name, type, low, high, choices}``, as in the spec) against the
    recipe: their names (:func:`validate_param_names`), then their types and values against what the
    argument takes, where its type is simple. A ``float`` parameter cannot set an integer argument,
    a numeric parameter cannot set a boolean, string or choice argument, every categorical choice must fit
    the argument (``lr_scheduler_type`` choices must be scheduler names), and a ``warmup_ratio`` must stay
    below 1. Training arguments are typed by ``known_arguments`` (the table, skipped with
    ``checkArguments: false``); ``loss.<arg>`` parameters by :data:`LOSSES`. Errors name the field:
    ``searchSpace[0].type``, ``searchSpace[1].choices[2]``, ``searchSpace[3].high``.
    """
    spec = (
        trainer if isinstance(trainer, TrainerSpec) else validate_trainer(trainer, "trainer", known_arguments)
    )
    validate_param_names(spec, [str(p.get("name", "")) for p in params], path, known_arguments)
    known = effective_arguments(spec, known_arguments)
    for i, p in enumerate(params):
        name = str(p.get("name", ""))
        at = f"{path}[{i}]"
        kind = p.get("type")
        if kind == "float" or kind == "int":
            high = p.get("high")
            if _is_number(high) and warmup_ratio_problem(name, high):
                raise TrainerSpecError(f"{at}.high", f"{name}: {warmup_ratio_problem(name, high)}")
        elif kind == "categorical":
            for j, choice in enumerate(p.get("choices") or ()):
                problem = warmup_ratio_problem(name, choice)
                if problem:
                    raise TrainerSpecError(f"{at}.choices[{j}]", f"{name}: {problem}")
        arg = _param_arg(spec, name, known)
        if arg is None:
            continue
        if kind in ("int", "float"):
            if arg.kind == "float" or (arg.kind == "int" and kind == "int"):
                continue
            if arg.kind == "int":
                raise TrainerSpecError(
                    f"{at}.type",
                    f"{name} takes an integer; a float parameter would give it values like 0.5 "
                    "(use type: int)",
                )
            raise TrainerSpecError(
                f"{at}.type",
                f"{name} is not a number ({_describe(arg)}); an {kind} parameter cannot set it "
                "(use type: categorical with its values as choices)",
            )
        if kind == "categorical":
            for j, choice in enumerate(p.get("choices") or ()):
                problem = arg.check(choice)
                if problem:
                    hint = (
                        suggest(choice, arg.choices)
                        if arg.kind == "choice" and isinstance(choice, str)
                        else ""
                    )
                    raise TrainerSpecError(f"{at}.choices[{j}]", f"{name} {problem}{hint}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(arg: Arg) -> str:
    if arg.kind == "choice":
        return f"one of {', '.join(arg.choices)}"
    return {"bool": "true or false", "str": "a string"}.get(arg.kind, f"a {arg.kind.replace('_', ' ')}")


def _param_arg(spec: TrainerSpec, name: str, known: KnownArguments | None) -> Arg | None:
    """The simple type of what the search-space parameter ``name`` sets, where one is known."""
    if name.startswith("loss."):
        loss, arg = spec.loss, name[len("loss.") :]
        if arg.startswith("inner.") and loss.inner is not None:
            loss, arg = loss.inner, arg[len("inner.") :]
        return loss.info.args.get(arg) if loss.name in loss.losses else None
    return arg_of(name, known) if known is not None else None
