"""A validated ``spec.trainer`` → the objects one trial trains with.

Everything is built fresh for each trial: the ``SentenceTransformerTrainingArguments`` from the recipe's
fixed ``arguments`` plus the trial's parameters (so ``warmup_ratio`` and friends take effect the way the
library means them), the model, and the loss with its tuned ``loss.*`` arguments.

:func:`prepare` works from cheap to expensive, so a bad recipe fails before the model is loaded:
parameter names and training arguments, then the datasets and their columns, then the evaluator,
and only then the model and the loss. Every error is a :class:`RecipeError` naming the field.

The Hub code paths are the library's own (``datasets.load_dataset``, ``SentenceTransformer(name)``);
local paths go through the same calls.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.resources
import inspect
import logging
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from packaging.version import Version
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, util
from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
from sentence_transformers.base.evaluation.sequential import SequentialEvaluator
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
from sentence_transformers.cross_encoder import evaluation as cross_encoder_evaluation
from sentence_transformers.cross_encoder import losses as cross_encoder_losses
from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments
from sentence_transformers.multi_vector_encoder import (
    MultiVectorEncoder,
    MultiVectorEncoderTrainer,
    MultiVectorEncoderTrainingArguments,
)
from sentence_transformers.multi_vector_encoder import evaluation as multi_vector_evaluation
from sentence_transformers.multi_vector_encoder import losses as multi_vector_losses
from sentence_transformers.sentence_transformer import evaluation, losses
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from sentence_transformers.sparse_encoder import SparseEncoder, SparseEncoderTrainer
from sentence_transformers.sparse_encoder import evaluation as sparse_encoder_evaluation
from sentence_transformers.sparse_encoder import losses as sparse_encoder_losses
from sentence_transformers.sparse_encoder.training_args import SparseEncoderTrainingArguments
from transformers import TrainerCallback, set_seed
from transformers import __version__ as transformers_version

from hpo_trial.trainer_spec import (
    DEFAULT_KIND,
    PACKAGE_SCHEME,
    TRAINING_ARGUMENTS,
    TRIAL_PARAMS_PATH,
    DatasetSpec,
    EvaluatorSpec,
    LossSpec,
    TrainerSpec,
    TrainerSpecError,
    param_location,
    split_params,
    suggest,
    training_argument_problem,
    validate_param_names,
    warmup_ratio_problem,
)

try:
    from sentence_transformers.base.data_collator import DEFAULT_LABEL_COLUMNS
except ImportError:  # older library layouts
    DEFAULT_LABEL_COLUMNS = ("label", "labels", "score", "scores")

log = logging.getLogger("hpo_trial")

# Transformers 5 folds the warmup ratio into ``warmup_steps`` (a float below 1 is a ratio) and keeps
# ``warmup_ratio`` only as a deprecated alias that logs a warning for every trial. The seed (and most
# recipes) tune ``warmup_ratio``; the runner passes it the way the installed library means it.
WARMUP_RATIO_IN_STEPS = Version(transformers_version).major >= 5

__all__ = [
    "LIBRARIES",
    "Library",
    "Recipe",
    "RecipeError",
    "build_evaluator",
    "build_loss",
    "build_model",
    "build_training_args",
    "check_argument_names",
    "check_param_names",
    "library",
    "load_data",
    "make_trainer",
    "model_load_kwargs",
    "prepare",
    "set_model_dtype",
    "training_argument_names",
]


class RecipeError(TrainerSpecError):
    """The recipe cannot be built against the installed library or the real data; names the field."""


@dataclass(frozen=True)
class Library:
    """The installed library's classes for one model kind (``trainer.kind``)."""

    model: type[Any]
    trainer: type[Any]
    arguments: type[Any]
    losses: types.ModuleType
    evaluation: types.ModuleType


