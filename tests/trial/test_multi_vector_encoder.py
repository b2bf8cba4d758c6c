"""``trainer.kind: MultiVectorEncoder``: late-interaction (ColBERT-style) models in the same recipe.

The tables are checked against the installed library's signatures, the metric names against what its
evaluators return for a tiny MultiVectorEncoder (the trial tests' 2-layer BERT: MultiVectorEncoder adds a
projection, a mask and normalization), and the recipe trains it in float32.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from hpo_trial import recipe
from hpo_trial.trainer_spec import (
    MULTI_VECTOR_ENCODER_EVALUATORS,
    MULTI_VECTOR_ENCODER_LOSSES,
    TRAINING_ARGUMENTS,
    TrainerSpecError,
    check_objective_metrics,
    evaluator_metrics,
    validate_search_space,
    validate_trainer,
)
from sentence_transformers.multi_vector_encoder import (
    MultiVectorEncoder,
    MultiVectorEncoderTrainer,
    MultiVectorEncoderTrainingArguments,
)
from sentence_transformers.multi_vector_encoder import evaluation as mv_evaluation
from sentence_transformers.multi_vector_encoder import losses as mv_losses
from sentence_transformers.sentence_transformer.evaluation import (
    InformationRetrievalEvaluator,
    RerankingEvaluator,
)

from tests.trial.helpers import TinyData, make_triplets, write_jsonl


@pytest.fixture(scope="module")
def backbone(tiny_model: str) -> str:
    return str(Path(tiny_model).parent / "hf")


def mv_recipe(model: str, data: TinyData, **extra: Any) -> dict[str, Any]:
    trainer: dict[str, Any] = {
        "kind": "MultiVectorEncoder",
        "model": model,
        "train": {"files": data.triplets_train},
        "loss": {"name": "MultiVectorMultipleNegativesRankingLoss"},
        "evaluator": {
            "name": "MultiVectorInformationRetrievalEvaluator",
            "dataset": {"files": data.triplets_dev},
            "args": {"name": "ir", "ndcg_at_k": [5], "mrr_at_k": [5], "accuracy_at_k": [1]},
        },
        "arguments": {"per_device_train_batch_size": 8, "use_cpu": True, "seed": 3},
    }
    trainer.update(extra)
    return trainer


@pytest.mark.parametrize("name", sorted(MULTI_VECTOR_ENCODER_LOSSES))
def test_loss_table_matches_the_library(name: str) -> None:
    params = inspect.signature(getattr(mv_losses, name).__init__).parameters
    accepted = set(params) - {"self", "model", "loss"}
    info = MULTI_VECTOR_ENCODER_LOSSES[name]
    assert set(info.args) <= accepted, set(info.args) - accepted
    required = {p for p, v in params.items() if v.default is inspect.Parameter.empty} - {
        "self",
        "model",
        "loss",
    }
    assert required <= {a for a, arg in info.args.items() if arg.required}
    assert info.wraps == ("loss" in params)


@pytest.mark.parametrize("name", sorted(set(MULTI_VECTOR_ENCODER_EVALUATORS) - {"SequentialEvaluator"}))
def test_evaluator_table_matches_the_library(name: str) -> None:
    cls = getattr(mv_evaluation, name)
    base = InformationRetrievalEvaluator if "InformationRetrieval" in name else RerankingEvaluator
    assert issubclass(cls, base)
    params = set(inspect.signature(cls.__init__).parameters) | set(
        inspect.signature(base.__init__).parameters
    )
    assert set(MULTI_VECTOR_ENCODER_EVALUATORS[name].args) <= params


def test_the_arguments_table_plus_this_kinds_own_fields_is_the_library() -> None:
    fields = {f.name for f in dataclasses.fields(MultiVectorEncoderTrainingArguments) if f.init}
    assert fields == set(TRAINING_ARGUMENTS) | {"max_length"}
    validate_trainer(
        {**mv_recipe("m", _NO_DATA), "arguments": {"max_length": {"query": 32, "document": 180}}}
    )
    bi_encoder = {
        "model": "m",
        "train": {"files": "train.jsonl"},
        "eval": {"files": "dev.jsonl"},
        "loss": {"name": "MultipleNegativesRankingLoss"},
        "arguments": {"max_length": 8},
    }
    with pytest.raises(
        TrainerSpecError, match=r"max_length: not a SentenceTransformerTrainingArguments field"
    ):
        validate_trainer(bi_encoder)


@dataclasses.dataclass(frozen=True)
class _Files:
    triplets_train: str = "train.jsonl"
    triplets_dev: str = "dev.jsonl"


_NO_DATA: Any = _Files()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"loss": {"name": "MultiVectorMultipleNegativesRankingLos"}},
            r"^trainer.loss.name: unknown MultiVectorEncoder loss 'MultiVectorMultipleNegativesRankingLos' "
            r"\(did you mean 'MultiVectorMultipleNegativesRankingLoss'\?\)",
        ),
        (
            {"loss": {"name": "MultiVectorMultipleNegativesRankingLoss", "args": {"scale": "x"}}},
            r"^trainer.loss.args.scale: must be a number",
        ),
        (
            {"evaluator": {"name": "InformationRetrievalEvaluator", "dataset": {"files": "x.jsonl"}}},
            r"^trainer.evaluator.name: unknown MultiVectorEncoder evaluator 'InformationRetrievalEvaluator'",
        ),
    ],
)
def test_apply_time_checks_name_the_field(change: dict[str, Any], message: str) -> None:
    trainer = copy.deepcopy(mv_recipe("m", _NO_DATA))
    trainer.update(change)
    with pytest.raises(TrainerSpecError, match=message):
        validate_trainer(trainer)


def test_a_late_interaction_model_trains_and_logs_the_metrics_the_table_says(
    backbone: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    reranking = write_jsonl(
        tmp_path / "rerank.jsonl",
        [
            {"query": r["anchor"], "positive": r["positive"], "negative": r["negative"]}
            for r in make_triplets(8, 11)
        ],
    )
    trainer = mv_recipe(
        backbone,
        tiny_data,
        modelArgs={"similarity_fn_name": "maxsim"},
        evaluator={
            "name": "SequentialEvaluator",
            "evaluators": [
                {**mv_recipe(backbone, tiny_data)["evaluator"]},
                {
                    "name": "MultiVectorRerankingEvaluator",
                    "dataset": {"files": reranking},
                    "args": {"name": "rr", "at_k": 3},
                },
            ],
        },
    )
    validate_search_space(trainer, [{"name": "loss.scale", "type": "float", "low": 1.0, "high": 30.0}])
    spec = validate_trainer(trainer)
    r = recipe.prepare(spec, {"loss.scale": 20.0, "learning_rate": 1e-3}, str(tmp_path / "out"))
    assert isinstance(r.model, MultiVectorEncoder) and isinstance(r.args, MultiVectorEncoderTrainingArguments)
    assert type(r.loss) is mv_losses.MultiVectorMultipleNegativesRankingLoss and r.loss.scale == 20.0
    assert {p.dtype for p in r.model.parameters()} == {torch.float32}
    assert r.evaluator is not None
    logged = {f"eval_{k}" for k in r.evaluator(r.model)}
    assert logged == evaluator_metrics(spec), logged ^ (evaluator_metrics(spec) or set())
    trainer_obj = recipe.make_trainer(r)
    assert isinstance(trainer_obj, MultiVectorEncoderTrainer)
    trainer_obj.train()
    metrics = trainer_obj.evaluate()
    assert 0.0 <= metrics["eval_ir_maxsim_ndcg@5"] <= 1.0 and 0.0 <= metrics["eval_rr_ndcg@3"] <= 1.0
    with pytest.raises(
        TrainerSpecError, match=r"^objective\[0\].metric: 'eval_ir_maxsim_ndcg@10' is not logged"
    ):
        check_objective_metrics(spec, ["eval_ir_maxsim_ndcg@10"])
    # Without modelArgs.similarity_fn_name the model decides: MaxSim is accepted, a wrong k is not.
    plain = validate_trainer(mv_recipe(backbone, tiny_data))
    check_objective_metrics(plain, ["eval_ir_maxsim_ndcg@5", "eval_ir_maxsim_accuracy@1"])
    with pytest.raises(TrainerSpecError, match=r"\(did you mean 'eval_ir_maxsim_ndcg@5'\?\)"):
        check_objective_metrics(plain, ["eval_ir_maxsim_ndcg@50"])


def test_a_half_precision_checkpoint_trains_in_float32(
    backbone: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    half = tmp_path / "mv-fp16"
    MultiVectorEncoder(backbone, device="cpu").half().save(str(half))
    assert {p.dtype for p in MultiVectorEncoder(str(half), device="cpu").parameters()} == {torch.float16}
    model = recipe.build_model(validate_trainer(mv_recipe(str(half), tiny_data)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
