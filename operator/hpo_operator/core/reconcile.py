"""``decide(spec, observed, now) -> Plan``: the one place where the operator's policy lives.

The shell observes (runs first, then the study and its trials in storage), calls :func:`decide`,
and carries out the returned :class:`Plan` action by action (``hpo_operator.shell.apply``), and the same
function drives ``hpo run`` in local mode, where a run is a subprocess instead of a pod.

**Idempotency.** ``decide`` is a pure function of what was observed. Carrying out a plan and deciding
again on a fresh observation never repeats an action's effect: every action is keyed by something
the storage or the cluster records (trial numbers, deterministic run names, the study's
``hpo:enqueued`` and ``hpo:announced`` attributes), and the shell treats "already exists" and "already
gone" as success. A plan may be cut short at any action (a crash, a database blip): the next
observation sees what was done and the next plan does the rest.

**Ownership of RUNNING trials.** A trial is asked only by the operator, and only by ``AskTrials``. A
RUNNING trial is never asked again: if it has no run for its current attempt it gets one back from
its stored parameters (``LaunchRun``), so a crash between ``ask`` and the run's creation neither loses
nor duplicates a trial. A trial whose ``ask`` was cut short before all its parameters were stored has
them completed (``FinishAsk``) before its run is created. A run that was created
(``hpo:launched``) and is gone counts as a failed attempt.

**Stuck runs fail.** A run that cannot finish by itself counts as failed (and is deleted): a
container waiting on an image that does not pull (past ``observe.IMAGE_PULL_GRACE``), an invalid image
name, a container that cannot be created or configured (past ``observe.CREATE_CONTAINER_GRACE``), a pod
still terminating long after its grace period, or one whose node stopped reporting (see
``RunView.stuck``). Its attempt is retried like any failed attempt.

**A finished trial is final.** COMPLETE, PRUNED and FAIL trials are never changed. Their runs are
left alone (their logs are the user's), except a run still active a minute after its trial finished
and runs beyond the most recent ``FINISHED_RUNS_KEPT``, which are deleted.

**Retries run the same trial again.** A run that failed (or exited 0 without telling a final value,
which is failed without retry: the process is broken, not unlucky) before its trial finished is a
failed attempt. While attempts remain (``spec.trials.retries``) the same Optuna trial runs again with
the same parameters as attempt + 1, in a new run; then the trial is told FAIL with the reason. A
trial process that told FAIL itself (a recipe error) is final: retrying it would fail the same way.

**Parallelism.** At most ``spec.trials.parallelism`` trials are busy at once, a trial being busy while
it is RUNNING or while one of its runs is active (pending or running), so a run that lingers after its
trial finished still holds its slot: there are never more active runs than the parallelism.

**Budget.** ``spec.trials.total`` counts Optuna trials that were started (asked), whatever their
outcome; a trial that failed after all its retries counts once. Enqueued parameter sets wait in the
study (Optuna's WAITING trials) and are the first ones ``ask`` returns. Lowered below the trials already
started, the budget asks nothing more (RUNNING trials finish) and the study's message says so.

**Failure.** The study fails when more than ``spec.trials.maxFailed`` trials have failed, when a trial
reports that the objective's metric does not exist (every trial would fail the same way), or when the
stored study's directions differ from the spec's. A failing study asks nothing more, tells its
RUNNING trials FAIL ("stopped: ...") and deletes their runs, like a Kubernetes Job past its backoff
limit. Since the phase is derived from the storage, raising ``maxFailed`` or ``total`` later resumes it.

**What a stored study cannot change.** Its directions, and each parameter's kind, log scale and
categorical choices (Optuna refuses to sample a name from a distribution incompatible with one a stored
trial used; numeric ranges may change). A spec that changes them is refused as ``InvalidSpec`` naming
the field, before anything is asked or launched; nothing else is done (RUNNING trials and their runs
are left as they are), so restoring the spec resumes the study. The best trial is always judged by the
stored study's directions.

**Finishing.** The study succeeds once ``total`` trials have started, none is RUNNING, no run is active
and at least one trial completed (none completed: it fails with ``NoTrialCompleted``).

**Suspension** (``spec.suspend``, as a Kubernetes Job's). A suspended study asks nothing and starts no
run: not a new trial, not a retry, not a RUNNING trial's run back (those wait for the resume). Running
trials finish (``spec.onSuspend: Finish``, the default), or (``Stop``) their runs are deleted after
their launch record is withdrawn (``MarkLaunched(attempt - 1)``, as a clean stop of ``hpo run`` does), so
that on resume the same trial gets its run back as the same attempt, no retry spent. Resuming continues
the same Optuna study. The phase is ``Suspended`` until the study ends by itself (a study whose trials
all finished is ``Succeeded`` whatever ``suspend`` says; a failing study fails).

**Announcements.** Every finished trial is announced once, as an Event in the seed's words, in the
order trials finished; the announced set is recorded in the study (``hpo:announced``) after the
Events are posted, so an Event may repeat after a crash but is never lost. "Best is trial N" follows
one rule (``core.best``: among equal values the first to finish), the status's too. The study's own
Event (``StudySucceeded``, ``StudyFailed``) comes after those of all its trials: a plan that tells
trials FAIL withholds it (``Plan.phase_event_withheld``) and the next plan, which announces them as
stored, posts it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

from hpo_operator.core import events, names, search_space
from hpo_operator.core.best import best_trial, better, finish_order, pair
from hpo_operator.core.ledger import STOPPED_PREFIX, Summary, stored_distributions, summarize
from hpo_operator.core.observe import Announced, Observed, RunView, TrialView
from hpo_operator.core.plan import (
    Action,
    AskTrials,
    Assessment,
    Counts,
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

# A run still active this long after its trial finished is deleted.
FINISHED_RUN_GRACE = dt.timedelta(seconds=60)
# Runs (pods) of finished attempts kept for their logs; older ones are deleted.
FINISHED_RUNS_KEPT = 100
# At most this many trials are announced per plan; a larger backlog (an old study adopted, an operator
# down for hours) announces the most recent ones and marks the rest announced.
MAX_ANNOUNCEMENTS = 50


# --------------------------------------------------------------------------------------------- decide


@dataclass
class _Draft:
    actions: list[Action] = field(default_factory=list)
    failing: dict[int, str] = field(default_factory=dict)  # trial number → reason told FAIL this pass
    launches: list[LaunchRun] = field(default_factory=list)
    deletes: dict[str, str] = field(default_factory=dict)  # run name → reason
    retry_events: list[PostEvent] = field(default_factory=list)


def decide(spec: StudySpec, observed: Observed, now: dt.datetime) -> Plan:
    """What to do next for one HPOStudy, given what was observed. See the module docstring."""
    draft = _Draft()
    study = observed.study
    # Finished trials through the ledger's figures (core.ledger), one by one only the live ones: the
    # cost of a decision follows what runs, not what has finished.
    summary = observed.summary or summarize(
        study.directions if study is not None else spec.directions, observed.trials
    )
    live = summary.live
    owned = []
    for r in observed.runs:
        if r.owner_uid not in (None, observed.owner_uid):
            continue
        why = r.stuck(now)
        if why is not None:
            # It will never finish by itself: a failed attempt, whose pod goes (unless it is going).
            r = r.as_stuck(why)
            if not r.deleting:
                draft.deletes[r.name] = why
        owned.append(r)
    foreign = {r.name: r for r in observed.runs if r.owner_uid not in (None, observed.owner_uid)}
    runs_of: dict[int, list[RunView]] = {}
    for r in owned:
        runs_of.setdefault(r.trial, []).append(r)

    # The best trial by the stored study's directions (the spec's may have been edited, and refused).
    best = pair(summary.best)

    # What a stored study cannot change: its directions, and its parameters' distributions (kind, log
    # scale, categorical choices). Refused before anything is asked; reverting the spec resumes it.
    clash: tuple[str, str] | None = None
    if study is not None and study.directions != spec.directions:
        clash = (
            "spec.objective",
            f"the stored study {study.name} optimizes {list(study.directions)}, the spec asks for "
            f"{list(spec.directions)}; the objectives of a study cannot change (create a new HPOStudy)",
        )
    elif study is not None:
        clash = _search_space_clash(spec, summary)
    if clash is not None:
        counts = _counts(spec, summary, owned, {})
        assessment = Assessment("Failed", "InvalidSpec", clash[1], counts, field=clash[0], best=best)
        return Plan(assessment, tuple(_phase_events(observed, assessment)))

    if study is None:
        draft.actions.append(CreateStudy(observed.study_name, spec.directions))
    enqueued = study.enqueued if study is not None else 0
    if enqueued < len(spec.enqueue):
        draft.actions.append(Enqueue(enqueued, tuple(spec.enqueue[enqueued:])))

    # Running trials: recover, follow and retry their runs.
    for t in live:
        if t.state == "RUNNING":
            _follow_running(spec, observed, t, runs_of.get(t.number, []), foreign, draft)

    # Why the study has to stop, if it has to.
    stop = _stop_reason(spec, summary, draft)
    if stop is not None:
        draft.launches.clear()
        draft.retry_events.clear()
        draft.actions = [a for a in draft.actions if not isinstance(a, FinishAsk | MarkLaunched)]
        for t in live:
            if t.state == "RUNNING" and t.number not in draft.failing:
                draft.failing[t.number] = f"{STOPPED_PREFIX}the study failed ({stop[0]})"
        for r in owned:
            if r.active and not r.deleting:
                draft.deletes[r.name] = f"the study failed ({stop[0]})"

    # Suspended: nothing is started; with onSuspend Stop, the running trials' runs go (to come back).
    suspended = spec.suspend and stop is None
    withdrawn: list[MarkLaunched] = []
    if suspended:
        draft.launches.clear()
        draft.retry_events.clear()
        if spec.on_suspend == "Stop":
            for r in owned:
                t = summary.trial(r.trial)
                if t is None or t.state != "RUNNING" or t.number in draft.failing:
                    continue
                if r.active and not r.deleting and r.name not in draft.deletes:
                    withdrawn.append(MarkLaunched(r.trial, r.attempt - 1))
                    draft.deletes[r.name] = (
                        "the study is suspended (spec.suspend, spec.onSuspend Stop); "
                        f"trial {r.trial} runs again on resume"
                    )
            stopping = {m.trial for m in withdrawn}
            draft.actions = [
                a for a in draft.actions if not (isinstance(a, MarkLaunched) and a.trial in stopping)
            ]

    # Runs of finished trials: the lingering ones and the oldest ones go.
    _tidy_finished_runs(summary, owned, now, draft)

    # The counts as they stand once this plan is carried out (its FAIL verdicts included), so that the
    # assessment and its Events tell the same numbers as the status the next observation gives.
    counts = _counts(spec, summary, owned, draft.failing)

    # New trials, up to the parallelism, while the budget lasts.
    running_after = {t.number for t in live if t.state == "RUNNING" and t.number not in draft.failing}
    busy = running_after | {r.trial for r in owned if r.active}
    asks = 0
    if stop is None and not suspended:
        slots = spec.trials.parallelism - len(busy)
        asks = max(0, min(slots, spec.trials.total - counts.started))

    # The plan, in the order it is carried out.
    draft.actions += [FailTrial(n, reason) for n, reason in sorted(draft.failing.items())]
    draft.actions += withdrawn  # before the deletes: a run deleted is never mistaken for a lost one
    draft.actions += [DeleteRun(name, reason) for name, reason in sorted(draft.deletes.items())]
    draft.actions += draft.launches
    draft.actions += draft.retry_events
    if asks:
        draft.actions.append(AskTrials(asks))

    active_after = any(r.active and r.name not in draft.deletes for r in owned) or bool(draft.launches)
    assessment = _assess(spec, owned, counts, best, stop, running_after, asks, active_after)
    if suspended and not assessment.terminal:
        assessment = _suspended(spec, counts, best, running_after, active_after)
    draft.actions += _announcements(spec, study.announced if study else Announced(), summary)
    # The trials this plan fails are announced by the next plan (it sees their outcome as stored: one
    # may have finished by itself meanwhile); the study's own Event follows theirs.
    withheld = bool(draft.failing) and assessment.terminal
    if not withheld:
        draft.actions += _phase_events(observed, assessment)
    return Plan(assessment, tuple(draft.actions), phase_event_withheld=withheld)


def being_deleted(current: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether the HPOStudy ``uid`` whose daemon stopped is gone or going (as read now, ``current``),
    rather than the operator stopping."""
    if current is None or (current.get("metadata") or {}).get("uid") != uid:
        return True
    return bool(current["metadata"].get("deletionTimestamp"))


