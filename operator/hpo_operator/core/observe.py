"""What was seen, as plain values: the study and its trials in storage, the trials' runs on the cluster.

The shell builds an :class:`Observed` every reconcile and hands it to
:func:`hpo_operator.core.reconcile.decide`. Nothing here talks to a database or an API server:
:func:`trial_view` reads an Optuna ``FrozenTrial`` and :func:`run_view` reads a pod as the plain dict
the API server returns, so both are tested with literal values.

A *run* is one execution of one attempt of a trial: a pod on a cluster, a subprocess in local mode.

**Order of observation.** The shell lists the runs *before* it reads the trials. A trial process tells
its final value before it exits, so a run seen as ``Succeeded`` or ``Failed`` had told (if it ever did)
before the trials were read: ``decide`` never mistakes a trial that just finished for one whose
process exited without reporting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, cast

from hpo_trial.contract import ATTR_ATTEMPTS, ATTR_FAIL_REASON, ATTR_MISSING_METRIC, ATTR_MODEL_PATH
from optuna.distributions import BaseDistribution

from hpo_operator.core import names

if TYPE_CHECKING:  # the ledger builds on TrialView
    from hpo_operator.core.ledger import Summary

TrialState = Literal["WAITING", "RUNNING", "COMPLETE", "PRUNED", "FAIL"]
RunPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")

# Trial system attribute: the highest attempt whose run the operator created (absent: none yet).
ATTR_LAUNCHED = "hpo:launched"
# Study system attributes: how many of spec.enqueue were enqueued; which trials were announced.
ATTR_ENQUEUED = "hpo:enqueued"
ATTR_ANNOUNCED = "hpo:announced"

# Exit codes 128 + N of a process killed by signal N, as a person reads them.
KILL_SIGNALS: dict[int | None, str] = {
    143: "SIGTERM: stopped, e.g. its pod was deleted or preempted",
    137: "SIGKILL: killed, e.g. out of memory or past its grace period",
}

# How long a run may wait in a container state it does not recover from by itself before it counts as
# failed (see :meth:`RunView.stuck`). The kubelet keeps retrying an image pull, so a registry blip gets
# a few minutes; a name that is not an image name never pulls.
IMAGE_PULL_GRACE = dt.timedelta(minutes=5)
CREATE_CONTAINER_GRACE = dt.timedelta(minutes=2)  # a Secret or ConfigMap key the container needs is missing
STUCK_WAITING: dict[str, tuple[str, dt.timedelta]] = {
    "ErrImagePull": ("image pull failed", IMAGE_PULL_GRACE),
    "ImagePullBackOff": ("image pull failed", IMAGE_PULL_GRACE),
    "InvalidImageName": ("invalid image name", dt.timedelta(0)),
    "CreateContainerConfigError": ("container configuration error", CREATE_CONTAINER_GRACE),
    "CreateContainerError": ("container could not be created", CREATE_CONTAINER_GRACE),
}
# A pod still there this long after its deletion deadline (deletionTimestamp, which already includes
# its grace period) will not go by itself: its node is gone and nobody confirms the container stopped.
TERMINATING_GRACE = dt.timedelta(minutes=5)
# A pod whose node stopped reporting (phase Unknown) this long is written off.
NODE_LOST_GRACE = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Announced:
    """The trials whose outcome was posted as an Event: all numbered below ``below``, plus ``extra``.

    Trials finish roughly in order, so ``extra`` stays about as small as the parallelism.
    """

    below: int = 0
    extra: frozenset[int] = frozenset()

    def __contains__(self, number: object) -> bool:
        return isinstance(number, int) and (number < self.below or number in self.extra)

    def add(self, numbers: Iterable[int]) -> Announced:
        extra = set(self.extra) | {n for n in numbers if n >= self.below}
        below = self.below
        while below in extra:
            extra.discard(below)
            below += 1
        return Announced(below, frozenset(extra))

    def to_json(self) -> dict[str, Any]:
        return {"below": self.below, "extra": sorted(self.extra)}

    @classmethod
    def from_json(cls, value: Any) -> Announced:
        if not isinstance(value, Mapping):
            return cls()
        return cls(int(value.get("below", 0)), frozenset(int(n) for n in value.get("extra", ())))


@dataclass(frozen=True)
class StudyView:
    """The Optuna study as stored: its directions and the operator's bookkeeping attributes."""

    name: str
    directions: tuple[str, ...]
    enqueued: int = 0
    announced: Announced = field(default_factory=Announced)


