"""``spec.trainer``: the Sentence Transformers recipe the built-in runner executes, as typed objects.

Parse only. This package imports pydantic and the standard library, never torch, sentence_transformers or
datasets: the operator and the ``hpo`` command validate manifests with it before any pod runs, and the
trial process validates with it before it imports anything heavy. At apply time, training-argument names
and simple value types (in ``arguments`` and in the search space: names, types, bounds and choices) are
checked against :data:`TRAINING_ARGUMENTS`, a table of the library's fields kept in step with the library
the project is tested with; a recipe with ``checkArguments: false`` skips that table (for a trial image
whose library is newer or older than the table). Inside the trial the authority is the installed library:
the trial's parse skips the table (``known_arguments=None``) and :mod:`hpo_trial.recipe` checks the names
against the library's own fields and builds the arguments with it, before the model is loaded.

Errors are :class:`TrainerSpecError` (a ``ValueError``); each of its ``issues`` carries the field's path and
the message as data, and its text is the two joined::

    trainer.loss.name: unknown loss 'Foo'; known: AdaptiveLayerLoss, AnglELoss, ...

The losses and evaluators a recipe may name, and the arguments each accepts, are listed in :data:`LOSSES`
and :data:`EVALUATORS` (and per model kind in :data:`KINDS`); a test keeps these tables equal to the
installed library's signatures.

The modules, bottom up (each imports only those above it):

- :mod:`~hpo_trial.trainer_spec.errors`: :class:`Issue`, :class:`TrainerSpecError`, :func:`suggest`;
- :mod:`~hpo_trial.trainer_spec.arguments`: :class:`Arg`, the table of training arguments
  (:data:`TRAINING_ARGUMENTS`) and the checks of one training argument;
- :mod:`~hpo_trial.trainer_spec.tables`: the losses and evaluators of each model kind (:data:`KINDS`);
- :mod:`~hpo_trial.trainer_spec.models`: the recipe as pydantic models (:class:`TrainerSpec`);
- :mod:`~hpo_trial.trainer_spec.checks`: :func:`validate_trainer`, the recipe's own checks;
- :mod:`~hpo_trial.trainer_spec.search_space`: the search-space parameters against the recipe
  (:func:`validate_param_names`, :func:`validate_search_space`), :func:`check_pruning`;
- :mod:`~hpo_trial.trainer_spec.metrics`: the metrics an evaluator logs, :func:`check_objective_metrics`.
"""

from __future__ import annotations

from hpo_trial.trainer_spec.arguments import (
    RESERVED_ARGUMENTS,
    TRAINING_ARGUMENTS,
    Arg,
    ArgKind,
    KnownArguments,
    training_argument_problem,
    warmup_ratio_problem,
)
from hpo_trial.trainer_spec.checks import validate_trainer
from hpo_trial.trainer_spec.errors import Issue, TrainerSpecError, pydantic_message, suggest
from hpo_trial.trainer_spec.metrics import check_objective_metrics, evaluator_metrics
from hpo_trial.trainer_spec.models import (
    FILE_FORMATS,
    MODEL_DTYPES,
    PACKAGE_SCHEME,
    SAVE_MODEL_MODES,
    DatasetSpec,
    EvaluatorSpec,
    LoadCall,
    LossSpec,
    ModelDtype,
    SaveModelSpec,
    TrainerSpec,
)
from hpo_trial.trainer_spec.search_space import (
    TRIAL_PARAMS_PATH,
    check_pruning,
    param_location,
    split_params,
    validate_param_names,
    validate_search_space,
)
from hpo_trial.trainer_spec.tables import (
    CROSS_ENCODER_EVALUATORS,
    CROSS_ENCODER_LOSSES,
    DEFAULT_KIND,
    EVALUATORS,
    KINDS,
    LOSSES,
    MULTI_VECTOR_ENCODER_EVALUATORS,
    MULTI_VECTOR_ENCODER_LOSSES,
    SPARSE_ENCODER_EVALUATORS,
    SPARSE_ENCODER_LOSSES,
    EvaluatorInfo,
    KindInfo,
    LossInfo,
    ModelKind,
)

__all__ = [
    "CROSS_ENCODER_EVALUATORS",
    "CROSS_ENCODER_LOSSES",
    "DEFAULT_KIND",
    "EVALUATORS",
    "FILE_FORMATS",
    "KINDS",
    "LOSSES",
    "MODEL_DTYPES",
    "MULTI_VECTOR_ENCODER_EVALUATORS",
    "MULTI_VECTOR_ENCODER_LOSSES",
    "PACKAGE_SCHEME",
    "RESERVED_ARGUMENTS",
    "SAVE_MODEL_MODES",
    "SPARSE_ENCODER_EVALUATORS",
    "SPARSE_ENCODER_LOSSES",
    "TRAINING_ARGUMENTS",
    "TRIAL_PARAMS_PATH",
    "Arg",
    "ArgKind",
    "DatasetSpec",
    "EvaluatorInfo",
    "EvaluatorSpec",
    "Issue",
    "KindInfo",
    "KnownArguments",
    "LoadCall",
    "LossInfo",
    "LossSpec",
    "ModelDtype",
    "ModelKind",
    "SaveModelSpec",
    "TrainerSpec",
    "TrainerSpecError",
    "check_objective_metrics",
    "check_pruning",
    "evaluator_metrics",
    "param_location",
    "pydantic_message",
    "split_params",
    "suggest",
    "training_argument_problem",
    "validate_param_names",
    "validate_search_space",
    "validate_trainer",
    "warmup_ratio_problem",
]
