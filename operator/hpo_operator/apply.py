"""Carry out a :class:`~hpo_operator.core.reconcile.Plan`, action by action. No decisions here.

Each action maps to storage and API calls; each can be repeated (see the invariants in
:mod:`hpo_operator.core.reconcile`). An exception stops the plan where it is; the next reconcile
observes what was done and plans the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from hpo_operator.core import pods
from hpo_operator.core.pods import Owner, SecretKey
from hpo_operator.core.reconcile import (
    Action,
    AskTrials,
    CreateStudy,
    DeleteRun,
    Enqueue,
    FailTrial,
    FinishAsk,
    LaunchRun,
    MarkLaunched,
    Plan,
    PostEvent,
    RecordAnnounced,
)
from hpo_operator.core.spec import StudySpec
from hpo_operator.shell.kube import Kube
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import StudyStore

log = logging.getLogger("hpo_operator.apply")


@dataclass(frozen=True)
class Target:
    """The HPOStudy a plan is for, as apply needs it."""

    spec: StudySpec
    generation: int | None
    owner: Owner
    optuna_study: str
    secret: SecretKey
    default_image: str | None

    @property
    def owner_ref(self) -> dict[str, str]:
        return {"namespace": self.owner.namespace, "name": self.owner.name, "uid": self.owner.uid}


def apply_plan(plan: Plan, target: Target, store: StudyStore, kube: Kube, metrics: Metrics) -> None:
    for action in plan.actions:
        apply_action(action, target, store, kube, metrics)


def apply_action(action: Action, target: Target, store: StudyStore, kube: Kube, metrics: Metrics) -> None:
    spec, gen = target.spec, target.generation
    name = target.owner.name
    if isinstance(action, CreateStudy):
        store.create(action.directions, spec)
        log.info("%s: created the Optuna study %s", name, action.study_name)
    elif isinstance(action, Enqueue):
        store.enqueue(spec, gen, action.start, action.params)
        log.info("%s: enqueued %d parameter set(s)", name, len(action.params))
    elif isinstance(action, AskTrials):
        for _ in range(action.count):
            number, params = store.ask(spec, gen)
            metrics.trials_started.inc()
            log.info("%s: trial %d asked with parameters %s", name, number, params)
            _launch(target, store, kube, number, 0, params)
    elif isinstance(action, FinishAsk):
        store.finish_ask(spec, gen, action.trial)
        log.info("%s: completed the parameters of trial %d", name, action.trial)
    elif isinstance(action, LaunchRun):
        store.set_attempt(action.trial, action.attempt)
        if action.attempt > 0:
            metrics.retries.inc()
        log.info("%s: trial %d attempt %d: %s", name, action.trial, action.attempt, action.reason)
        _launch(target, store, kube, action.trial, action.attempt, action.params)
    elif isinstance(action, MarkLaunched):
        store.mark_launched(action.trial, action.attempt)
    elif isinstance(action, FailTrial):
        store.fail(action.trial, action.reason)
        log.info("%s: trial %d failed: %s", name, action.trial, action.reason)
    elif isinstance(action, DeleteRun):
        kube.delete_pod(target.owner.namespace, action.name)
        log.info("%s: deleted pod %s: %s", name, action.name, action.reason)
    elif isinstance(action, PostEvent):
        kube.post_event(target.owner_ref, action.type, action.reason, action.message, dt.datetime.now(dt.UTC))
        log.info("%s: %s", name, action.message)
    elif isinstance(action, RecordAnnounced):
        store.record_announced(action.announced)
        for state in action.states:
            metrics.finished(state)
    else:  # pragma: no cover - every action type is handled above
        raise TypeError(f"unknown action {action!r}")


def _launch(target: Target, store: StudyStore, kube: Kube, trial: int, attempt: int, params: dict) -> None:
    pod = pods.render_pod(
        target.spec,
        owner=target.owner,
        optuna_study=target.optuna_study,
        trial=trial,
        attempt=attempt,
        params=params,
        secret=target.secret,
        default_image=target.default_image,
    )
    result = kube.create_pod(pod, target.owner.uid)
    if result != "foreign":  # a pod of an older namesake holds the name: decide removes it first
        store.mark_launched(trial, attempt)