def abandoned(trials: Sequence[TrialView]) -> tuple[FailTrial, ...]:
    """The HPOStudy is being deleted: its RUNNING trials fail (their pods go by garbage collection)."""
    return tuple(
        FailTrial(t.number, f"{STOPPED_PREFIX}the HPOStudy was deleted")
        for t in trials
        if t.state == "RUNNING"
    )


def _follow_running(
    spec: StudySpec,
    observed: Observed,
    t: TrialView,
    runs: list[RunView],
    foreign: Mapping[str, RunView],
    draft: _Draft,
) -> None:
    attempt = max([t.attempt, *(r.attempt for r in runs)])
    run = next((r for r in runs if r.attempt == attempt), None)
    study_name = observed.name
    if run is None:
        if t.launched >= attempt:
            _failed_attempt(
                spec,
                t,
                attempt,
                f"{observed.run_kind} {names.pod_name(study_name, t.number, attempt)} disappeared",
                draft,
            )
            return
        missing = [n for n in spec.param_names if n not in t.params]
        if missing:
            draft.actions.append(FinishAsk(t.number))
            return
        name = names.pod_name(study_name, t.number, attempt)
        if name in foreign:
            # A pod of an older HPOStudy of the same name (being garbage-collected) holds the name.
            if not foreign[name].deleting:
                draft.deletes[name] = "it belongs to an earlier HPOStudy of the same name"
            return
        reason = "created" if attempt == 0 and t.launched < 0 else "recreated from the stored parameters"
        draft.launches.append(LaunchRun(t.number, attempt, dict(t.params), reason))
        return
    if run.active:
        # A run being deleted is not marked (a suspended study's Stop withdrew its launch record).
        if t.launched < attempt and not run.deleting:
            draft.actions.append(MarkLaunched(t.number, attempt))
        return
    if run.deleting and t.launched < attempt:
        # A run withdrawn on purpose (a suspended study's Stop took back its launch record) ends as a
        # deleted pod does, Failed with SIGTERM's exit code, until it is gone: not the trial's failure.
        return
    if run.phase == "Succeeded":
        draft.failing[t.number] = (
            f"the trial process exited 0 without reporting a final value ({run.kind} {run.name}); "
            "a trial must end with trial.complete(), trial.prune() or trial.fail()"
        )
        return
    _failed_attempt(spec, t, attempt, run.describe_failure(), draft)


