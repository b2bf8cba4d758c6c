"""``decide``: every combination of stored trial state and run state, and the study-level policies.

The last tests drive ``decide`` against a simulated world (real Optuna in-memory storage, runs as
plain records) with plans cut short at random, and check the invariants the module docstring promises.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace
from typing import Any

import optuna
import pytest
from hpo_operator.core import names
from hpo_operator.core import search_space as ss
from hpo_operator.core.observe import (
    ATTR_ANNOUNCED,
    ATTR_ENQUEUED,
    ATTR_LAUNCHED,
    CREATE_CONTAINER_GRACE,
    IMAGE_PULL_GRACE,
    NODE_LOST_GRACE,
    TERMINATING_GRACE,
    Announced,
    Observed,
    RunView,
    StudyView,
    TrialView,
    format_duration,
    study_view,
    trial_view,
)
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.plan import (
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
from hpo_operator.core.reconcile import FINISHED_RUN_GRACE, FINISHED_RUNS_KEPT, MAX_ANNOUNCEMENTS, decide
from hpo_operator.core.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

NOW = dt.datetime(2025, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
UID = "uid-1"
NAME = "demo"
STUDY = names.optuna_study_name("ns", NAME, UID)
PARAMS = {"x": 1.0, "n": 2}


def make_spec(**trials: Any) -> StudySpec:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [
            {"name": "x", "type": "float", "low": -5.0, "high": 5.0},
            {"name": "n", "type": "int", "low": 1, "high": 4},
        ],
        "trials": {"total": 5, "parallelism": 2, "maxFailed": 1, "retries": 1, **trials},
        "template": {"image": "img", "command": ["python", "objective.py"]},
    }
    return parse_spec(raw)


def trial(number: int, state: str = "RUNNING", **kw: Any) -> TrialView:
    kw.setdefault("params", PARAMS)
    if state == "COMPLETE":
        kw.setdefault("values", (0.5,))
    if state in ("COMPLETE", "PRUNED", "FAIL"):
        kw.setdefault("completed", NOW - dt.timedelta(seconds=5))
    if state != "WAITING":
        kw.setdefault("launched", kw.get("attempt", 0))
    return TrialView(number=number, state=state, **kw)  # type: ignore[arg-type]


def run(number: int, phase: str = "Running", attempt: int = 0, **kw: Any) -> RunView:
    kw.setdefault("owner_uid", UID)
    return RunView(
        name=names.pod_name(NAME, number, attempt), trial=number, attempt=attempt, phase=phase, **kw
    )  # type: ignore[arg-type]


def observed(
    trials: list[TrialView] = (),  # type: ignore[assignment]
    runs: list[RunView] = (),  # type: ignore[assignment]
    *,
    study: StudyView | str | None = "default",
    previous_phase: str | None = "Running",
    announce_all: bool = True,
) -> Observed:
    if study == "default":
        finished = [t.number for t in trials if t.finished] if announce_all else []
        study = StudyView(STUDY, ("maximize",), 0, Announced().add(finished))
    return Observed(
        name=NAME,
        study_name=STUDY,
        owner_uid=UID,
        study=study,  # type: ignore[arg-type]
        trials=tuple(trials),
        runs=tuple(runs),
        previous_phase=previous_phase,
    )


def kinds(plan: Plan) -> list[str]:
    return [type(a).__name__ for a in plan.actions]


# ----------------------------------------------------------------------------------- a new study


def test_a_new_study_is_created_and_asked_up_to_the_parallelism() -> None:
    plan = decide(make_spec(), observed(study=None, previous_phase=None), NOW)
    assert plan.actions == (CreateStudy(STUDY, ("maximize",)), AskTrials(2))
    assert plan.assessment.phase == "Pending"


def test_enqueued_sets_go_in_before_the_first_ask() -> None:
    spec = parse_spec(
        {
            **_raw(make_spec()),
            "enqueue": [{"x": 0.5, "n": 1}, {"x": -0.5}],
        }
    )
    plan = decide(spec, observed(study=None, previous_phase=None), NOW)
    assert kinds(plan) == ["CreateStudy", "Enqueue", "AskTrials"]
    assert plan.of(Enqueue)[0] == Enqueue(0, ({"x": 0.5, "n": 1}, {"x": -0.5}))
    # Half enqueued before a crash: only the rest is enqueued.
    half = StudyView(STUDY, ("maximize",), enqueued=1)
    plan = decide(spec, observed(study=half, previous_phase=None), NOW)
    assert plan.of(Enqueue) == [Enqueue(1, ({"x": -0.5},))]
    done = StudyView(STUDY, ("maximize",), enqueued=2)
    assert decide(spec, observed(study=done, previous_phase=None), NOW).of(Enqueue) == []


def _raw(spec: StudySpec) -> dict[str, Any]:
    return spec.model_dump(by_alias=True, exclude_none=True)


# ------------------------------------------------------------------------- a RUNNING trial's run


def test_running_trial_with_an_active_run_is_left_alone() -> None:
    for phase in ("Pending", "Running"):
        plan = decide(make_spec(parallelism=1), observed([trial(0)], [run(0, phase)]), NOW)
        assert plan.actions == ()
        assert plan.assessment.phase == ("Running" if phase == "Running" else "Pending")


def test_running_trial_without_a_run_gets_it_back_from_its_stored_parameters() -> None:
    t = trial(0, launched=-1, params={"x": 3.5, "n": 4})
    plan = decide(make_spec(parallelism=1), observed([t]), NOW)
    assert plan.actions == (LaunchRun(0, 0, {"x": 3.5, "n": 4}, "created"),)


def test_a_recovered_retry_keeps_its_attempt() -> None:
    t = trial(0, attempt=1, launched=0)
    plan = decide(make_spec(parallelism=1), observed([t], [run(0, "Failed", exit_code=1)]), NOW)
    assert plan.of(LaunchRun) == [LaunchRun(0, 1, PARAMS, "recreated from the stored parameters")]
    assert plan.of(PostEvent) == []  # the retry was announced when it was decided


def test_a_half_asked_trial_gets_its_parameters_first() -> None:
    t = trial(0, launched=-1, params={"x": 1.0})
    plan = decide(make_spec(parallelism=1), observed([t]), NOW)
    assert plan.actions == (FinishAsk(0),)


def test_an_active_run_not_yet_recorded_is_marked_launched() -> None:
    plan = decide(make_spec(parallelism=1), observed([trial(0, launched=-1)], [run(0)]), NOW)
    assert plan.actions == (MarkLaunched(0, 0),)


def test_a_run_that_disappeared_is_a_failed_attempt() -> None:
    plan = decide(make_spec(parallelism=1, retries=1), observed([trial(0, launched=0)]), NOW)
    assert plan.of(LaunchRun) == [LaunchRun(0, 1, PARAMS, f"retry after: pod {NAME}-trial-0 disappeared")]
    plan = decide(make_spec(parallelism=1, retries=0, maxFailed=5), observed([trial(0, launched=0)]), NOW)
    assert plan.of(FailTrial) == [FailTrial(0, f"pod {NAME}-trial-0 disappeared")]


def test_a_failed_run_is_retried_with_the_same_parameters_then_failed() -> None:
    spec = make_spec(parallelism=1, retries=1, maxFailed=5)
    failed0 = run(0, "Failed", exit_code=137, reason="OOMKilled", message="Killed")
    plan = decide(spec, observed([trial(0)], [failed0]), NOW)
    assert plan.of(LaunchRun) == [
        LaunchRun(0, 1, PARAMS, f"retry after: pod {NAME}-trial-0 failed (exit code 137, OOMKilled): Killed")
    ]
    (event,) = plan.of(PostEvent)
    assert event.type == "Warning" and event.reason == "TrialRetried"
    assert "Trial 0 attempt 1 of 2 failed" in event.message and "attempt 2 of 2" in event.message
    assert plan.of(AskTrials) == []  # the retry holds the only slot

    failed1 = run(0, "Failed", attempt=1, exit_code=1, message="Traceback\nValueError: boom")
    plan = decide(spec, observed([trial(0, attempt=1)], [failed0, failed1]), NOW)
    (fail,) = plan.of(FailTrial)
    assert fail.trial == 0
    assert (
        fail.reason
        == f"pod {NAME}-trial-0-r1 failed (exit code 1): Traceback | ValueError: boom (attempt 2 of 2)"
    )
    assert plan.of(LaunchRun) == []
    assert plan.of(AskTrials) == [AskTrials(1)]  # the slot is free again


def test_a_run_that_exits_0_without_a_value_fails_its_trial_without_retry() -> None:
    plan = decide(
        make_spec(parallelism=1, retries=3, maxFailed=5), observed([trial(0)], [run(0, "Succeeded")]), NOW
    )
    (fail,) = plan.of(FailTrial)
    assert "exited 0 without reporting a final value" in fail.reason
    assert plan.of(LaunchRun) == []


def test_a_deleting_run_holds_its_slot_until_it_is_gone() -> None:
    plan = decide(make_spec(parallelism=1), observed([trial(0)], [run(0, "Running", deleting=True)]), NOW)
    assert plan.actions == ()


# ---------------------------------------------------------------------------------- stuck runs

MINUTE = dt.timedelta(minutes=1)


def waiting(reason: str, since: dt.timedelta, message: str | None = None, **kw: Any) -> RunView:
    """Trial 0's run (attempt 0), a container waiting with ``reason`` since ``since`` ago."""
    return run(
        0, "Pending", reason=reason, message=message, waiting_reason=reason, waiting_since=NOW - since, **kw
    )


