"""One reconcile of one HPOStudy: observe, decide, apply, write the status. Blocking; kopf-free.

The handlers (``handlers.py``) call :meth:`Driver.check` when a spec appears or changes and
:meth:`Driver.reconcile` from each study's daemon. All policy is in
:func:`hpo_operator.core.reconcile.decide`; this module wires the shell to it:

1. parse and check the spec (a bad one: status and an Event naming the field, once per generation);
2. find the storage URL (the study's Secret, or the operator's default, copied into a Secret
   ``<name>-storage`` the trial pods can read) and the study's long-lived :class:`StudyStore`;
3. observe (pods first, then the storage), decide, apply; repeat while the plan has actions;
4. write the status (redacted) and the metrics.

A database or API failure raises :class:`Waiting` after setting the ``StorageReady`` condition; the
caller retries later. Nothing is lost: the next reconcile starts from what is stored.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hpo_operator.config import OperatorConfig
from hpo_operator.core import names, pods
from hpo_operator.core.observe import Observed, run_view
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.plan import Assessment, Plan
from hpo_operator.core.reconcile import decide
from hpo_operator.core.spec import SpecError, StudySpec, check_runtime, validate_name
from hpo_operator.core.status import build_status, condition, invalid_spec_status, storage_waiting_status
from hpo_operator.shell import redact
from hpo_operator.shell.apply import PodRuns, Study, Target, apply_plan
from hpo_operator.shell.kube import (
    Kube,
    KubeUnavailable,
    PodQuotaExceeded,
    PodRejected,
    SecretConflict,
    SecretProblem,
)
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import Storages, StorageUnavailable, StorageURLInvalid, StudyStore

log = logging.getLogger("hpo_operator")

MAX_PASSES = 8  # observe-decide-apply rounds per reconcile (each round's plan is acted on at once)
COND_PODS_ADMITTED = "TrialPodsAdmitted"  # shown once a ResourceQuota held a trial pod back


class Waiting(RuntimeError):
    """The storage or the API server did not answer; retry after ``delay`` seconds (message redacted)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True)
class Outcome:
    phase: str
    terminal: bool  # Succeeded or Failed, with nothing left to do: wait for a spec change
    assessment: Assessment | None = None


