"""``trainer.kind: SparseEncoder``: SPLADE (and CSR) models in the same recipe, checked from their own tables.

The tables are checked against the installed library's signatures, and the metric names against what the
real SparseInformationRetrievalEvaluator returns for a tiny SPLADE model built offline: the trial tests'
2-layer BERT vocabulary with a masked-language-model head (``BertForMaskedLM``), from which SparseEncoder
builds an MLM transformer with SpladePooling.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError
from hpo_trial import recipe
from hpo_trial.trainer_spec import (
    SPARSE_ENCODER_EVALUATORS,
    SPARSE_ENCODER_LOSSES,
    TrainerSpecError,
    check_objective_metrics,
    evaluator_metrics,
    validate_search_space,
    validate_trainer,
)
from sentence_transformers.sparse_encoder import SparseEncoder, SparseEncoderTrainer
from sentence_transformers.sparse_encoder import evaluation as sparse_evaluation
from sentence_transformers.sparse_encoder import losses as sparse_losses
from sentence_transformers.sparse_encoder.modules import SpladePooling
from sentence_transformers.sparse_encoder.training_args import SparseEncoderTrainingArguments

from tests.trial.helpers import REPO, TinyData, make_pairs, write_jsonl

CPU_TWIN = yaml.safe_load((REPO / "examples" / "sparse-study-cpu.yaml").read_text())["spec"]
GPU_STUDY = yaml.safe_load((REPO / "examples" / "sparse-study.yaml").read_text())["spec"]
OBJECTIVE = "eval_ir_dot_ndcg@10"


@pytest.fixture(scope="module")
def splade_backbone(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT with a masked-language-model head, saved as a plain Transformers model."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    hf = Path(tiny_model).parent / "hf"
    out = tmp_path_factory.mktemp("tiny-splade")
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(str(hf), architectures=["BertForMaskedLM"])
    BertForMaskedLM.from_pretrained(str(hf), config=config).save_pretrained(str(out))
    BertTokenizer.from_pretrained(str(hf)).save_pretrained(str(out))
    return str(out)


def sparse_recipe(model: str, data: TinyData, **extra: Any) -> dict[str, Any]:
    trainer: dict[str, Any] = {
        "kind": "SparseEncoder",
        "model": model,
        "train": {"files": data.triplets_train},
        "loss": {
            "name": "SpladeLoss",
            "args": {"query_regularizer_weight": 1e-3},
            "inner": {"name": "SparseMultipleNegativesRankingLoss"},
        },
        "evaluator": {
            "name": "SparseInformationRetrievalEvaluator",
            "dataset": {"files": data.triplets_dev},
            "args": {"name": "ir", "ndcg_at_k": [10], "mrr_at_k": [10]},
        },
        "arguments": {"per_device_train_batch_size": 8, "use_cpu": True, "seed": 3},
    }
    trainer.update(extra)
    return trainer


# --------------------------------------------------------------------------------------------------
# The tables match the installed library.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPARSE_ENCODER_LOSSES))
def test_loss_table_matches_the_library(name: str) -> None:
    params = inspect.signature(getattr(sparse_losses, name).__init__).parameters
    accepted = set(params) - {"self", "model", "loss"}
    info = SPARSE_ENCODER_LOSSES[name]
    assert set(info.args) <= accepted, set(info.args) - accepted
    required = {p for p, v in params.items() if v.default is inspect.Parameter.empty} - {
        "self",
        "model",
        "loss",
    }
    # document_regularizer_weight may come from the search space, so the table does not require it in args
    assert required <= {a for a, arg in info.args.items() if arg.required} | {"document_regularizer_weight"}
    assert info.wraps == ("loss" in params)


@pytest.mark.parametrize("name", sorted(set(SPARSE_ENCODER_EVALUATORS) - {"SequentialEvaluator"}))
def test_evaluator_table_matches_the_library(name: str) -> None:
    params = set(inspect.signature(getattr(sparse_evaluation, name).__init__).parameters)
    info = SPARSE_ENCODER_EVALUATORS[name]
    assert set(info.args) <= params, set(info.args) - params
    inputs = {"queries", "corpus"} if name == "SparseInformationRetrievalEvaluator" else set(info.inputs)
    assert inputs <= params


# --------------------------------------------------------------------------------------------------
# Apply-time checks.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"loss": {"name": "SpladeLos", "inner": {"name": "SparseMultipleNegativesRankingLoss"}}},
            r"^trainer.loss.name: unknown SparseEncoder loss 'SpladeLos' \(did you mean 'SpladeLoss'\?\)",
        ),
        ({"loss": {"name": "CoSENTLoss"}}, r"^trainer.loss.name: unknown SparseEncoder loss 'CoSENTLoss'"),
        ({"loss": {"name": "SpladeLoss"}}, r"^trainer.loss.inner: SpladeLoss wraps another loss"),
        (
            {
                "loss": {
                    "name": "SpladeLoss",
                    "args": {"document_regularizer_weight": "high"},
                    "inner": {"name": "SparseMultipleNegativesRankingLoss"},
                }
            },
            r"^trainer.loss.args.document_regularizer_weight: must be a number, got 'high'",
        ),
        (
            {"evaluator": {"name": "InformationRetrievalEvaluator", "dataset": {"files": "x.jsonl"}}},
            r"^trainer.evaluator.name: unknown SparseEncoder evaluator 'InformationRetrievalEvaluator' "
            r"\(did you mean 'SparseInformationRetrievalEvaluator'\?\)",
        ),
        (
            {"arguments": {"learning_rat": 1e-4}},
            r"^trainer.arguments.learning_rat: not a SparseEncoderTrainingArguments field",
        ),
    ],
)
def test_apply_time_checks_name_the_field(change: dict[str, Any], message: str) -> None:
    trainer = copy.deepcopy(CPU_TWIN["trainer"])
    trainer.update(change)
    with pytest.raises(TrainerSpecError, match=message):
        validate_trainer(trainer)


def test_the_regularizer_weights_and_the_inner_loss_are_tunable() -> None:
    trainer = CPU_TWIN["trainer"]
    validate_search_space(trainer, CPU_TWIN["searchSpace"])
    validate_search_space(trainer, [{"name": "loss.inner.scale", "type": "float", "low": 1.0, "high": 20.0}])
    with pytest.raises(TrainerSpecError, match=r"^searchSpace\[0\].name: 'loss.scale': SpladeLoss has no"):
        validate_search_space(trainer, [{"name": "loss.scale", "type": "float", "low": 1.0, "high": 20.0}])


def test_the_objective_metric_follows_the_evaluator() -> None:
    spec = validate_trainer(CPU_TWIN["trainer"])
    check_objective_metrics(
        spec,
        [
            "eval_retrieval-dev_dot_ndcg@10",
            "eval_retrieval-dev_query_active_dims",
            "document_regularizer_weight",
        ],
    )
    with pytest.raises(
        TrainerSpecError,
        match=r"^objective\[0\].metric: 'eval_retrieval-dev_dot_ndcg@5' is not logged by the evaluator "
        r"SparseInformationRetrievalEvaluator \(did you mean 'eval_retrieval-dev_dot_ndcg@10'\?\)",
    ):
        check_objective_metrics(spec, ["eval_retrieval-dev_dot_ndcg@5"])
    study = copy.deepcopy(CPU_TWIN)
    study["objective"] = [{"metric": "eval_retrieval-dev_ndcg@10"}]
    with pytest.raises(SpecError) as e:
        parse_spec(study)
    assert e.value.field == "spec.objective[0].metric"
    parse_spec(CPU_TWIN)
    parse_spec(GPU_STUDY)


# --------------------------------------------------------------------------------------------------
# The recipe builds a SPLADE model, its loss and evaluator, trains it, and the metric names are real.
# --------------------------------------------------------------------------------------------------


def test_a_splade_model_trains_and_logs_the_metrics_the_table_says(
    splade_backbone: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    spec = validate_trainer(sparse_recipe(splade_backbone, tiny_data, maxSeqLength=16))
    params = {"learning_rate": 1e-3, "loss.document_regularizer_weight": 3e-3, "loss.inner.scale": 5.0}
    r = recipe.prepare(spec, params, str(tmp_path / "out"))
    assert isinstance(r.model, SparseEncoder) and isinstance(r.model[-1], SpladePooling)
    assert r.model.max_seq_length == 16
    assert isinstance(r.args, SparseEncoderTrainingArguments)
    assert type(r.loss) is sparse_losses.SpladeLoss
    assert r.loss.document_regularizer_weight == 3e-3 and r.loss.query_regularizer_weight == 1e-3
    assert type(r.loss.loss) is sparse_losses.SparseMultipleNegativesRankingLoss and r.loss.loss.scale == 5.0
    assert {p.dtype for p in r.model.parameters()} == {torch.float32}

    assert r.evaluator is not None
    logged = {f"eval_{k}" for k in r.evaluator(r.model)}
    assert logged <= evaluator_metrics(spec)  # every name it logs is one the table knows ...
    # ... and the table names exactly these for the model's own similarity function (dot).
    named = validate_trainer(
        sparse_recipe(splade_backbone, tiny_data, modelArgs={"similarity_fn_name": "dot"})
    )
    assert evaluator_metrics(named) == logged

    trainer = recipe.make_trainer(r)
    assert isinstance(trainer, SparseEncoderTrainer)
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics[OBJECTIVE] <= 1.0
    check_objective_metrics(spec, [OBJECTIVE, *sorted(k for k in metrics if k.startswith("eval_"))])


def test_the_sparse_twins_of_the_bi_encoder_evaluators_log_the_names_the_table_says(
    splade_backbone: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    """SparseEmbeddingSimilarity-, SparseBinaryClassification- and SparseTripletEvaluator log their
    bi-encoder twin's metrics and the embeddings' sparsity: ``evaluator_metrics`` names exactly what the
    real evaluators return (so a typo in the objective is refused at apply time for them too)."""
    labelled = [{**r, "similar": int(r["score"] > 0.5)} for r in make_pairs(20, seed=9)]
    binary = write_jsonl(tmp_path / "binary.jsonl", labelled)
    evaluators = [
        {"name": "SparseEmbeddingSimilarityEvaluator", "args": {"name": "sts"}},
        {"name": "SparseEmbeddingSimilarityEvaluator", "args": {"similarity_fn_names": ["cosine", "dot"]}},
        {
            "name": "SparseBinaryClassificationEvaluator",
            "dataset": {"files": binary},
            "columns": {"labels": "similar"},
            "args": {"name": "para"},
        },
        {
            "name": "SparseTripletEvaluator",
            "dataset": {"files": tiny_data.triplets_dev},
            "args": {"name": "nli"},
        },
    ]
    model = SparseEncoder(splade_backbone)
    for ev in evaluators:
        trainer = sparse_recipe(splade_backbone, tiny_data, evaluator=ev, eval={"files": tiny_data.pairs_dev})
        spec = validate_trainer(trainer)
        assert spec.evaluator is not None
        built = recipe.build_evaluator(spec.evaluator, recipe.load_data(spec.eval, "trainer.eval"))
        logged = {f"eval_{k}" for k in built(model)}
        known = evaluator_metrics(spec)
        assert known is not None and logged <= known, (ev["name"], sorted(logged - known))
        named = validate_trainer({**trainer, "modelArgs": {"similarity_fn_name": "dot"}})
        assert evaluator_metrics(named) == logged, (ev["name"], evaluator_metrics(named) ^ logged)
    spec = validate_trainer(sparse_recipe(splade_backbone, tiny_data, evaluator=evaluators[-1]))
    with pytest.raises(
        TrainerSpecError,
        match=r"^objective\[0\].metric: 'eval_nli_anchor_active_dim' is not logged by the evaluator "
        r"SparseTripletEvaluator \(did you mean 'eval_nli_anchor_active_dims'\?\)",
    ):
        check_objective_metrics(spec, ["eval_nli_anchor_active_dim"])


def test_a_half_precision_sparse_checkpoint_trains_in_float32(
    splade_backbone: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    half = tmp_path / "splade-fp16"
    SparseEncoder(splade_backbone, device="cpu").half().save(str(half))
    assert {p.dtype for p in SparseEncoder(str(half), device="cpu").parameters()} == {torch.float16}
    model = recipe.build_model(validate_trainer(sparse_recipe(str(half), tiny_data)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