LIBRARIES: dict[str, Library] = {
    "SentenceTransformer": Library(
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
        evaluation,
    ),
    "CrossEncoder": Library(
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
        cross_encoder_losses,
        cross_encoder_evaluation,
    ),
    "SparseEncoder": Library(
        SparseEncoder,
        SparseEncoderTrainer,
        SparseEncoderTrainingArguments,
        sparse_encoder_losses,
        sparse_encoder_evaluation,
    ),
    "MultiVectorEncoder": Library(
        MultiVectorEncoder,
        MultiVectorEncoderTrainer,
        MultiVectorEncoderTrainingArguments,
        multi_vector_losses,
        multi_vector_evaluation,
    ),
}


def library(kind: str = DEFAULT_KIND) -> Library:
    return LIBRARIES[kind]


# --------------------------------------------------------------------------------------------------
# Names that need the library.
# --------------------------------------------------------------------------------------------------


def training_argument_names(kind: str = DEFAULT_KIND) -> frozenset[str]:
    """Every field the kind's training arguments (``SentenceTransformerTrainingArguments``, ...) accept."""
    return frozenset(f.name for f in dataclasses.fields(library(kind).arguments) if f.init)


def check_argument_names(
    names: Iterable[str], path: str = "trainer.arguments", kind: str = DEFAULT_KIND
) -> None:
    """Every name must be a field of the installed library's training arguments for ``kind``.

    With ``path`` :data:`~hpo_trial.trainer_spec.TRIAL_PARAMS_PATH` the names are the trial's parameters
    and the error names the search-space parameter.
    """
    known = training_argument_names(kind)
    owner = library(kind).arguments.__name__
    for i, name in enumerate(names):
        if name not in known:
            problem = f"not a {owner} field{suggest(name, known)}"
            if path == TRIAL_PARAMS_PATH:
                raise RecipeError(param_location(path, i, name), f"{name!r} is {problem}")
            raise RecipeError(f"{path}.{name}", problem)


def check_param_names(spec: TrainerSpec, names: Iterable[str], path: str = "searchSpace") -> None:
    """:func:`validate_param_names` with the installed library as the authority: training-argument names
    must be fields of its ``SentenceTransformerTrainingArguments`` (the apply-time table may be older or
    newer than the trial image's library, and ``checkArguments: false`` skips it). Errors name the
    search-space parameter (see :func:`~hpo_trial.trainer_spec.param_location`)."""
    try:
        validate_param_names(spec, list(names), path, known_arguments=training_argument_names(spec.kind))
    except RecipeError:
        raise
    except TrainerSpecError as e:
        raise RecipeError.of(e.issues) from None


# --------------------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------------------


def load_data(ds: DatasetSpec, path: str) -> datasets.Dataset:
    """Load a dataset spec (Hub or local files), then apply ``rename`` and ``columns``."""
    call = ds.load_call()
    if call.data_files is not None:
        for f in call.data_files:
            if "://" not in f and not glob.has_magic(f) and not os.path.exists(f):
                raise RecipeError(f"{path}.files", f"{f} does not exist")
    args, kwargs = call.arguments()
    try:
        data = datasets.load_dataset(*args, **kwargs)
    except Exception as e:
        raise RecipeError(path, f"cannot load {ds.describe()}: {type(e).__name__}: {e}") from e
    if not isinstance(data, datasets.Dataset):
        raise RecipeError(
            f"{path}.split", f"{ds.describe()} did not give one dataset split ({type(data).__name__})"
        )
    columns = list(data.column_names)
    for source in ds.rename:
        if source not in columns:
            raise RecipeError(
                f"{path}.rename.{source}", f"no column {source!r}; the columns are: {', '.join(columns)}"
            )
    if ds.rename:
        data = data.rename_columns(dict(ds.rename))
        columns = list(data.column_names)
    if ds.columns is not None:
        for col in ds.columns:
            if col not in columns:
                raise RecipeError(
                    f"{path}.columns", f"no column {col!r}; the columns are: {', '.join(columns)}"
                )
        data = data.select_columns(list(ds.columns))
    if len(data) == 0:
        raise RecipeError(path, f"{ds.describe()} has no rows")
    return data