@dataclass(frozen=True)
class TrialView:
    number: int
    state: TrialState
    params: Mapping[str, Any] = field(default_factory=dict)
    values: tuple[float, ...] | None = None
    attempt: int = 0  # the current attempt, 0-based (user attribute hpo:attempts, minus one)
    launched: int = -1  # the highest attempt whose run was created (-1: none)
    fail_reason: str | None = None
    missing_metric: str | None = None  # a FAIL for an objective metric the evaluation did not produce
    last_step: int | None = None  # the last intermediate step reported
    last_intermediate: float | None = None
    started: dt.datetime | None = None
    completed: dt.datetime | None = None
    # The distribution each stored parameter was sampled from (Optuna keeps it with the value): a
    # parameter's kind, log scale and categorical choices cannot change within a study.
    distributions: Mapping[str, BaseDistribution] = field(default_factory=dict)
    model_path: str | None = None  # where the trial saved its model (user attribute hpo:model_path)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def value(self) -> float | None:
        return self.values[0] if self.values else None


@dataclass(frozen=True)
class RunView:
    """One run (pod) of one attempt of one trial."""

    name: str
    trial: int
    attempt: int
    phase: RunPhase
    owner_uid: str | None = None
    exit_code: int | None = None
    reason: str | None = None  # OOMKilled, Error, Evicted, Unschedulable, ...
    message: str | None = None  # termination message, or why it is pending
    deleting: bool = False
    created: dt.datetime | None = None
    waiting_reason: str | None = None  # a container's waiting reason (ErrImagePull, ...), if one waits
    waiting_since: dt.datetime | None = None  # since when it (at the latest) waits
    deletion_deadline: dt.datetime | None = None  # metadata.deletionTimestamp: gone by then, normally
    unknown_since: dt.datetime | None = None  # the node stopped reporting (phase Unknown) since then
    stuck_reason: str | None = None  # set by :meth:`as_stuck`: why the run counts as failed
    kind: str = "pod"  # what a run is, in the words messages use: a pod, a trial process (hpo run)
    gates: tuple[str, ...] = ()  # the pod's scheduling gates (Kueue's kueue.x-k8s.io/admission, ...)

    @property
    def gated(self) -> bool:
        """Held back by scheduling gates: waiting for admission (Kueue's, or whoever set a gate), not
        failed and not stuck; it starts once every gate is removed."""
        return self.phase == "Pending" and bool(self.gates)

    @property
    def active(self) -> bool:
        """Still using (or waiting for) its accelerator."""
        return self.phase in ("Pending", "Running")

    def stuck(self, now: dt.datetime) -> str | None:
        """Why an active run will never finish by itself (``"image pull failed: ErrImagePull for 5m"``),
        or ``None``. See :data:`STUCK_WAITING`, :data:`TERMINATING_GRACE`, :data:`NODE_LOST_GRACE`."""
        if not self.active:
            return None
        if self.deletion_deadline is not None and now - self.deletion_deadline > TERMINATING_GRACE:
            late = format_duration(now - self.deletion_deadline)
            return f"stuck terminating {late} past its grace period (its node may be lost)"
        if self.unknown_since is not None and now - self.unknown_since > NODE_LOST_GRACE:
            return f"its node stopped reporting its state {format_duration(now - self.unknown_since)} ago"
        if self.waiting_reason in STUCK_WAITING:
            what, grace = STUCK_WAITING[self.waiting_reason]
            since = self.waiting_since or self.created
            waited = now - since if since is not None else None
            if grace == dt.timedelta(0) or (waited is not None and waited >= grace):
                said = self.message.strip() if self.message and self.reason == self.waiting_reason else ""
                detail = f": {said}" if said else ""
                length = f" for {format_duration(waited)}" if waited is not None and grace else ""
                return f"{what}: {self.waiting_reason}{length}{detail}"[:500]
        return None

    def as_stuck(self, why: str) -> RunView:
        """This run as a failed one (it still exists, so it is to be deleted): its failure is ``why``."""
        return replace(self, phase="Failed", stuck_reason=why)

    def describe_failure(self) -> str:
        if self.stuck_reason:
            return f"{self.kind} {self.name}: {self.stuck_reason}"
        parts = [f"{self.kind} {self.name} failed"]
        detail = []
        if self.exit_code is not None:
            detail.append(f"exit code {self.exit_code}")
        # 128 + N: killed by signal N, which the kubelet's reason ("Error") does not say.
        killed = KILL_SIGNALS.get(self.exit_code) if self.reason in (None, "Error") else None
        if killed:
            detail.append(killed)
        elif self.reason:
            detail.append(self.reason)
        if detail:
            parts.append(f" ({', '.join(detail)})")
        if self.message:
            tail = self.message.strip().splitlines()[-3:]
            parts.append(": " + " | ".join(line.strip() for line in tail)[-500:])
        return "".join(parts)


