"""``HPOStudy.status``, built from what was observed and what ``decide`` concluded. Returns dicts.

The status answers, at any moment, how far the study is and which trial is best::

    phase: Running                       # Pending | Running | Suspended | Succeeded | Failed
    observedGeneration: 3
    studyName: default.nli-distilbert.6f1c...   # the Optuna study
    progress: 7/20                       # finished / total (the "Trials" printer column)
    trials: {total: 20, started: 9, running: 2, complete: 6, pruned: 0, failed: 1, waiting: 0}
    bestValue: 0.802026                  # the "Best" printer column: 6 significant digits
    bestTrial: {number: 5, value: 0.8020, values: [0.8020], params: {...}, modelPath: /models/trial-5}
    paretoFront: [...]                   # multi-objective: the non-dominated trials (bounded)
    recentTrials: [...]                  # the last RECENT_TRIALS trials with their values (bounded)
    message: "7 of 20 trials finished (6 complete, 0 pruned, 1 failed), 2 running. Best is ..."
    conditions: [SpecValid, StorageReady, Complete, Failed]  # + Suspended, SamplerFitsSpace and
                                         # SearchSpaceAsWritten once shown

Every list is bounded (``RECENT_TRIALS``, ``PARETO_FRONT``), so a 10,000-trial study stays far below
the API server's object size limit. ``lastTransitionTime`` of a condition only moves when its status
does: pass the previous status in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpo_operator.core import search_space
from hpo_operator.core.ledger import summarize
from hpo_operator.core.observe import Observed, TrialView
from hpo_operator.core.plan import Assessment
from hpo_operator.core.spec import SpecError, StudySpec

RECENT_TRIALS = 50
PARETO_FRONT = 50
MAX_REASON = 300

COND_SPEC_VALID = "SpecValid"
COND_STORAGE_READY = "StorageReady"
COND_COMPLETE = "Complete"
COND_FAILED = "Failed"
COND_SAMPLER_FITS = "SamplerFitsSpace"  # shown once the sampler falls back to random, or Optuna warned
COND_SPACE_AS_WRITTEN = "SearchSpaceAsWritten"  # shown once a range is not a multiple of its step
COND_SUSPENDED = "Suspended"  # shown once the study was suspended (spec.suspend)
COND_PODS_ADMITTED = "TrialPodsAdmitted"  # shown once a ResourceQuota or scheduling gates held a pod back


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: dt.datetime,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One condition; its ``lastTransitionTime`` is kept from ``previous`` while the status is unchanged."""
    value = "True" if status else "False"
    since = timestamp(now)
    for c in (previous or {}).get("conditions") or ():
        if c.get("type") == kind and c.get("status") == value and c.get("lastTransitionTime"):
            since = c["lastTransitionTime"]
    out: dict[str, Any] = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def note_conditions(
    spec: StudySpec, *, generation: int | None, now: dt.datetime, previous: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """What the study will not do as written (:func:`hpo_operator.core.search_space.notes`), as
    conditions shown once there is something to say: ``SearchSpaceAsWritten=False`` (reason
    ``RangeCut``) for ranges Optuna cuts to a multiple of their step, ``SamplerFitsSpace=False`` for
    what the sampler samples at random (reason ``SamplerFallsBack``) or any other warning Optuna raised
    when the sampler was tried (reason ``SamplerWarned``); each message names the field, the notes joined
    by ``; ``. True again (and kept) once the spec no longer gives cause."""
    notes = search_space.notes(spec)
    shown = {c.get("type") for c in (previous or {}).get("conditions") or ()}
    out = []
    for kind, found, reason, fine in (
        (COND_SPACE_AS_WRITTEN, notes.space, "RangeCut", "every range is a multiple of its step"),
        (
            COND_SAMPLER_FITS,
            notes.sampler,
            "SamplerFallsBack"
            if any(n.path == "spec.sampler.type" for n in notes.sampler)
            else "SamplerWarned",
            f"the {spec.sampler.type} sampler models every parameter",
        ),
    ):
        if found or kind in shown:
            message = "; ".join(str(n) for n in found) if found else fine
            out.append(
                condition(
                    kind,
                    not found,
                    reason if found else "Fits" if kind == COND_SAMPLER_FITS else "AsWritten",
                    message,
                    generation=generation,
                    now=now,
                    previous=previous,
                )
            )
    return out


def _replace_conditions(
    previous: Mapping[str, Any] | None, new: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The previous conditions with ``new`` ones replacing those of the same type, in a stable order."""
    kept = {c.get("type"): c for c in (previous or {}).get("conditions") or () if c.get("type")}
    for c in new:
        kept[c["type"]] = c
    order = [COND_SPEC_VALID, COND_STORAGE_READY, COND_COMPLETE, COND_FAILED]
    return [kept[k] for k in order if k in kept] + [c for k, c in kept.items() if k not in order]


def build_status(
    spec: StudySpec,
    observed: Observed,
    assessment: Assessment,
    *,
    generation: int | None,
    now: dt.datetime,
    previous: Mapping[str, Any] | None = None,
    extra_conditions: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The whole status of a study whose spec is valid and whose storage answered; ``extra_conditions``
    (``TrialPodsAdmitted``) replace those of their type and follow the four of every status."""
    # The stored study's directions: a spec whose objectives were edited is refused, and its trials are
    # still the stored study's. The trials through the ledger's summary (core.ledger): bounded work.
    directions = observed.study.directions if observed.study is not None else spec.directions
    summary = observed.summary or summarize(directions, observed.trials)
    counts = assessment.counts
    status: dict[str, Any] = {
        "phase": assessment.phase,
        "observedGeneration": generation,
        "studyName": observed.study_name,
        "progress": f"{counts.finished}/{counts.budget}",
        "trials": {
            "total": counts.budget,
            "started": counts.started,
            "running": counts.running,
            "complete": counts.complete,
            "pruned": counts.pruned,
            "failed": counts.failed,
            "waiting": counts.waiting,
        },
        "message": assessment.message,
        "recentTrials": [trial_row(t, spec) for t in summary.recent(RECENT_TRIALS)],
    }
    # The best trial as decide judged it; the front by the same directions.
    best = summary.trial(assessment.best[0]) if assessment.best is not None else None
    if best is not None and best.values:
        status["bestValue"] = display_value(best.values[0])
        status["bestTrial"] = {
            "number": best.number,
            "value": best.values[0],
            "values": list(best.values),
            "params": dict(best.params),
        }
        if best.model_path:  # saved by the trial (trainer.saveModel), read from the storage
            status["bestTrial"]["modelPath"] = best.model_path
    else:
        status["bestValue"] = None
        status["bestTrial"] = None
    if len(directions) > 1:
        front = summary.front
        status["paretoFront"] = [
            {
                "number": t.number,
                "values": list(t.values or ()),
                "params": dict(t.params),
                **({"modelPath": t.model_path} if t.model_path else {}),
            }
            for t in front[:PARETO_FRONT]
        ]
        status["paretoFrontSize"] = len(front)
    started = [t.started for t in summary.live if t.started is not None]
    if summary.first_started is not None:
        started.append(summary.first_started)
    if started:
        status["startTime"] = timestamp(min(started))
    if assessment.terminal:
        done = [t.completed for t in summary.live if t.completed is not None]
        if summary.last_completed is not None:
            done.append(summary.last_completed)
        status["completionTime"] = timestamp(max(done) if done else now)
    else:
        status["completionTime"] = None

    where = f"{assessment.field}: " if assessment.field else ""
    suspension: list[dict[str, Any]] = []
    was_suspended = any(c.get("type") == COND_SUSPENDED for c in (previous or {}).get("conditions") or ())
    if assessment.phase == "Suspended" or was_suspended:
        suspension.append(
            condition(
                COND_SUSPENDED,
                assessment.phase == "Suspended",
                "Suspended" if assessment.phase == "Suspended" else "Resumed",
                assessment.message if assessment.phase == "Suspended" else "spec.suspend is false",
                generation=generation,
                now=now,
                previous=previous,
            )
        )
    fits = note_conditions(spec, generation=generation, now=now, previous=previous)
    status["conditions"] = _replace_conditions(
        previous,
        [
            condition(
                COND_SPEC_VALID,
                assessment.reason != "InvalidSpec",
                "Valid" if assessment.reason != "InvalidSpec" else "InvalidSpec",
                "the spec is valid" if assessment.reason != "InvalidSpec" else f"{where}{assessment.message}",
                generation=generation,
                now=now,
                previous=previous,
            ),
            condition(
                COND_STORAGE_READY,
                True,
                "Connected",
                f"the Optuna study {observed.study_name} is reachable",
                generation=generation,
                now=now,
                previous=previous,
            ),
            condition(
                COND_COMPLETE,
                assessment.phase == "Succeeded",
                assessment.reason,
                assessment.message
                if assessment.phase == "Succeeded"
                else f"{assessment.phase}: {assessment.message}",
                generation=generation,
                now=now,
                previous=previous,
            ),
            condition(
                COND_FAILED,
                assessment.phase == "Failed",
                assessment.reason if assessment.phase == "Failed" else "NotFailed",
                f"{where}{assessment.message}" if assessment.phase == "Failed" else "no failure",
                generation=generation,
                now=now,
                previous=previous,
            ),
            *suspension,
            *fits,
            *extra_conditions,
        ],
    )
    return json_safe(status)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats (which JSON cannot carry) replaced by ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def invalid_spec_status(
    error: SpecError, *, generation: int | None, now: dt.datetime, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The status patch of a study whose spec is invalid: phase Failed, conditions naming the field."""
    message = str(error)
    return {
        "phase": "Failed",
        "observedGeneration": generation,
        "message": f"invalid spec: {message}",
        "conditions": _replace_conditions(
            previous,
            [
                condition(
                    COND_SPEC_VALID,
                    False,
                    "InvalidSpec",
                    message,
                    generation=generation,
                    now=now,
                    previous=previous,
                ),
                condition(
                    COND_COMPLETE,
                    False,
                    "InvalidSpec",
                    "the study cannot run until the spec is fixed",
                    generation=generation,
                    now=now,
                    previous=previous,
                ),
                condition(
                    COND_FAILED,
                    True,
                    "InvalidSpec",
                    message,
                    generation=generation,
                    now=now,
                    previous=previous,
                ),
            ],
        ),
    }


def storage_waiting_status(
    message: str,
    *,
    retry_in: float,
    generation: int | None,
    now: dt.datetime,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status patch while the storage (or the API server) does not answer: nothing else changes.

    ``message`` must already be free of secrets (the shell redacts the URL).
    """
    text = f"waiting for the storage: {message}; retrying in {retry_in:g}s"
    out: dict[str, Any] = {}
    if not (previous or {}).get("phase"):
        out["phase"] = "Pending"  # a new study: not blank in `kubectl get`, and not yet running
    return out | {
        "conditions": _replace_conditions(
            previous,
            [
                condition(
                    COND_STORAGE_READY,
                    False,
                    "StorageUnavailable",
                    text,
                    generation=generation,
                    now=now,
                    previous=previous,
                )
            ],
        ),
        "message": text,
    }


def display_value(value: float) -> float:
    """A value for the printer column: 6 significant digits (``bestTrial.value`` keeps every digit)."""
    return float(f"{value:.6g}")


def trial_row(t: TrialView, spec: StudySpec) -> dict[str, Any]:
    """One row of ``status.recentTrials``."""
    row: dict[str, Any] = {"number": t.number, "state": t.state}
    if t.values is not None:
        if spec.multi_objective:
            row["values"] = list(t.values)
        else:
            row["value"] = t.values[0]
    row["params"] = dict(t.params)
    if t.attempt > 0:
        row["attempts"] = t.attempt + 1
    if t.state in ("RUNNING", "PRUNED") and t.last_step is not None:
        row["step"] = t.last_step
        if t.last_intermediate is not None:
            row["intermediateValue"] = t.last_intermediate
    if t.fail_reason and t.state == "FAIL":
        reason = t.fail_reason
        row["reason"] = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
    return row
