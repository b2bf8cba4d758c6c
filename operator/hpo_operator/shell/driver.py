"""The reconcile driver: one reconcile of one HPOStudy, as plumbing. Blocking; kopf-free.

The handlers (``handlers.py``) call :meth:`Driver.check` when a spec appears or changes and
:meth:`Driver.reconcile` from each study's daemon. Nothing here decides: what to do is
:func:`hpo_operator.core.reconcile.decide`'s, what to tell the user is :mod:`hpo_operator.core.verdict`'s.
One reconcile:

1. parse the spec (:func:`hpo_operator.core.parse.parse_spec`) and check what it needs from the
   operator (:func:`hpo_operator.core.verdict.check_spec`);
2. once per spec generation, have the API server dry-run a trial pod (nothing is made for a study
   whose spec or pod is refused); then find the storage URL (the study's Secret, or the operator's
   default, copied into a Secret ``<name>-storage`` the trial pods can read) and the study's
   long-lived :class:`StudyStore`;
3. observe, decide, apply (:func:`hpo_operator.shell.apply.step`); again while the plan has actions;
4. ask :mod:`~hpo_operator.core.verdict` what to tell (a :class:`~hpo_operator.core.verdict.Report`
   from the status as last written and what went wrong) and carry it out: the status (redacted), the
   Events, the log, the metrics; raise ``SpecError`` or :class:`Waiting` when it says so.

Nothing is lost on a failure: the next reconcile starts from what is stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpo_operator.config import OperatorConfig
from hpo_operator.core import claims, names, pods, verdict
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.reconcile import abandoned, being_deleted
from hpo_operator.core.series import study_series
from hpo_operator.core.spec import SpecError, StudySpec, validate_name
from hpo_operator.core.verdict import Report
from hpo_operator.shell import redact
from hpo_operator.shell.apply import PodRuns, Step, Study, Target, apply_action, step
from hpo_operator.shell.gpu import GpuUnavailable
from hpo_operator.shell.kube import (
    Kube,
    KubeUnavailable,
    PodQuotaExceeded,
    PodRejected,
    SecretConflict,
    SecretProblem,
)
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import (
    Storages,
    StorageUnavailable,
    StorageURLInvalid,
    StudyStore,
    study_storage_url,
)

log = logging.getLogger("hpo_operator")

MAX_PASSES = 8  # observe-decide-apply steps per reconcile (each step's plan is acted on at once)


class Waiting(RuntimeError):
    """The storage or the API server did not answer; retry after ``delay`` seconds (message redacted)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class Outcome:
    phase: str
    terminal: bool  # Succeeded or Failed, with nothing left to do: wait for a spec change