@dataclass
class StudyState:
    """What the operator keeps in memory about one HPOStudy between reconciles."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uid: str | None = None
    store: StudyStore | None = None
    store_url: str | None = None
    last_status: dict[str, Any] | None = None
    checked_generation: int | None = None  # the generation whose pod template passed a dry run
    invalid_generation: int | None = None  # the generation whose spec error was reported
    secret_written: str | None = None  # the default URL last written to <name>-storage
    secret_conflict: bool = False  # <name>-storage is a Secret not ours (reported as a spec error)
    quota_blocked: bool = False  # a ResourceQuota refused a trial pod (reported once, until one fits)
    storage_down: bool = False
    failures: int = 0


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
            return self._spec(body, state)

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        """Bring one HPOStudy one step closer to done. Raises SpecError or :class:`Waiting`."""
        state = self._state(body)
        started = time.monotonic()
        with state.lock:
            try:
                outcome = self._reconcile(body, state)
            except SpecError:
                self.metrics.reconcile_errors.labels("spec").inc()
                raise
            except (StorageUnavailable, SecretProblem) as e:
                self.metrics.reconcile_errors.labels("storage").inc()
                raise self._waiting(body, state, str(e)) from None
            except KubeUnavailable as e:
                self.metrics.reconcile_errors.labels("api").inc()
                raise self._waiting(body, state, str(e), storage=False) from None
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - started)
            state.failures = 0
            return outcome

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
                url = self._storage_url(spec, ns)
            except SecretProblem as e:
                message = (
                    f"the Optuna study {study_name} was not deleted: {e} (the storage URL is unknown; "
                    "delete the study from the storage by hand)"
                )
                log.warning("%s/%s: %s", ns, name, message)
                self.kube.post_event(_owner(body), "Warning", "StudyNotDeleted", message)
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
        """The HPOStudy is gone: fail its RUNNING trials (their pods are garbage-collected), forget it."""
        key = (namespace, name)
        with self._lock:
            state = self._states.get(key)
        if state is None or state.uid != uid:
            return
        with state.lock:
            current = self.kube.read_study(namespace, name)
            still_there = current is not None and current["metadata"].get("uid") == uid
            if still_there and not current["metadata"].get("deletionTimestamp"):
                return  # the operator is stopping, the study is not being deleted
            if state.store is not None:
                try:
                    for t in state.store.trials():
                        if t.state == "RUNNING":
                            state.store.fail(t.number, "stopped: the HPOStudy was deleted")
                except StorageUnavailable as e:
                    log.warning("%s/%s: could not fail its running trials: %s", namespace, name, e)
            if current is None or not ((current.get("spec") or {}).get("storage") or {}).get(
                "deleteStudyOnDelete"
            ):
                with self._lock:
                    self._urls.pop(uid, None)  # no delete handler will ask for it
            self._drop(key, state)
            self.metrics.set_phase(f"{namespace}/{name}", None)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            state = self._states.get((namespace, name))
        if state is not None:
            with state.lock:
                self._drop((namespace, name), state)
        self.metrics.set_phase(f"{namespace}/{name}", None)

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

    def _spec(self, body: Mapping[str, Any], state: StudyState) -> StudySpec:
        _, name, _ = _ids(body)
        generation = body["metadata"].get("generation")
        try:
            validate_name(name)
            spec = parse_spec(body.get("spec"))
            if not self._finished(body, state):  # a finished study is not judged by today's configuration
                self._check_runtime(spec)
        except SpecError as e:
            self._report_invalid(body, state, e)
            raise
        if state.invalid_generation is not None and state.invalid_generation != generation:
            state.invalid_generation = None
        return spec

    def _check_runtime(self, spec: StudySpec) -> None:
        """What the spec needs from the operator's configuration (a trial image, a storage)."""
        check_runtime(
            spec,
            default_image=self.config.trial_image,
            default_storage=self.config.default_storage_url is not None,
        )

    def _finished(self, body: Mapping[str, Any], state: StudyState) -> bool:
        """The study finished (Succeeded or Failed, not for an invalid spec) with its current spec
        generation: it launches nothing more until its spec changes, so its phase and result stand even
        if the operator's configuration (``HPO_TRIAL_IMAGE``, ``HPO_DEFAULT_STORAGE_URL``) no longer
        provides what it would need to run."""
        previous = self._previous(body, state)
        return (
            previous.get("phase") in ("Succeeded", "Failed")
            and previous.get("observedGeneration") == body["metadata"].get("generation")
            and not _spec_invalid(previous)
        )

    def _report_invalid(self, body: Mapping[str, Any], state: StudyState, error: SpecError) -> None:
        ns, name, _ = _ids(body)
        generation = body["metadata"].get("generation")
        if state.invalid_generation == generation:
            return  # reported already
        previous = self._previous(body, state)
        reported = any(
            c.get("type") == "SpecValid" and c.get("status") == "False" and c.get("message") == str(error)
            for c in previous.get("conditions") or ()
        )
        if reported and previous.get("observedGeneration") == generation:
            state.invalid_generation = generation  # by an earlier operator process
            self.metrics.set_phase(f"{ns}/{name}", "Failed")
            return
        now = dt.datetime.now(dt.UTC)
        status = invalid_spec_status(error, generation=generation, now=now, previous=previous)
        self.kube.patch_status(ns, name, status)
        state.last_status = {**(state.last_status or {}), **status}
        self.kube.post_event(_owner(body), "Warning", "InvalidSpec", f"invalid spec: {error}")
        state.invalid_generation = generation
        self.metrics.set_phase(f"{ns}/{name}", "Failed")
        log.warning("%s/%s: invalid spec: %s", ns, name, error)

    def _previous(self, body: Mapping[str, Any], state: StudyState) -> dict[str, Any]:
        return dict(state.last_status or body.get("status") or {})

    def _storage_url(self, spec: StudySpec, ns: str) -> str:
        """The study's storage URL: from its Secret, or the operator's default (registered for redaction)."""
        if spec.storage is not None and spec.storage.secret_ref is not None:
            ref = spec.storage.secret_ref
            return self.kube.read_secret_value(ns, ref.name, ref.key)
        url = self.config.default_storage_url
        if url is None:  # check_runtime refused this already
            raise SpecError.at("spec.storage.secretRef", "required: the operator has no default storage")
        return url

    def _storage_source(self, spec: StudySpec, ns: str) -> str:
        """Where the study's storage URL comes from, in the words a user fixes it by."""
        if spec.storage is not None and spec.storage.secret_ref is not None:
            ref = spec.storage.secret_ref
            return f"spec.storage.secretRef: Secret {ns}/{ref.name}, key {ref.key!r}, holds"
        return "the operator's default storage (HPO_DEFAULT_STORAGE_URL) is"

    def _ensure_default_secret(
        self, body: Mapping[str, Any], spec: StudySpec, url: str, state: StudyState
    ) -> None:
        if spec.storage is not None and spec.storage.secret_ref is not None:
            return
        if state.secret_written == url:
            return
        ns, name, uid = _ids(body)
        try:
            self.kube.ensure_secret(pods.render_storage_secret(pods.Owner(name, ns, uid), url), uid)
        except SecretConflict as e:
            error = SpecError.at("spec.storage", str(e))
            self._report_invalid(body, state, error)
            state.secret_conflict = True
            raise error from None
        state.secret_written = url
        if state.secret_conflict:  # the user's Secret went: the study runs again
            state.secret_conflict = False
            state.invalid_generation = None

    def _reconcile(self, body: Mapping[str, Any], state: StudyState) -> Outcome:
        ns, name, uid = _ids(body)
        generation = body["metadata"].get("generation")
        spec = self._spec(body, state)
        if self._finished(body, state):
            try:
                self._check_runtime(spec)
            except SpecError as e:
                # Finished, and the operator now lacks what the spec would need to run: nothing to do
                # (its status stays as written); a spec change gets the full check.
                phase = str(self._previous(body, state).get("phase"))
                log.info(
                    "%s/%s: %s with this spec, left as it is (the operator could not run it: %s)",
                    ns,
                    name,
                    phase,
                    e,
                )
                self.metrics.set_phase(f"{ns}/{name}", phase)
                return Outcome(phase, True)
        url = self._storage_url(spec, ns)
        self._ensure_default_secret(body, spec, url, state)
        study_name = names.optuna_study_name(ns, name, uid)
        if state.store is None or state.store_url != url:
            self._release_store(state)
            try:
                state.store = StudyStore(self.storages.open(url, study_name), study_name)
            except StorageURLInvalid as e:
                raise StorageURLInvalid(f"{self._storage_source(spec, ns)} {e}") from None
            state.store_url = url
        if spec.delete_study_on_delete:
            with self._lock:
                self._urls[uid] = url
        store = state.store
        owner = pods.Owner(name, ns, uid)
        target = Target(
            spec=spec,
            generation=generation,
            owner=owner,
            optuna_study=study_name,
            secret=pods.storage_secret(spec, name),
            default_image=self.config.trial_image,
        )
        if state.checked_generation != generation:
            self._dry_run_pod(body, state, target)

        previous = self._previous(body, state)
        previous_phase = previous.get("phase")
        if state.invalid_generation is None and previous_phase == "Failed" and _spec_invalid(previous):
            previous_phase = None  # the spec was fixed: the study runs again
        plan: Plan | None = None
        observed: Observed | None = None
        quota: str | None = None  # why a ResourceQuota held a trial pod back, this reconcile
        for _ in range(MAX_PASSES):
            observed = self._observe(ns, name, uid, study_name, store, previous_phase)
            plan = decide(spec, observed, dt.datetime.now(dt.UTC))
            if previous_phase is None and _same_refusal(previous, plan.assessment):
                # decide refuses the spec exactly as the status already says (a stored study's
                # directions or search space): not news, no second StudyFailed Event.
                previous_phase = "Failed"
                observed = replace(observed, previous_phase=previous_phase)
                plan = decide(spec, observed, dt.datetime.now(dt.UTC))
            if not plan.actions:
                break
            try:
                apply_plan(
                    plan, Study(name, spec, generation, store, self.metrics), PodRuns(target, self.kube)
                )
            except PodRejected as e:
                error = SpecError.at("spec.template", f"the API server refused a trial pod: {e}")
                self._report_invalid(body, state, error)
                raise error from None
            except PodQuotaExceeded as e:
                quota = str(e)  # the trial waits (RUNNING, not launched): the next reconcile tries again
                break
            previous_phase = plan.assessment.phase
        assert plan is not None and observed is not None
        now = dt.datetime.now(dt.UTC)
        status = build_status(
            spec, observed, plan.assessment, generation=generation, now=now, previous=previous
        )
        self._quota_condition(body, state, status, quota, generation, now, previous)
        if state.storage_down:
            self.kube.post_event(_owner(body), "Normal", "StorageReady", "the storage answers again")
            state.storage_down = False
        changed = status != {k: previous.get(k) for k in status}
        if changed and not self.kube.patch_status(ns, name, status):
            return Outcome(plan.assessment.phase, True, plan.assessment)  # the HPOStudy is gone
        state.last_status = {**previous, **status}
        self.metrics.set_phase(f"{ns}/{name}", plan.assessment.phase)
        terminal = plan.assessment.terminal and not plan.actions and quota is None
        return Outcome(plan.assessment.phase, terminal, plan.assessment)

    def _quota_condition(
        self,
        body: Mapping[str, Any],
        state: StudyState,
        status: dict[str, Any],
        quota: str | None,
        generation: int | None,
        now: dt.datetime,
        previous: Mapping[str, Any],
    ) -> None:
        """``TrialPodsAdmitted``: False while a ResourceQuota holds a trial pod back (an Event when that
        starts), True again once pods fit; absent for a study never held back."""
        held_before = any(c.get("type") == COND_PODS_ADMITTED for c in previous.get("conditions") or ())
        if quota is None and not held_before:
            return
        if quota is not None:
            message = f"waiting for room in a ResourceQuota: {quota}"
            cond = condition(
                COND_PODS_ADMITTED,
                False,
                "QuotaExceeded",
                message,
                generation=generation,
                now=now,
                previous=previous,
            )
            if not state.quota_blocked:
                self.kube.post_event(_owner(body), "Warning", "QuotaExceeded", f"a trial pod is {message}")
                ns, name, _ = _ids(body)
                log.warning("%s/%s: a trial pod is %s", ns, name, message)
                state.quota_blocked = True
        else:
            if (
                any(
                    c.get("type") == COND_PODS_ADMITTED and c.get("status") == "True"
                    for c in previous.get("conditions") or ()
                )
                and not state.quota_blocked
            ):
                return  # unchanged
            cond = condition(
                COND_PODS_ADMITTED,
                True,
                "Admitted",
                "trial pods are admitted",
                generation=generation,
                now=now,
                previous=previous,
            )
            state.quota_blocked = False
        conditions = [c for c in status.get("conditions") or () if c.get("type") != COND_PODS_ADMITTED]
        status["conditions"] = [*conditions, cond]

    def _observe(
        self, ns: str, name: str, uid: str, study_name: str, store: StudyStore, previous_phase: str | None
    ) -> Observed:
        # Runs first, then the storage: a run seen finished had told its value before the trials are read.
        runs = tuple(r for r in (run_view(p) for p in self.kube.list_pods(ns, name)) if r is not None)
        view = store.view()
        trials = store.trials() if view is not None else ()
        return Observed(
            name=name,
            study_name=study_name,
            owner_uid=uid,
            study=view,
            trials=trials,
            runs=runs,
            previous_phase=previous_phase,
        )

    def _dry_run_pod(self, body: Mapping[str, Any], state: StudyState, target: Target) -> None:
        """The API server checks a rendered trial pod once per spec generation (the template's
        Kubernetes sub-objects are not checked by the CRD)."""
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
        meta = pod["metadata"]
        meta["generateName"] = f"{meta.pop('name')}-check-"  # the real pod may exist already
        try:
            self.kube.create_pod(pod, target.owner.uid, dry_run=True)
        except PodQuotaExceeded:
            return  # no room now to check it: the real create reports a refusal
        except PodRejected as e:
            error = SpecError.at("spec.template", f"the trial pod it makes is invalid: {e}")
            self._report_invalid(body, state, error)
            raise error from None
        state.checked_generation = target.generation

    def _waiting(
        self, body: Mapping[str, Any], state: StudyState, message: str, *, storage: bool = True
    ) -> Waiting:
        ns, name, _ = _ids(body)
        state.failures += 1
        delay = min(5.0 * 2 ** (state.failures - 1), 60.0)
        message = redact.redact(message)
        log.warning("%s/%s: %s; retrying in %gs", ns, name, message, delay)
        if storage:
            try:
                now = dt.datetime.now(dt.UTC)
                previous = self._previous(body, state)
                status = storage_waiting_status(
                    message,
                    retry_in=delay,
                    generation=body["metadata"].get("generation"),
                    now=now,
                    previous=previous,
                )
                self.kube.patch_status(ns, name, status)
                state.last_status = {**previous, **status}
                if not state.storage_down:
                    self.kube.post_event(
                        _owner(body), "Warning", "StorageUnavailable", f"waiting for the storage: {message}"
                    )
                    state.storage_down = True
            except KubeUnavailable:
                pass  # the API server is not answering either: the log says it
        return Waiting(message, delay)


def _ids(body: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"], meta["uid"]


def _owner(body: Mapping[str, Any]) -> dict[str, str]:
    ns, name, uid = _ids(body)
    return {"namespace": ns, "name": name, "uid": uid}


def _same_refusal(status: Mapping[str, Any], assessment: Assessment) -> bool:
    """The status already shows this InvalidSpec verdict of ``decide`` (same field, same message)."""
    if assessment.reason != "InvalidSpec" or status.get("phase") != "Failed":
        return False
    said = f"{assessment.field}: {assessment.message}" if assessment.field else assessment.message
    return any(
        c.get("type") == "SpecValid" and c.get("status") == "False" and c.get("message") == said
        for c in status.get("conditions") or ()
    )


def _spec_invalid(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "SpecValid" and c.get("status") == "False" for c in status.get("conditions") or ()
    )