@pytest.mark.parametrize(
    ("reason", "grace", "what"),
    [
        ("ErrImagePull", IMAGE_PULL_GRACE, "image pull failed"),
        ("ImagePullBackOff", IMAGE_PULL_GRACE, "image pull failed"),
        ("CreateContainerConfigError", CREATE_CONTAINER_GRACE, "container configuration error"),
        ("CreateContainerError", CREATE_CONTAINER_GRACE, "container could not be created"),
    ],
)
def test_a_run_waiting_on_a_hopeless_container_state_fails_after_its_grace(
    reason: str, grace: dt.timedelta, what: str
) -> None:
    spec = make_spec(parallelism=1, retries=1, maxFailed=5)
    early = decide(spec, observed([trial(0)], [waiting(reason, grace - MINUTE)]), NOW)
    assert early.actions == () and early.assessment.counts.active_runs == 1

    stuck = waiting(reason, grace + MINUTE, message="no such thing")
    plan = decide(spec, observed([trial(0)], [stuck]), NOW)
    minutes = int((grace + MINUTE).total_seconds() // 60)
    why = f"{what}: {reason} for {minutes}m: no such thing"
    assert plan.of(DeleteRun) == [DeleteRun(f"{NAME}-trial-0", why)]  # it holds its node's GPU
    assert plan.of(LaunchRun) == [LaunchRun(0, 1, PARAMS, f"retry after: pod {NAME}-trial-0: {why}")]
    assert [e.reason for e in plan.of(PostEvent)] == ["TrialRetried"]
    # Out of retries: the trial fails, saying why.
    last = replace(stuck, name=f"{NAME}-trial-0-r1", attempt=1)
    plan = decide(spec, observed([trial(0, attempt=1)], [last]), NOW)
    assert plan.of(FailTrial) == [FailTrial(0, f"pod {NAME}-trial-0-r1: {why} (attempt 2 of 2)")]
    assert plan.of(DeleteRun) == [DeleteRun(f"{NAME}-trial-0-r1", why)]
    assert plan.of(AskTrials) == [AskTrials(1)]  # the stuck pod no longer holds the slot


def test_an_invalid_image_name_fails_at_once() -> None:
    plan = decide(
        make_spec(retries=0), observed([trial(0)], [waiting("InvalidImageName", dt.timedelta(0))]), NOW
    )
    (fail,) = plan.of(FailTrial)
    assert fail.reason == f"pod {NAME}-trial-0: invalid image name: InvalidImageName"
    assert [d.name for d in plan.of(DeleteRun)] == [f"{NAME}-trial-0"]


def test_other_waiting_states_are_waited_for() -> None:
    for reason in ("ContainerCreating", "PodInitializing", "Unschedulable", None):
        r = run(0, "Pending", reason=reason, waiting_reason=reason, waiting_since=NOW - 60 * MINUTE)
        assert decide(make_spec(parallelism=1), observed([trial(0)], [r]), NOW).actions == ()


def test_a_run_stuck_terminating_past_its_grace_period_fails_and_frees_its_slot() -> None:
    spec = make_spec(parallelism=1, retries=1, maxFailed=5)
    going = run(0, "Running", deleting=True, deletion_deadline=NOW - TERMINATING_GRACE + MINUTE)
    assert decide(spec, observed([trial(0)], [going]), NOW).actions == ()  # still within the margin

    lost = replace(going, deletion_deadline=NOW - TERMINATING_GRACE - MINUTE)
    plan = decide(spec, observed([trial(0)], [lost]), NOW)
    why = "stuck terminating 6m past its grace period (its node may be lost)"
    assert plan.of(LaunchRun) == [LaunchRun(0, 1, PARAMS, f"retry after: pod {NAME}-trial-0: {why}")]
    assert plan.of(DeleteRun) == []  # already being deleted
    # Once its trial is over, the pod that will never go does not keep the study from finishing.
    done = decide(make_spec(total=1), observed([trial(0, "COMPLETE")], [lost]), NOW)
    assert (done.assessment.phase, done.assessment.reason) == ("Succeeded", "AllTrialsFinished")


def test_a_run_whose_node_stopped_reporting_fails_after_its_grace() -> None:
    spec = make_spec(parallelism=1, retries=0, maxFailed=5)
    recent = run(0, "Running", unknown_since=NOW - NODE_LOST_GRACE + MINUTE)
    assert decide(spec, observed([trial(0)], [recent]), NOW).actions == ()
    gone = replace(recent, unknown_since=NOW - NODE_LOST_GRACE - MINUTE)
    plan = decide(spec, observed([trial(0)], [gone]), NOW)
    why = "its node stopped reporting its state 11m ago"
    assert plan.of(FailTrial) == [FailTrial(0, f"pod {NAME}-trial-0: {why}")]
    assert plan.of(DeleteRun) == [DeleteRun(f"{NAME}-trial-0", why)]


def test_durations_read_well() -> None:
    assert [format_duration(dt.timedelta(seconds=s)) for s in (-3, 40, 300, 3660, 7200, 90000)] == [
        "0s",
        "40s",
        "5m",
        "1h 1m",
        "2h",
        "1d 1h",
    ]


# ------------------------------------------------------------------------------ finished trials


@pytest.mark.parametrize("state", ["COMPLETE", "PRUNED", "FAIL"])
@pytest.mark.parametrize("phase", [None, "Pending", "Running", "Succeeded", "Failed"])
def test_a_finished_trial_is_final_whatever_its_run_does(state: str, phase: str | None) -> None:
    runs = [run(0, phase)] if phase else []
    t = trial(0, state, fail_reason="boom" if state == "FAIL" else None)
    plan = decide(make_spec(parallelism=1, total=2, maxFailed=3), observed([t], runs), NOW)
    assert plan.of(FailTrial) == [] and plan.of(LaunchRun) == [] and plan.of(FinishAsk) == []
    assert plan.of(DeleteRun) == []  # a run still active within the grace period is left to exit
    if phase in ("Pending", "Running"):
        assert plan.of(AskTrials) == []  # the lingering run still holds the slot
    else:
        assert plan.of(AskTrials) == [AskTrials(1)]


def test_a_run_lingering_after_its_trial_finished_is_deleted_after_the_grace_period() -> None:
    t = trial(0, "COMPLETE", completed=NOW - FINISHED_RUN_GRACE - dt.timedelta(seconds=1))
    plan = decide(make_spec(parallelism=1, total=1), observed([t], [run(0, "Running")]), NOW)
    (delete,) = plan.of(DeleteRun)
    assert delete.name == f"{NAME}-trial-0" and "still running" in delete.reason
    assert plan.assessment.phase == "Succeeded"


def test_only_the_most_recent_finished_runs_are_kept() -> None:
    n = FINISHED_RUNS_KEPT + 3
    trials = [trial(i, "COMPLETE", values=(float(i),)) for i in range(n)]
    runs = [run(i, "Succeeded") for i in range(n)]
    plan = decide(make_spec(parallelism=1, total=n), observed(trials, runs), NOW)
    assert sorted(d.name for d in plan.of(DeleteRun)) == sorted(names.pod_name(NAME, i, 0) for i in range(3))


# ----------------------------------------------------------------------- parallelism and budget


@pytest.mark.parametrize(
    ("running", "waiting", "finished", "parallelism", "total", "asks"),
    [
        (0, 0, 0, 2, 5, 2),
        (1, 0, 0, 2, 5, 1),
        (2, 0, 0, 2, 5, 0),
        (1, 0, 3, 3, 5, 1),  # budget: 4 started, 1 left
        (0, 0, 5, 3, 5, 0),
        (0, 2, 0, 3, 5, 3),  # enqueued (WAITING) trials do not count as started
        (0, 0, 2, 4, 3, 1),
    ],
)
def test_asks_fill_the_parallelism_while_the_budget_lasts(
    running: int, waiting: int, finished: int, parallelism: int, total: int, asks: int
) -> None:
    trials = [trial(i, "COMPLETE", values=(float(i),)) for i in range(finished)]
    trials += [trial(finished + i) for i in range(running)]
    trials += [trial(finished + running + i, "WAITING", params={}) for i in range(waiting)]
    runs = [run(t.number) for t in trials if t.state == "RUNNING"]
    plan = decide(make_spec(parallelism=parallelism, total=total), observed(trials, runs), NOW)
    assert plan.of(AskTrials) == ([AskTrials(asks)] if asks else [])


def test_never_more_busy_trials_than_the_parallelism() -> None:
    # Three RUNNING trials (parallelism lowered since): none asked, none stopped.
    trials = [trial(i) for i in range(3)]
    plan = decide(make_spec(parallelism=2), observed(trials, [run(i) for i in range(3)]), NOW)
    assert plan.actions == ()


# -------------------------------------------------------------------------------- finishing


def test_the_study_succeeds_when_the_budget_is_spent_and_nothing_runs() -> None:
    trials = [trial(0, "COMPLETE", values=(0.3,)), trial(1, "PRUNED"), trial(2, "COMPLETE", values=(0.9,))]
    spec = make_spec(total=3, maxFailed=0)
    plan = decide(spec, observed(trials, previous_phase="Running"), NOW)
    assert plan.assessment.phase == "Succeeded" and plan.assessment.reason == "AllTrialsFinished"
    assert plan.assessment.best == (2, 0.9)
    assert "3 of 3 trials finished (2 complete, 1 pruned, 0 failed)" in plan.assessment.message
    (event,) = plan.of(PostEvent)
    assert event.reason == "StudySucceeded" and "Best is trial 2 with value 0.9000" in event.message
    # Deciding again once the phase was written: nothing to do, no repeated Event.
    assert decide(spec, observed(trials, previous_phase="Succeeded"), NOW).actions == ()


def test_the_study_waits_for_lingering_runs_before_it_succeeds() -> None:
    trials = [trial(0, "COMPLETE")]
    plan = decide(make_spec(total=1), observed(trials, [run(0, "Running")]), NOW)
    assert plan.assessment.phase == "Running" and "waiting for 1 pod(s) to exit" in plan.assessment.message


def test_no_completed_trial_fails_the_study() -> None:
    trials = [trial(0, "PRUNED"), trial(1, "FAIL", fail_reason="x")]
    plan = decide(make_spec(total=2, maxFailed=5), observed(trials), NOW)
    assert (plan.assessment.phase, plan.assessment.reason) == ("Failed", "NoTrialCompleted")


def test_the_study_failed_event_counts_the_failures_of_its_own_plan() -> None:
    # Both trials exit 0 without reporting; the second one is failed by this very plan: the assessment
    # counts it, and the study's Event waits for the next plan, after that trial's own Event.
    exited = "the trial process exited 0 without reporting a final value"
    trials = [trial(0, "FAIL", fail_reason=exited), trial(1)]
    spec = make_spec(total=2, maxFailed=5)
    plan = decide(spec, observed(trials, [run(1, "Succeeded")]), NOW)
    a = plan.assessment
    assert (a.phase, a.reason) == ("Failed", "NoTrialCompleted")
    assert (a.counts.failed, a.counts.running) == (2, 0)
    assert plan.of(FailTrial)[0].trial == 1
    assert plan.of(PostEvent) == [] and plan.phase_event_withheld
    assert plan.phase_told("Running") == "Running"
    study = StudyView(STUDY, ("maximize",), 0, Announced().add([0]))
    after = [trials[0], trial(1, "FAIL", fail_reason=plan.of(FailTrial)[0].reason)]
    nxt = decide(spec, observed(after, [run(1, "Succeeded")], study=study, previous_phase="Running"), NOW)
    assert [e.reason for e in nxt.of(PostEvent)] == ["TrialFailed", "StudyFailed"]
    event = nxt.of(PostEvent)[1]
    assert "2 of 2 trials finished (0 complete, 0 pruned, 2 failed); none completed" in event.message
    assert nxt.phase_told("Running") == "Failed"


def test_the_study_event_follows_the_last_trials_event_even_when_it_ends_otherwise() -> None:
    # The last trial's run is seen Failed while its trial is RUNNING: this plan tells it FAIL, but its
    # process told PRUNED meanwhile (the FAIL is then skipped). StudySucceeded must not precede the
    # TrialPruned Event, and the study's counts are the stored ones.
    done = [trial(0, "COMPLETE", values=(0.7,), completed=NOW - dt.timedelta(seconds=20))]
    spec = make_spec(total=2, maxFailed=5, retries=0)
    study = StudyView(STUDY, ("maximize",), 0, Announced().add([0]))
    plan = decide(spec, observed([*done, trial(1)], [run(1, "Failed", exit_code=1)], study=study), NOW)
    assert plan.of(FailTrial)[0].trial == 1 and plan.assessment.phase == "Succeeded"
    assert [e.reason for e in plan.of(PostEvent)] == []
    told = plan.phase_told("Running")
    pruned = trial(1, "PRUNED", last_step=3, last_intermediate=0.2, completed=NOW - dt.timedelta(seconds=1))
    nxt = decide(spec, observed([*done, pruned], study=study, previous_phase=told), NOW)
    assert [e.reason for e in nxt.of(PostEvent)] == ["TrialPruned", "StudySucceeded"]
    assert (nxt.assessment.counts.pruned, nxt.assessment.counts.failed) == (1, 0)
    assert "1 pruned, 0 failed" in nxt.of(PostEvent)[1].message


def test_a_budget_lowered_below_the_started_trials_asks_nothing_and_says_so() -> None:
    done = [trial(i, "COMPLETE", values=(float(i),)) for i in range(12)]
    plan = decide(make_spec(total=5), observed(done, previous_phase="Succeeded"), NOW)
    a = plan.assessment
    assert (a.phase, a.reason) == ("Succeeded", "AllTrialsFinished")
    assert a.message.startswith(
        "12 trials finished (12 complete, 0 pruned, 0 failed); spec.trials.total (5) is below the "
        "12 trials already started, so no new trial is asked."
    )
    assert "Best is trial 11" in a.message and plan.actions == ()
    # Lowered while trials run: they finish (nothing is failed or deleted), nothing new is asked.
    trials = [*done[:4], trial(4), trial(5)]
    plan = decide(make_spec(total=3, parallelism=4), observed(trials, [run(4), run(5)]), NOW)
    assert plan.assessment.phase == "Running" and plan.actions == ()
    assert "spec.trials.total (3) is below the 6 trials already started" in plan.assessment.message


def test_too_many_failed_trials_stop_the_study() -> None:
    trials = [
        trial(0, "FAIL", fail_reason="CUDA out of memory"),
        trial(1, "FAIL", fail_reason="diverged"),
        trial(2),
        trial(3, "COMPLETE"),
    ]
    spec = make_spec(total=10, parallelism=2, maxFailed=1)
    plan = decide(spec, observed(trials, [run(2), run(0, "Failed")]), NOW)
    a = plan.assessment
    assert (a.phase, a.reason, a.field) == ("Failed", "TooManyFailedTrials", "spec.trials.maxFailed")
    assert "2 trials failed, more than spec.trials.maxFailed (1)" in a.message and "diverged" in a.message
    assert plan.of(AskTrials) == [] and plan.of(LaunchRun) == []
    assert plan.of(FailTrial) == [FailTrial(2, "stopped: the study failed (TooManyFailedTrials)")]
    assert [d.name for d in plan.of(DeleteRun)] == [f"{NAME}-trial-2"]
    assert plan.of(PostEvent) == [] and plan.phase_told("Running") == "Running"  # trial 2's Event first
    # Once stopped, the stopped trial does not count as one more failure; its Event, then the study's.
    after = [
        *trials[:2],
        trial(2, "FAIL", fail_reason="stopped: the study failed (TooManyFailedTrials)"),
        trials[3],
    ]
    study = StudyView(STUDY, ("maximize",), 0, Announced().add([0, 1, 3]))
    told = decide(spec, observed(after, [run(2, "Running", deleting=True)], study=study), NOW)
    assert [e.reason for e in told.of(PostEvent)] == ["TrialFailed", "StudyFailed"]
    again = decide(spec, observed(after, [run(2, "Running", deleting=True)], previous_phase="Failed"), NOW)
    assert again.actions == ()
    assert "2 trials failed" in again.assessment.message
    # Raising maxFailed resumes the study.
    resumed = decide(
        make_spec(total=10, parallelism=2, maxFailed=5), observed(after, previous_phase="Failed"), NOW
    )
    assert resumed.assessment.phase == "Running" and resumed.of(AskTrials) == [AskTrials(2)]


def test_the_failure_that_crosses_max_failed_in_this_pass_stops_the_study() -> None:
    trials = [trial(0, "FAIL", fail_reason="a"), trial(1), trial(2)]
    runs = [run(1, "Failed", exit_code=2), run(2)]
    plan = decide(make_spec(maxFailed=1, retries=0), observed(trials, runs), NOW)
    assert plan.assessment.reason == "TooManyFailedTrials"
    fails = {f.trial: f.reason for f in plan.of(FailTrial)}
    assert fails[1].startswith(f"pod {NAME}-trial-1 failed (exit code 2)")
    assert fails[2].startswith("stopped: ")


def test_a_missing_objective_metric_stops_the_study_naming_the_field() -> None:
    reason = (
        "objective metric 'eval_nope' was not produced by the evaluation; "
        "the metrics that exist are: eval_loss, eval_sts-dev_spearman_cosine"
    )
    raw = _raw(make_spec(maxFailed=10))
    raw["objective"] = [{"metric": "eval_nope"}]
    spec = parse_spec(raw)
    failed = trial(0, "FAIL", fail_reason=reason, missing_metric="eval_nope")
    plan = decide(spec, observed([failed, trial(1)], [run(1)]), NOW)
    a = plan.assessment
    assert (a.phase, a.reason, a.field) == ("Failed", "ObjectiveMetricNotFound", "spec.objective[0].metric")
    assert "eval_sts-dev_spearman_cosine" in a.message
    assert plan.of(FailTrial) == [FailTrial(1, "stopped: the study failed (ObjectiveMetricNotFound)")]


def test_a_missing_metric_is_read_from_the_trials_attribute_not_from_its_message() -> None:
    raw = _raw(make_spec(maxFailed=10))
    raw["objective"] = [{"metric": "eval_nope"}]
    spec = parse_spec(raw)
    # A custom container's own reason that reads like the reporting API's: one failed trial, no more.
    said = "objective metric 'eval_nope' was not produced by the evaluation (my own words)"
    plan = decide(spec, observed([trial(0, "FAIL", fail_reason=said), trial(1)], [run(1)]), NOW)
    assert plan.assessment.reason == "TrialsRunning"
    # The attribute, as hpo_trial.reporting tells it with the FAIL, is read into the trial's view.
    frozen = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL,
        user_attrs={"hpo:fail_reason": "no metric", "hpo:missing_metric": "eval_nope"},
    )
    assert trial_view(frozen).missing_metric == "eval_nope"


