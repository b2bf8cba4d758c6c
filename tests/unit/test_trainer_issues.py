"""The recipe's errors reach the spec's issues as data: each path and message as the trainer spec gives
them, prefixed with ``spec.``, none parsed back out of a message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hpo_operator.core.spec import FieldIssue

from tests.unit.helpers import error_of

ROOT = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((ROOT / "examples" / "seed-study.yaml").read_text())


def seed_spec() -> dict[str, Any]:
    return copy.deepcopy(SEED["spec"])


def test_a_recipe_issue_keeps_its_path_and_message() -> None:
    raw = seed_spec()
    raw["trainer"]["loss"]["name"] = "NoSuchLoss"
    [issue] = error_of(raw).issues
    assert issue.path == "spec.trainer.loss.name"
    assert issue.message.startswith("unknown loss 'NoSuchLoss'")


def test_a_path_with_a_colon_or_a_space_stays_whole() -> None:
    raw = seed_spec()
    raw["trainer"]["arguments"]["fp 16: x"] = True
    assert error_of(raw).issues == (
        FieldIssue("spec.trainer.arguments.fp 16: x", "not a training-argument name"),
    )


def test_search_space_and_objective_issues_name_their_own_fields() -> None:
    raw = seed_spec()
    raw["searchSpace"].append({"name": "gradient_accumulation_steps", "type": "float", "low": 1, "high": 2})
    [issue] = error_of(raw).issues
    assert issue.path == f"spec.searchSpace[{len(raw['searchSpace']) - 1}].type"
    assert issue.message.startswith("gradient_accumulation_steps takes an integer")
    raw = seed_spec()
    raw["objective"][0]["metric"] = "eval_nope"
    [issue] = error_of(raw).issues
    assert issue.path == "spec.objective[0].metric"
    assert issue.message.startswith("'eval_nope' is not logged by")


def test_several_recipe_problems_are_several_issues() -> None:
    raw = seed_spec()
    raw["trainer"]["modelDtype"] = "float8"
    raw["trainer"]["lossx"] = 1
    error = error_of(raw)
    assert [i.path for i in error.issues] == ["spec.trainer.modelDtype", "spec.trainer.lossx"]
    assert error.field == "spec.trainer.modelDtype"
    assert str(error) == "; ".join(str(i) for i in error.issues)