def check_loss_columns(loss: LossSpec, data: datasets.Dataset, path: str) -> None:
    """The data's columns fit what the loss takes: N text columns (in order) and maybe a label column."""
    base = loss.base()
    info = base.info
    columns = list(data.column_names)
    labels = [c for c in columns if c in DEFAULT_LABEL_COLUMNS]
    texts = [c for c in columns if c not in DEFAULT_LABEL_COLUMNS]
    lo, hi = info.texts
    want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
    label = " and a 'label' or 'score' column" if info.label else " and no label column"
    problem = None
    if info.label and not labels:
        problem = "has no 'label' or 'score' column"
    elif not info.label and labels:
        problem = f"has the label column {labels[0]!r}"
    elif len(texts) < lo or (hi is not None and len(texts) > hi):
        problem = f"has {len(texts)} text column(s)"
    if problem:
        raise RecipeError(
            path,
            f"{base.name} takes {want} text column(s){label}; the dataset {problem} "
            f"(columns: {', '.join(columns)}); pick and order them with columns: and rename:",
        )


# --------------------------------------------------------------------------------------------------
# Evaluator.
# --------------------------------------------------------------------------------------------------


def build_evaluator(
    ev: EvaluatorSpec, eval_data: datasets.Dataset | None, path: str = "trainer.evaluator"
) -> BaseEvaluator:
    if ev.name == "SequentialEvaluator":
        subs = [
            build_evaluator(s, eval_data, f"{path}.evaluators[{i}]")
            for i, s in enumerate(ev.evaluators or ())
        ]
        return SequentialEvaluator(subs)
    if ev.dataset is not None:
        data = load_data(ev.dataset, f"{path}.dataset")
    elif eval_data is not None:
        data = eval_data
    else:
        raise RecipeError(f"{path}.dataset", "required when the recipe has no eval dataset")
    columns = list(data.column_names)
    inputs: dict[str, list[Any]] = {}
    for name, col in ev.input_columns().items():
        if col not in columns:
            hint = "" if name in ev.columns else f" (the default for {name}; map it with columns.{name})"
            raise RecipeError(
                f"{path}.columns.{name}",
                f"no column {col!r} in the evaluator's dataset{hint}; the columns are: {', '.join(columns)}",
            )
        inputs[name] = list(data[col])
    kwargs = dict(ev.args)
    if ev.name in (
        "InformationRetrievalEvaluator",
        "SparseInformationRetrievalEvaluator",
        "MultiVectorInformationRetrievalEvaluator",
    ):
        kwargs.update(_retrieval_inputs(inputs["queries"], inputs["corpus"]))
    elif ev.name in ("CrossEncoderRerankingEvaluator", "MultiVectorRerankingEvaluator"):
        kwargs["samples"] = _reranking_samples(inputs["query"], inputs["positive"], inputs["negative"])
    elif ev.name in ("CrossEncoderCorrelationEvaluator", "CrossEncoderClassificationEvaluator"):
        kwargs["sentence_pairs"] = [
            [a, b] for a, b in zip(inputs["sentences1"], inputs["sentences2"], strict=True)
        ]
        kwargs["scores" if "scores" in inputs else "labels"] = inputs.get("scores", inputs.get("labels"))
    else:
        kwargs.update(inputs)
    cls = getattr(library(ev._kind).evaluation, ev.name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise RecipeError(path, f"{ev.name} rejected its arguments: {e}") from e


def _reranking_samples(
    queries: Sequence[str], positives: Sequence[Any], negatives: Sequence[Any]
) -> list[dict[str, Any]]:
    """(query, positive, negative) rows → CrossEncoderRerankingEvaluator samples, one per distinct query.

    A positive or negative cell is a text or a list of texts; a query's rows add to its lists (each text
    once, in order)."""
    samples: dict[str, dict[str, list[str]]] = {}
    for q, pos, neg in zip(queries, positives, negatives, strict=True):
        sample = samples.setdefault(q, {"positive": [], "negative": []})
        for key, cell in (("positive", pos), ("negative", neg)):
            for text in [cell] if isinstance(cell, str) else list(cell or ()):
                if text not in sample[key]:
                    sample[key].append(text)
    return [{"query": q, **lists} for q, lists in samples.items()]


def _retrieval_inputs(queries: Sequence[str], documents: Sequence[str]) -> dict[str, Any]:
    """(query, relevant document) rows → the InformationRetrievalEvaluator's three mappings."""
    qids: dict[str, str] = {}
    dids: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for q, d in zip(queries, documents, strict=True):
        qid = qids.setdefault(q, f"q{len(qids)}")
        did = dids.setdefault(d, f"d{len(dids)}")
        relevant.setdefault(qid, set()).add(did)
    return {
        "queries": {qid: q for q, qid in qids.items()},
        "corpus": {did: d for d, did in dids.items()},
        "relevant_docs": relevant,
    }


# --------------------------------------------------------------------------------------------------
# Model and loss.
# --------------------------------------------------------------------------------------------------


def resolve_model(name: str, path: str = "trainer.model") -> str:
    """A Hub id or local path as it is; ``pkg:<package>/<path>`` → that directory of the installed package."""
    if not name.startswith(PACKAGE_SCHEME):
        return name
    package, _, inner = name[len(PACKAGE_SCHEME) :].partition("/")
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise RecipeError(path, f"{name!r}: the Python package {package!r} is not installed") from None
    target = root.joinpath(*inner.strip("/").split("/"))
    if not target.is_dir():
        raise RecipeError(path, f"{name!r}: the package {package!r} has no directory {inner!r}")
    return str(target)


def build_model(spec: TrainerSpec, path: str = "trainer") -> Any:
    """The kind's model (``SentenceTransformer``, ``CrossEncoder``, ``SparseEncoder``), weights in
    ``modelDtype``."""
    cls = library(spec.kind).model
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "model_name_or_path"}
    for key in spec.model_args:
        if key not in accepted:
            raise RecipeError(
                f"{path}.modelArgs.{key}", f"not an argument of {cls.__name__}{suggest(key, accepted)}"
            )
    name = resolve_model(spec.model, f"{path}.model")
    try:
        model = cls(name, **model_load_kwargs(spec))
    except Exception as e:
        raise RecipeError(f"{path}.model", f"cannot load {spec.model!r}: {type(e).__name__}: {e}") from e
    set_model_dtype(model, spec.model_dtype)
    if spec.max_seq_length is not None:
        if isinstance(model, CrossEncoder):
            model.max_length = spec.max_seq_length
        else:
            model.max_seq_length = spec.max_seq_length
    return model