def test_a_study_stopped_for_a_missing_metric_resumes_once_the_metric_is_fixed() -> None:
    reason = "objective metric 'eval_nope' was not produced by the evaluation; the metrics that exist are: a"
    raw = _raw(make_spec(maxFailed=10))
    raw["objective"] = [{"metric": "eval_nope"}]
    stopped_reason = "stopped: the study failed"
    history = [
        trial(0, "FAIL", fail_reason=reason, missing_metric="eval_nope"),
        trial(1, "FAIL", fail_reason=stopped_reason),
    ]
    stopped = decide(parse_spec(raw), observed(history, previous_phase="Failed"), NOW)
    assert (stopped.assessment.phase, stopped.assessment.reason) == ("Failed", "ObjectiveMetricNotFound")
    assert stopped.of(AskTrials) == []
    # The user fixes spec.objective[0].metric: the old failure names a metric the spec no longer has.
    raw["objective"] = [{"metric": "a"}]
    resumed = decide(parse_spec(raw), observed(history, previous_phase="Failed"), NOW)
    assert (resumed.assessment.phase, resumed.assessment.reason) == ("Running", "TrialsRunning")
    assert resumed.of(AskTrials) == [AskTrials(2)]
    # A second objective that is still missing keeps it stopped, naming that objective.
    raw["objective"] = [{"metric": "a"}, {"metric": "eval_nope", "direction": "minimize"}]
    multi = parse_spec(raw)
    study = StudyView(STUDY, ("maximize", "minimize"), 0, Announced().add([0, 1]))
    again = decide(multi, observed(history, study=study, previous_phase="Failed"), NOW)
    assert (again.assessment.reason, again.assessment.field) == (
        "ObjectiveMetricNotFound",
        "spec.objective[1].metric",
    )