@dataclass
class StudyState:
    """What the driver keeps between reconciles of one HPOStudy: handles and caches, no verdicts (what
    was told is read back from the status, ``last_status`` being the status as last written)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uid: str | None = None
    store: StudyStore | None = None
    store_url: str | None = None
    target: Target | None = None  # the study as its pods need it, from the last reconcile
    last_status: dict[str, Any] | None = None
    checked_generation: int | None = None  # the generation whose pod template passed a dry run
    secret_written: str | None = None  # the default URL last written to <name>-storage
    failures: int = 0  # outages in a row: paces the retries (see verdict.backoff)


class Driver:
    def __init__(self, config: OperatorConfig, kube: Kube, storages: Storages, metrics: Metrics) -> None:
        self.config = config
        self.kube = kube
        self.storages = storages
        self.metrics = metrics
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], StudyState] = {}
        # The storage URL of each study with deleteStudyOnDelete, by uid, kept until its deletion: its
        # Secret may be deleted before it (``kubectl delete -f`` of a manifest holding both).
        self._urls: dict[str, str] = {}
        redact.register(config.default_storage_url)

    # -------------------------------------------------------------------------------- entry points

    def check(self, body: Mapping[str, Any]) -> StudySpec:
        """Parse and check the spec; on a bad one, report it (status, Event) and raise SpecError."""
        state = self._state(body)
        with state.lock:
            spec, report = self._spec(body, state)
            if report is not None and report.kind == "invalid":
                self._tell(body, state, report)
            assert spec is not None
            return spec

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        """Bring one HPOStudy one step closer to done. Raises SpecError or :class:`Waiting`."""
        state = self._state(body)
        started = time.monotonic()
        with state.lock:
            try:
                report = self._reconcile(body, state)
                return self._tell(body, state, report)
            except SpecError:
                self.metrics.reconcile_errors.labels("spec").inc()
                raise
            except KubeUnavailable as e:  # the status could not be written either
                report = self._outage(body, state, str(e), storage=False)
                return self._tell(body, state, report)
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - started)

    def delete_study(self, body: Mapping[str, Any]) -> bool:
        """Delete the Optuna study (``spec.storage.deleteStudyOnDelete``); ``False`` if it was not there
        or cannot be found (its Secret is gone and its URL unknown: a Warning Event says so, and the
        deletion of the HPOStudy goes on). Raises StorageUnavailable or KubeUnavailable to be retried."""
        spec = parse_spec(body.get("spec"))
        ns, name, uid = _ids(body)
        study_name = names.optuna_study_name(ns, name, uid)
        with self._lock:
            url = self._urls.get(uid)
        if url is None:
            try:
                url = study_storage_url(self.kube, spec, ns, self.config.default_storage_url)
            except SecretProblem as e:
                event = verdict.study_not_deleted(study_name, str(e))
                log.warning("%s/%s: %s", ns, name, event.message)
                self.kube.post_event(_owner(body), event.type, event.reason, event.message)
                return False
        store = StudyStore(self.storages.open(url, study_name), study_name)
        try:
            deleted = store.delete()
        finally:
            self.storages.release(url, study_name)
        with self._lock:
            self._urls.pop(uid, None)
        log.info("%s/%s: %s the Optuna study %s", ns, name, "deleted" if deleted else "no", study_name)
        return deleted

    def abandon(self, namespace: str, name: str, uid: str) -> None:
        """The study's daemon stopped: if the HPOStudy is being deleted, carry out what
        :func:`~hpo_operator.core.reconcile.abandoned` says (its RUNNING trials fail; its pods go by
        garbage collection), then forget it."""
        key = (namespace, name)
        with self._lock:
            state = self._states.get(key)
        if state is None or state.uid != uid:
            return
        with state.lock:
            current = self.kube.read_study(namespace, name)
            if not being_deleted(current, uid):
                return  # the operator is stopping, the study is not being deleted
            if state.store is not None and state.target is not None:
                t = state.target
                study = Study(name, t.spec, t.generation, state.store, self.metrics, uid)
                try:
                    for action in abandoned(state.store.trials()):
                        apply_action(action, study, PodRuns(t, self.kube))
                except StorageUnavailable as e:
                    log.warning("%s/%s: could not fail its running trials: %s", namespace, name, e)
            if current is None or not ((current.get("spec") or {}).get("storage") or {}).get(
                "deleteStudyOnDelete"
            ):
                with self._lock:
                    self._urls.pop(uid, None)  # no delete handler will ask for it
            self._drop(key, state)
            self.metrics.set_phase(f"{namespace}/{name}", None)

    def close(self) -> None:
        self.storages.dispose()

    # ------------------------------------------------------------------------------------ internals

    def _state(self, body: Mapping[str, Any]) -> StudyState:
        ns, name, uid = _ids(body)
        with self._lock:
            state = self._states.get((ns, name))
            old = state if state is not None and state.uid != uid else None
            if state is None or state.uid != uid:  # a new resource with an old name is a new study
                state = StudyState(uid=uid)
                self._states[(ns, name)] = state
        if old is not None:
            self._release_store(old)
        return state

    def _drop(self, key: tuple[str, str], state: StudyState) -> None:
        """Forget a study's state (its cached trials go with its store) and release its storage URL."""
        with self._lock:
            if self._states.get(key) is state:
                del self._states[key]
        self._release_store(state)

    def _release_store(self, state: StudyState) -> None:
        if state.store is not None and state.store_url is not None:
            self.storages.release(state.store_url, state.store.study_name)
        state.store = None
        state.store_url = None

    def _previous(self, body: Mapping[str, Any], state: StudyState) -> dict[str, Any]:
        """The status as last written (by this process, or as the API server has it)."""
        return dict(state.last_status or body.get("status") or {})

    def _spec(self, body: Mapping[str, Any], state: StudyState) -> tuple[StudySpec | None, Report | None]:
        """The parsed spec, or the report of its refusal (or of a finished study left as it is)."""
        _, name, _ = _ids(body)
        generation = body["metadata"].get("generation")
        previous = self._previous(body, state)
        try:
            validate_name(name)
            spec = parse_spec(body.get("spec"))
        except SpecError as e:
            return None, self._refused(body, state, e)
        checked = verdict.check_spec(
            spec,
            default_image=self.config.trial_image,
            default_storage=self.config.default_storage_url is not None,
            previous=previous,
            generation=generation,
        )
        if checked.error is None:
            return spec, None
        if checked.left:
            return spec, verdict.left_as_is(checked.error, previous)
        return None, self._refused(body, state, checked.error)

    def _refused(self, body: Mapping[str, Any], state: StudyState, error: SpecError) -> Report:
        generation = body["metadata"].get("generation")
        previous = self._previous(body, state)
        return verdict.spec_refused(error, generation=generation, previous=previous, now=_now())

    def _outage(self, body: Mapping[str, Any], state: StudyState, message: str, *, storage: bool) -> Report:
        self.metrics.reconcile_errors.labels("storage" if storage else "api").inc()
        state.failures += 1
        return verdict.waiting(
            redact.redact(message),
            failures=state.failures,
            storage=storage,
            generation=body["metadata"].get("generation"),
            previous=self._previous(body, state),
            now=_now(),
        )

    def _reconcile(self, body: Mapping[str, Any], state: StudyState) -> Report:
        spec, report = self._spec(body, state)
        if report is not None:
            return report
        assert spec is not None
        try:
            return self._run(body, state, spec)
        except SecretConflict as e:
            return self._refused(body, state, verdict.secret_taken(str(e)))
        except PodRejected as e:
            return self._refused(body, state, verdict.pod_refused(str(e), dry_run=False))
        except (StorageUnavailable, SecretProblem) as e:
            return self._outage(body, state, str(e), storage=True)

    def _run(self, body: Mapping[str, Any], state: StudyState, spec: StudySpec) -> Report:
        ns, name, uid = _ids(body)
        generation = body["metadata"].get("generation")
        study_name = names.optuna_study_name(ns, name, uid)
        target = Target(
            spec=spec,
            generation=generation,
            owner=pods.Owner(name, ns, uid),
            optuna_study=study_name,
            secret=pods.storage_secret(spec, name),
            default_image=self.config.trial_image,
            device_class=self.config.gpu_device_class,
            report_url=self.config.report_url,
        )
        # The whole spec is checked before anything is made for the study: its trial pod by a dry run
        # (once per generation), then its storage Secret and Optuna study.
        if state.checked_generation != generation:
            refused = self._dry_run_pod(target)
            if refused is not None:
                return self._refused(body, state, refused)
            state.checked_generation = generation
        url = study_storage_url(self.kube, spec, ns, self.config.default_storage_url)
        self._ensure_default_secret(body, spec, url, state)
        if state.store is None or state.store_url != url:
            self._release_store(state)
            try:
                state.store = StudyStore(self.storages.open(url, study_name), study_name)
            except StorageURLInvalid as e:
                raise StorageURLInvalid(f"{verdict.storage_source(spec, ns)} {e}") from None
            state.store_url = url
        if spec.delete_study_on_delete:
            with self._lock:
                self._urls[uid] = url
        state.target = target

        previous = self._previous(body, state)
        phase = verdict.previous_phase(previous)
        refusal = verdict.previous_refusal(previous)
        study = Study(name, spec, generation, state.store, self.metrics, uid)
        runs = PodRuns(target, self.kube, report_key=state.store.report_key)
        last: Step | None = None
        for _ in range(MAX_PASSES):
            last = step(study, runs, previous_phase=phase, previous_refusal=refusal)
            if not last.plan.actions or last.quota is not None or last.gpu is not None:
                break
            phase = last.plan.phase_told(phase)
        assert last is not None
        gpu = last.gpu
        if gpu is None and spec.gpu_claims:
            # Claims no trial needs go; the rest are told as they stand (from what is observed now).
            a = last.plan.assessment
            try:
                gpu = runs.gpu_claims().tidy(
                    phase=a.phase, running=a.counts.running, started=a.counts.started
                )
            except GpuUnavailable as e:
                gpu = e.state
        self.metrics.set_series(f"{ns}/{name}", study_series(spec, last.observed, last.plan.assessment))
        return verdict.reconciled(
            spec,
            last.observed,
            last.plan,
            quota=last.quota,
            gpu=gpu,
            generation=generation,
            previous=previous,
            now=_now(),
        )

    def _tell(self, body: Mapping[str, Any], state: StudyState, report: Report) -> Outcome:
        """Carry out a :class:`~hpo_operator.core.verdict.Report`: the status, the Events, the log, the
        metrics; raise what it says."""
        ns, name, _ = _ids(body)
        gone = False
        try:
            if report.status is not None:
                gone = not self.kube.patch_status(ns, name, report.status)
                if not gone:
                    state.last_status = {**self._previous(body, state), **report.status}
            for event in report.events:
                self.kube.post_event(_owner(body), event.type, event.reason, event.message)
        except KubeUnavailable:
            if report.kind != "waiting":
                raise
            # Waiting already: the API server is not answering either (the log says it).
        for level, line in report.log:
            getattr(log, level)("%s/%s: %s", ns, name, line)
        if report.phase is not None and not gone:
            self.metrics.set_phase(f"{ns}/{name}", report.phase)
        if report.kind in ("reconciled", "left"):
            state.failures = 0
        if report.kind == "invalid":
            assert report.error is not None
            raise report.error
        if report.kind == "waiting":
            assert report.retry_in is not None
            raise Waiting(report.message, report.retry_in)
        phase = report.phase or ""
        return Outcome(phase, report.terminal or gone)

    def _ensure_default_secret(
        self, body: Mapping[str, Any], spec: StudySpec, url: str, state: StudyState
    ) -> None:
        if spec.storage is not None and spec.storage.secret_ref is not None:
            return
        if state.secret_written == url:
            return
        ns, name, uid = _ids(body)
        self.kube.ensure_secret(pods.render_storage_secret(pods.Owner(name, ns, uid), url), uid)
        state.secret_written = url

    def _dry_run_pod(self, target: Target) -> SpecError | None:
        """The API server checks a rendered trial pod once per spec generation (the template's
        Kubernetes sub-objects are not checked by the CRD); what it refuses, as a spec error."""
        spec = target.spec
        pod = pods.render_pod(
            spec,
            owner=target.owner,
            optuna_study=target.optuna_study,
            trial=0,
            attempt=0,
            params={p.name: None for p in spec.search_space},
            secret=target.secret,
            default_image=target.default_image,
        )
        if spec.gpu_claims:  # the claim need not exist for the API server to check the pod
            claims.attach(pod, claims.claim_name(target.owner.name, 0))
        meta = pod["metadata"]
        meta["generateName"] = f"{meta.pop('name')}-check-"  # the real pod may exist already
        try:
            self.kube.create_pod(pod, target.owner.uid, dry_run=True)
        except PodQuotaExceeded:
            return None  # no room now to check it: the real create reports a refusal
        except PodRejected as e:
            return verdict.pod_refused(str(e), dry_run=True)
        return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ids(body: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"], meta["uid"]


def _owner(body: Mapping[str, Any]) -> dict[str, str]:
    ns, name, uid = _ids(body)
    return {"namespace": ns, "name": name, "uid": uid}