def _failed_attempt(spec: StudySpec, t: TrialView, attempt: int, reason: str, draft: _Draft) -> None:
    if attempt < spec.trials.retries:
        draft.launches.append(LaunchRun(t.number, attempt + 1, dict(t.params), f"retry after: {reason}"))
        draft.retry_events.append(
            PostEvent(
                "Warning",
                "TrialRetried",
                events.trial_retried(t.number, attempt, spec.trials.retries, reason),
                trial=t.number,
                attempt=attempt,
            )
        )
        return
    tries = f" (attempt {attempt + 1} of {spec.trials.retries + 1})" if spec.trials.retries else ""
    draft.failing[t.number] = f"{reason}{tries}"


def _stop_reason(spec: StudySpec, summary: Summary, draft: _Draft) -> tuple[str, str, str | None] | None:
    """(reason, message, field) when the study must stop, else ``None``."""
    # The trial side records a missing objective metric with its FAIL (hpo_trial.contract's
    # ATTR_MISSING_METRIC). A metric the spec no longer names was fixed since
    # (spec.objective[i].metric changed): that trial's failure says nothing about the trials to come.
    missing = [t for m, t in summary.missing_metric.items() if m in spec.metrics]
    if missing:
        t = min(missing, key=lambda t: t.number)
        assert t.missing_metric is not None
        path = f"spec.objective[{spec.metrics.index(t.missing_metric)}].metric"
        return ("ObjectiveMetricNotFound", f"trial {t.number}: {t.fail_reason}", path)
    n_failed = summary.failed + len([n for n, r in draft.failing.items() if not r.startswith(STOPPED_PREFIX)])
    if n_failed > spec.trials.max_failed:
        last_failed = summary.last_failed
        if draft.failing:
            last = f"trial {max(draft.failing)}: {draft.failing[max(draft.failing)]}"
        elif last_failed is not None:
            last = f"trial {last_failed.number}: {last_failed.fail_reason or 'no reason recorded'}"
        else:  # pragma: no cover - n_failed > 0 counts some failure
            last = "no reason recorded"
        limit = spec.trials.max_failed
        message = f"{n_failed} trials failed, more than spec.trials.maxFailed ({limit}); last: {last}"
        return ("TooManyFailedTrials", message, "spec.trials.maxFailed")
    return None


