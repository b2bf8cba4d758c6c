"""A retry planned for a trial that an earlier attempt finished meanwhile is not started, nor announced.

The plan was decided on an observation in which the trial was RUNNING and its attempt's run Failed (a
node that dropped out while its process kept running); before the plan is carried out, that process
tells the trial's value. The retry's run would find its trial finished, so it is not created, and no
``TrialRetried`` Event says that a retry ran. The storage is Optuna's in-memory storage behind the
operator's own ``StudyStore``; the runs are a recording stand-in for the ``Runs`` seam.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from hpo_operator.core.observe import RunView
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.plan import Assessment, Counts, LaunchRun, Plan, PostEvent
from hpo_operator.shell.apply import Study, apply_plan
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import StudyStore
from hpo_trial.contract import ATTR_ATTEMPTS
from prometheus_client import CollectorRegistry

from tests.unit.helpers import custom_spec


class RecordingRuns:
    kind = "pod"

    def __init__(self) -> None:
        self.created: list[tuple[str, int, int]] = []
        self.events: list[PostEvent] = []

    def views(self) -> tuple[RunView, ...]:
        return ()

    def create(self, name: str, trial: int, attempt: int, params: Mapping[str, Any]) -> str:
        self.created.append((name, trial, attempt))
        return "created"

    def delete(self, name: str) -> None:
        raise AssertionError("nothing is deleted here")

    def post_event(self, event: PostEvent) -> None:
        self.events.append(event)


def _plan(*actions: Any) -> Plan:
    counts = Counts(budget=2, started=2, waiting=0, running=2, complete=0, pruned=0, failed=0, active_runs=0)
    return Plan(Assessment("Running", "TrialsRunning", "", counts), tuple(actions))


def _retry(number: int) -> tuple[LaunchRun, PostEvent]:
    launch = LaunchRun(number, 1, {"x": 1.0}, "retry after: pod s-trial-0 failed")
    event = PostEvent("Warning", "TrialRetried", f"Trial {number} retried", trial=number, attempt=0)
    return launch, event


def test_a_retry_of_a_trial_finished_meanwhile_is_neither_started_nor_announced() -> None:
    spec = parse_spec(custom_spec({"name": "x", "type": "float", "low": -5.0, "high": 5.0}))
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="ns.s.uid", direction="maximize")
    late = study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    still = study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    store = StudyStore(storage, "ns.s.uid")
    metrics = Metrics(CollectorRegistry())
    runs = RecordingRuns()
    target = Study("s", spec, 1, store, metrics, owner_uid="uid")

    study.tell(late.number, 0.5)  # attempt 0 of trial 0 told its value after the plan was made
    launch_late, event_late = _retry(late.number)
    launch_still, event_still = _retry(still.number)
    apply_plan(_plan(launch_late, launch_still, event_late, event_still), target, runs)

    assert runs.created == [("s-trial-1-r1", still.number, 1)]  # only the trial still running
    assert [e.trial for e in runs.events] == [still.number]  # no TrialRetried for the finished one
    assert storage.get_trial(still._trial_id).user_attrs[ATTR_ATTEMPTS] == 2
    assert ATTR_ATTEMPTS not in storage.get_trial(late._trial_id).user_attrs
    assert metrics.retries._value.get() == 1  # type: ignore[attr-defined]
