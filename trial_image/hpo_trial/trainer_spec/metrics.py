"""The metric names a recipe's evaluator logs, and the objective checked against them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_trial.trainer_spec.checks import validate_trainer
from hpo_trial.trainer_spec.errors import TrainerSpecError, suggest
from hpo_trial.trainer_spec.models import EvaluatorSpec, TrainerSpec
from hpo_trial.trainer_spec.tables import SIMILARITY_NAMES

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
    if ev.name in _SPARSE_TWINS:  # the bi-encoder evaluator's names, plus the embeddings' sparsity
        twin = ev.model_copy(update={"name": _SPARSE_TWINS[ev.name]})
        base = _metrics_of(twin, spec) or frozenset()
        parts = ("anchor_", "positive_", "negative_") if ev.name == "SparseTripletEvaluator" else ("",)
        stats = {f"{prefix}{part}{stat}" for part in parts for stat in ("active_dims", "sparsity_ratio")}
        return base | stats
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


# The sparse evaluators that subclass a bi-encoder evaluator (and log its metrics and sparsity statistics).
_SPARSE_TWINS = {
    "SparseEmbeddingSimilarityEvaluator": "EmbeddingSimilarityEvaluator",
    "SparseBinaryClassificationEvaluator": "BinaryClassificationEvaluator",
    "SparseTripletEvaluator": "TripletEvaluator",
}
_BINARY_METRICS = ("accuracy", "accuracy_threshold", "f1", "precision", "recall", "f1_threshold", "ap", "mcc")


def _model_similarity(spec: TrainerSpec) -> tuple[str, ...]:
    """The model's similarity function: ``modelArgs.similarity_fn_name``, else any (the model decides)."""
    given = spec.model_args.get("similarity_fn_name")
    if isinstance(given, str):
        return (given,)
    # late-interaction models score with MaxSim
    return (*SIMILARITY_NAMES, "maxsim") if spec.kind == "MultiVectorEncoder" else SIMILARITY_NAMES


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
