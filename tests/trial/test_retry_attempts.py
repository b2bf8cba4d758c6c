"""A retry (``HPO_TRIAL_ATTEMPT`` > 0) reuses its Optuna trial: its reports replace the failed attempt's,
the study's pruner judges it on its own reports and rungs only, and a pruned retry's value is its own.
Real PostgreSQL, real MedianPruner and SuccessiveHalvingPruner.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpo_trial.contract import Objective, TrialContract
from hpo_trial.reporting import TrialHandle
from hpo_trial.runner import EXIT_OK, run_trial
from optuna.trial import TrialState

from tests.trial.helpers import TinyData, ask_trial, make_study
from tests.trial.test_runner import OBJECTIVE, pair_recipe

# Prune at any step once one trial has completed: below the completed trials' median there, pruned.
MEDIAN = {"type": "Median", "nStartupTrials": 1, "nWarmupSteps": 0}


def _handle(
    url: str, study: optuna.Study, number: int, attempt: int, pruner: dict[str, Any] | None = None
) -> TrialHandle:
    contract = TrialContract(
        storage_url=url,
        study_name=study.study_name,
        trial_number=number,
        params={"x": 1.0},
        objectives=(Objective("acc", "maximize"),),
        pruner=pruner or MEDIAN,
        attempt=attempt,
    )
    return TrialHandle(contract)


def _study_with_a_completed_trial(url: str, name: str) -> optuna.Study:
    """A maximize study whose one completed trial reported 0.5 at steps 1..5 (the median everywhere)."""
    study = make_study(url, name)
    done = ask_trial(study, {"x": 0.0})
    for step in range(1, 6):
        done.report(0.5, step)
    study.tell(done.number, 0.5)
    return study


def test_a_retry_overwrites_the_failed_attempts_reports_and_is_pruned_on_its_own(postgres_url: str) -> None:
    study = _study_with_a_completed_trial(postgres_url, "ns.retry-low.uid")
    trial = ask_trial(study, {"x": 1.0})

    first = _handle(postgres_url, study, trial.number, attempt=0)  # good values up to step 5, then crashed
    for step in range(1, 6):
        assert first.report(0.9, step)
        assert first.should_prune() is False

    retry = _handle(postgres_url, study, trial.number, attempt=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "The reported value is ignored ..." would raise here
        assert retry.report(0.1, 1)  # far below the median at step 1
        stored = study.trials[trial.number].intermediate_values
        assert stored[1] == pytest.approx(0.1)  # replaced, not ignored
        assert stored[5] == pytest.approx(0.9)  # the failed attempt's later steps are still stored
        # Judged at its own step 1 (0.1 < 0.5), not at the failed attempt's step 5 (0.9 > 0.5).
        assert retry.should_prune() is True
    retry.prune()
    pruned = study.trials[trial.number]
    assert pruned.state == TrialState.PRUNED
    # Its own last report, not the value at the last stored step (the failed attempt's 0.9 at step 5):
    # TPE ranks pruned trials by this value.
    assert pruned.value == pytest.approx(0.1)


def test_a_retry_pruned_before_reporting_stores_no_value(postgres_url: str) -> None:
    study = _study_with_a_completed_trial(postgres_url, "ns.retry-noreport.uid")
    trial = ask_trial(study, {"x": 1.0})
    first = _handle(postgres_url, study, trial.number, attempt=0)
    assert first.report(0.9, 3)
    retry = _handle(postgres_url, study, trial.number, attempt=1)
    retry.prune()
    pruned = study.trials[trial.number]
    assert pruned.state == TrialState.PRUNED and pruned.value is None


def test_a_retry_does_not_inherit_the_failed_attempts_rungs(postgres_url: str) -> None:
    """SuccessiveHalving records completed rungs as system attributes of the trial; a retry's pruner must
    not start from the rungs the failed attempt completed."""
    halving = {"type": "SuccessiveHalving", "minResource": 1, "reductionFactor": 2}
    study = make_study(postgres_url, "ns.retry-rungs.uid")
    other = ask_trial(study, {"x": 0.0})
    judge = _handle(postgres_url, study, other.number, attempt=0, pruner=halving)
    assert judge.report(0.5, 1)
    assert judge.should_prune() is False  # completes rung 0 (step 1) with 0.5
    trial = ask_trial(study, {"x": 1.0})
    first = _handle(postgres_url, study, trial.number, attempt=0, pruner=halving)
    for step in (1, 2, 4):  # rungs 0, 1 and 2 (steps 1, 2, 4), all good
        assert first.report(0.9, step)
        assert first.should_prune() is False
    stored = study.trials[trial.number].system_attrs
    assert {"completed_rung_0", "completed_rung_1", "completed_rung_2"} <= set(stored)

    retry = _handle(postgres_url, study, trial.number, attempt=1, pruner=halving)
    assert retry.report(0.1, 1)
    # Judged at rung 0 against the other trial's 0.5, not waiting for rung 3 (step 8) as if it had
    # completed the failed attempt's rungs.
    assert retry.should_prune() is True
    assert study.trials[trial.number].system_attrs["completed_rung_0"] == pytest.approx(0.1)
    retry.prune()
    assert study.trials[trial.number].value == pytest.approx(0.1)


def test_a_retry_is_not_pruned_for_the_failed_attempts_values(postgres_url: str) -> None:
    study = _study_with_a_completed_trial(postgres_url, "ns.retry-high.uid")
    trial = ask_trial(study, {"x": 1.0})

    first = _handle(postgres_url, study, trial.number, attempt=0)
    assert first.report(0.1, 1)  # bad values (below the median) up to step 2, then crashed
    assert first.report(0.1, 2)
    assert first.should_prune() is True

    retry = _handle(postgres_url, study, trial.number, attempt=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert retry.should_prune() is False  # nothing reported yet by this attempt
        assert retry.report(0.8, 1)
        assert retry.should_prune() is False  # its own 0.8 at step 1, not the failed attempt's 0.1s
        assert retry.report(0.7, 2)
        assert retry.should_prune() is False
    assert study.trials[trial.number].intermediate_values == {1: 0.8, 2: 0.7}
    retry.complete(0.75)
    done = study.trials[trial.number]
    assert done.state == TrialState.COMPLETE and done.value == 0.75


def test_the_first_attempt_keeps_optunas_report(postgres_url: str) -> None:
    """Attempt 0 reports through Optuna's Trial.report: a second report at a step is ignored, as in Optuna."""
    study = make_study(postgres_url, "ns.attempt0.uid")
    trial = ask_trial(study, {"x": 1.0})
    handle = _handle(postgres_url, study, trial.number, attempt=0)
    assert handle.report(0.3, 1)
    with pytest.warns(UserWarning, match="already reported"):
        handle.report(0.4, 1)
    assert study.trials[trial.number].intermediate_values == {1: 0.3}


