"""A custom container's trial survives a PostgreSQL restart: the public reporting API's outage policy.

A trial process (``python <loop>``, the contract in its environment, as the operator's pod runs it) uses
``hpo_trial.reporting`` against a real PostgreSQL server that the test stops (``pg_ctl stop -m fast``)
and starts again. Reports during the outage are skipped with a warning, ``should_prune`` answers False,
and the final tell is retried until the storage is back (or ``HPO_STORAGE_RETRY_SECONDS`` runs out). A
trial that starts while the server is down waits for it the same way before its first line of work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from hpo_trial.contract import ATTR_FAIL_REASON, STORAGE_RETRY_SECONDS, Objective, TrialContract
from optuna.trial import TrialState

from tests.harness.postgres import PostgresServer
from tests.trial.helpers import ask_trial, make_study

OUTAGE_S = 10.0

LOOP = """
import os, sys, time
from hpo_trial import reporting

start_gate = os.environ.get("LOOP_START_GATE")
while start_gate and not os.path.exists(start_gate):
    time.sleep(0.05)  # the test opens it once the storage is down
print("starting", flush=True)
trial = reporting.current_trial()
print("opened", flush=True)
steps, pause = int(sys.argv[1]), float(sys.argv[2])
gate, gate_step = os.environ.get("LOOP_GATE"), int(os.environ.get("LOOP_GATE_STEP", "0"))
value = 0.0
for step in range(1, steps + 1):
    time.sleep(pause)  # "training"
    while step == gate_step and not os.path.exists(gate):
        time.sleep(0.05)  # the test opens the gate once the storage is down: no race with pg_ctl
    value = step / steps
    taken = trial.report(value, step)
    prune = trial.should_prune()
    print(f"step {step} taken={taken} prune={prune}", flush=True)
    if prune:
        trial.prune()
        sys.exit(0)