def test_changed_objectives_are_refused() -> None:
    study = StudyView(STUDY, ("minimize",))
    plan = decide(make_spec(), observed([trial(0)], [run(0)], study=study), NOW)
    assert (plan.assessment.phase, plan.assessment.field) == ("Failed", "spec.objective")
    assert [type(a) for a in plan.actions] == [PostEvent]


def test_a_refused_direction_change_keeps_the_best_trial_of_the_stored_directions() -> None:
    study = StudyView(STUDY, ("minimize",), 0, Announced(2))
    trials = [trial(0, "COMPLETE", values=(0.1666,)), trial(1, "COMPLETE", values=(8.27e-05,))]
    plan = decide(make_spec(total=2), observed(trials, study=study, previous_phase="Succeeded"), NOW)
    assert (plan.assessment.reason, plan.assessment.field) == ("InvalidSpec", "spec.objective")
    assert plan.assessment.best == (1, 8.27e-05)  # the spec's "maximize" would pick trial 0


SPACE: list[dict[str, Any]] = [
    {"name": "x", "type": "float", "low": -5.0, "high": 5.0},
    {"name": "n", "type": "int", "low": 1, "high": 4},
    {"name": "batch", "type": "categorical", "choices": [16, 32, 64]},
]


def space_spec(space: list[dict[str, Any]], **trials: Any) -> StudySpec:
    raw = _raw(make_spec(**trials))
    raw["searchSpace"] = space
    return parse_spec(raw)