def test_the_runners_retry_reports_its_own_values(
    postgres_url: str, tiny_model: str, tiny_data: TinyData, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """The built-in runner's retry: every evaluation replaces the failed attempt's value at its step."""
    study = make_study(postgres_url, "ns.runner-retry.uid")
    params = {"learning_rate": 5e-4, "num_train_epochs": 1}
    trial = ask_trial(study, params)
    for step in (25, 50, 75):
        trial.report(-5.0, step)  # the failed attempt's (no Spearman correlation is -5)
    contract = TrialContract(
        storage_url=postgres_url,
        study_name=study.study_name,
        trial_number=trial.number,
        params=params,
        objectives=(Objective(OBJECTIVE, "maximize"),),
        pruner=MEDIAN,
        trainer=pair_recipe(tiny_model, tiny_data),
        attempt=1,
        output_dir=str(tmp_path / "out"),
    )

    outcome = run_trial(contract, TrialHandle(contract))

    assert outcome.exit_code == EXIT_OK and outcome.state == TrialState.COMPLETE, outcome.reason
    done = study.trials[trial.number]
    assert sorted(outcome.reported) == [25, 50, 75, 100]
    assert done.intermediate_values == pytest.approx(outcome.reported)
    assert -5.0 not in done.intermediate_values.values()
    assert not [w for w in recwarn if "already reported" in str(w.message)]