trial.complete(value)
print("completed", flush=True)
"""


class LoopProcess:
    """The custom loop in a child process; its output lines are collected by a thread."""

    def __init__(
        self, url: str, study: optuna.Study, tmp_path: Path, steps: int, gate_step: int = 0, **env: str
    ) -> None:
        """``gate_step``: the loop waits before that step's report until :meth:`open_gate`."""
        self.gate = tmp_path / "gate"
        self.start_gate = tmp_path / "start-gate"
        env = {"LOOP_GATE": str(self.gate), "LOOP_GATE_STEP": str(gate_step), **env}
        trial = ask_trial(study, {"learning_rate": 0.1})
        self.number = trial.number
        contract = TrialContract(
            storage_url=url,
            study_name=study.study_name,
            trial_number=trial.number,
            params={"learning_rate": 0.1},
            objectives=(Objective("acc", "maximize"),),
            pruner={"type": "Median", "nStartupTrials": 0, "nWarmupSteps": 0},
        )
        script = tmp_path / "loop.py"
        script.write_text(LOOP)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(steps), "0.5"],
            env={**os.environ, **contract.to_env(), "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def open_gate(self) -> None:
        self.gate.touch()

    def open_start_gate(self) -> None:
        self.start_gate.touch()

    def wait_for(self, line: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(x.startswith(line) for x in self.lines):
            assert self.proc.poll() is None, f"the loop exited ({self.proc.returncode}):\n{self.output}"
            assert time.monotonic() < deadline, f"no {line!r} in {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        print(self.output)  # shown by pytest when a test fails
        return code


def _study(server: PostgresServer, name: str) -> tuple[str, optuna.Study]:
    url = server.create_database(f"outage_{name}")
    return url, make_study(url, f"ns.{name}.uid")


def _outage(server: PostgresServer, seconds: float = OUTAGE_S) -> None:
    server.pause()
    time.sleep(seconds)
    server.resume()


def test_reports_during_an_outage_are_skipped_and_the_trial_completes(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    url, study = _study(own_postgres, "midtraining")
    loop = LoopProcess(url, study, tmp_path, steps=40)
    loop.wait_for("step 3 ")
    _outage(own_postgres)

    assert loop.wait() == 0
    skipped = [x for x in loop.lines if x.startswith("step ") and "taken=False" in x]
    assert skipped, "no report fell in the outage"
    assert all("prune=False" in x for x in skipped)
    assert "the report at step" in loop.output and "is skipped: the storage did not answer" in loop.output
    assert "Traceback" not in loop.output
    done = optuna.load_study(study_name=study.study_name, storage=url).trials[loop.number]
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(1.0)
    lost = {int(x.split()[1]) for x in skipped}
    assert set(done.intermediate_values) == set(range(1, 41)) - lost  # every report outside the outage
    assert {1, 2, 3, 40} <= set(done.intermediate_values)
    assert ATTR_FAIL_REASON not in done.user_attrs


def test_the_final_tell_waits_for_the_storage(own_postgres: PostgresServer, tmp_path: Path) -> None:
    url, study = _study(own_postgres, "finaltell")
    loop = LoopProcess(url, study, tmp_path, steps=4, gate_step=4)
    loop.wait_for("step 3 ")
    own_postgres.pause()
    loop.open_gate()  # step 4's report is skipped, then complete() is retried until the server is back
    time.sleep(OUTAGE_S)
    own_postgres.resume()

    assert loop.wait() == 0
    assert "step 4 taken=False prune=False" in loop.lines
    assert "telling the final value: the storage did not answer" in loop.output
    assert "trying again in" in loop.output
    assert loop.lines[-1] == "completed"
    done = optuna.load_study(study_name=study.study_name, storage=url).trials[loop.number]
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(1.0)
    assert sorted(done.intermediate_values) == [1, 2, 3]


def test_the_final_tell_gives_up_after_the_retry_time(own_postgres: PostgresServer, tmp_path: Path) -> None:
    url, study = _study(own_postgres, "giveup")
    loop = LoopProcess(url, study, tmp_path, steps=4, gate_step=4, **{STORAGE_RETRY_SECONDS: "3"})
    loop.wait_for("step 3 ")
    own_postgres.pause()
    loop.open_gate()
    try:
        code = loop.wait(timeout=60)
    finally:
        own_postgres.resume()

    assert code != 0  # the operator counts a failed attempt; its retries apply
    assert (
        f"StorageUnavailable: Trial {loop.number}: telling the final value: the storage did not answer "
        f"for 3 s" in loop.output
    )
    assert f"{STORAGE_RETRY_SECONDS} sets how long" in loop.output
    done = optuna.load_study(study_name=study.study_name, storage=url).trials[loop.number]
    assert done.state == TrialState.RUNNING and ATTR_FAIL_REASON not in done.user_attrs


def test_a_trial_that_starts_during_an_outage_waits_for_the_storage(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """Opening the storage and loading the study are under the outage policy: no crash, no attempt lost."""
    url, study = _study(own_postgres, "startup")
    loop = LoopProcess(url, study, tmp_path, steps=3, LOOP_START_GATE=str(tmp_path / "start-gate"))
    own_postgres.pause()
    try:
        loop.open_start_gate()
        loop.wait_for("starting")
        time.sleep(4.0)  # current_trial() meets a refused connection, waits and tries again
        assert loop.proc.poll() is None, f"the trial gave up during the outage:\n{loop.output}"
        assert not any(x == "opened" for x in loop.lines)
    finally:
        own_postgres.resume()

    assert loop.wait() == 0
    assert f"Trial {loop.number}: opening study {study.study_name}: the storage did not answer" in loop.output
    assert "trying again in" in loop.output
    assert "Traceback" not in loop.output
    assert loop.lines[-1] == "completed"
    done = optuna.load_study(study_name=study.study_name, storage=url).trials[loop.number]
    assert done.state == TrialState.COMPLETE and ATTR_FAIL_REASON not in done.user_attrs


def test_a_trial_that_cannot_open_the_storage_names_the_cause(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """The storage away for the whole retry time: the process exits non-zero, its last line naming the
    cause (the driver's message, no SQL), so the pod's termination message and the Event say it."""
    url, study = _study(own_postgres, "startgiveup")
    loop = LoopProcess(
        url,
        study,
        tmp_path,
        steps=3,
        LOOP_START_GATE=str(tmp_path / "start-gate"),
        **{STORAGE_RETRY_SECONDS: "2"},
    )
    own_postgres.pause()
    try:
        loop.open_start_gate()
        code = loop.wait(timeout=60)
    finally:
        own_postgres.resume()

    assert code != 0
    last = loop.lines[-1]
    assert last.startswith(
        f"hpo_trial.reporting.StorageUnavailable: Trial {loop.number}: opening study {study.study_name}: "
        "the storage did not answer for 2 s"
    ), last
    assert "OperationalError: connection to server at" in last and "refused" in last, last
    assert "[SQL:" not in loop.output and "sqlalche.me" not in loop.output
    done = optuna.load_study(study_name=study.study_name, storage=url).trials[loop.number]
    assert done.state == TrialState.RUNNING  # nothing told: the operator's retries apply
