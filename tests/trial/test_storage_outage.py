"""A storage that stops answering is not the trial's fault: training goes on, the end is retried, no FAIL.

The trials here run in this process (``run_trial``) against a real Optuna storage whose methods raise
``sqlalchemy.exc.OperationalError`` -- what a PostgreSQL restart gives -- a given number of times: the
failure is injected at the storage boundary, everything above it (Optuna's trial, the handle, the
callback, the Trainer) is real.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from hpo_trial import policy
from hpo_trial.callback import CONTINUE, SUPERSEDED, TrialCallback
from hpo_trial.contract import ATTR_FAIL_REASON, STORAGE_RETRY_SECONDS, Objective, TrialContract
from hpo_trial.reporting import TrialHandle
from hpo_trial.runner import EXIT_FAILED, EXIT_OK, EXIT_STORAGE, run_trial
from optuna.trial import TrialState

from tests.trial.helpers import TinyData, ask_trial
from tests.trial.test_runner import OBJECTIVE, pair_recipe


class OutageStorage(optuna.storages.InMemoryStorage):
    """An in-memory Optuna storage whose listed methods raise OperationalError their next ``n`` calls."""

    def __init__(self) -> None:
        super().__init__()
        self.outages: dict[str, int] = {}
        self.raised: list[str] = []

    def fail_next(self, method: str, times: int = 1) -> None:
        self.outages[method] = times

    def _maybe_fail(self, method: str) -> None:
        if self.outages.get(method, 0) > 0:
            self.outages[method] -= 1
            self.raised.append(method)
            raise sqlalchemy.exc.OperationalError(
                "UPDATE trials ...", {}, Exception("server closed the connection unexpectedly")
            )

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._maybe_fail("set_trial_intermediate_value")
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        self._maybe_fail("set_trial_state_values")
        return super().set_trial_state_values(trial_id, state, values)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry the final tell for 1 s (HPO_STORAGE_RETRY_SECONDS), from 0.01 s apart, not 300 s from 1 s."""
    monkeypatch.setattr(policy, "RETRY_FIRST_DELAY", 0.01)
    monkeypatch.setenv(STORAGE_RETRY_SECONDS, "1")


def _trial(
    storage: OutageStorage, recipe: dict[str, Any], tmp_path: Path
) -> tuple[optuna.Study, TrialContract]:
    study = optuna.create_study(storage=storage, study_name="ns.outage.uid", direction="maximize")
    params = {"learning_rate": 5e-4, "num_train_epochs": 1}
    trial = ask_trial(study, params)
    contract = TrialContract(
        storage_url="(in memory)",
        study_name=study.study_name,
        trial_number=trial.number,
        params=params,
        objectives=(Objective(OBJECTIVE, "maximize"),),
        pruner={"type": "Median", "nStartupTrials": 0, "nWarmupSteps": 0},
        trainer=recipe,
        output_dir=str(tmp_path / "out"),
    )
    return study, contract


def test_a_report_the_storage_drops_is_skipped_and_training_goes_on(
    tiny_model: str, tiny_data: TinyData, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = OutageStorage()
    study, contract = _trial(storage, pair_recipe(tiny_model, tiny_data), tmp_path)
    storage.fail_next("set_trial_intermediate_value")  # the first evaluation's report (step 25)

    outcome = run_trial(contract, TrialHandle(contract, storage=storage))

    assert storage.raised == ["set_trial_intermediate_value"]
    assert outcome.exit_code == EXIT_OK and outcome.state == TrialState.COMPLETE, outcome.reason
    done = study.trials[contract.trial_number]
    assert done.state == TrialState.COMPLETE
    assert sorted(done.intermediate_values) == [50, 75, 100]  # 25 was lost; every later one was reported
    assert done.value == pytest.approx(done.intermediate_values[100])
    assert ATTR_FAIL_REASON not in done.user_attrs
    assert "the storage did not answer (OperationalError" in caplog.text
    assert "training goes on without a pruning check" in caplog.text


def test_decide_never_raises(tiny_data: TinyData) -> None:
    """Whatever breaks while deciding becomes a "fail: ..." decision that the other ranks receive."""
    storage = OutageStorage()
    study = optuna.create_study(storage=storage, study_name="ns.decide.uid")
    trial = ask_trial(study, {"x": 1.0})
    contract = TrialContract(
        "(in memory)", study.study_name, trial.number, {"x": 1.0}, (Objective("acc", "maximize"),)
    )
    handle = TrialHandle(contract, storage=storage)
    callback = TrialCallback(handle, "acc", 0.5, trial.number)

    storage.fail_next("set_trial_intermediate_value")
    assert callback.decide({"acc": 0.5}, 50, 0.5) == CONTINUE  # the storage's fault: go on
    assert callback.unreported == [50] and callback.reported == {}
    assert callback.decide({"acc": 0.6}, 100, 1.0) == CONTINUE
    assert callback.reported == {100: 0.6}
    assert study.trials[trial.number].intermediate_values == {100: 0.6}

    study.tell(trial.number, 0.7)  # someone else (the operator, an earlier attempt) ended the trial meanwhile
    decision = callback.decide({"acc": 0.8}, 150, 1.5)
    assert decision == SUPERSEDED, decision  # this attempt stops and writes nothing: not a failure
    assert "already finished (COMPLETE)" in (callback.reason or "")
    assert study.trials[trial.number].intermediate_values == {100: 0.6}

    assert callback.decide({"loss": 1.0}, 200, 2.0).startswith(
        "fail: objective metric 'acc' was not produced"
    )


def test_final_tell_is_retried(
    tiny_model: str, tiny_data: TinyData, tmp_path: Path, fast_retries: None
) -> None:
    storage = OutageStorage()
    study, contract = _trial(storage, pair_recipe(tiny_model, tiny_data), tmp_path)
    storage.fail_next("set_trial_state_values", times=2)  # COMPLETE fails twice, then the storage is back

    outcome = run_trial(contract, TrialHandle(contract, storage=storage))

    assert storage.raised == ["set_trial_state_values"] * 2
    assert outcome.exit_code == EXIT_OK, outcome.reason
    done = study.trials[contract.trial_number]
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(done.intermediate_values[100])


def test_storage_gone_at_the_end_exits_3_without_telling_fail(
    tiny_model: str, tiny_data: TinyData, tmp_path: Path, fast_retries: None, caplog: pytest.LogCaptureFixture
) -> None:
    storage = OutageStorage()
    study, contract = _trial(storage, pair_recipe(tiny_model, tiny_data), tmp_path)
    storage.fail_next("set_trial_state_values", times=100)

    outcome = run_trial(contract, TrialHandle(contract, storage=storage))

    assert outcome.exit_code == EXIT_STORAGE and outcome.exit_code != EXIT_FAILED
    assert len(storage.raised) > 3 and set(storage.raised) == {"set_trial_state_values"}
    done = study.trials[contract.trial_number]
    assert done.state == TrialState.RUNNING  # left to the operator, which retries the trial
    assert ATTR_FAIL_REASON not in done.user_attrs
    assert sorted(done.intermediate_values) == [25, 50, 75, 100]
    assert "exiting without telling FAIL" in caplog.text
    assert f"telling the final value: the storage did not answer for 1 s ({len(storage.raised)} tries" in (
        outcome.reason or ""
    )
