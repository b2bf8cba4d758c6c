"""The operator's read of a study (``shell.storage.StudyStore.read``) on a real PostgreSQL: a finished
trial is converted once, a trial that changes is picked up, and a restarted operator rebuilds the same
figures."""

from __future__ import annotations

from collections.abc import Iterator

import optuna
import pytest
from hpo_operator.core.ledger import Summary
from hpo_operator.shell.storage import Storages, StudyStore
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

pytestmark = pytest.mark.postgres

X = {"x": FloatDistribution(-5.0, 5.0)}


@pytest.fixture
def storages() -> Iterator[Storages]:
    s = Storages()
    yield s
    s.dispose()


def figures(s: Summary) -> tuple[object, ...]:
    return (
        dict(s.finished),
        s.live,
        dict(s.counts),
        s.best,
        s.failed,
        s.last_failed,
        {k: dict(v) for k, v in s.distributions.items()},
        s.first_started,
        s.last_completed,
        s.top,
    )


def test_finished_trials_are_read_once_and_changes_are_picked_up(
    postgres_url: str, storages: Storages
) -> None:
    name = "ns.scale.uid"
    # Another process's view of the study: the trial processes write through their own storage.
    other = optuna.create_study(study_name=name, storage=postgres_url, direction="maximize")
    for i in range(30):
        other.add_trial(create_trial(params={"x": float(i % 5)}, distributions=X, value=float(i % 7)))
    other.add_trial(create_trial(state=TrialState.FAIL, params={"x": 0.0}, distributions=X))
    running = other.ask(X)

    store = StudyStore(storages.open(postgres_url, name), name)
    trials, summary = store.read()
    assert len(trials) == 32 and store.converted == 32
    assert summary.counts == {"COMPLETE": 30, "PRUNED": 0, "FAIL": 1}
    assert [t.number for t in summary.live] == [running.number]
    assert summary.best is not None and summary.best.value == 6.0 and summary.best.number == 6

    # Nothing changed: only the live trial is read again.
    trials_again, _ = store.read()
    assert store.converted == 33 and trials_again == trials

    # The running trial reports, then finishes with a new best; a trial is asked and finishes meanwhile.
    other.tell(running, 9.0)
    quick = other.ask(X)
    other.tell(quick, state=TrialState.PRUNED)
    trials, summary = store.read()
    assert store.converted == 35  # the one that was live and the new one
    assert trials[running.number].state == "COMPLETE" and trials[quick.number].state == "PRUNED"
    assert summary.live == () and summary.counts == {"COMPLETE": 31, "PRUNED": 1, "FAIL": 1}
    assert summary.best is not None and summary.best.number == running.number

    # A new RUNNING trial that gets a user attribute (a retry's attempt count) is seen changing.
    third = other.ask(X)
    _, summary = store.read()
    assert summary.live[0].attempt == 0
    other._storage.set_trial_user_attr(third._trial_id, "hpo:attempts", 2)
    _, summary = store.read()
    assert summary.live[0].number == third.number and summary.live[0].attempt == 1

    # An operator restart (a new store, a new Optuna cache) rebuilds the same trials and figures.
    fresh = StudyStore(storages.open(postgres_url, name + "-again"), name)
    fresh_trials, fresh_summary = fresh.read()
    trials, summary = store.read()
    assert fresh_trials == trials
    assert figures(fresh_summary) == figures(summary)


def test_a_deleted_and_recreated_study_is_read_afresh(postgres_url: str, storages: Storages) -> None:
    name = "ns.again.uid"
    first = optuna.create_study(study_name=name, storage=postgres_url)
    for i in range(3):
        first.add_trial(create_trial(params={"x": 0.0}, distributions=X, value=float(i)))
    store = StudyStore(storages.open(postgres_url, name), name)
    assert len(store.read()[0]) == 3
    assert store.delete()
    assert store.view() is None
    second = optuna.create_study(study_name=name, storage=postgres_url, direction="maximize")
    second.add_trial(create_trial(params={"x": 0.0}, distributions=X, value=1.0))
    view = store.view()
    assert view is not None and view.directions == ("maximize",)
    trials, summary = store.read()
    assert len(trials) == 1 and summary.counts["COMPLETE"] == 1 and summary.directions == ("maximize",)