@dataclass(frozen=True)
class Observed:
    """Everything ``decide`` may look at, for one HPOStudy, at one moment."""

    name: str  # the HPOStudy's name (runs are named after it)
    study_name: str  # the Optuna study's name, derived from namespace, name and uid
    owner_uid: str  # the HPOStudy's uid: runs owned by another uid belong to an older namesake
    study: StudyView | None  # None: the Optuna study does not exist yet
    trials: tuple[TrialView, ...] = ()
    runs: tuple[RunView, ...] = ()
    previous_phase: str | None = None  # status.phase as last written (see verdict.previous_phase)
    previous_refusal: str | None = None  # the refusal the status shows (see verdict.previous_refusal)
    run_kind: str = "pod"  # what a run is, in the words of messages about one no longer seen
    # The trials as the shell's ledger keeps them (``core.ledger``): finished ones counted once, the
    # live ones read afresh; consistent with ``trials``. None: decide summarizes ``trials`` itself.
    summary: Summary | None = None


# --------------------------------------------------------------------------------------- conversions


def trial_view(trial: Any) -> TrialView:
    """An Optuna ``FrozenTrial`` → :class:`TrialView`."""
    attempts = trial.user_attrs.get(ATTR_ATTEMPTS)
    launched = trial.system_attrs.get(ATTR_LAUNCHED)
    last_step = trial.last_step
    reason = trial.user_attrs.get(ATTR_FAIL_REASON)
    missing = trial.user_attrs.get(ATTR_MISSING_METRIC)
    model_path = trial.user_attrs.get(ATTR_MODEL_PATH)
    return TrialView(
        number=trial.number,
        state=cast(TrialState, trial.state.name),
        params=dict(trial.params),
        values=tuple(float(v) for v in trial.values) if trial.values is not None else None,
        attempt=max(int(attempts) - 1, 0) if isinstance(attempts, int) else 0,
        launched=int(launched) if isinstance(launched, int) else -1,
        fail_reason=str(reason) if reason is not None else None,
        missing_metric=str(missing) if missing is not None else None,
        last_step=last_step,
        last_intermediate=trial.intermediate_values.get(last_step) if last_step is not None else None,
        started=_aware(trial.datetime_start),
        completed=_aware(trial.datetime_complete),
        distributions=dict(trial.distributions),
        model_path=str(model_path) if model_path else None,
    )


def study_view(name: str, directions: Iterable[Any], system_attrs: Mapping[str, Any]) -> StudyView:
    """A stored study's name, directions (Optuna ``StudyDirection`` or strings) and system attributes."""
    dirs = tuple(getattr(d, "name", str(d)).lower() for d in directions)
    enqueued = system_attrs.get(ATTR_ENQUEUED, 0)
    return StudyView(
        name=name,
        directions=dirs,
        enqueued=int(enqueued) if isinstance(enqueued, int) else 0,
        announced=Announced.from_json(system_attrs.get(ATTR_ANNOUNCED)),
    )