def stored_trials(spec: StudySpec, complete: int, *, partial: bool = False) -> list[TrialView]:
    """Trials as Optuna stores them (with their distributions): ``complete`` asked with the spec's
    distributions and told, then, with ``partial``, one RUNNING trial whose ``ask`` stored only ``x``."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(complete):
        study.tell(study.ask(ss.distributions(spec)), 0.5)
    if partial:
        study.ask({"x": ss.distributions(spec)["x"]})
    return [trial_view(t) for t in study.get_trials()]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            {"choices": [16, 64]},
            "spec.searchSpace[2].choices",
            "choices [16, 32, 64], the spec asks for choices [16, 64]",
        ),
        ({"type": "int", "low": 1, "high": 4, "choices": None}, "spec.searchSpace[2].type", "int [1, 4]"),
    ],
)
def test_a_categorical_parameter_cannot_change_its_choices_or_type(
    change: dict[str, Any], field: str, words: str
) -> None:
    spec = space_spec(SPACE, total=8)
    trials = stored_trials(spec, 8)
    changed = [*SPACE[:2], {k: v for k, v in {**SPACE[2], **change}.items() if v is not None}]
    plan = decide(space_spec(changed, total=12), observed(trials, previous_phase="Succeeded"), NOW)
    a = plan.assessment
    assert (a.phase, a.reason, a.field) == ("Failed", "InvalidSpec", field)
    assert "parameter 'batch' of trial 0 was sampled from choices [16, 32, 64]" in a.message
    assert words in a.message and "create a new HPOStudy" in a.message
    assert kinds(plan) == ["PostEvent"]  # nothing asked
    (event,) = plan.of(PostEvent)
    assert event.reason == "StudyFailed" and f"(InvalidSpec): {field}: parameter 'batch'" in event.message


def test_a_half_asked_trial_is_not_completed_with_an_incompatible_distribution() -> None:
    # The reviewer's repro: the total raised and the choices changed in one edit, with a trial whose
    # ask was cut short by the incompatible parameter. Nothing is asked or completed, nothing launched.
    spec = space_spec(SPACE, total=8)
    trials = stored_trials(spec, 8, partial=True)
    assert trials[-1].state == "RUNNING" and set(trials[-1].params) == {"x"}
    changed = [*SPACE[:2], {**SPACE[2], "choices": [16, 64]}]
    plan = decide(space_spec(changed, total=12), observed(trials), NOW)
    assert (plan.assessment.reason, plan.assessment.field) == ("InvalidSpec", "spec.searchSpace[2].choices")
    assert kinds(plan) == ["PostEvent"]
    # Restoring the spec resumes the study: the half-asked trial gets its parameters.
    assert "FinishAsk" in kinds(decide(space_spec(SPACE, total=12), observed(trials), NOW))


def test_a_numeric_parameter_cannot_change_its_type_or_log_scale_but_its_range_can() -> None:
    spec = space_spec(SPACE, total=3)
    trials = stored_trials(spec, 3)
    to_int = [{"name": "x", "type": "int", "low": -5, "high": 5}, *SPACE[1:]]
    plan = decide(space_spec(to_int, total=5), observed(trials), NOW)
    assert plan.assessment.field == "spec.searchSpace[0].type"
    assert "float [-5.0, 5.0], the spec asks for int [-5, 5]" in plan.assessment.message
    assert "Cannot set different distribution kind" in plan.assessment.message
    to_log = [{"name": "x", "type": "float", "low": 0.1, "high": 5.0, "log": True}, *SPACE[1:]]
    plan = decide(space_spec(to_log, total=5), observed(trials), NOW)
    assert plan.assessment.field == "spec.searchSpace[0].log"
    # Two problems: the first one is the field, both are named.
    both = [{**to_log[0]}, SPACE[1], {**SPACE[2], "choices": [16]}]
    plan = decide(space_spec(both, total=5), observed(trials), NOW)
    assert plan.assessment.field == "spec.searchSpace[0].log"
    assert "; spec.searchSpace[2].choices: parameter 'batch'" in plan.assessment.message
    # Ranges may change (Optuna allows it), parameters may be added: the study goes on.
    wider = [
        {"name": "x", "type": "float", "low": -50.0, "high": 50.0},
        {"name": "n", "type": "int", "low": 2, "high": 9, "step": 1},
        SPACE[2],
        {"name": "extra", "type": "categorical", "choices": ["a", "b"]},
    ]
    plan = decide(space_spec(wider, total=5), observed(trials), NOW)
    assert plan.assessment.phase == "Running" and plan.of(AskTrials) == [AskTrials(2)]


# ---------------------------------------------------------------------- runs of an older namesake


def test_a_pod_of_an_older_namesake_is_ignored_and_removed_if_it_blocks_a_name() -> None:
    old = run(0, "Succeeded", owner_uid="old-uid")
    plan = decide(make_spec(parallelism=1), observed([trial(0, launched=-1)], [old]), NOW)
    assert plan.actions == (
        DeleteRun(f"{NAME}-trial-0", "it belongs to an earlier HPOStudy of the same name"),
    )
    plan = decide(
        make_spec(parallelism=1), observed([trial(0, launched=-1)], [replace(old, deleting=True)]), NOW
    )
    assert plan.actions == ()
    # Not counted as a run of ours.
    plan = decide(make_spec(parallelism=2), observed([], [run(5, "Running", owner_uid="old-uid")]), NOW)
    assert plan.of(AskTrials) == [AskTrials(2)]


# ----------------------------------------------------------------------------- announcements


def test_finished_trials_are_announced_once_in_the_seed_words() -> None:
    trials = [
        trial(0, "COMPLETE", values=(0.7889856589698055,), completed=NOW - dt.timedelta(seconds=30)),
        trial(
            1,
            "COMPLETE",
            values=(0.7927780672090986,),
            completed=NOW - dt.timedelta(seconds=20),
            params={"x": 2.686331417509812e-06, "n": 1},
        ),
        trial(2, "PRUNED", completed=NOW - dt.timedelta(seconds=10), last_step=300, last_intermediate=0.61),
        trial(3, "FAIL", fail_reason="CUDA out of memory", completed=NOW - dt.timedelta(seconds=5)),
    ]
    study = StudyView(STUDY, ("maximize",), 0, Announced().add([0]))
    plan = decide(make_spec(total=10, maxFailed=5), observed(trials, study=study), NOW)
    events = plan.of(PostEvent)
    assert [(e.type, e.reason) for e in events] == [
        ("Normal", "TrialCompleted"),
        ("Normal", "TrialPruned"),
        ("Warning", "TrialFailed"),
    ]
    assert events[0].message == (
        "Trial 1 finished with value 0.7928 and parameters {'x': 2.686e-06, 'n': 1}. "
        "Best is trial 1 with value 0.7928."
    )
    assert events[1].message.startswith("Trial 2 pruned at step 300 with value 0.6100")
    assert events[2].message.startswith("Trial 3 failed: CUDA out of memory")
    (record,) = plan.of(RecordAnnounced)
    assert record.announced == Announced(4) and record.states == ("COMPLETE", "PRUNED", "FAIL")
    # Recorded: nothing more to announce.
    study = replace(study, announced=record.announced)
    assert decide(make_spec(total=10, maxFailed=5), observed(trials, study=study), NOW).of(PostEvent) == []


def test_best_so_far_follows_the_order_trials_finished() -> None:
    trials = [
        trial(0, "COMPLETE", values=(0.9,), completed=NOW - dt.timedelta(seconds=1)),
        trial(1, "COMPLETE", values=(0.5,), completed=NOW - dt.timedelta(seconds=9)),
    ]
    plan = decide(make_spec(total=10), observed(trials, announce_all=False), NOW)
    messages = [e.message for e in plan.of(PostEvent)]
    assert messages[0].startswith("Trial 1 finished") and messages[0].endswith(
        "Best is trial 1 with value 0.5000."
    )
    assert messages[1].startswith("Trial 0 finished") and messages[1].endswith(
        "Best is trial 0 with value 0.9000."
    )


def test_best_so_far_is_the_first_to_reach_the_value_in_every_event_and_the_status() -> None:
    # Trials 2 and 1 reach 0.9 (2 first), then trial 0 finishes with less. Every Event and the status
    # name trial 2: the first to reach the best value, not the lowest number among equals, whether the
    # trials are announced in one plan or over several.
    t2 = trial(2, "COMPLETE", values=(0.9,), completed=NOW - dt.timedelta(seconds=30))
    t1 = trial(1, "COMPLETE", values=(0.9,), completed=NOW - dt.timedelta(seconds=20))
    t0 = trial(0, "COMPLETE", values=(0.5,), completed=NOW - dt.timedelta(seconds=10))
    spec = make_spec(total=10)
    first = decide(spec, observed([t1, t2], announce_all=False), NOW)
    assert [e.message.split(". Best is ")[1] for e in first.of(PostEvent)] == [
        "trial 2 with value 0.9000.",
        "trial 2 with value 0.9000.",
    ]
    assert first.assessment.best == (2, 0.9)
    study = StudyView(STUDY, ("maximize",), 0, first.of(RecordAnnounced)[0].announced)
    later = decide(spec, observed([t0, t1, t2], study=study), NOW)
    (event,) = later.of(PostEvent)
    assert event.message.startswith("Trial 0 finished") and event.message.endswith(
        "Best is trial 2 with value 0.9000."
    )
    assert later.assessment.best == (2, 0.9) and "Best is trial 2" in later.assessment.message
    at_once = decide(spec, observed([t0, t1, t2], announce_all=False), NOW)
    assert [e.message[-34:] for e in at_once.of(PostEvent)] == [event.message[-34:]] * 3


def test_a_large_backlog_announces_the_most_recent_trials_only() -> None:
    n = MAX_ANNOUNCEMENTS + 20
    trials = [
        trial(i, "COMPLETE", values=(float(i),), completed=NOW - dt.timedelta(seconds=n - i))
        for i in range(n)
    ]
    plan = decide(make_spec(total=n + 1), observed(trials, announce_all=False), NOW)
    events = [e for e in plan.of(PostEvent) if e.reason == "TrialCompleted"]
    assert len(events) == MAX_ANNOUNCEMENTS and events[0].message.startswith("Trial 20 finished")
    assert plan.of(RecordAnnounced)[0].announced == Announced(n)


def test_multi_objective_announcements_list_the_values() -> None:
    raw = _raw(make_spec(total=3))
    raw["objective"] = [{"metric": "a"}, {"metric": "b", "direction": "minimize"}]
    spec = parse_spec(raw)
    trials = [trial(0, "COMPLETE", values=(0.8, 12.0))]
    study = StudyView(STUDY, ("maximize", "minimize"))
    (event,) = [e for e in decide(spec, observed(trials, study=study), NOW).of(PostEvent)]
    assert event.message.startswith("Trial 0 finished with values [0.8000, 12.0000] and parameters")


def test_announced_set_compacts() -> None:
    a = Announced().add([0, 1, 3])
    assert a == Announced(2, frozenset({3}))
    assert 1 in a and 3 in a and 2 not in a
    assert a.add([2]) == Announced(4)
    assert Announced.from_json(a.to_json()) == a
    assert Announced.from_json(None) == Announced()


# ---------------------------------------------------------------------------------- idempotency


def test_deciding_twice_on_the_same_observation_gives_the_same_plan() -> None:
    trials = [trial(0, "COMPLETE"), trial(1), trial(2, launched=-1), trial(3, "FAIL", fail_reason="x")]
    obs = observed(trials, [run(1, "Failed", exit_code=1)], announce_all=False)
    spec = make_spec(total=8, parallelism=3, maxFailed=4)
    assert decide(spec, obs, NOW) == decide(spec, obs, NOW)


# ---------------------------------------------------------------------- the simulated world


class World:
    """Optuna in-memory storage plus runs as records: ``apply`` carries out a plan like the shell does."""

    def __init__(self, spec: StudySpec, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.storage = optuna.storages.InMemoryStorage()
        self.study: optuna.Study | None = None
        self.runs: dict[str, RunView] = {}
        self.created: list[str] = []
        self.max_active = 0
        self.half_asks = 0
        self.phase: str | None = None  # status.phase, as the shell writes it after each plan

    # observation: runs first, then storage
    def observe(self) -> Observed:
        runs = tuple(self.runs.values())
        if self.study is None:
            return Observed(NAME, STUDY, UID, None, (), runs, self.phase)
        sid = self.study._study_id
        trials = tuple(trial_view(t) for t in self.storage.get_all_trials(sid, deepcopy=False))
        view = study_view(
            STUDY, self.storage.get_study_directions(sid), self.storage.get_study_system_attrs(sid)
        )
        return Observed(NAME, STUDY, UID, view, trials, runs, self.phase)

    def trial_id(self, number: int) -> int:
        assert self.study is not None
        return self.storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)

    def apply(self, plan: Plan, cut: int | None = None) -> None:
        for i, action in enumerate(plan.actions):
            if cut is not None and i >= cut:
                if isinstance(action, AskTrials) and self.study is not None and self.rng.random() < 0.5:
                    # Died inside ask: the trial exists, RUNNING, with only its first parameter stored.
                    self.half_asks += 1
                    t = optuna.Trial(self.study, self.storage.create_new_trial(self.study._study_id))
                    t._suggest("x", ss.distributions(self.spec)["x"])
                return  # the operator died here
            self.apply_one(action)

    def apply_one(self, action: Any) -> None:
        spec = self.spec
        if isinstance(action, CreateStudy):
            self.study = optuna.create_study(
                study_name=action.study_name,
                storage=self.storage,
                directions=list(action.directions),
                sampler=ss.build_sampler(spec),
                load_if_exists=True,
            )
        elif isinstance(action, Enqueue):
            assert self.study is not None
            for p in action.params:
                self.study.enqueue_trial(dict(p), skip_if_exists=True)
            self.storage.set_study_system_attr(
                self.study._study_id, ATTR_ENQUEUED, action.start + len(action.params)
            )
        elif isinstance(action, AskTrials):
            assert self.study is not None
            for _ in range(action.count):
                t = self.study.ask(ss.distributions(spec))
                self.launch(t.number, 0)
        elif isinstance(action, LaunchRun):
            self.storage.set_trial_user_attr(self.trial_id(action.trial), "hpo:attempts", action.attempt + 1)
            self.launch(action.trial, action.attempt)
        elif isinstance(action, MarkLaunched):
            self.storage.set_trial_system_attr(self.trial_id(action.trial), ATTR_LAUNCHED, action.attempt)
        elif isinstance(action, FinishAsk):
            assert self.study is not None
            t = optuna.Trial(self.study, self.trial_id(action.trial))
            for name, d in ss.distributions(spec).items():
                t._suggest(name, d)
        elif isinstance(action, FailTrial):
            assert self.study is not None
            tid = self.trial_id(action.trial)
            if not self.storage.get_trial(tid).state.is_finished():
                self.storage.set_trial_user_attr(tid, "hpo:fail_reason", action.reason)
                self.storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
        elif isinstance(action, DeleteRun):
            self.runs.pop(action.name, None)
        elif isinstance(action, RecordAnnounced):
            assert self.study is not None
            self.storage.set_study_system_attr(
                self.study._study_id, ATTR_ANNOUNCED, action.announced.to_json()
            )

    def launch(self, number: int, attempt: int) -> None:
        name = names.pod_name(NAME, number, attempt)
        if name not in self.runs:  # a 409 is success
            self.runs[name] = RunView(name, number, attempt, "Pending", owner_uid=UID)
            self.created.append(name)
        self.storage.set_trial_system_attr(self.trial_id(number), ATTR_LAUNCHED, attempt)

    def step_runs(self) -> None:
        """Runs make progress: start, then succeed (telling a value), fail, or crash without telling."""
        for name, r in list(self.runs.items()):
            if r.phase == "Pending":
                self.runs[name] = replace(r, phase="Running")
            elif r.phase == "Running" and self.rng.random() < 0.6:
                tid = self.trial_id(r.trial)
                roll = self.rng.random()
                if roll < 0.7:
                    ft = self.storage.get_trial(tid)
                    if not ft.state.is_finished():
                        self.storage.set_trial_state_values(
                            tid, optuna.trial.TrialState.COMPLETE, [ft.params["x"] ** 2]
                        )
                    self.runs[name] = replace(r, phase="Succeeded", exit_code=0)
                elif roll < 0.8:
                    ft = self.storage.get_trial(tid)
                    if not ft.state.is_finished():
                        self.storage.set_trial_user_attr(tid, "hpo:fail_reason", "recipe error")
                        self.storage.set_trial_state_values(tid, optuna.trial.TrialState.FAIL)
                    self.runs[name] = replace(r, phase="Failed", exit_code=1)
                elif roll < 0.9:
                    self.runs[name] = replace(r, phase="Failed", exit_code=137, reason="OOMKilled")
                else:
                    del self.runs[name]  # evicted and gone


half_asked: list[int] = []


@pytest.mark.parametrize("seed", range(12))
def test_simulated_study_keeps_every_promise_through_crashes(seed: int) -> None:
    raw = _raw(make_spec(total=12, parallelism=3, maxFailed=100, retries=1))
    raw["enqueue"] = [{"x": 0.25, "n": 3}]
    spec = parse_spec(raw)
    world = World(spec, seed)
    rng = random.Random(seed)
    for _ in range(400):
        obs = world.observe()
        plan = decide(spec, obs, NOW)
        if plan.assessment.terminal and not plan.actions:
            break
        # Cut plans short at random, as a SIGKILL would.
        cut = rng.randrange(len(plan.actions) + 1) if plan.actions and rng.random() < 0.3 else None
        world.apply(plan, cut)
        if cut is None:
            world.phase = plan.assessment.phase
        active = [r for r in world.runs.values() if r.active]
        world.max_active = max(world.max_active, len(active))
        assert len(active) <= spec.trials.parallelism
        world.step_runs()
    else:
        pytest.fail("the study never finished")

    assert world.study is not None
    trials = world.study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(spec.trials.total))  # exactly the budget, no duplicates, no gaps
    assert all(t.state.is_finished() for t in trials)
    assert trials[0].params == {"x": 0.25, "n": 3}  # the enqueued set is the first trial
    assert len(world.created) == len(set(world.created))  # no run was created twice
    assert world.max_active >= 2
    half_asked.append(world.half_asks)
    final = decide(spec, world.observe(), NOW)
    assert final.assessment.phase == (
        "Succeeded" if any(t.state.name == "COMPLETE" for t in trials) else "Failed"
    )
    # Each failed attempt that was not the last got exactly one retry run with the same parameters.
    for t in trials:
        attempts = t.user_attrs.get("hpo:attempts", 1)
        assert attempts <= spec.trials.retries + 1


def test_the_simulation_cut_some_asks_in_half() -> None:
    assert len(half_asked) == 12 and sum(half_asked) > 0


def test_simulated_crash_between_ask_and_pod_creation_neither_loses_nor_duplicates() -> None:
    spec = make_spec(total=2, parallelism=2, retries=0)
    world = World(spec, 0)
    world.apply(decide(spec, world.observe(), NOW))  # create study, ask 2 (pods created)
    # A crash right after ask: forget one pod and its launched mark, as if creation never happened.
    lost = names.pod_name(NAME, 1, 0)
    del world.runs[lost]
    world.created.remove(lost)
    world.storage.set_trial_system_attr(world.trial_id(1), ATTR_LAUNCHED, -1)
    plan = decide(spec, world.observe(), NOW)
    assert plan.of(AskTrials) == []
    assert plan.of(LaunchRun) == [LaunchRun(1, 0, dict(world.study.trials[1].params), "created")]  # type: ignore[union-attr]
    world.apply(plan)
    assert lost in world.runs and len(world.study.trials) == 2  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- observations


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "demo-trial-3-r1",
            "labels": names.pod_labels(NAME, 3, 1),
            "ownerReferences": [{"kind": "HPOStudy", "uid": UID, "controller": True}],
            "creationTimestamp": "2025-01-02T11:59:00Z",
        },
        "status": {"phase": phase, **status},
    }


def test_run_view_reads_a_pod() -> None:
    from hpo_operator.core.observe import run_view

    r = run_view(pod("Running"))
    assert r is not None
    assert (r.name, r.trial, r.attempt, r.phase, r.owner_uid) == ("demo-trial-3-r1", 3, 1, "Running", UID)
    assert r.active and not r.deleting and r.created == NOW - dt.timedelta(minutes=1)


def test_run_view_reads_how_a_pod_failed() -> None:
    from hpo_operator.core.observe import run_view

    failed = pod(
        "Failed",
        containerStatuses=[
            {
                "name": "trial",
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "a\nb\nKilled"}},
            }
        ],
    )
    r = run_view(failed)
    assert r is not None and (r.exit_code, r.reason) == (137, "OOMKilled")
    assert r.describe_failure() == "pod demo-trial-3-r1 failed (exit code 137, OOMKilled): a | b | Killed"
    evicted = run_view(pod("Failed", reason="Evicted", message="The node was low on resource: memory."))
    assert evicted is not None and evicted.describe_failure() == (
        "pod demo-trial-3-r1 failed (Evicted): The node was low on resource: memory."
    )
    stopped = run_view(
        pod("Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 143, "reason": "Error"}}}])
    )
    assert stopped is not None and stopped.describe_failure() == (
        "pod demo-trial-3-r1 failed (exit code 143, SIGTERM: stopped, e.g. its pod was deleted or preempted)"
    )


def test_run_view_says_why_a_pod_is_pending() -> None:
    from hpo_operator.core.observe import run_view

    unschedulable = pod(
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    r = run_view(unschedulable)
    assert r is not None and r.reason == "Unschedulable" and "nvidia.com/gpu" in (r.message or "")
    plan = decide(make_spec(parallelism=1), observed([trial(3, attempt=1)], [r], previous_phase=None), NOW)
    assert plan.assessment.phase == "Pending"
    assert "Insufficient nvidia.com/gpu" in plan.assessment.message
    image = pod(
        "Pending", containerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull", "message": "no"}}}]
    )
    r = run_view(image)
    assert r is not None and r.reason == "ErrImagePull"


def test_run_view_ignores_other_pods_and_sees_deletion() -> None:
    from hpo_operator.core.observe import run_view

    assert run_view({"metadata": {"name": "x", "labels": {}}, "status": {}}) is None
    deleting = pod("Running")
    deleting["metadata"]["deletionTimestamp"] = "2025-01-02T12:00:00Z"
    r = run_view(deleting)
    assert r is not None and r.deleting
    unknown = run_view(pod("Unknown"))
    assert unknown is not None and unknown.phase == "Running" and unknown.active


def test_run_view_reads_what_tells_a_stuck_run() -> None:
    from hpo_operator.core.observe import run_view

    pulling = pod(
        "Pending",
        startTime="2025-01-02T11:59:30Z",
        containerStatuses=[{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off"}}}],
    )
    r = run_view(pulling)
    half_a_minute_ago = NOW - dt.timedelta(seconds=30)
    assert r is not None and (r.waiting_reason, r.waiting_since) == ("ImagePullBackOff", half_a_minute_ago)
    assert r.stuck(NOW) is None
    assert r.stuck(NOW + IMAGE_PULL_GRACE) == "image pull failed: ImagePullBackOff for 5m: Back-off"
    # An init container that cannot be pulled keeps the pod pending as well; no startTime: its creation.
    init = pod("Pending", initContainerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull"}}}])
    r = run_view(init)
    assert r is not None and (r.waiting_reason, r.waiting_since) == ("ErrImagePull", NOW - MINUTE)
    creating = pod("Pending", containerStatuses=[{"state": {"waiting": {"reason": "ContainerCreating"}}}])
    r = run_view(creating)
    assert r is not None and r.waiting_reason is None and r.stuck(NOW + 60 * MINUTE) is None

    terminating = pod("Running")
    terminating["metadata"]["deletionTimestamp"] = "2025-01-02T11:50:00Z"
    r = run_view(terminating)
    assert r is not None and r.deleting and r.deletion_deadline == NOW - 10 * MINUTE
    assert r.stuck(NOW) == "stuck terminating 10m past its grace period (its node may be lost)"

    unknown = pod(
        "Unknown",
        conditions=[{"type": "Ready", "status": "False", "lastTransitionTime": "2025-01-02T11:45:00Z"}],
    )
    r = run_view(unknown)
    assert r is not None and r.phase == "Running" and r.unknown_since == NOW - 15 * MINUTE
    assert r.stuck(NOW) == "its node stopped reporting its state 15m ago"
    # A finished pod is never stuck, whatever its metadata says.
    assert replace(r, phase="Failed").stuck(NOW) is None


def test_trial_view_reads_a_stored_trial() -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    t.report(0.3, 5)
    t.set_user_attr("hpo:attempts", 2)
    study._storage.set_trial_system_attr(t._trial_id, ATTR_LAUNCHED, 1)
    running = trial_view(study.trials[0])
    assert (running.state, running.attempt, running.launched) == ("RUNNING", 1, 1)
    assert (running.last_step, running.last_intermediate) == (5, 0.3)
    assert running.started is not None and running.started.tzinfo is not None
    t.set_user_attr("hpo:fail_reason", "boom")
    study.tell(t, state=optuna.trial.TrialState.FAIL)
    failed = trial_view(study.trials[0])
    assert (failed.state, failed.fail_reason, failed.values) == ("FAIL", "boom", None)
    assert failed.finished and failed.completed is not None


def test_running_trials_whose_pods_wait_are_told_apart() -> None:
    """Two trials train, two wait for a GPU: the message says so, not "4 running"."""
    why = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    trials = [trial(0, "COMPLETE"), *(trial(n) for n in (1, 2, 3, 4))]
    runs = [
        run(0, "Succeeded"),
        run(1),
        run(2),
        run(3, "Pending", reason="Unschedulable", message=why),
        run(4, "Pending", reason="Unschedulable", message=why),
    ]
    plan = decide(make_spec(parallelism=4), observed(trials, runs), NOW)
    assert plan.assessment.phase == "Running"
    message = plan.assessment.message
    assert ", 2 running, 2 waiting to start: demo-trial-3 is pending (Unschedulable: 0/1 nodes" in message, (
        message
    )
    assert plan.assessment.counts.running == 4  # Optuna's count of RUNNING trials is unchanged
    # Once they are scheduled, all four run.
    runs = [run(0, "Succeeded"), *(run(n) for n in (1, 2, 3, 4))]
    assert ", 4 running." in decide(make_spec(parallelism=4), observed(trials, runs), NOW).assessment.message


def test_a_deleted_study_fails_its_running_trials_and_only_then() -> None:
    from hpo_operator.core.reconcile import abandoned, being_deleted

    trials = [trial(0, "COMPLETE"), trial(1), trial(2, "FAIL", fail_reason="x"), trial(3)]
    assert abandoned(trials) == (
        FailTrial(1, "stopped: the HPOStudy was deleted"),
        FailTrial(3, "stopped: the HPOStudy was deleted"),
    )
    meta = {"uid": UID, "name": NAME, "namespace": "ns"}
    assert being_deleted(None, UID)  # gone
    assert being_deleted({"metadata": {**meta, "uid": "another"}}, UID)  # a new namesake
    assert being_deleted({"metadata": {**meta, "deletionTimestamp": "2025-01-02T12:00:00Z"}}, UID)
    assert not being_deleted({"metadata": meta}, UID)  # the operator is stopping


# ----------------------------------------------------------------------------------- suspension


def suspended_spec(on_suspend: str = "Finish", **trials: Any) -> StudySpec:
    raw = _raw(make_spec(**trials))
    raw.update(suspend=True, onSuspend=on_suspend)
    return parse_spec(raw)


def test_a_suspended_study_asks_nothing_and_starts_no_run() -> None:
    spec = suspended_spec(parallelism=3, retries=1, maxFailed=5)
    # A new study is created (a storage record, no pod) but nothing is asked.
    plan = decide(spec, observed(study=None, previous_phase=None), NOW)
    assert plan.of(AskTrials) == [] and plan.of(LaunchRun) == []
    assert plan.assessment.phase == "Suspended" and plan.assessment.reason == "Suspended"
    assert "no trial is asked or started" in plan.assessment.message
    # Running trials finish (Finish, the default): their runs are left alone; a failed run is not
    # retried and a lost run is not recreated while suspended, nor is the free slot filled.
    failed = run(1, "Failed", exit_code=1, message="boom")
    trials = [trial(0), trial(1), trial(2, launched=-1), trial(3, "COMPLETE")]
    plan = decide(spec, observed(trials, [run(0), failed]), NOW)
    assert plan.of(LaunchRun) == [] and plan.of(AskTrials) == [] and plan.of(DeleteRun) == []
    assert plan.of(PostEvent)[-1].reason == "StudySuspended"
    assert "3 running trial(s) finishing" in plan.assessment.message
    assert plan.assessment.phase == "Suspended"
    # Resumed: the same trials get their runs back (the retry, the lost run) and the free slot is asked.
    resumed = make_spec(parallelism=3, retries=1, maxFailed=5)
    plan = decide(resumed, observed(trials, [run(0), failed], previous_phase="Suspended"), NOW)
    assert [(launch.trial, launch.attempt) for launch in plan.of(LaunchRun)] == [(1, 1), (2, 0)]
    assert plan.assessment.phase == "Running"
    assert any(e.reason == "StudyResumed" for e in plan.of(PostEvent))


def test_a_suspended_study_with_on_suspend_stop_stops_its_runs_to_run_them_again_on_resume() -> None:
    spec = suspended_spec("Stop", parallelism=2, retries=0)
    trials = [trial(0), trial(1, attempt=1, launched=1)]
    runs = [run(0), run(1, attempt=1)]
    plan = decide(spec, observed(trials, runs), NOW)
    # The launch record is withdrawn before the run is deleted, so the trial is not taken for lost.
    assert kinds(plan)[:4] == ["MarkLaunched", "MarkLaunched", "DeleteRun", "DeleteRun"]
    assert plan.of(MarkLaunched) == [MarkLaunched(0, -1), MarkLaunched(1, 0)]
    assert {d.name for d in plan.of(DeleteRun)} == {runs[0].name, runs[1].name}
    assert plan.of(FailTrial) == [] and plan.of(LaunchRun) == [] and plan.of(AskTrials) == []
    assert "2 running trial(s) stopped, to run again on resume" in plan.assessment.message
    # While the runs go (deleting) and once gone, nothing is marked, launched or failed.
    withdrawn = [trial(0, launched=-1), trial(1, attempt=1, launched=0)]
    going = [replace(r, deleting=True) for r in runs]
    # A deleted pod may still be seen Failed with SIGTERM's exit code before it is gone (a slow node).
    killed = [replace(r, deleting=True, phase="Failed", exit_code=143) for r in runs]
    for now_runs in (going, killed, []):
        plan = decide(spec, observed(withdrawn, now_runs, previous_phase="Suspended"), NOW)
        assert plan.of(MarkLaunched) == [] and plan.of(LaunchRun) == [] and plan.of(FailTrial) == []
        assert plan.assessment.phase == "Suspended"
    # Resumed: each trial runs again as the same attempt (no retry spent), the same parameters.
    resumed = make_spec(parallelism=2, retries=0)
    plan = decide(resumed, observed(withdrawn, [], previous_phase="Suspended"), NOW)
    assert [(launch.trial, launch.attempt) for launch in plan.of(LaunchRun)] == [(0, 0), (1, 1)]
    assert plan.of(FailTrial) == [] and plan.of(AskTrials) == []


def test_a_suspended_study_that_is_done_succeeds_and_one_that_fails_fails() -> None:
    spec = suspended_spec(total=2)
    plan = decide(spec, observed([trial(0, "COMPLETE"), trial(1, "COMPLETE")]), NOW)
    assert plan.assessment.phase == "Succeeded"
    failed = [trial(0, "FAIL", fail_reason="x"), trial(1, "FAIL", fail_reason="y"), trial(2)]
    plan = decide(suspended_spec(maxFailed=1), observed(failed, [run(2)]), NOW)
    assert plan.assessment.phase == "Failed" and plan.assessment.reason == "TooManyFailedTrials"