def model_load_kwargs(spec: TrainerSpec) -> dict[str, Any]:
    """``modelArgs`` with the weights' dtype (``modelDtype``, default float32) in ``model_kwargs``.

    Without it the library loads the dtype the checkpoint stores (Transformers 5), so a float16
    checkpoint would train in float16 weights. ``auto`` leaves the library's choice.
    """
    kwargs = dict(spec.model_args)
    if spec.model_dtype != "auto":
        kwargs["model_kwargs"] = {**(kwargs.get("model_kwargs") or {}), "dtype": spec.model_dtype}
    return kwargs


def set_model_dtype(model: torch.nn.Module, model_dtype: str) -> None:
    """Cast every floating-point weight to ``model_dtype`` (``auto``: leave them as loaded).

    ``model_kwargs`` sets the backbone's dtype while it loads; the model's other modules (a Dense layer,
    a classifier head, a SPLADE head) keep the dtype they were saved in, so they are cast here.
    """
    if model_dtype == "auto":
        log.info("Model weights as stored: %s", ", ".join(sorted(_float_dtypes(model))) or "none")
        return
    dtype = getattr(torch, model_dtype)
    if _float_dtypes(model) - {model_dtype}:
        model.to(dtype)
    log.info("Model weights in %s (trainer.modelDtype)", model_dtype)


def _float_dtypes(model: torch.nn.Module) -> set[str]:
    return {
        str(t.dtype).removeprefix("torch.")
        for t in (*model.parameters(), *model.buffers())
        if t.is_floating_point()
    }


