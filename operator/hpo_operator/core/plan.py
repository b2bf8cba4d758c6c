"""The plan vocabulary: what :func:`hpo_operator.core.reconcile.decide` returns and the shell carries out.

A :class:`Plan` is an :class:`Assessment` (where the study stands: phase, reason, message, counts, best
trial) and the :data:`Action` values to carry out, in order. Each action is keyed by something the
storage or the cluster records, so carrying one out twice has the effect of once (see the invariants
in :mod:`hpo_operator.core.reconcile`); ``hpo_operator.shell.apply`` maps each to storage calls and
calls on the runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hpo_operator.core.observe import Announced

Phase = Literal["Pending", "Running", "Suspended", "Succeeded", "Failed"]


@dataclass(frozen=True)
class CreateStudy:
    """Create the Optuna study (idempotent: an existing study of that name is loaded)."""

    study_name: str
    directions: tuple[str, ...]


@dataclass(frozen=True)
class Enqueue:
    """Enqueue ``spec.enqueue[start:]`` (skipping sets already in the study), then record the count."""

    start: int
    params: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class FinishAsk:
    """Store the missing parameters of a RUNNING trial whose ``ask`` was cut short."""

    trial: int


@dataclass(frozen=True)
class AskTrials:
    """Ask ``count`` new trials with the spec's distributions and create attempt 0's run of each."""

    count: int


@dataclass(frozen=True)
class LaunchRun:
    """Create the run of ``attempt`` of a RUNNING trial (record the attempt first, then create)."""

    trial: int
    attempt: int
    params: Mapping[str, Any]
    reason: str


@dataclass(frozen=True)
class MarkLaunched:
    """Record that the run of ``attempt`` exists (so its disappearance is noticed)."""

    trial: int
    attempt: int


@dataclass(frozen=True)
class FailTrial:
    """Tell a RUNNING trial FAIL with a reason (``hpo:fail_reason``); skipped if it already finished."""

    trial: int
    reason: str


@dataclass(frozen=True)
class DeleteRun:
    name: str
    reason: str


@dataclass(frozen=True)
class PostEvent:
    """Tell the user: an Event on the HPOStudy, a line of ``hpo run``. An Event about one attempt of a
    trial names them as data (``hpo run`` shows that attempt's log without reading the message)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    trial: int | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class RecordAnnounced:
    """Store the announced set; ``states`` are the newly announced trials' states (for metrics)."""

    announced: Announced
    states: tuple[str, ...]


Action = (
    CreateStudy
    | Enqueue
    | FinishAsk
    | AskTrials
    | LaunchRun
    | MarkLaunched
    | FailTrial
    | DeleteRun
    | PostEvent
    | RecordAnnounced
)


@dataclass(frozen=True)
class Counts:
    budget: int  # spec.trials.total
    started: int  # trials asked so far (every state but WAITING)
    waiting: int  # enqueued, not asked yet
    running: int
    complete: int
    pruned: int
    failed: int
    active_runs: int

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclass(frozen=True)
class Assessment:
    """Where the study stands: phase, a CamelCase reason, a sentence, and the spec field to blame."""

    phase: Phase
    reason: str
    message: str
    counts: Counts
    field: str | None = None
    best: tuple[int, float] | None = None  # single objective: (trial number, value)

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class Plan:
    assessment: Assessment
    actions: tuple[Action, ...] = ()
    # The study's outcome (StudySucceeded/StudyFailed) is told after the outcomes of its trials: a plan
    # that finishes trials itself (FailTrial) leaves that Event to the next plan, which sees them
    # finished and announces them first. See :meth:`phase_told`.
    phase_event_withheld: bool = False

    def phase_told(self, previous: str | None) -> str | None:
        """The phase the user has been told of once this plan is carried out (``previous``: before it):
        what the next ``decide`` on the same status gets as ``Observed.previous_phase``."""
        return previous if self.phase_event_withheld else self.assessment.phase

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]