def _tidy_finished_runs(summary: Summary, owned: Sequence[RunView], now: dt.datetime, draft: _Draft) -> None:
    for r in owned:
        t = summary.trial(r.trial)
        if t is None or t.completed is None or not t.finished or not r.active or r.deleting:
            continue
        if now - t.completed > FINISHED_RUN_GRACE:
            draft.deletes.setdefault(
                r.name,
                f"trial {t.number} finished at {t.completed:%H:%M:%S} but its pod is still running",
            )
    done = [r for r in owned if not r.active and not r.deleting and r.name not in draft.deletes]
    done.sort(key=lambda r: (r.trial, r.attempt), reverse=True)
    for r in done[FINISHED_RUNS_KEPT:]:
        t = summary.trial(r.trial)
        if t is not None and t.finished:
            draft.deletes[r.name] = f"only the last {FINISHED_RUNS_KEPT} finished trial pods are kept"


def _search_space_clash(spec: StudySpec, summary: Summary) -> tuple[str, str] | None:
    """(field, message) when a parameter of the spec cannot be sampled in the stored study: Optuna
    refuses a distribution incompatible with the one a stored trial used for that name (another kind,
    another log scale, other categorical choices). Numeric ranges may change."""
    stored = stored_distributions(summary)  # name → each distinct stored distribution, its first trial
    problems: list[tuple[str, str]] = []
    for i, param in enumerate(spec.search_space):
        new = search_space.distribution(param)
        for old, number in stored.get(param.name, ()):
            try:
                check_distribution_compatibility(old, new)
            except ValueError as e:
                if type(old) is not type(new):
                    path = f"spec.searchSpace[{i}].type"
                elif isinstance(old, CategoricalDistribution):
                    path = f"spec.searchSpace[{i}].choices"
                else:
                    path = f"spec.searchSpace[{i}].log"
                problems.append(
                    (
                        path,
                        f"parameter {param.name!r} of trial {number} was sampled from {_describe(old)}, "
                        f"the spec asks for {_describe(new)} (Optuna: {e})",
                    )
                )
                break
    if not problems:
        return None
    # The first problem's field is the assessment's; the others are named in the message.
    more = "".join(f"; {path}: {text}" for path, text in problems[1:])
    message = (
        f"{problems[0][1]}{more}; a study's parameters cannot change their type, log scale or "
        "categorical choices (numeric ranges can): restore the spec, or create a new HPOStudy"
    )
    return problems[0][0], message


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    if isinstance(dist, IntDistribution | FloatDistribution):
        kind = "int" if isinstance(dist, IntDistribution) else "float"
        step = f", step {dist.step}" if dist.step not in (None, 1) else ""
        return f"{kind} [{dist.low}, {dist.high}]{', log' if dist.log else ''}{step}"
    return repr(dist)  # pragma: no cover - the spec makes only these three


