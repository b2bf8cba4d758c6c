"""What a recipe may name, per model kind (``trainer.kind``): its losses and evaluators, the arguments
each accepts, and the kind's training-argument class and extra arguments (:data:`KINDS`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from hpo_trial.trainer_spec.arguments import Arg

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
SIMILARITY_NAMES = ("cosine", "dot", "euclidean", "manhattan")


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

# The arguments an information-retrieval evaluator and a triplet evaluator take beyond the common
# ones, the same for the dense evaluators and their sparse twins.
_RETRIEVAL_EVAL_ARGS = {
    "corpus_chunk_size": Arg("int"),
    "mrr_at_k": Arg("int_list"),
    "ndcg_at_k": Arg("int_list"),
    "accuracy_at_k": Arg("int_list"),
    "precision_recall_at_k": Arg("int_list"),
    "map_at_k": Arg("int_list"),
    "main_score_function": Arg("choice", SIMILARITY_NAMES),
    "query_prompt": Arg("str"),
    "query_prompt_name": Arg("str"),
    "corpus_prompt": Arg("str"),
    "corpus_prompt_name": Arg("str"),
}
_TRIPLET_EVAL_ARGS = {
    "main_similarity_function": Arg("choice", SIMILARITY_NAMES),
    "similarity_fn_names": Arg("str_list", SIMILARITY_NAMES),
    "margin": Arg("float"),
}

EVALUATORS: Mapping[str, EvaluatorInfo] = {
    "EmbeddingSimilarityEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "scores": "score"},
        {
            **_COMMON_EVAL_ARGS,
            "main_similarity": Arg("choice", SIMILARITY_NAMES),
            "similarity_fn_names": Arg("str_list", SIMILARITY_NAMES),
            "precision": Arg("choice", ("float32", "int8", "uint8", "binary", "ubinary")),
        },
    ),
    "TripletEvaluator": EvaluatorInfo(
        {"anchors": "anchor", "positives": "positive", "negatives": "negative"},
        {
            **_COMMON_EVAL_ARGS,
            **_TRIPLET_EVAL_ARGS,
        },
    ),
    "BinaryClassificationEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "labels": "label"},
        {**_COMMON_EVAL_ARGS, "similarity_fn_names": Arg("str_list", SIMILARITY_NAMES)},
    ),
    # Built from (query, relevant document) rows: each distinct query text is a query, each distinct
    # document text a corpus entry, and every row marks its document relevant to its query.
    "InformationRetrievalEvaluator": EvaluatorInfo(
        {"queries": "anchor", "corpus": "positive"},
        {
            **_COMMON_EVAL_ARGS,
            **_RETRIEVAL_EVAL_ARGS,
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
    # Subclasses of the bi-encoder's losses that take the same arguments.
    "SparseCoSENTLoss": LOSSES["CoSENTLoss"],
    "SparseAnglELoss": LOSSES["AnglELoss"],
    "SparseCosineSimilarityLoss": LOSSES["CosineSimilarityLoss"],
    "SparseMarginMSELoss": LossInfo(
        {"similarity_fct": Arg("choice", _PAIRWISE_SIMILARITY)}, texts=(3, None), label=True
    ),
    "SparseTripletLoss": LOSSES["TripletLoss"],
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
            **_RETRIEVAL_EVAL_ARGS,
        },
    ),
    "SparseEmbeddingSimilarityEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "scores": "score"},
        {
            **_SPARSE_EVAL_ARGS,
            "main_similarity": Arg("choice", SIMILARITY_NAMES),
            "similarity_fn_names": Arg("str_list", SIMILARITY_NAMES),
        },
    ),
    "SparseBinaryClassificationEvaluator": EvaluatorInfo(
        {"sentences1": "sentence1", "sentences2": "sentence2", "labels": "label"},
        {**_SPARSE_EVAL_ARGS, "similarity_fn_names": Arg("str_list", SIMILARITY_NAMES)},
    ),
    "SparseTripletEvaluator": EvaluatorInfo(
        {"anchors": "anchor", "positives": "positive", "negatives": "negative"},
        {
            **_SPARSE_EVAL_ARGS,
            **_TRIPLET_EVAL_ARGS,
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
