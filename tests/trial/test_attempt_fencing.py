"""One attempt writes: an attempt that is no longer the current one, or whose trial already finished,
writes nothing and exits cleanly (``AttemptSuperseded``, a ``SystemExit`` with code 0).

The operator records the attempt it starts in the trial's user attribute ``hpo:attempts`` (attempts so
far) before it creates the attempt's pod; these tests write that attribute as the operator does
(``StudyStore.set_attempt``) against a real PostgreSQL. Two attempts of one trial run at once when a node
drops out while its container keeps running (or, before it re-adopted its processes, when the harness
node agent restarted): the first attempt's reports and tell must not land on the retry's trial, and a
retry that finds its trial told by the first attempt must not crash and count as a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpo_trial import runner
from hpo_trial.contract import ATTR_ATTEMPTS, STORAGE_RETRY_SECONDS, Objective, TrialContract
from hpo_trial.reporting import AttemptSuperseded, TrialHandle
from hpo_trial.runner import run_trial
from optuna.trial import TrialState

from tests.trial.helpers import TinyData, ask_trial, make_study
from tests.trial.test_runner import OBJECTIVE, pair_recipe

QUADRATIC = Path(__file__).resolve().parents[1] / "integration" / "trials" / "quadratic.py"


def _contract(url: str, study: optuna.Study, number: int, attempt: int) -> TrialContract:
    return TrialContract(
        storage_url=url,
        study_name=study.study_name,
        trial_number=number,
        params={"x": 1.0},
        objectives=(Objective("score", "maximize"),),
        attempt=attempt,
    )


def _start_attempt(study: optuna.Study, number: int, attempt: int) -> None:
    """What the operator records before it creates the pod of ``attempt`` (StudyStore.set_attempt)."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    study._storage.set_trial_user_attr(trial_id, ATTR_ATTEMPTS, attempt + 1)


