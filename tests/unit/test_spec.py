"""The spec parser: the canonical example parses; every bad spec is refused with the field's path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError, StudySpec, check_runtime, validate_name

from tests.unit.helpers import custom_spec, error_of

ROOT = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((ROOT / "examples" / "seed-study.yaml").read_text())


def seed_spec() -> dict[str, Any]:
    return copy.deepcopy(SEED["spec"])


def test_the_seed_example_parses_to_the_seed_study() -> None:
    spec = parse_spec(seed_spec())
    assert isinstance(spec, StudySpec)
    assert spec.metrics == ("eval_sts-dev_spearman_cosine",)
    assert spec.directions == ("maximize",)
    assert spec.param_names == (
        "num_train_epochs",
        "per_device_train_batch_size",
        "warmup_ratio",
        "learning_rate",
    )
    lr = spec.search_space[3]
    assert (lr.type, lr.low, lr.high, lr.log) == ("float", 1.0e-6, 1.0e-4, True)
    assert (spec.trials.total, spec.trials.parallelism, spec.trials.max_failed, spec.trials.retries) == (
        20,
        1,
        3,
        1,
    )
    assert (spec.sampler.type, spec.sampler.seed) == ("TPE", 42)
    assert spec.pruner.type == "None"
    assert spec.template.image == "ghcr.io/hpo-dev/hpo-trial:0.1.0"
    assert spec.template.resources == {"limits": {"nvidia.com/gpu": 1}}
    assert spec.trainer is not None and spec.trainer["model"] == "distilbert-base-uncased"


def test_defaults_match_the_architecture() -> None:
    spec = parse_spec(custom_spec())
    assert (spec.trials.total, spec.trials.parallelism, spec.trials.max_failed, spec.trials.retries) == (
        10,
        1,
        3,
        0,
    )
    assert spec.sampler.type == "TPE" and spec.sampler.seed is None and spec.sampler.options == {}
    assert spec.pruner.type == "None" and spec.pruner.config() == {"type": "None"}
    assert spec.objective[0].direction == "maximize"
    assert spec.storage is None and not spec.delete_study_on_delete
    assert spec.enqueue == ()


def test_the_model_is_frozen() -> None:
    spec = parse_spec(custom_spec())
    with pytest.raises(ValueError):
        spec.trials.total = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [
        (
            lambda s: s["searchSpace"][0].update(low=5.0, high=5.0),
            "spec.searchSpace[0].low",
            "less than high",
        ),
        (lambda s: s["searchSpace"][0].update(low=6.0), "spec.searchSpace[0].low", "less than high"),
        (
            lambda s: s["searchSpace"][0].update(low=0.0, log=True),
            "spec.searchSpace[0].low",
            "greater than 0",
        ),
        (
            lambda s: s["searchSpace"][0].update(low=0.1, log=True, step=0.1),
            "spec.searchSpace[0].step",
            "log",
        ),
        (lambda s: s["searchSpace"][0].update(step=-1.0), "spec.searchSpace[0].step", "greater than 0"),
        (lambda s: s["searchSpace"][0].pop("high"), "spec.searchSpace[0].high", "required"),
        (lambda s: s["searchSpace"][0].update(low="small"), "spec.searchSpace[0].low", "number"),
        (
            lambda s: s["searchSpace"][0].update(type="double"),
            "spec.searchSpace[0].type",
            "one of int, float, categorical; got 'double'",
        ),
        (lambda s: s["searchSpace"][0].update(choices=[1, 2]), "spec.searchSpace[0].choices", "categorical"),
        (lambda s: s["searchSpace"][1].update(low=1.5), "spec.searchSpace[1].low", "whole number"),
        (lambda s: s["searchSpace"][2].pop("choices"), "spec.searchSpace[2].choices", "at least one"),
        (lambda s: s["searchSpace"][2].update(choices=[]), "spec.searchSpace[2].choices", "at least one"),
        (lambda s: s["searchSpace"][2].update(low=1), "spec.searchSpace[2].low", "categorical"),
        (lambda s: s["searchSpace"][2].update(choices=["a", "a"]), "spec.searchSpace[2].choices[1]", "twice"),
        (
            lambda s: s["searchSpace"][2].update(choices=[{"x": 1}]),
            "spec.searchSpace[2].choices[0]",
            "string",
        ),
        (lambda s: s["searchSpace"][1].update(name="x"), "spec.searchSpace[1].name", "twice"),
        (
            lambda s: s["searchSpace"][1].update(name="learning rate"),
            "spec.searchSpace[1].name",
            "parameter name",
        ),
        (lambda s: s["searchSpace"][1].update(colour="red"), "spec.searchSpace[1].colour", "unknown field"),
        (lambda s: s.update(searchSpace=[]), "spec.searchSpace", "must not be empty"),
        (lambda s: s.update(objective=[]), "spec.objective", "must not be empty"),
        (
            lambda s: s["objective"][0].update(direction="up"),
            "spec.objective[0].direction",
            "one of maximize, minimize; got 'up'",
        ),
        (lambda s: s["objective"].append({"metric": "score"}), "spec.objective[1].metric", "twice"),
        (lambda s: s.update(trials={"total": 0}), "spec.trials.total", "must be at least 1, got 0"),
        (
            lambda s: s.update(trials={"parallelism": 0}),
            "spec.trials.parallelism",
            "must be at least 1, got 0",
        ),
        (lambda s: s.update(trials={"maxFailed": -1}), "spec.trials.maxFailed", "must be at least 0, got -1"),
        (
            lambda s: s.update(trials={"retries": "2"}),
            "spec.trials.retries",
            "must be a whole number, got '2'",
        ),
        (lambda s: s.update(trials={"total": 2.5}), "spec.trials.total", "must be a whole number, got 2.5"),
        (lambda s: s.update(sampler={"type": "Bayes"}), "spec.sampler.type", "got 'Bayes'"),
        (lambda s: s.update(pruner={"type": "Hyperband"}), "spec.pruner.maxResource", "required"),
        (
            lambda s: s.update(pruner={"type": "Hyperband", "maxResource": 9, "nWarmupSteps": 1}),
            "spec.pruner.nWarmupSteps",
            "not a field of the Hyperband pruner",
        ),
        (
            lambda s: s.update(pruner={"type": "Percentile", "percentile": 150}),
            "spec.pruner.percentile",
            "100",
        ),
        (
            lambda s: s.update(pruner={"type": "Hyperband", "minResource": 9, "maxResource": 3}),
            "spec.pruner.minResource",
            "maxResource",
        ),
        (
            lambda s: s.update(storage={"secretRef": {"key": "url"}}),
            "spec.storage.secretRef.name",
            "required",
        ),
        (
            lambda s: s["template"].update(env=[{"name": "HPO_STUDY_NAME", "value": "x"}]),
            "spec.template.env[0].name",
            "set by the operator",
        ),
        (lambda s: s["template"].update(env=[{"value": "x"}]), "spec.template.env[0].name", "required"),
        (lambda s: s["template"].update(command=[]), "spec.template.command", "empty"),
        (
            lambda s: s["template"].update(imagePullPolicy="Sometimes"),
            "spec.template.imagePullPolicy",
            "must be one of Always, IfNotPresent, Never; got 'Sometimes'",
        ),
        (lambda s: s["template"].update(resources={"limit": {}}), "spec.template.resources.limit", "unknown"),
        (lambda s: s["template"].update(labels={"a": "b"}), "spec.template.labels", "unknown field"),
        (lambda s: s.update(colour="red"), "spec.colour", "unknown field"),
    ],
)
def test_a_bad_spec_names_the_field(mutate: Any, path: str, words: str) -> None:
    raw = custom_spec()
    mutate(raw)
    error = error_of(raw)
    assert error.field == path, str(error)
    assert words in str(error)
    assert str(error).startswith(path)


def test_every_problem_is_reported_at_once() -> None:
    raw = custom_spec()
    raw["searchSpace"][0]["low"] = 9.0
    raw["searchSpace"][1]["low"] = 2.5
    error = error_of(raw)
    assert [i.path for i in error.issues] == ["spec.searchSpace[0].low", "spec.searchSpace[1].low"]


def test_a_multi_objective_study_cannot_prune() -> None:
    raw = custom_spec(objective=[{"metric": "a"}, {"metric": "b", "direction": "minimize"}])
    raw["pruner"] = {"type": "Median"}
    error = error_of(raw)
    assert error.field == "spec.pruner.type"
    assert "single-objective" in str(error)
    del raw["pruner"]
    assert parse_spec(raw).directions == ("maximize", "minimize")


def test_enqueue_cannot_exceed_the_budget() -> None:
    raw = custom_spec(trials={"total": 1}, enqueue=[{"x": 0.0}, {"x": 1.0}])
    assert error_of(raw).field == "spec.enqueue"


def test_strings_are_not_numbers_and_booleans_are_not_ints() -> None:
    raw = custom_spec()
    raw["searchSpace"][1]["low"] = True
    assert error_of(raw).field == "spec.searchSpace[1].low"
    raw = custom_spec()
    raw["searchSpace"][0]["log"] = "yes"
    assert error_of(raw).field == "spec.searchSpace[0].log"


def test_not_a_mapping() -> None:
    assert error_of(None).field == "spec"  # type: ignore[arg-type]
    assert error_of(["a"]).field == "spec"  # type: ignore[arg-type]


def test_the_built_in_runner_needs_a_recipe() -> None:
    raw = custom_spec()
    del raw["template"]["command"]
    error = error_of(raw)
    assert error.field == "spec.trainer"
    assert "spec.template.command" in str(error)


def test_the_recipe_is_validated_by_the_trainer_spec() -> None:
    raw = seed_spec()
    raw["trainer"]["loss"]["name"] = "NoSuchLoss"
    error = error_of(raw)
    assert error.field == "spec.trainer.loss.name"
    assert "NoSuchLoss" in str(error)


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        # The reviewer's three: each used to pass validation and fail only in a scheduled trial pod.
        (
            lambda raw: raw["trainer"]["arguments"].update(num_train_epoch=1),
            "spec.trainer.arguments.num_train_epoch",
            "not a SentenceTransformerTrainingArguments field (did you mean 'num_train_epochs'?)",
        ),
        (
            lambda raw: raw["searchSpace"][3].update(name="learning_rat"),
            "spec.searchSpace[3].name",
            "'learning_rat' is not a SentenceTransformerTrainingArguments field "
            "(did you mean 'learning_rate'?)",
        ),
        (
            lambda raw: raw["trainer"]["arguments"].update(num_train_epochs="one"),
            "spec.trainer.arguments.num_train_epochs",
            "must be a number, got 'one'",
        ),
        (
            lambda raw: raw["trainer"]["arguments"].update(eval_strategy="sometimes"),
            "spec.trainer.arguments.eval_strategy",
            "must be one of no, steps, epoch; got 'sometimes'",
        ),
        (
            lambda raw: raw["trainer"]["arguments"].update(fp16="yes"),
            "spec.trainer.arguments.fp16",
            "must be true or false, got 'yes'",
        ),
    ],
)
def test_training_arguments_and_parameter_names_are_checked_at_apply_time(
    change: Any, path: str, words: str
) -> None:
    raw = seed_spec()
    assert raw["searchSpace"][3]["name"] == "learning_rate"
    change(raw)
    error = error_of(raw)
    assert error.field == path, str(error)
    assert words in str(error)
    assert "HPO_TRIAL_PARAMS" not in str(error)


def test_a_pruner_needs_reports_that_line_up_across_trials() -> None:
    # Evaluations every N optimizer steps land on batch-size-dependent epochs: the pruner would never act.
    raw = seed_spec()
    raw["pruner"] = {"type": "Median"}
    raw["trainer"]["arguments"].update({"eval_strategy": "steps", "eval_steps": 50})
    error = error_of(raw)
    assert error.field == "spec.trainer.evalEveryEpochs"
    assert "Median pruner" in str(error)
    raw["trainer"]["evalEveryEpochs"] = 0.25
    raw["trainer"]["arguments"]["eval_strategy"] = "no"
    del raw["trainer"]["arguments"]["eval_steps"]
    assert parse_spec(raw).pruner.type == "Median"


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        # Each used to pass apply time and fail every trial on a GPU node.
        (
            lambda raw: raw["searchSpace"][1].update(type="float"),
            "spec.searchSpace[1].type",
            "per_device_train_batch_size takes an integer",
        ),
        (
            lambda raw: raw["searchSpace"].append(
                {"name": "lr_scheduler_type", "type": "categorical", "choices": ["cosine", "cosin"]}
            ),
            "spec.searchSpace[4].choices[1]",
            "got 'cosin' (did you mean 'cosine'?)",
        ),
        (
            lambda raw: raw["searchSpace"][2].update(high=1.0),
            "spec.searchSpace[2].high",
            "warmup_ratio: must be below 1, got 1.0",
        ),
        (
            lambda raw: raw["trainer"]["arguments"].update(warmup_ratio=1.0),
            "spec.trainer.arguments.warmup_ratio",
            "must be below 1, got 1.0",
        ),
    ],
)
def test_search_space_types_and_choices_are_checked_at_apply_time(change: Any, path: str, words: str) -> None:
    raw = seed_spec()
    assert [p["name"] for p in raw["searchSpace"][1:3]] == ["per_device_train_batch_size", "warmup_ratio"]
    change(raw)
    error = error_of(raw)
    assert error.field == path, str(error)
    assert words in str(error)


def test_check_arguments_false_lets_a_newer_library_through() -> None:
    """A trial image whose library has fields or values the apply-time table does not know."""
    raw = seed_spec()
    raw["trainer"]["arguments"].update(optim="adamw_new", logging_dir="/logs")
    raw["searchSpace"][1]["type"] = "float"  # the table's types are skipped too
    assert error_of(raw).field == "spec.trainer.arguments.optim"
    raw["trainer"]["checkArguments"] = False
    spec = parse_spec(raw)
    assert spec.trainer is not None and spec.trainer["checkArguments"] is False
    raw["trainer"]["checkArguments"] = "false"
    assert error_of(raw).field == "spec.trainer.checkArguments"


def test_a_custom_command_skips_the_recipe_check() -> None:
    raw = seed_spec()
    raw["trainer"]["loss"]["name"] = "NoSuchLoss"
    raw["template"]["command"] = ["python", "train.py"]
    assert parse_spec(raw).trainer is not None


def test_study_names_are_limited_to_40_characters() -> None:
    validate_name("a" * 40)
    with pytest.raises(SpecError) as info:
        validate_name("a" * 41)
    assert info.value.field == "metadata.name"


def test_runtime_requirements_name_the_missing_field() -> None:
    spec = parse_spec(custom_spec(template={"command": ["python", "objective.py"]}))
    with pytest.raises(SpecError) as info:
        check_runtime(spec, default_image=None, default_storage=True)
    assert info.value.field == "spec.template.image"
    check_runtime(spec, default_image="img", default_storage=True)
    with pytest.raises(SpecError) as info:
        check_runtime(spec, default_image="img", default_storage=False)
    assert info.value.field == "spec.storage.secretRef"
    with_secret = parse_spec(
        custom_spec(storage={"secretRef": {"name": "db"}}, template={"command": ["python", "objective.py"]})
    )
    check_runtime(with_secret, default_image="img", default_storage=False)
    assert with_secret.storage is not None and with_secret.storage.secret_ref is not None
    assert with_secret.storage.secret_ref.key == "url"


def test_pruner_config_uses_the_spec_names_and_builds_on_the_trial_side() -> None:
    from hpo_trial.pruners import build_pruner

    spec = parse_spec(custom_spec(pruner={"type": "Median", "nStartupTrials": 2, "nWarmupSteps": 3}))
    assert spec.pruner.config() == {"type": "Median", "nStartupTrials": 2, "nWarmupSteps": 3}
    pruner = build_pruner(spec.pruner.config())
    assert type(pruner).__name__ == "MedianPruner"


def test_the_added_pruners_are_typed_and_build_on_the_trial_side() -> None:
    from hpo_trial.pruners import build_pruner

    patient = {"type": "Patient", "patience": 2, "minDelta": 0.01, "wrappedPruner": {"type": "Wilcoxon"}}
    spec = parse_spec(custom_spec(pruner=patient))
    assert spec.pruner.config() == patient
    pruner = build_pruner(spec.pruner.config())
    assert type(pruner).__name__ == "PatientPruner"
    assert type(pruner._wrapped_pruner).__name__ == "WilcoxonPruner"  # type: ignore[attr-defined]
    threshold = parse_spec(custom_spec(pruner={"type": "Threshold", "lower": 0.1, "intervalSteps": 2}))
    assert type(build_pruner(threshold.pruner.config())).__name__ == "ThresholdPruner"


@pytest.mark.parametrize(
    ("pruner", "message"),
    [
        ({"type": "Wilcoxon", "pThreshold": 1.5}, "spec.pruner.pThreshold: must be between 0 and 1, got 1.5"),
        ({"type": "Wilcoxon", "pThreshold": "low"}, "spec.pruner.pThreshold: must be a number, got 'low'"),
        ({"type": "Wilcoxon", "nStartupSteps": -1}, "spec.pruner.nStartupSteps: must be at least 0, got -1"),
        ({"type": "Wilcoxon", "lower": 1}, "spec.pruner.lower: is not a field of the Wilcoxon pruner"),
        ({"type": "Threshold"}, "spec.pruner.lower: the Threshold pruner needs lower, upper or both"),
        (
            {"type": "Threshold", "lower": 2, "upper": 1},
            "spec.pruner.lower: must be less than upper (2 >= 1)",
        ),
        (
            {"type": "Threshold", "upper": 1, "nStartupTrials": 1},
            "spec.pruner.nStartupTrials: is not a field",
        ),
        ({"type": "Median", "patience": 1}, "spec.pruner.patience: is not a field of the Median pruner"),
        ({"type": "Patient"}, "spec.pruner.patience: is required for the Patient pruner"),
        ({"type": "Patient", "patience": 1, "minDelta": -0.5}, "spec.pruner.minDelta: must be 0 or more"),
        (
            {"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Patient", "patience": 1}},
            "spec.pruner.wrappedPruner.type: a Patient pruner cannot wrap another one",
        ),
        (
            {"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Median", "percentile": 3}},
            "spec.pruner.wrappedPruner.percentile: is not a field of the Median pruner",
        ),
        (
            {"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Percentile", "percentile": 300}},
            "spec.pruner.wrappedPruner.percentile: must be between 0 and 100",
        ),
        (
            {"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Mediane"}},
            "spec.pruner.wrappedPruner.type: must be one of None, Median, Percentile, SuccessiveHalving, "
            "Hyperband, Wilcoxon, Threshold, Patient; got 'Mediane' (did you mean 'Median'?)",
        ),
    ],
)
def test_the_added_pruners_fields_are_checked_naming_the_field(pruner: dict[str, Any], message: str) -> None:
    error = error_of(custom_spec(pruner=pruner))
    assert str(error).startswith(message), str(error)


def test_too_many_items_are_refused_in_words() -> None:
    objectives = [{"metric": f"m{i}"} for i in range(17)]
    error = error_of(custom_spec(objective=objectives))
    assert str(error) == "spec.objective: at most 16 items, got 17"
    error = error_of(custom_spec(trials={"retries": 101}))
    assert str(error) == "spec.trials.retries: must be at most 100, got 101"
