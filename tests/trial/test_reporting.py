"""The reporting API for custom containers, and the pruner builder, against a real PostgreSQL study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpo_trial import reporting
from hpo_trial.contract import (
    ATTR_FAIL_REASON,
    DEFAULT_STORAGE_RETRY_SECONDS,
    STORAGE_RETRY_SECONDS,
    ContractError,
    Objective,
    TrialContract,
    storage_retry_seconds,
)
from hpo_trial.pruners import build_pruner
from optuna.trial import TrialState

from tests.trial.helpers import REPO, ask_trial, make_study, run_hpo_trial

EXAMPLE = REPO / "trial_image" / "examples" / "custom_loop.py"


def run_example(
    url: str, study: optuna.Study, number: int, params: dict[str, Any], pruner: dict[str, Any]
) -> Any:
    contract = TrialContract(
        storage_url=url,
        study_name=study.study_name,
        trial_number=number,
        params=params,
        objectives=(Objective("loss", "minimize"),),
        pruner=pruner,
    )
    env = {**os.environ, **contract.to_env()}
    return subprocess.run(
        [sys.executable, str(EXAMPLE)], env=env, capture_output=True, text=True, check=False
    )


def test_the_readme_shows_the_tested_example() -> None:
    readme = (REPO / "trial_image" / "README.md").read_text()
    assert EXAMPLE.read_text().strip() in readme


def test_custom_loop_completes_is_pruned_and_fails(postgres_url: str) -> None:
    study = make_study(postgres_url, "ns.custom.uid", direction="minimize")
    median = {"type": "Median", "nStartupTrials": 2, "nWarmupSteps": 2}

    good = [ask_trial(study, {"learning_rate": lr}) for lr in (0.1, 0.05)]
    for t, lr in zip(good, (0.1, 0.05), strict=True):
        done = run_example(postgres_url, study, t.number, {"learning_rate": lr}, median)
        assert done.returncode == 0, done.stderr
    first = study.trials[good[0].number]
    assert first.state == TrialState.COMPLETE
    assert sorted(first.intermediate_values) == list(range(1, 21))
    assert first.value == pytest.approx(25.0 * (1 - 0.2) ** 400)  # x <- x(1 - 2 lr), 200 steps, loss x^2

    slow = ask_trial(study, {"learning_rate": 1e-4})  # far worse than the median at every step
    done = run_example(postgres_url, study, slow.number, {"learning_rate": 1e-4}, median)
    assert done.returncode == 0, done.stderr
    pruned = study.trials[slow.number]
    assert pruned.state == TrialState.PRUNED
    assert sorted(pruned.intermediate_values) == [1, 2]  # no pruning before step 2, pruned there

    bad = ask_trial(study, {})
    done = run_example(postgres_url, study, bad.number, {"learning_rate": "fast"}, median)
    assert done.returncode == 1
    failed = study.trials[bad.number]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs[ATTR_FAIL_REASON].startswith("bad parameters {'learning_rate': 'fast'}")


def test_handle_api(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    study = make_study(postgres_url, "ns.api.uid")
    trial = ask_trial(study, {"x": 1.5})
    contract = TrialContract(
        postgres_url, study.study_name, trial.number, {"x": 1.5}, (Objective("acc", "maximize"),)
    )
    for key, value in contract.to_env().items():
        monkeypatch.setenv(key, value)
    handle = reporting.current_trial()
    assert handle.number == trial.number and handle.params == {"x": 1.5} and handle.metrics == ("acc",)
    handle.report(0.5, 10)
    assert handle.should_prune() is False  # the study has no pruner
    with pytest.raises(reporting.MetricNotFound, match=r"'acc' was not produced.*exist are: acc_top5, loss"):
        handle.complete_from_metrics({"loss": 1.0, "acc_top5": 0.9})
    assert handle.complete_from_metrics({"acc": 0.75, "loss": 0.1}) == [0.75]
    done = study.trials[trial.number]
    assert done.state == TrialState.COMPLETE and done.value == 0.75 and done.intermediate_values == {10: 0.5}
    handle.fail("too late")  # a finished trial stays as it is
    assert study.trials[trial.number].state == TrialState.COMPLETE


def test_nan_objective_fails_the_trial(postgres_url: str) -> None:
    study = make_study(postgres_url, "ns.nan.uid")
    trial = ask_trial(study, {"x": 1.0})
    handle = reporting.TrialHandle(
        TrialContract(postgres_url, study.study_name, trial.number, {}, (Objective("acc", "maximize"),))
    )
    handle.complete(float("nan"))
    done = study.trials[trial.number]
    assert done.state == TrialState.FAIL and done.user_attrs[ATTR_FAIL_REASON] == "objective value is nan"


def test_runner_without_contract_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    done = run_hpo_trial(env, tmp_path)
    assert done.returncode == 2
    assert "missing trial contract variable(s): HPO_STORAGE_URL" in done.stderr


def test_runner_with_a_bad_pruner_fails_the_trial(postgres_url: str, tmp_path: Path) -> None:
    study = make_study(postgres_url, "ns.badpruner.uid")
    trial = ask_trial(study, {"x": 1.0})
    contract = TrialContract(
        postgres_url,
        study.study_name,
        trial.number,
        {"x": 1.0},
        (Objective("acc", "maximize"),),
        pruner={"type": "Hyperband"},
        trainer={"model": "m"},
    )
    env = {**os.environ, **contract.to_env()}
    done = run_hpo_trial(env, tmp_path)
    assert done.returncode == 1, done.stderr
    failed = study.trials[trial.number]
    assert failed.state == TrialState.FAIL
    assert (
        failed.user_attrs[ATTR_FAIL_REASON]
        == "HPO_PRUNER: pruner.maxResource is required for the Hyperband pruner"
    )


@pytest.mark.parametrize(
    ("config", "cls", "attrs"),
    [
        (None, optuna.pruners.NopPruner, {}),
        ({"type": "None"}, optuna.pruners.NopPruner, {}),
        (
            {"type": "Median", "nStartupTrials": 2, "nWarmupSteps": 50, "intervalSteps": 25},
            optuna.pruners.MedianPruner,
            {"_n_startup_trials": 2, "_n_warmup_steps": 50, "_interval_steps": 25},
        ),
        ({"type": "Percentile", "percentile": 10.0}, optuna.pruners.PercentilePruner, {"_percentile": 10.0}),
        (
            {"type": "SuccessiveHalving", "minResource": 25},
            optuna.pruners.SuccessiveHalvingPruner,
            {"_min_resource": 25},
        ),
        ({"type": "Hyperband", "maxResource": 300}, optuna.pruners.HyperbandPruner, {"_max_resource": 300}),
        (
            {"type": "Wilcoxon", "pThreshold": 0.05, "nStartupSteps": 4},
            optuna.pruners.WilcoxonPruner,
            {"_p_threshold": 0.05, "_n_startup_steps": 4},
        ),
        (
            {"type": "Threshold", "lower": 0.1, "nWarmupSteps": 3},
            optuna.pruners.ThresholdPruner,
            {"_lower": 0.1, "_n_warmup_steps": 3},
        ),
        (
            {"type": "Patient", "patience": 3},
            optuna.pruners.PatientPruner,
            {"_patience": 3, "_wrapped_pruner": None},
        ),
    ],
)
def test_build_pruner(config: dict[str, Any] | None, cls: type, attrs: dict[str, Any]) -> None:
    pruner = build_pruner(config)
    assert type(pruner) is cls
    for key, value in attrs.items():
        assert getattr(pruner, key) == value


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "Mediane"}, "pruner.type 'Mediane' is not one of None, Median, Percentile"),
        ({"type": "Median", "percentile": 3}, "pruner.percentile is not a field of the Median pruner"),
        ({"type": "Hyperband"}, "pruner.maxResource is required for the Hyperband pruner"),
        ({"type": "Patient"}, "pruner.patience is required for the Patient pruner"),
        ({"type": "Threshold"}, "pruner.lower: the Threshold pruner needs lower, upper or both"),
        (
            {"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Hyperband"}},
            "pruner.wrappedPruner.maxResource is required for the Hyperband pruner",
        ),
        (
            {"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Median", "lower": 1}},
            "pruner.wrappedPruner.lower is not a field of the Median pruner",
        ),
    ],
)
def test_build_pruner_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as e:
        build_pruner(config)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("raw", ["soon", "-1", "inf", "nan"])
def test_a_bad_storage_retry_time_is_an_error_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = TrialContract("sqlite:///unused.db", "s", 0, {}, (Objective("acc", "maximize"),))
    for key, value in {**contract.to_env(), STORAGE_RETRY_SECONDS: raw}.items():
        monkeypatch.setenv(key, value)
    message = f"HPO_STORAGE_RETRY_SECONDS must be a number of seconds >= 0, got '{raw}'"
    with pytest.raises(ContractError) as e:
        reporting.current_trial()  # at the start, before the storage is opened
    assert str(e.value) == message


def test_storage_retry_seconds() -> None:
    assert storage_retry_seconds({}) == DEFAULT_STORAGE_RETRY_SECONDS == 300
    assert storage_retry_seconds({STORAGE_RETRY_SECONDS: " 2.5 "}) == 2.5
    assert storage_retry_seconds({STORAGE_RETRY_SECONDS: "0"}) == 0