def _counts(
    spec: StudySpec, summary: Summary, owned: Sequence[RunView], failing: Mapping[int, str]
) -> Counts:
    """The counts once the RUNNING trials in ``failing`` are told FAIL."""
    states = [("FAIL" if t.state == "RUNNING" and t.number in failing else t.state) for t in summary.live]
    done = summary.counts
    return Counts(
        budget=spec.trials.total,
        started=len(summary.finished) + sum(1 for s in states if s != "WAITING"),
        waiting=states.count("WAITING"),
        running=states.count("RUNNING"),
        complete=done["COMPLETE"],
        pruned=done["PRUNED"],
        failed=done["FAIL"] + states.count("FAIL"),
        active_runs=sum(1 for r in owned if r.active),
    )


def _assess(
    spec: StudySpec,
    owned: Sequence[RunView],
    counts: Counts,
    best: tuple[int, float] | None,
    stop: tuple[str, str, str | None] | None,
    running_after: set[int],
    asks: int,
    active_after: bool,
) -> Assessment:
    if stop is not None:
        return Assessment("Failed", stop[0], stop[1], counts, field=stop[2], best=best)
    tally = (
        f"{counts.finished} of {spec.trials.total} trials finished "
        f"({counts.complete} complete, {counts.pruned} pruned, {counts.failed} failed)"
    )
    if counts.started > spec.trials.total:
        # The budget was lowered below what already ran: a trial cannot be taken back, none is added.
        tally = (
            f"{counts.finished} trials finished ({counts.complete} complete, {counts.pruned} pruned, "
            f"{counts.failed} failed); spec.trials.total ({spec.trials.total}) is below the "
            f"{counts.started} trials already started, so no new trial is asked"
        )
    if counts.started >= spec.trials.total and not running_after and not active_after:
        if counts.complete == 0:
            return Assessment("Failed", "NoTrialCompleted", f"{tally}; none completed", counts, best=best)
        best_text = f" {events.best_sentence(best)}" if not spec.multi_objective else ""
        return Assessment("Succeeded", "AllTrialsFinished", f"{tally}.{best_text}", counts, best=best)
    started_anything = counts.finished > 0 or any(r.phase != "Pending" for r in owned)
    if not started_anything:
        pending = [r for r in owned if r.phase == "Pending" and r.message]
        why = f": {pending[0].name} is pending ({pending[0].reason}: {pending[0].message})" if pending else ""
        return Assessment("Pending", "WaitingForTrials", f"waiting for the first trial to start{why}", counts)
    best_text = f" {events.best_sentence(best)}" if best and not spec.multi_objective else ""
    # A RUNNING trial whose pod waits (unschedulable, pulling its image) is not training yet: say so.
    waiting = [r for r in owned if r.active and r.phase == "Pending" and r.trial in running_after]
    waiting_trials = {r.trial for r in waiting}
    busy = len(running_after) - len(waiting_trials)
    message = f"{tally}, {busy} running.{best_text}"
    if waiting:
        first = min(waiting, key=lambda r: r.trial)
        why = f": {first.name} is pending ({first.reason}: {first.message})" if first.message else ""
        message = f"{tally}, {busy} running, {len(waiting_trials)} waiting to start{why}.{best_text}"
    if counts.started >= spec.trials.total and not running_after:
        message = f"{tally}; waiting for {sum(1 for r in owned if r.active)} pod(s) to exit."
    return Assessment("Running", "TrialsRunning", message, counts, best=best)


