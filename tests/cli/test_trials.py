"""``hpo trials``: the table at 80 and 160 columns, plain text through a pipe, and -o json|yaml|csv."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import jsonschema
import optuna
import pytest
import yaml
from hpo_operator.cli import trials
from rich.console import Console

from tests.cli.conftest import RunHpo, load_local

SPEC_ORDER = ["optim", "fp16", "batch", "learning_rate"]


@pytest.fixture(scope="module")
def study(mixed_study: Path) -> optuna.Study:
    return load_local(mixed_study, "mixed")


def test_json_output_follows_its_schema_and_says_what_the_table_says(
    mixed_study: Path, study: optuna.Study, run_hpo: RunHpo, tmp_path: Path
) -> None:
    result = run_hpo("trials", str(mixed_study), "-o", "json", cwd=tmp_path)
    assert result.code == 0, result.text
    assert result.err == ""  # nothing but the document: a program reads stdout, a person stderr
    data = json.loads(result.out)
    jsonschema.validate(data, trials.TRIAL_LIST_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(trials.TRIAL_LIST_SCHEMA)

    assert data["study"] == "local.mixed"
    assert data["source"] == {"kind": "manifest", "name": str(mixed_study)}
    assert data["objectives"] == [{"metric": "eval_loss", "direction": "minimize"}]
    assert data["parameters"] == SPEC_ORDER
    assert data["best"] == [study.best_trial.number]
    assert [t["number"] for t in data["trials"]] == [t.number for t in study.trials]
    for got, t in zip(data["trials"], study.trials, strict=True):
        assert got["state"] == t.state.name
        assert got["values"] == t.values
        assert got["valueKind"] == {"COMPLETE": "final", "PRUNED": "last-report"}[t.state.name]
        assert got["params"] == t.params and list(got["params"]) == SPEC_ORDER  # the spec's order
        assert isinstance(got["params"]["fp16"], bool) and isinstance(got["params"]["batch"], int)
        assert got["best"] == (t.number == study.best_trial.number)
        assert got["lastStep"] == t.last_step and got["attempts"] == 1 and got["failReason"] is None
        assert got["durationSeconds"] == pytest.approx(t.duration.total_seconds(), abs=1e-3)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d", got["start"])

    as_yaml = run_hpo("trials", str(mixed_study), "-o", "yaml", cwd=tmp_path)
    assert as_yaml.code == 0 and yaml.safe_load(as_yaml.out) == data

    as_csv = run_hpo("trials", str(mixed_study), "-o", "csv", cwd=tmp_path)
    assert as_csv.code == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert list(rows[0]) == [
        "number",
        "state",
        "eval_loss",
        "valueKind",
        *[f"params.{p}" for p in SPEC_ORDER],
        "best",
        "start",
        "complete",
        "durationSeconds",
        "attempts",
        "lastStep",
        "failReason",
    ]
    assert len(rows) == len(study.trials)
    for row, t in zip(rows, study.trials, strict=True):
        assert float(row["eval_loss"]) == t.value
        assert row["params.fp16"] == str(t.params["fp16"]).lower() and row["params.batch"] == str(
            t.params["batch"]
        )
        assert row["best"] == ("true" if t.number == study.best_trial.number else "false")


def _table(study: optuna.Study, width: int) -> list[str]:
    data = trials.trial_list(
        study, metrics=["eval_loss"], params=SPEC_ORDER, source_kind="manifest", source_name="x"
    )
    console = Console(width=width, record=True, force_terminal=True, color_system=None)
    console.print(trials.to_table(data, "Trials of local.mixed", width))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [80, 160])
def test_the_table_fits_the_terminal_and_never_cuts_a_parameter(study: optuna.Study, width: int) -> None:
    lines = _table(study, width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), text
    best = study.best_trial
    # The value column is named after the metric and its direction (the header may wrap when narrow).
    assert "eval_loss (min)" in text or re.search(r"eval_loss\s*\n.*\(min\)", text), text
    assert re.search(rf"★ {best.number}\s+COMPLETE\s+{best.value:.4f}", text), text
    assert "★ best" in text and "(value): a pruned trial's last report, not a final value" in text
    for t in study.trials:
        if t.state.name == "PRUNED":
            assert re.search(rf"^\s+{t.number}\s+PRUNED\s+\({t.value:.4f}\)", text, re.M), text
    if width == 160:  # one column per parameter, in the spec's order
        header = next(line for line in lines if line.split()[:2] == ["#", "state"])
        assert header.split()[2:] == ["eval_loss", "(min)", *SPEC_ORDER, "duration", "note"]
    else:  # one name=value a line, whole
        for t in study.trials:
            for name in SPEC_ORDER:
                value = trials.fmt_param(t.params[name])
                assert re.search(rf"\s{re.escape(name)}={re.escape(value)}(\s|$)", text), (name, value, text)
