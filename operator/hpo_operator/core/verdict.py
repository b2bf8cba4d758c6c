"""What the user is told after one reconcile: the status to write, the Events, the log line, the back-off.

``decide`` says what to *do*; this module says what to *tell*, from what the shell saw: the status as
last written (so nothing it needs is lost when the operator restarts), the spec generation, and what
went wrong, if anything (a spec error, a storage or API outage, a ResourceQuota's refusal). The shell
carries a :class:`Report` out as it is: it writes ``status`` when there is one, posts ``events``, logs
``log`` and raises what ``kind`` says. Every rule of the "once" kind is derived from the status:

**An invalid spec is reported once per generation.** The status (phase Failed, ``SpecValid=False``
naming the field) and a Warning ``InvalidSpec`` Event, unless the status already shows ``SpecValid=False``
for this generation: a restarted operator does not post it again, nor does a refusal that repeats
(a LimitRange refusing every new trial pod).

**A finished study is not re-judged by today's configuration.** Succeeded or Failed (not for an invalid
spec) with its current generation, it launches nothing more: an operator that lacks what its spec
would need to run (``HPO_TRIAL_IMAGE``, ``HPO_DEFAULT_STORAGE_URL``) leaves it as it is.

**A refusal the status already shows is not news.** ``decide`` refuses a spec the stored study cannot
take (``InvalidSpec``); while the status says the same, no second ``StudyFailed`` Event. A study whose
status shows an invalid spec and whose spec now passes every check runs again (its earlier phase does
not count: a terminal phase is announced anew).

**Storage outages back off.** ``min(5 · 2^(n-1), 60)`` seconds after the n-th failure in a row (the
count is the shell's, the one thing kept in memory: it paces retries and tells nothing the status does
not). The ``StorageReady=False`` condition says what failed and when the next try is; a Warning
``StorageUnavailable`` Event when the storage stops answering and a Normal ``StorageReady`` one when it
answers again. An API server that does not answer is only logged (the status cannot be written).

**A spec accepted but not run as written is said once.** A range Optuna cuts to a multiple of its
step (``SearchSpaceAsWritten=False``, reason ``RangeCut``), a sampler that samples some parameters at
random or that Optuna warned about when it was tried (``SamplerFitsSpace=False``): a Warning Event with
the condition's reason and message when the condition turns False or its message changes.

**GPU claims are told as they stand.** A study whose trials share GPUs through DRA ResourceClaims
(``spec.trials.perGPU`` > 1, ``spec.gpu``) shows ``GPUClaimsReady``: True with its claims and their
devices, or False naming the field and the cause (no ``resource.k8s.io/v1`` API, a DeviceClass that does
not exist, a claim refused, or one that stays unallocated), with a Warning Event of that reason when it
turns False (or its reason changes) and a Normal ``GPUClaimsReady`` one when it is True again. The trial
that could not get its pod waits, RUNNING, like one a quota holds back.

**A ResourceQuota's refusal is waited for.** ``TrialPodsAdmitted=False`` (reason ``QuotaExceeded``)
while a quota holds a trial pod back, with a Warning ``QuotaExceeded`` Event when that starts; ``True``
again once pods fit; absent for a study never held back. A trial pod held back by scheduling gates
(Kueue's ``kueue.x-k8s.io/admission`` while its LocalQueue has no room, or a gate of the template) is
shown the same way, reason ``SchedulingGated``: waiting, never failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hpo_operator.core.claims import COND_GPU_CLAIMS, GpuState
from hpo_operator.core.observe import Observed, gated_runs
from hpo_operator.core.plan import Plan, PostEvent
from hpo_operator.core.spec import SpecError, StudySpec, check_runtime
from hpo_operator.core.status import (
    COND_PODS_ADMITTED,
    COND_SAMPLER_FITS,
    COND_SPACE_AS_WRITTEN,
    COND_SPEC_VALID,
    COND_STORAGE_READY,
    build_status,
    condition,
    invalid_spec_status,
    storage_waiting_status,
)

BACKOFF_FIRST_S = 5.0
BACKOFF_MAX_S = 60.0

Kind = Literal["reconciled", "invalid", "waiting", "left"]


@dataclass(frozen=True)
class Report:
    """What to tell about one reconcile. ``kind``: ``reconciled`` (decide's plan was carried out),
    ``invalid`` (the spec was refused: the shell raises ``SpecError``), ``waiting`` (the storage or the
    API server did not answer: retry in ``retry_in`` seconds), ``left`` (a finished study left as it is)."""

    kind: Kind
    phase: str | None  # for the metrics; None: unknown (nothing written yet)
    status: dict[str, Any] | None = None  # the status patch to write; None: nothing changed
    events: tuple[PostEvent, ...] = ()
    log: tuple[tuple[Literal["info", "warning"], str], ...] = ()  # lines for the operator's log
    terminal: bool = False  # nothing left to do until the spec changes
    retry_in: float | None = None
    error: SpecError | None = None  # kind "invalid": the refusal
    message: str = ""  # kind "waiting": what failed (free of secrets)


# ------------------------------------------------------------------------------- what the status says


def _condition(previous: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in previous.get("conditions") or () if c.get("type") == kind), None)


def spec_invalid(previous: Mapping[str, Any]) -> bool:
    """The status shows the spec refused (``SpecValid=False``)."""
    c = _condition(previous, COND_SPEC_VALID)
    return c is not None and c.get("status") == "False"


def finished(previous: Mapping[str, Any], generation: int | None) -> bool:
    """Succeeded or Failed (not for an invalid spec) with the current spec generation."""
    return (
        previous.get("phase") in ("Succeeded", "Failed")
        and previous.get("observedGeneration") == generation
        and not spec_invalid(previous)
    )


def previous_phase(previous: Mapping[str, Any]) -> str | None:
    """The phase ``decide`` compares its verdict with: the status's, except after an invalid spec (the
    spec passes now, or decide would not be asked: the study runs again)."""
    phase = previous.get("phase")
    if phase == "Failed" and spec_invalid(previous):
        return None
    return str(phase) if phase else None


def previous_refusal(previous: Mapping[str, Any]) -> str | None:
    """The refusal the status shows (``SpecValid=False``'s message), if the study Failed for it."""
    c = _condition(previous, COND_SPEC_VALID)
    if previous.get("phase") == "Failed" and c is not None and c.get("status") == "False":
        return str(c.get("message") or "")
    return None


# ------------------------------------------------------------------------------------------ the spec


@dataclass(frozen=True)
class SpecCheck:
    """The spec as the operator's configuration judges it: an ``error`` to report, or a finished study
    ``left`` as it is although the configuration no longer provides what it needs (``error`` says what)."""

    error: SpecError | None = None
    left: bool = False


def check_spec(
    spec: StudySpec,
    *,
    default_image: str | None,
    default_storage: bool,
    previous: Mapping[str, Any],
    generation: int | None,
) -> SpecCheck:
    """What a parsed spec needs from the operator: a trial image and a storage; a finished study (see
    :func:`finished`) is not judged by the configuration."""
    try:
        check_runtime(spec, default_image=default_image, default_storage=default_storage)
    except SpecError as e:
        return SpecCheck(e, left=finished(previous, generation))
    return SpecCheck()


def storage_source(spec: StudySpec, namespace: str) -> str:
    """Where the study's storage URL comes from, in the words a user fixes it by (a sentence's start)."""
    if spec.storage is not None and spec.storage.secret_ref is not None:
        ref = spec.storage.secret_ref
        return f"spec.storage.secretRef: Secret {namespace}/{ref.name}, key {ref.key!r}, holds"
    return "the operator's default storage (HPO_DEFAULT_STORAGE_URL) is"


def pod_refused(message: str, *, dry_run: bool) -> SpecError:
    """The API server refused a trial pod (its template is invalid, or a LimitRange refuses it)."""
    if dry_run:
        return SpecError.at("spec.template", f"the trial pod it makes is invalid: {message}")
    return SpecError.at("spec.template", f"the API server refused a trial pod: {message}")


def secret_taken(message: str) -> SpecError:
    """The operator's storage Secret name is taken by a Secret that is not this study's."""
    return SpecError.at("spec.storage", message)


def spec_refused(
    error: SpecError, *, generation: int | None, previous: Mapping[str, Any], now: dt.datetime
) -> Report:
    """Refuse the spec: once per generation (see the module docstring)."""
    c = _condition(previous, COND_SPEC_VALID)
    told = (
        c is not None
        and c.get("status") == "False"
        and c.get("observedGeneration", previous.get("observedGeneration")) == generation
        and previous.get("observedGeneration") == generation
    )
    if told:
        return Report("invalid", "Failed", terminal=True, error=error)
    status = invalid_spec_status(error, generation=generation, now=now, previous=previous)
    return Report(
        "invalid",
        "Failed",
        status=status,
        events=(PostEvent("Warning", "InvalidSpec", f"invalid spec: {error}"),),
        log=(("warning", f"invalid spec: {error}"),),
        terminal=True,
        error=error,
    )


def study_not_deleted(study_name: str, why: str) -> PostEvent:
    """``deleteStudyOnDelete``, and the storage URL cannot be found: the deletion of the HPOStudy goes on."""
    return PostEvent(
        "Warning",
        "StudyNotDeleted",
        f"the Optuna study {study_name} was not deleted: {why} (the storage URL is unknown; "
        "delete the study from the storage by hand)",
    )


def left_as_is(error: SpecError, previous: Mapping[str, Any]) -> Report:
    """A finished study the operator could not run with its current configuration: nothing changes."""
    phase = str(previous.get("phase"))
    line = f"{phase} with this spec, left as it is (the operator could not run it: {error})"
    return Report("left", phase, log=(("info", line),), terminal=True)


# --------------------------------------------------------------------------------------- outages


def backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...)."""
    return min(BACKOFF_FIRST_S * 2 ** (max(failures, 1) - 1), BACKOFF_MAX_S)


def waiting(
    message: str,
    *,
    failures: int,
    storage: bool,
    generation: int | None,
    previous: Mapping[str, Any],
    now: dt.datetime,
) -> Report:
    """The storage (``storage``) or the API server did not answer; ``message`` is free of secrets."""
    delay = backoff(failures)
    log: tuple[tuple[Literal["info", "warning"], str], ...] = (
        ("warning", f"{message}; retrying in {delay:g}s"),
    )
    if not storage:
        return Report("waiting", None, log=log, retry_in=delay, message=message)
    status = storage_waiting_status(
        message, retry_in=delay, generation=generation, now=now, previous=previous
    )
    ready = _condition(previous, COND_STORAGE_READY)
    down_before = ready is not None and ready.get("status") == "False"
    event = PostEvent("Warning", "StorageUnavailable", f"waiting for the storage: {message}")
    return Report(
        "waiting",
        None,
        status=status,
        events=() if down_before else (event,),
        log=log,
        retry_in=delay,
        message=message,
    )


# --------------------------------------------------------------------------------- a reconcile done


def reconciled(
    spec: StudySpec,
    observed: Observed,
    plan: Plan,
    *,
    quota: str | None,
    generation: int | None,
    previous: Mapping[str, Any],
    now: dt.datetime,
    gpu: GpuState | None = None,
) -> Report:
    """The status after a reconcile that carried out ``plan`` (cut short by a ResourceQuota's refusal,
    ``quota``, if it says why), and what else to tell: the quota, the storage answering again, the GPU
    claims (``gpu``, for a study whose trials share GPUs)."""
    a = plan.assessment
    extra: list[dict[str, Any]] = []
    events: list[PostEvent] = []
    log: list[tuple[Literal["info", "warning"], str]] = []
    admitted = _condition(previous, COND_PODS_ADMITTED)
    if quota is not None:
        message = f"waiting for room in a ResourceQuota: {quota}"
        extra.append(
            condition(
                COND_PODS_ADMITTED,
                False,
                "QuotaExceeded",
                message,
                generation=generation,
                now=now,
                previous=previous,
            )
        )
        if admitted is None or admitted.get("status") != "False":
            events.append(PostEvent("Warning", "QuotaExceeded", f"a trial pod is {message}"))
            log.append(("warning", f"a trial pod is {message}"))
    elif gated := gated_runs(observed):
        # Gated pods (Kueue's admission gate, or a gate of the template) wait, as for a quota: they
        # are neither failed nor stuck, and start once their gates are removed.
        first = gated[0]
        message = (
            f"{len(gated)} trial pod(s) waiting for admission (scheduling gates): {first.name} is gated "
            f"by {', '.join(first.gates)}"
        )
        extra.append(
            condition(
                COND_PODS_ADMITTED,
                False,
                "SchedulingGated",
                message,
                generation=generation,
                now=now,
                previous=previous,
            )
        )
        if admitted is None or admitted.get("reason") != "SchedulingGated":
            log.append(("info", message))
    elif admitted is not None and admitted.get("status") == "False":
        extra.append(
            condition(
                COND_PODS_ADMITTED,
                True,
                "Admitted",
                "trial pods are admitted",
                generation=generation,
                now=now,
                previous=previous,
            )
        )
    if gpu is not None:
        _gpu_condition(gpu, extra, events, log, generation=generation, previous=previous, now=now)
    ready = _condition(previous, COND_STORAGE_READY)
    if ready is not None and ready.get("status") == "False":
        events.append(PostEvent("Normal", "StorageReady", "the storage answers again"))
    status = build_status(
        spec, observed, a, generation=generation, now=now, previous=previous, extra_conditions=extra
    )
    for kind in (COND_SPACE_AS_WRITTEN, COND_SAMPLER_FITS):  # accepted, but not as written: said once
        now_c = next((c for c in status.get("conditions") or () if c.get("type") == kind), None)
        was = _condition(previous, kind)
        if now_c is None or now_c["status"] != "False":
            continue
        if was is None or was.get("status") != "False" or was.get("message") != now_c["message"]:
            events.append(PostEvent("Warning", now_c["reason"], now_c["message"]))
            log.append(("warning", now_c["message"]))
    changed = status != {k: previous.get(k) for k in status}
    terminal = a.terminal and not plan.actions and quota is None
    return Report(
        "reconciled",
        a.phase,
        status=status if changed else None,
        events=tuple(events),
        log=tuple(log),
        terminal=terminal,
    )


def _gpu_condition(
    gpu: GpuState,
    extra: list[dict[str, Any]],
    events: list[PostEvent],
    log: list[tuple[Literal["info", "warning"], str]],
    *,
    generation: int | None,
    previous: Mapping[str, Any],
    now: dt.datetime,
) -> None:
    """``GPUClaimsReady`` and its Events (see the module docstring)."""
    where = f"{gpu.field}: " if gpu.field and not gpu.ok else ""
    message = f"{where}{gpu.message}"
    extra.append(
        condition(
            COND_GPU_CLAIMS, gpu.ok, gpu.reason, message, generation=generation, now=now, previous=previous
        )
    )
    before = _condition(previous, COND_GPU_CLAIMS)
    was_false = before is not None and before.get("status") == "False"
    if not gpu.ok and (not was_false or before.get("reason") != gpu.reason):
        events.append(PostEvent("Warning", gpu.reason, message))
        log.append(("warning", message))
    elif gpu.ok and was_false:
        events.append(PostEvent("Normal", COND_GPU_CLAIMS, message))