def _suspended(
    spec: StudySpec,
    counts: Counts,
    best: tuple[int, float] | None,
    running_after: set[int],
    active_after: bool,
) -> Assessment:
    tally = (
        f"{counts.finished} of {spec.trials.total} trials finished "
        f"({counts.complete} complete, {counts.pruned} pruned, {counts.failed} failed)"
    )
    if spec.on_suspend == "Stop" and running_after:
        still = f"; {len(running_after)} running trial(s) stopped, to run again on resume"
    elif running_after or active_after:
        still = f"; {len(running_after)} running trial(s) finishing"
    else:
        still = ""
    best_text = f" {events.best_sentence(best)}" if best and not spec.multi_objective else ""
    message = f"suspended (spec.suspend): no trial is asked or started; {tally}{still}.{best_text}"
    return Assessment("Suspended", "Suspended", message, counts, best=best)


def _announcements(spec: StudySpec, announced: Announced, summary: Summary) -> list[Action]:
    # Trials numbered below ``announced.below`` were all announced: look only above it.
    finished = summary.finished
    newly = [
        t
        for n in range(announced.below, summary.top + 1)
        if (t := finished.get(n)) is not None and n not in announced.extra
    ]
    if not newly:
        return []
    newly.sort(key=finish_order)
    shown = newly if len(newly) <= MAX_ANNOUNCEMENTS else sorted(newly[-MAX_ANNOUNCEMENTS:], key=newly.index)
    # Best so far: over the trials announced before, then updated in the order trials finished. The
    # best of all finished trials is the best of those announced unless it is one of the new ones.
    fresh = {t.number for t in newly}
    so_far = summary.best
    if so_far is not None and so_far.number in fresh:
        so_far = best_trial(spec.directions, [t for t in finished.values() if t.number not in fresh])
    for t in newly:
        if t not in shown:
            so_far = better(spec.directions, so_far, t)
    out: list[Action] = []
    for t in shown:
        if t.state == "COMPLETE":
            so_far = better(spec.directions, so_far, t)
            out.append(
                PostEvent(
                    "Normal",
                    "TrialCompleted",
                    events.trial_completed(t.number, t.values or (), t.params, pair(so_far)),
                    trial=t.number,
                    attempt=t.attempt,
                )
            )
        elif t.state == "PRUNED":
            out.append(
                PostEvent(
                    "Normal",
                    "TrialPruned",
                    events.trial_pruned(t.number, t.last_step, t.last_intermediate, t.params),
                    trial=t.number,
                    attempt=t.attempt,
                )
            )
        else:
            out.append(
                PostEvent(
                    "Warning",
                    "TrialFailed",
                    events.trial_failed(t.number, t.fail_reason, t.params),
                    trial=t.number,
                    attempt=t.attempt,
                )
            )
    out.append(RecordAnnounced(announced.add(t.number for t in newly), tuple(t.state for t in newly)))
    return out


def _phase_events(observed: Observed, assessment: Assessment) -> list[Action]:
    if assessment.phase == "Suspended" and observed.previous_phase != "Suspended":
        return [PostEvent("Normal", "StudySuspended", events.clip(f"Study {assessment.message}"))]
    if observed.previous_phase == "Suspended" and assessment.phase in ("Pending", "Running"):
        return [PostEvent("Normal", "StudyResumed", "Study resumed (spec.suspend is false)")]
    if not assessment.terminal or observed.previous_phase == assessment.phase:
        return []
    if assessment.phase == "Succeeded":
        return [PostEvent("Normal", "StudySucceeded", events.clip(f"Study finished: {assessment.message}"))]
    where = f"{assessment.field}: " if assessment.field else ""
    if assessment.reason == "InvalidSpec" and observed.previous_refusal == f"{where}{assessment.message}":
        return []  # the status shows this refusal already (an earlier reconcile, an earlier operator)
    return [
        PostEvent(
            "Warning",
            "StudyFailed",
            events.clip(f"Study failed ({assessment.reason}): {where}{assessment.message}"),
        )
    ]
