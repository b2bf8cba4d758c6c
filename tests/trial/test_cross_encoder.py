"""``trainer.kind: CrossEncoder``: rerankers in the same recipe, checked at apply time from their own tables.

The tables (losses, evaluators, the metric names each evaluator logs) are checked here against the
installed library: signatures, and the metric names a real evaluator returns for a real (tiny, offline)
CrossEncoder. The tiny model is the trial tests' 2-layer BERT; CrossEncoder gives it a new head.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError
from hpo_trial import recipe
from hpo_trial.recipe import RecipeError
from hpo_trial.trainer_spec import (
    CROSS_ENCODER_EVALUATORS,
    CROSS_ENCODER_LOSSES,
    KINDS,
    TrainerSpecError,
    check_objective_metrics,
    evaluator_metrics,
    validate_search_space,
    validate_trainer,
)
from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
from sentence_transformers.cross_encoder import evaluation as ce_evaluation
from sentence_transformers.cross_encoder import losses as ce_losses
from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

from tests.trial.helpers import REPO, TinyData, make_triplets, write_jsonl

CPU_TWIN = yaml.safe_load((REPO / "examples" / "reranker-study-cpu.yaml").read_text())["spec"]
GPU_STUDY = yaml.safe_load((REPO / "examples" / "reranker-study.yaml").read_text())["spec"]


@pytest.fixture(scope="module")
def backbone(tiny_model: str) -> str:
    """The tiny BERT as a plain Transformers model (CrossEncoder adds a one-logit head)."""
    return str(Path(tiny_model).parent / "hf")


@pytest.fixture(scope="module")
def rerank_data(tiny_data: TinyData) -> dict[str, str]:
    """(query, passage, label) pairs for BinaryCrossEntropyLoss, (query, positive, negative) rows for the
    reranking evaluator (two rows per query: one positive, two negatives)."""
    d = tiny_data.dir
    pairs = []
    for r in make_triplets(48, seed=5):
        pairs.append({"query": r["anchor"], "passage": r["positive"], "label": 1.0})
        pairs.append({"query": r["anchor"], "passage": r["negative"], "label": 0.0})
    dev = []
    for a, b in zip(make_triplets(12, seed=6), make_triplets(12, seed=7), strict=True):
        dev.append({"query": a["anchor"], "positive": a["positive"], "negative": a["negative"]})
        dev.append({"query": a["anchor"], "positive": a["positive"], "negative": b["negative"]})
    return {
        "pairs": write_jsonl(d / "ce-pairs.jsonl", pairs),
        "dev": write_jsonl(d / "ce-dev.jsonl", dev),
    }


def ce_recipe(model: str, data: dict[str, str], **extra: Any) -> dict[str, Any]:
    trainer: dict[str, Any] = {
        "kind": "CrossEncoder",
        "model": model,
        "train": {"files": data["pairs"]},
        "loss": {"name": "BinaryCrossEntropyLoss"},
        "evaluator": {
            "name": "CrossEncoderRerankingEvaluator",
            "dataset": {"files": data["dev"]},
            "args": {"name": "rerank", "at_k": 5},
        },
        "arguments": {"per_device_train_batch_size": 8, "use_cpu": True, "seed": 3},
    }
    trainer.update(extra)
    return trainer


# --------------------------------------------------------------------------------------------------
# The tables match the installed library.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CROSS_ENCODER_LOSSES))
def test_loss_table_matches_the_library(name: str) -> None:
    params = inspect.signature(getattr(ce_losses, name).__init__).parameters
    accepted = set(params) - {"self", "model"}
    assert set(CROSS_ENCODER_LOSSES[name].args) <= accepted, set(CROSS_ENCODER_LOSSES[name].args) - accepted
    required = {p for p, v in params.items() if v.default is inspect.Parameter.empty} - {"self", "model"}
    required -= {"kwargs"}
    assert required <= {a for a, arg in CROSS_ENCODER_LOSSES[name].args.items() if arg.required}


@pytest.mark.parametrize("name", sorted(set(CROSS_ENCODER_EVALUATORS) - {"SequentialEvaluator"}))
def test_evaluator_table_matches_the_library(name: str) -> None:
    params = set(inspect.signature(getattr(ce_evaluation, name).__init__).parameters)
    assert set(CROSS_ENCODER_EVALUATORS[name].args) <= params, (
        set(CROSS_ENCODER_EVALUATORS[name].args) - params
    )


def test_every_kind_shares_the_training_argument_table() -> None:
    """One apply-time table serves every kind: their training arguments have the same fields."""

    def fields(cls: type[Any]) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.init}

    assert fields(CrossEncoderTrainingArguments) == fields(SentenceTransformerTrainingArguments)
    assert recipe.library("CrossEncoder").arguments is CrossEncoderTrainingArguments
    assert set(KINDS) == set(recipe.LIBRARIES)


# --------------------------------------------------------------------------------------------------
# Apply-time checks: names, argument types, did-you-mean, the objective's metric.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"loss": {"name": "BinaryCrossEntropyLos"}},
            r"^trainer.loss.name: unknown CrossEncoder loss 'BinaryCrossEntropyLos' "
            r"\(did you mean 'BinaryCrossEntropyLoss'\?\); known: ADRMSELoss, BinaryCrossEntropyLoss",
        ),
        (  # a bi-encoder loss is not a reranker loss
            {"loss": {"name": "CoSENTLoss"}},
            r"^trainer.loss.name: unknown CrossEncoder loss 'CoSENTLoss'",
        ),
        (
            {"loss": {"name": "BinaryCrossEntropyLoss", "args": {"pos_weight": "high"}}},
            r"^trainer.loss.args.pos_weight: must be a number, got 'high'",
        ),
        (
            {"loss": {"name": "LambdaLoss", "args": {"weighting_scheme": "NDCGLoss3Scheme"}}},
            r"^trainer.loss.args.weighting_scheme: must be one of NoWeightingScheme",
        ),
        (
            {"evaluator": {"name": "EmbeddingSimilarityEvaluator", "dataset": {"files": "x.jsonl"}}},
            r"^trainer.evaluator.name: unknown CrossEncoder evaluator 'EmbeddingSimilarityEvaluator'",
        ),
        (
            {"evaluator": {"name": "CrossEncoderRerankingEvaluator", "args": {"at_k": "ten"}}},
            r"^trainer.evaluator.args.at_k: must be an integer, got 'ten'",
        ),
        (
            {"evaluator": {"name": "CrossEncoderRerankingEvaluator", "columns": {"queries": "q"}}},
            r"^trainer.evaluator.columns.queries: not an input of CrossEncoderRerankingEvaluator; "
            r"its inputs are: query, positive, negative",
        ),
        (
            {"arguments": {"num_train_epoch": 1}},
            r"^trainer.arguments.num_train_epoch: not a CrossEncoderTrainingArguments field "
            r"\(did you mean 'num_train_epochs'\?\)",
        ),
        (
            {"kind": "ColBERT"},
            r"^trainer.kind: must be one of SentenceTransformer, CrossEncoder.*; got 'ColBERT'",
        ),
    ],
)
def test_apply_time_checks_name_the_field(change: dict[str, Any], message: str) -> None:
    trainer = copy.deepcopy(CPU_TWIN["trainer"])
    trainer.update(change)
    with pytest.raises(TrainerSpecError, match=message):
        validate_trainer(trainer)


def test_search_space_parameters_are_checked_against_the_reranker_loss() -> None:
    trainer = CPU_TWIN["trainer"]
    validate_search_space(trainer, CPU_TWIN["searchSpace"])
    with pytest.raises(
        TrainerSpecError, match=r"^searchSpace\[0\].name: 'loss.scale': BinaryCrossEntropyLoss"
    ):
        validate_search_space(trainer, [{"name": "loss.scale", "type": "float", "low": 1, "high": 2}])
    with pytest.raises(
        TrainerSpecError,
        match=r"^searchSpace\[0\].choices\[1\]: loss.activation_fn must be one of Identity, Sigmoid",
    ):
        validate_search_space(
            trainer,
            [{"name": "loss.activation_fn", "type": "categorical", "choices": ["Sigmoid", "Softmax"]}],
        )


def test_the_objective_metric_follows_the_evaluator() -> None:
    spec = validate_trainer(CPU_TWIN["trainer"])
    assert evaluator_metrics(spec) == {
        "eval_rerank-dev_map",
        "eval_rerank-dev_mrr@5",
        "eval_rerank-dev_ndcg@5",
    }
    check_objective_metrics(spec, ["eval_rerank-dev_ndcg@5", "eval_rerank-dev_map", "train_loss"])
    with pytest.raises(
        TrainerSpecError,
        match=r"^objective\[1\].metric: 'eval_rerank-dev_ndcg@10' is not logged by the evaluator "
        r"CrossEncoderRerankingEvaluator \(did you mean 'eval_rerank-dev_ndcg@5'\?\)",
    ):
        check_objective_metrics(spec, ["eval_rerank-dev_map", "eval_rerank-dev_ndcg@10"])
    # ... and the operator (and hpo validate) refuse it at apply time, naming the objective.
    study = copy.deepcopy(CPU_TWIN)
    study["objective"] = [{"metric": "eval_rerank-dev_spearman"}]
    with pytest.raises(SpecError) as e:
        parse_spec(study)
    assert e.value.field == "spec.objective[0].metric"
    parse_spec(CPU_TWIN)
    parse_spec(GPU_STUDY)


# --------------------------------------------------------------------------------------------------
# The recipe builds the library's objects, and the metric names are the ones the evaluators log.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("evaluator", "inputs"),
    [
        ({"name": "CrossEncoderRerankingEvaluator", "args": {"name": "rr", "at_k": 3}}, "dev"),
        ({"name": "CrossEncoderRerankingEvaluator"}, "dev"),
        ({"name": "CrossEncoderCorrelationEvaluator", "args": {"name": "sts"}}, "pairs"),
        ({"name": "CrossEncoderClassificationEvaluator", "args": {"name": "cls"}}, "pairs"),
        (
            {
                "name": "SequentialEvaluator",
                "evaluators": [
                    {"name": "CrossEncoderCorrelationEvaluator", "args": {"name": "a"}},
                    {"name": "CrossEncoderRerankingEvaluator", "args": {"name": "b", "at_k": 2}},
                ],
            },
            "mixed",
        ),
    ],
)
def test_evaluators_log_the_metric_names_the_table_says(
    backbone: str, tiny_data: TinyData, rerank_data: dict[str, str], evaluator: dict[str, Any], inputs: str
) -> None:
    pairs = {"files": rerank_data["pairs"], "rename": {"query": "sentence1", "passage": "sentence2"}}
    dev = {"files": rerank_data["dev"]}
    ev = copy.deepcopy(evaluator)
    if ev["name"] == "SequentialEvaluator":
        ev["evaluators"][0]["dataset"] = {"files": tiny_data.pairs_dev}
        ev["evaluators"][1]["dataset"] = dev
    elif inputs == "dev":
        ev["dataset"] = dev
    elif ev["name"] == "CrossEncoderCorrelationEvaluator":
        ev["dataset"] = {"files": tiny_data.pairs_dev}
    else:
        ev["dataset"] = pairs
    spec = validate_trainer(ce_recipe(backbone, rerank_data, evaluator=ev, modelArgs={"num_labels": 1}))
    assert spec.evaluator is not None
    built = recipe.build_evaluator(spec.evaluator, None)
    model = recipe.build_model(spec)
    logged = {f"eval_{k}" for k in built(model)}
    assert logged == evaluator_metrics(spec)


def test_reranking_samples_group_rows_by_query(backbone: str, rerank_data: dict[str, str]) -> None:
    spec = validate_trainer(ce_recipe(backbone, rerank_data))
    assert spec.evaluator is not None
    built = recipe.build_evaluator(spec.evaluator, None)
    assert isinstance(built, ce_evaluation.CrossEncoderRerankingEvaluator)
    assert len(built.samples) == 12  # 24 rows, two per query
    assert all(len(s["positive"]) == 1 and len(s["negative"]) == 2 for s in built.samples)
    # A cell may hold a list of texts (a hard-negatives column), and texts are kept once, in order.
    samples = recipe._reranking_samples(["q", "q", "r"], ["p", ["p", "p2"], "x"], [["n1", "n2"], "n1", []])
    assert samples == [
        {"query": "q", "positive": ["p", "p2"], "negative": ["n1", "n2"]},
        {"query": "r", "positive": ["x"], "negative": []},
    ]


def test_losses_build_with_their_arguments(backbone: str, rerank_data: dict[str, str]) -> None:
    spec = validate_trainer(
        ce_recipe(
            backbone,
            rerank_data,
            loss={"name": "BinaryCrossEntropyLoss", "args": {"activation_fn": "Sigmoid"}},
        )
    )
    model = recipe.build_model(spec)
    assert isinstance(model, CrossEncoder) and model.num_labels == 1
    loss = recipe.build_loss(spec.loss, model, {"pos_weight": 2.5})
    assert type(loss) is ce_losses.BinaryCrossEntropyLoss
    assert isinstance(loss.activation_fn, torch.nn.Sigmoid)
    assert float(loss.pos_weight) == 2.5
    lam = validate_trainer(
        ce_recipe(
            backbone,
            rerank_data,
            loss={"name": "LambdaLoss", "args": {"weighting_scheme": "LambdaRankScheme"}},
        )
    )
    built = recipe.build_loss(lam.loss, model, {"sigma": 0.5})
    assert isinstance(built.weighting_scheme, ce_losses.LambdaRankScheme) and built.sigma == 0.5
    with pytest.raises(RecipeError, match=r"^trainer.modelArgs.num_label: not an argument of CrossEncoder"):
        recipe.build_model(validate_trainer(ce_recipe(backbone, rerank_data, modelArgs={"num_label": 1})))


def test_a_reranker_trains_and_reports_its_metric(
    backbone: str, rerank_data: dict[str, str], tmp_path: Path
) -> None:
    spec = validate_trainer(ce_recipe(backbone, rerank_data, maxSeqLength=24))
    r = recipe.prepare(spec, {"learning_rate": 5e-4, "loss.pos_weight": 2.0}, str(tmp_path / "out"))
    assert isinstance(r.args, CrossEncoderTrainingArguments) and r.args.learning_rate == 5e-4
    assert r.model.max_length == 24 and float(r.loss.pos_weight) == 2.0
    trainer = recipe.make_trainer(r)
    assert isinstance(trainer, CrossEncoderTrainer)
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_rerank_ndcg@5"] <= 1.0
    assert {p.dtype for p in r.model.parameters()} == {torch.float32}


def test_a_half_precision_reranker_checkpoint_trains_in_float32(
    backbone: str, rerank_data: dict[str, str], tmp_path: Path
) -> None:
    half = tmp_path / "ce-fp16"
    CrossEncoder(backbone, device="cpu").half().save(str(half))
    assert {p.dtype for p in CrossEncoder(str(half), device="cpu").parameters()} == {torch.float16}
    model = recipe.build_model(validate_trainer(ce_recipe(str(half), rerank_data)))
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the head too
    auto = recipe.build_model(validate_trainer(ce_recipe(str(half), rerank_data, modelDtype="auto")))
    assert {p.dtype for p in auto.parameters()} == {torch.float16}