_DISTANCES: dict[str, Any] = {
    "TripletLoss": losses.TripletDistanceMetric,
    "ContrastiveLoss": losses.SiameseDistanceMetric,
    "OnlineContrastiveLoss": losses.SiameseDistanceMetric,
    "BatchAllTripletLoss": losses.BatchHardTripletLossDistanceFunction,
    "BatchHardTripletLoss": losses.BatchHardTripletLossDistanceFunction,
    "BatchSemiHardTripletLoss": losses.BatchHardTripletLossDistanceFunction,
    "SparseTripletLoss": losses.TripletDistanceMetric,
}


def _loss_kwargs(spec: LossSpec, values: Mapping[str, Any], model: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "activation_fn" and value is not None:
            value = getattr(torch.nn, value)()
        elif key == "pos_weight" and value is not None:
            value = torch.tensor(float(value))
        elif key == "weighting_scheme" and value is not None:
            value = getattr(cross_encoder_losses, value)()
        elif key == "similarity_fct":
            value = getattr(util, value)
        elif key == "distance_metric":
            value = getattr(_DISTANCES[spec.name], value)
        elif key == "loss_fct":
            value = getattr(torch.nn, value)()
        elif key == "directions":
            value = tuple(value)
        kwargs[key] = value
    if spec.name == "SoftmaxLoss" and "embedding_dimension" not in kwargs:
        kwargs["embedding_dimension"] = _embedding_dimension(model)
    return kwargs


def _embedding_dimension(model: SentenceTransformer) -> int | None:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return get()


def _tuned_at(loss_path: str, key: str) -> str:
    """The search-space parameter that tunes ``key`` of the loss at ``loss_path``: ``loss.inner.<key>``
    for ``trainer.loss.inner``."""
    inner = loss_path.removeprefix("trainer.loss").lstrip(".")
    return param_location(TRIAL_PARAMS_PATH, 0, ".".join(p for p in ("loss", inner, key) if p))


def build_loss(
    spec: LossSpec,
    model: Any,
    tuned: Mapping[str, Any] | None = None,
    tuned_inner: Mapping[str, Any] | None = None,
    path: str = "trainer.loss",
) -> torch.nn.Module:
    """The loss, built fresh, with the trial's ``loss.<arg>`` (and ``loss.inner.<arg>``) values applied."""
    tuned = dict(tuned or {})
    info = spec.info
    for key, value in tuned.items():
        arg = info.args.get(key)
        if arg is None:
            raise RecipeError(_tuned_at(path, key), f"not an argument of {spec.name}")
        problem = arg.check(value)
        if problem:
            raise RecipeError(_tuned_at(path, key).removesuffix(".name"), problem)
    kwargs = _loss_kwargs(spec, {**spec.args, **tuned}, model)
    if spec.inner is not None:
        kwargs["loss"] = build_loss(spec.inner, model, tuned_inner, None, f"{path}.inner")
    cls = getattr(library(spec._kind).losses, spec.name)
    try:
        return cls(model, **kwargs)
    except (TypeError, ValueError) as e:
        raise RecipeError(path, f"{spec.name} rejected its arguments: {e}") from e


# --------------------------------------------------------------------------------------------------
# Training arguments.
# --------------------------------------------------------------------------------------------------


def build_training_args(spec: TrainerSpec, params: Mapping[str, Any], output_dir: str) -> Any:
    """Fresh arguments: runner defaults, then the recipe's fixed ``arguments``, then the trial's parameters.

    Runner defaults (a recipe may override them): ``report_to="none"``, ``save_strategy="no"`` (no
    checkpoints; ``saveModel`` keeps the final model), ``disable_tqdm=True`` and ``logging_steps=0.05``
    (the runner logs a progress line every 5% of the training steps instead of progress bars). With
    ``evalEveryEpochs`` the runner triggers evaluations, so ``eval_strategy`` stays ``"no"``.
    With Transformers 5 a ``warmup_ratio`` is passed as ``warmup_steps`` (see :data:`WARMUP_RATIO_IN_STEPS`).
    """
    training, _, _ = split_params(params)
    check_argument_names(spec.arguments, "trainer.arguments", spec.kind)
    check_argument_names(training, TRIAL_PARAMS_PATH, spec.kind)
    for name, value in training.items():
        problem = warmup_ratio_problem(name, value)
        if problem:
            raise RecipeError(f"searchSpace[name={name!r}]", problem)
    kwargs: dict[str, Any] = {
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "logging_steps": 0.05,
    }
    kwargs.update(spec.arguments)
    kwargs.update(training)
    kwargs["output_dir"] = output_dir
    if WARMUP_RATIO_IN_STEPS and kwargs.get("warmup_ratio") is not None and not kwargs.get("warmup_steps"):
        kwargs["warmup_steps"] = float(kwargs.pop("warmup_ratio"))
    try:
        return library(spec.kind).arguments(**kwargs)
    except (TypeError, ValueError) as e:
        # The installed library refused a value: name the field where the table of simple types says
        # which one it is; otherwise name the arguments and the parameters as a whole.
        for name, value in training.items():
            problem = _table_problem(name, value)
            if problem:
                raise RecipeError(f"searchSpace[name={name!r}]", f"{name} {problem} ({e})") from e
        for name, value in spec.arguments.items():
            problem = _table_problem(name, value)
            if problem:
                raise RecipeError(f"trainer.arguments.{name}", f"{problem} ({e})") from e
        given = ", ".join(f"{k}={v!r}" for k, v in training.items())
        with_params = f" (with the trial's parameters {given})" if given else ""
        raise RecipeError(f"trainer.arguments{with_params}", str(e)) from e


def _table_problem(name: str, value: Any) -> str | None:
    """What the apply-time table says is wrong with ``value`` (None for fields it does not know)."""
    return training_argument_problem(name, value) if name in TRAINING_ARGUMENTS else None


# --------------------------------------------------------------------------------------------------
# Everything together.
# --------------------------------------------------------------------------------------------------


@dataclass
class Recipe:
    """What one trial trains with, all built fresh for it."""

    spec: TrainerSpec
    params: dict[str, Any]
    args: Any  # the kind's training arguments (SentenceTransformerTrainingArguments, ...)
    train_dataset: datasets.Dataset
    eval_dataset: datasets.Dataset | None
    evaluator: BaseEvaluator | None
    model: Any  # SentenceTransformer, CrossEncoder, SparseEncoder
    loss: torch.nn.Module


def prepare(spec: TrainerSpec, params: Mapping[str, Any], output_dir: str) -> Recipe:
    """Build everything for one trial, cheapest checks first (see the module docstring)."""
    params = dict(params)
    check_param_names(spec, params, TRIAL_PARAMS_PATH)
    args = build_training_args(spec, params, output_dir)

    train = load_data(spec.train, "trainer.train")
    check_loss_columns(spec.loss, train, "trainer.train")
    log.info("Training data: %s, %d rows, columns %s", spec.train.describe(), len(train), train.column_names)
    eval_data = None
    if spec.eval is not None:
        eval_data = load_data(spec.eval, "trainer.eval")
        check_loss_columns(spec.loss, eval_data, "trainer.eval")
        log.info("Eval data: %s, %d rows", spec.eval.describe(), len(eval_data))
    evaluator = build_evaluator(spec.evaluator, eval_data) if spec.evaluator is not None else None

    set_seed(args.seed)  # the model's new layers and the loss's own parameters start the same in every trial
    model = build_model(spec)
    _, tuned, tuned_inner = split_params(params)
    loss = build_loss(spec.loss, model, tuned, tuned_inner)
    return Recipe(spec, params, args, train, eval_data, evaluator, model, loss)


def make_trainer(recipe: Recipe, callbacks: Sequence[TrainerCallback] = ()) -> Any:
    """The kind's trainer (``SentenceTransformerTrainer``, ``CrossEncoderTrainer``, ...)."""
    return library(recipe.spec.kind).trainer(
        model=recipe.model,
        args=recipe.args,
        train_dataset=recipe.train_dataset,
        eval_dataset=recipe.eval_dataset,
        loss=recipe.loss,
        evaluator=recipe.evaluator,
        callbacks=list(callbacks),
    )