def run_view(pod: Mapping[str, Any]) -> RunView | None:
    """A pod (the API server's JSON, camelCase keys) → :class:`RunView`; ``None`` if it is not a trial's."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    try:
        trial = int(labels[names.LABEL_TRIAL])
        attempt = int(labels.get(names.LABEL_ATTEMPT, 0))
    except (KeyError, ValueError):
        return None
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    created = parse_time(meta.get("creationTimestamp"))
    started = parse_time(status.get("startTime")) or created  # when the kubelet took the pod
    unknown_since = None
    if phase == "Unknown":
        # The node stopped reporting; usually it comes back, or the pod is evicted (then deleted).
        phase = "Running"
        unknown_since = _condition_since(status, "Ready") or started
    owner = next(
        (
            o.get("uid")
            for o in meta.get("ownerReferences") or ()
            if o.get("kind") == names.KIND and o.get("controller")
        ),
        None,
    )
    exit_code = reason = message = None
    waiting_reason = waiting_since = None
    for cs in [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING and waiting_reason is None:
            # A waiting state has no timestamp: the kubelet took the pod at startTime and has been
            # trying since then at the latest.
            waiting_reason, waiting_since = waiting.get("reason"), started
    for cs in status.get("containerStatuses") or ():
        terminated = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get(
            "terminated"
        )
        if terminated:
            exit_code = terminated.get("exitCode")
            reason = terminated.get("reason")
            message = terminated.get("message")
            break
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            reason, message = waiting.get("reason"), waiting.get("message")
    if status.get("reason") and phase == "Failed" and not reason:
        reason, message = status.get("reason"), status.get("message")
    gates = tuple(
        str(g.get("name")) for g in (pod.get("spec") or {}).get("schedulingGates") or () if g.get("name")
    )
    if phase == "Pending" and gates:
        reason, message = "SchedulingGated", f"waiting for the scheduling gate(s) {', '.join(gates)}"
    if phase == "Pending" and reason is None:
        for c in status.get("conditions") or ():
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                reason, message = c.get("reason"), c.get("message")
    return RunView(
        name=str(meta.get("name")),
        trial=trial,
        attempt=attempt,
        phase=phase if phase in ("Pending", "Running", "Succeeded", "Failed") else "Running",
        owner_uid=owner,
        exit_code=int(exit_code) if exit_code is not None else None,
        reason=reason,
        message=message,
        deleting=bool(meta.get("deletionTimestamp")),
        created=created,
        waiting_reason=waiting_reason,
        waiting_since=waiting_since,
        deletion_deadline=parse_time(meta.get("deletionTimestamp")),
        unknown_since=unknown_since,
        gates=gates,
    )


def gated_runs(observed: Observed) -> list[RunView]:
    """The study's own runs that wait for their scheduling gates to be removed, by trial."""
    runs = [r for r in observed.runs if r.owner_uid in (None, observed.owner_uid) and r.gated]
    return sorted((r for r in runs if not r.deleting), key=lambda r: (r.trial, r.attempt))


def _condition_since(status: Mapping[str, Any], kind: str) -> dt.datetime | None:
    """When the pod condition ``kind`` last changed status, if the pod has it."""
    for c in status.get("conditions") or ():
        if c.get("type") == kind:
            return parse_time(c.get("lastTransitionTime"))
    return None


def format_duration(value: dt.timedelta) -> str:
    """``5m``, ``1h 2m``, ``40s``: a duration as a person reads it in a message."""
    seconds = max(int(value.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours < 1:
        return f"{minutes}m"
    days, hours = divmod(hours, 24)
    head = f"{days}d " if days else ""
    return f"{head}{hours}h {minutes}m" if minutes else f"{head}{hours}h"


def parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return _aware(value)
    if not value:
        return None
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """Optuna stores naive local times; everything here is compared in UTC."""
    if value is None:
        return None
    return value.astimezone(dt.UTC) if value.tzinfo is None else value
