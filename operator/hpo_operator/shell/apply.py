"""One observe-decide-apply step, the same for the operator and ``hpo run``. No decisions here.

:func:`step` observes (the runs first, then the study in storage: :func:`observe`), asks
:func:`hpo_operator.core.reconcile.decide`, and carries out the :class:`~hpo_operator.core.plan.Plan`
action by action. Each action maps to storage calls and calls on a :class:`Runs`: the trial pods of the
operator (:class:`PodRuns`) or the trial processes of ``hpo run`` (``hpo_operator.cli.local``). Each
action can be repeated (see the invariants in :mod:`hpo_operator.core.reconcile`). An exception stops
the plan where it is; the next step observes what was done and plans the rest.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hpo_operator.core import claims, names, pods
from hpo_operator.core.observe import Observed, RunView, run_view
from hpo_operator.core.plan import (
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
from hpo_operator.core.pods import Owner, SecretKey
from hpo_operator.core.reconcile import decide
from hpo_operator.core.spec import StudySpec
from hpo_operator.shell.gpu import GpuClaims, GpuUnavailable
from hpo_operator.shell.kube import CreateResult, Kube, PodQuotaExceeded
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import StudyStore

log = logging.getLogger(__name__)


class Runs(Protocol):
    """Where the attempts of a study's trials run: pods on a cluster, processes on this machine."""

    @property
    def kind(self) -> str:
        """What one run is called in messages: ``pod``, ``trial process``."""
        ...

    def views(self) -> tuple[RunView, ...]:
        """Every run of the study, as seen now."""
        ...

    def create(self, name: str, trial: int, attempt: int, params: Mapping[str, Any]) -> CreateResult:
        """Start the run ``name`` of one attempt: ``created``; ``exists`` (ours already); ``foreign``
        (the name is held by a run that is not this study's, which decide removes first)."""
        ...

    def delete(self, name: str) -> None:
        """Stop and remove the run ``name``; nothing if it is gone."""
        ...

    def post_event(self, event: PostEvent) -> None:
        """Tell the user (an Event on the HPOStudy, a line on the terminal)."""
        ...


@dataclass(frozen=True)
class Target:
    """The HPOStudy a plan is for, as its pods need it."""

    spec: StudySpec
    generation: int | None
    owner: Owner
    optuna_study: str
    secret: SecretKey
    default_image: str | None
    device_class: str | None = None  # the operator's default DeviceClass for shared GPU claims
    report_url: str | None = None  # the report endpoint trials are given (None: they open the storage)

    @property
    def owner_ref(self) -> dict[str, str]:
        return {"namespace": self.owner.namespace, "name": self.owner.name, "uid": self.owner.uid}


@dataclass(frozen=True)
class PodRuns:
    """The runs of an HPOStudy on the cluster: one pod per attempt."""

    target: Target
    kube: Kube
    kind: str = "pod"
    report_key: Callable[[], str] | None = None  # the study's key for the report endpoint's tokens

    def create(self, name: str, trial: int, attempt: int, params: Mapping[str, Any]) -> CreateResult:
        t = self.target
        report = None
        if t.report_url and self.report_key is not None:
            report = pods.report_env(t.report_url, self.report_key(), t.optuna_study, trial, attempt)
        pod = pods.render_pod(
            t.spec,
            owner=t.owner,
            optuna_study=t.optuna_study,
            trial=trial,
            attempt=attempt,
            params=dict(params),
            secret=t.secret,
            default_image=t.default_image,
            report=report,
        )
        assert pod["metadata"]["name"] == name, (pod["metadata"]["name"], name)
        if t.spec.gpu_claims:  # its GPU from a ResourceClaim shared with up to perGPU trials
            claims.attach(pod, self.gpu_claims().slot_for_new_pod())
        return self.kube.create_pod(pod, t.owner.uid)

    def gpu_claims(self) -> GpuClaims:
        t = self.target
        return GpuClaims(self.kube, t.spec, t.owner, t.device_class)

    def views(self) -> tuple[RunView, ...]:
        pods_ = self.kube.list_pods(self.target.owner.namespace, self.target.owner.name)
        return tuple(r for r in (run_view(p) for p in pods_) if r is not None)

    def delete(self, name: str) -> None:
        self.kube.delete_pod(self.target.owner.namespace, name)

    def post_event(self, event: PostEvent) -> None:
        self.kube.post_event(
            self.target.owner_ref, event.type, event.reason, event.message, dt.datetime.now(dt.UTC)
        )


@dataclass(frozen=True)
class Study:
    """What carrying out a plan needs besides the runs: the spec, the storage, the metrics."""

    name: str  # the HPOStudy's name: its runs are named after it (and log lines start with it)
    spec: StudySpec
    generation: int | None
    store: StudyStore
    metrics: Metrics
    owner_uid: str  # runs owned by another uid belong to an older namesake