def _run_quadratic(contract: TrialContract, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(QUADRATIC)],
        env={**os.environ, **contract.to_env(), "TRIAL_STEP_SECONDS": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_attempt_superseded_by_a_retry_writes_nothing(postgres_url: str) -> None:
    study = make_study(postgres_url, "ns.fenced.uid")
    trial = ask_trial(study, {"x": 1.0})
    _start_attempt(study, trial.number, 0)
    first = TrialHandle(_contract(postgres_url, study, trial.number, 0))
    assert first.report(0.1, 1)

    _start_attempt(study, trial.number, 1)  # the first attempt's node dropped out: a retry is started
    retry = TrialHandle(_contract(postgres_url, study, trial.number, 1))

    with pytest.raises(AttemptSuperseded) as raised:
        first.report(0.2, 2)
    assert raised.value.code == 0  # a clean exit when a custom loop does not catch it
    assert str(raised.value) == f"Trial {trial.number}, attempt 0: attempt 1 runs it now; this attempt " + (
        "writes nothing more and exits"
    )
    with pytest.raises(AttemptSuperseded):
        first.complete(0.99)  # the final tell of the old attempt is refused too
    with pytest.raises(AttemptSuperseded):
        first.set_attr("note", "late")

    assert retry.report(0.3, 1)
    retry.complete(0.5)
    done = study.trials[trial.number]
    assert done.state == TrialState.COMPLETE and done.value == 0.5
    assert done.intermediate_values == {1: 0.3}  # the first attempt's step 2 never landed
    assert "note" not in done.user_attrs


def test_the_old_attempts_tell_is_refused_and_its_process_exits_0(postgres_url: str) -> None:
    """A custom container (the integration tests' quadratic trial) whose attempt was superseded before
    its final tell: exit 0, no traceback, nothing written; the retry's value stands."""
    study = make_study(postgres_url, "ns.fenced-proc.uid")
    trial = ask_trial(study, {"x": 1.0})
    _start_attempt(study, trial.number, 1)  # attempt 1 is the current one
    old = _run_quadratic(_contract(postgres_url, study, trial.number, 0))
    assert old.returncode == 0, old.stdout + old.stderr
    assert "Traceback" not in old.stderr
    assert f"Trial {trial.number}, attempt 0: attempt 1 runs it now" in old.stderr
    untouched = study.trials[trial.number]
    assert untouched.state == TrialState.RUNNING and untouched.intermediate_values == {}

    current = _run_quadratic(_contract(postgres_url, study, trial.number, 1))
    assert current.returncode == 0, current.stdout + current.stderr
    assert study.trials[trial.number].state == TrialState.COMPLETE


@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
def test_a_retry_that_finds_its_trial_finished_exits_cleanly(postgres_url: str, state: TrialState) -> None:
    study = make_study(postgres_url, f"ns.finished-{state.name.lower()}.uid")
    trial = ask_trial(study, {"x": 1.0})
    _start_attempt(study, trial.number, 1)
    if state == TrialState.COMPLETE:
        study.tell(trial.number, 0.7)  # the first attempt, still running, told its value first
    else:
        study.tell(trial.number, state=state)
    contract = _contract(postgres_url, study, trial.number, 1)

    with pytest.raises(AttemptSuperseded) as raised:
        TrialHandle(contract)
    assert raised.value.code == 0
    assert f"it is already finished ({state.name})" in str(raised.value)

    proc = _run_quadratic(contract)  # the retry's process: exit 0, not a crash with UpdateFinishedTrialError
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "UpdateFinishedTrialError" not in proc.stderr
    done = study.trials[trial.number]
    assert done.state == state and (done.value == 0.7 if state == TrialState.COMPLETE else True)


def test_the_runner_exits_0_for_a_finished_trial_and_3_for_a_storage_it_cannot_open(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    study = make_study(postgres_url, "ns.runner-start.uid")
    trial = ask_trial(study, {"x": 1.0})
    study.tell(trial.number, 0.7)
    contract = _contract(postgres_url, study, trial.number, 1)
    for key, value in contract.to_env().items():
        monkeypatch.setenv(key, value)
    assert runner.main([]) == runner.EXIT_OK

    # Nothing listens on the port: the start is retried for HPO_STORAGE_RETRY_SECONDS, then exit 3 with
    # the cause (not exit 2 with an SQL fragment), and nothing is told.
    with socket_closed_port() as port:
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nothing"
        monkeypatch.setenv("HPO_STORAGE_URL", url)
        monkeypatch.setenv(STORAGE_RETRY_SECONDS, "1")
        caplog.clear()
        assert runner.main([]) == runner.EXIT_STORAGE
    text = caplog.text
    assert (
        f"Trial {trial.number}: opening study {study.study_name}: the storage did not answer for 1 s" in text
    )
    assert "Connection refused" in text and "[SQL:" not in text


class socket_closed_port:
    """A local TCP port nothing listens on while the context lasts."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: Any) -> None:
        self.sock.close()


class FinishedMeanwhile(optuna.storages.InMemoryStorage):
    """Before the first report of the attempt under test lands, the earlier attempt (still running on a
    node that dropped out) tells the trial's value: what the storage then holds is that attempt's."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        if self.armed:
            self.armed = False
            super().set_trial_state_values(trial_id, TrialState.COMPLETE, [0.25])
        super().set_trial_intermediate_value(trial_id, step, intermediate_value)


def test_the_runner_stops_training_when_its_trial_finishes_meanwhile(
    tiny_model: str, tiny_data: TinyData, tmp_path: Path
) -> None:
    storage = FinishedMeanwhile()
    study = optuna.create_study(storage=storage, study_name="ns.meanwhile.uid", direction="maximize")
    params = {"learning_rate": 5e-4, "num_train_epochs": 1}
    trial = ask_trial(study, params)
    contract = TrialContract(
        storage_url="(in memory)",
        study_name=study.study_name,
        trial_number=trial.number,
        params=params,
        objectives=(Objective(OBJECTIVE, "maximize"),),
        trainer=pair_recipe(tiny_model, tiny_data),
        attempt=1,
        output_dir=str(tmp_path / "out"),
    )
    handle = TrialHandle(contract, storage=storage)
    storage.armed = True

    outcome = run_trial(contract, handle)

    assert outcome.exit_code == runner.EXIT_OK, outcome.reason  # not a failure: nothing to retry
    assert outcome.reason == (
        f"Trial {trial.number}, attempt 1: it finished meanwhile; this attempt writes nothing more and exits"
    )
    assert outcome.reported == {}  # training stopped at the first evaluation
    done = study.trials[trial.number]
    assert done.state == TrialState.COMPLETE and done.value == 0.25  # the earlier attempt's value stands
    assert done.intermediate_values == {}