@dataclass(frozen=True)
class Step:
    """What one step saw and decided; ``quota``: why a ResourceQuota held a trial pod back, ``gpu``:
    why it could not get a GPU claim (the plan was cut short there; the trial waits, RUNNING, and the
    next step launches it)."""

    observed: Observed
    plan: Plan
    quota: str | None = None
    gpu: claims.GpuState | None = None  # why a trial pod could not get a GPU claim (the plan was cut short)


def observe(
    study: Study, runs: Runs, *, previous_phase: str | None, previous_refusal: str | None = None
) -> Observed:
    """The runs first, then the storage: a run seen finished had told its value before the trials are
    read (see :mod:`hpo_operator.core.observe`)."""
    views = runs.views()
    view = study.store.view()
    trials, summary = study.store.read() if view is not None else ((), None)
    return Observed(
        name=study.name,
        study_name=study.store.study_name,
        owner_uid=study.owner_uid,
        study=view,
        trials=trials,
        runs=views,
        previous_phase=previous_phase,
        previous_refusal=previous_refusal,
        run_kind=runs.kind,
        summary=summary,
    )


def step(
    study: Study, runs: Runs, *, previous_phase: str | None, previous_refusal: str | None = None
) -> Step:
    """Observe, decide, carry out the plan."""
    observed = observe(study, runs, previous_phase=previous_phase, previous_refusal=previous_refusal)
    plan = decide(study.spec, observed, dt.datetime.now(dt.UTC))
    try:
        apply_plan(plan, study, runs)
    except PodQuotaExceeded as e:
        return Step(observed, plan, str(e))
    except GpuUnavailable as e:
        return Step(observed, plan, gpu=e.state)
    return Step(observed, plan)


def apply_plan(plan: Plan, study: Study, runs: Runs) -> None:
    finished: set[int] = set()  # trials whose retry was not started: they finished meanwhile
    for action in plan.actions:
        if isinstance(action, PostEvent) and action.reason == "TrialRetried" and action.trial in finished:
            continue  # no retry was started: announcing one would be false (the trial's own Event says)
        if not apply_action(action, study, runs) and isinstance(action, LaunchRun):
            finished.add(action.trial)


def apply_action(action: Action, study: Study, runs: Runs) -> bool:
    """Carry out one action; ``False`` when a ``LaunchRun`` was not carried out because its trial
    finished since it was observed (an earlier attempt told its value late: nothing to run again)."""
    spec, gen, store, metrics, name = study.spec, study.generation, study.store, study.metrics, study.name
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
            _launch(study, runs, number, 0, params)
    elif isinstance(action, FinishAsk):
        store.finish_ask(spec, gen, action.trial)
        log.info("%s: completed the parameters of trial %d", name, action.trial)
    elif isinstance(action, LaunchRun):
        # The attempt is recorded before its run exists: from then on, an older attempt still running
        # (its node dropped out) writes nothing to the trial (hpo_trial.reporting's fencing).
        if not store.set_attempt(action.trial, action.attempt):
            log.info(
                "%s: trial %d finished meanwhile; attempt %d is not started",
                name,
                action.trial,
                action.attempt,
            )
            return False
        if action.attempt > 0:
            metrics.retries.inc()
        log.info("%s: trial %d attempt %d: %s", name, action.trial, action.attempt, action.reason)
        _launch(study, runs, action.trial, action.attempt, action.params)
    elif isinstance(action, MarkLaunched):
        store.mark_launched(action.trial, action.attempt)
    elif isinstance(action, FailTrial):
        store.fail(action.trial, action.reason)
        log.info("%s: trial %d failed: %s", name, action.trial, action.reason)
    elif isinstance(action, DeleteRun):
        runs.delete(action.name)
        log.info("%s: deleted run %s: %s", name, action.name, action.reason)
    elif isinstance(action, PostEvent):
        runs.post_event(action)
        log.info("%s: %s", name, action.message)
    elif isinstance(action, RecordAnnounced):
        store.record_announced(action.announced)
        for state in action.states:
            metrics.finished(state)
    else:  # pragma: no cover - every action type is handled above
        raise TypeError(f"unknown action {action!r}")
    return True


def _launch(study: Study, runs: Runs, trial: int, attempt: int, params: Mapping[str, Any]) -> None:
    """Create the run of an attempt, then record that it was launched."""
    result = runs.create(names.pod_name(study.name, trial, attempt), trial, attempt, params)
    if result != "foreign":  # a run of an older namesake holds the name: decide removes it first
        study.store.mark_launched(trial, attempt)
