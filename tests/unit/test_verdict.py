"""What the user is told (core/verdict.py): each rule of the "once" kind is derived from the status as
last written, so it holds across an operator restart, which keeps nothing but the status."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hpo_operator.core import names, verdict
from hpo_operator.core.observe import Announced, Observed, StudyView, TrialView
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.plan import PostEvent
from hpo_operator.core.reconcile import decide
from hpo_operator.core.spec import SpecError, StudySpec

NOW = dt.datetime(2025, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=5)
STUDY = names.optuna_study_name("ns", "demo", "uid")


def make_spec(**trials: Any) -> StudySpec:
    return parse_spec(
        {
            "objective": [{"metric": "score"}],
            "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
            "trials": {"total": 3, "parallelism": 1, **trials},
            "template": {"image": "img", "command": ["python", "o.py"]},
        }
    )


def written(status: dict[str, Any] | None, before: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status once a patch is merged (what the API server keeps, and a new operator reads)."""
    return {**(before or {}), **(status or {})}


def reasons(report: verdict.Report) -> list[str]:
    return [e.reason for e in report.events]


def cond(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or () if c["type"] == kind), None)


def complete(number: int, value: float) -> TrialView:
    return TrialView(
        number,
        "COMPLETE",
        {"x": value},
        (value,),
        launched=0,
        started=NOW - dt.timedelta(minutes=2),
        completed=NOW - dt.timedelta(minutes=1),
    )


def running(number: int) -> TrialView:
    return TrialView(number, "RUNNING", {"x": 0.5}, launched=0, started=NOW)


def observation(
    spec: StudySpec, trials: list[TrialView], previous: dict[str, Any], stored: tuple[str, ...] | None = None
) -> Observed:
    study = StudyView(
        STUDY, stored or spec.directions, 0, Announced().add(t.number for t in trials if t.finished)
    )
    return Observed(
        "demo",
        STUDY,
        "uid",
        study,
        tuple(trials),
        (),
        verdict.previous_phase(previous),
        verdict.previous_refusal(previous),
    )


# ------------------------------------------------------------------------------------ invalid spec


def test_an_invalid_spec_is_reported_once_per_generation_even_across_a_restart() -> None:
    error = SpecError.at("spec.trials.total", "5 trials but the grid has only 3 points")
    first = verdict.spec_refused(error, generation=2, previous={}, now=NOW)
    assert first.kind == "invalid" and first.phase == "Failed" and first.error is error
    assert first.status is not None and first.status["phase"] == "Failed"
    assert cond(first.status, "SpecValid") == {
        "type": "SpecValid",
        "status": "False",
        "reason": "InvalidSpec",
        "message": "spec.trials.total: 5 trials but the grid has only 3 points",
        "lastTransitionTime": "2025-01-02T12:00:00Z",
        "observedGeneration": 2,
    }
    assert first.events == (
        PostEvent(
            "Warning",
            "InvalidSpec",
            "invalid spec: spec.trials.total: 5 trials but the grid has only 3 points",
        ),
    )
    assert first.log == (
        ("warning", "invalid spec: spec.trials.total: 5 trials but the grid has only 3 points"),
    )

    # The next reconcile, or a new operator process reading the status back: nothing more to tell.
    status = written(first.status)
    again = verdict.spec_refused(error, generation=2, previous=status, now=LATER)
    assert again.kind == "invalid" and again.phase == "Failed"
    assert again.status is None and again.events == () and again.log == ()
    # The same holds for another refusal of the same generation (a LimitRange refusing each new pod).
    other = SpecError.at("spec.template", "the API server refused a trial pod: pods 'x' is forbidden")
    assert verdict.spec_refused(other, generation=2, previous=status, now=LATER).events == ()

    # A new generation that is still invalid is reported again.
    edited = verdict.spec_refused(error, generation=3, previous=status, now=LATER)
    assert reasons(edited) == ["InvalidSpec"] and edited.status is not None
    assert edited.status["observedGeneration"] == 3
    # The condition's transition time stays: it was False before.
    assert cond(edited.status, "SpecValid")["lastTransitionTime"] == "2025-01-02T12:00:00Z"  # type: ignore[index]


def test_a_spec_refused_after_it_ran_is_reported_even_in_the_same_generation() -> None:
    spec = make_spec()
    running_status = verdict.reconciled(
        spec,
        observation(spec, [running(0)], {}),
        decide(spec, observation(spec, [running(0)], {}), NOW),
        quota=None,
        generation=4,
        previous={},
        now=NOW,
    ).status
    assert running_status is not None and cond(running_status, "SpecValid")["status"] == "True"  # type: ignore[index]
    # The user's Secret took the storage Secret's name: SpecValid was True at this generation.
    error = verdict.secret_taken("Secret ns/demo-storage exists and is not this HPOStudy's")
    report = verdict.spec_refused(error, generation=4, previous=written(running_status), now=LATER)
    assert reasons(report) == ["InvalidSpec"]
    assert cond(report.status or {}, "SpecValid")["message"].startswith(
        "spec.storage: Secret ns/demo-storage"
    )  # type: ignore[index]


def test_the_api_servers_refusals_name_the_template() -> None:
    assert (
        str(verdict.pod_refused("bad", dry_run=True))
        == "spec.template: the trial pod it makes is invalid: bad"
    )
    assert (
        str(verdict.pod_refused("cpu", dry_run=False))
        == "spec.template: the API server refused a trial pod: cpu"
    )


def test_a_fixed_spec_runs_again_and_a_refusal_the_status_shows_is_not_announced_again() -> None:
    invalid = written(
        verdict.spec_refused(SpecError.at("spec.x", "bad"), generation=1, previous={}, now=NOW).status
    )
    # The spec passes now: the earlier Failed does not count, a terminal phase is announced anew.
    assert verdict.previous_phase(invalid) is None
    assert verdict.previous_phase({"phase": "Running"}) == "Running"
    assert verdict.previous_phase({}) is None

    # decide's own refusal (the stored study's directions) shows in the status: not posted twice.
    spec = make_spec()
    flipped = parse_spec(
        {
            **spec.model_dump(by_alias=True, exclude_none=True),
            "objective": [{"metric": "score", "direction": "minimize"}],
        }
    )
    obs = observation(flipped, [complete(0, 0.5)], {}, ("maximize",))
    first = decide(flipped, obs, NOW)
    assert first.assessment.reason == "InvalidSpec"
    assert [e.reason for e in first.of(PostEvent)] == ["StudyFailed"]
    status = written(
        verdict.reconciled(flipped, obs, first, quota=None, generation=2, previous={}, now=NOW).status
    )
    assert verdict.previous_refusal(status) == f"spec.objective: {first.assessment.message}"
    # After a restart: the status is all that is known; the same refusal is not news.
    again = decide(flipped, observation(flipped, [complete(0, 0.5)], status, ("maximize",)), LATER)
    assert again.assessment.reason == "InvalidSpec" and again.of(PostEvent) == []


def test_a_finished_study_is_left_as_it_is_when_the_configuration_lacks_what_it_would_need() -> None:
    spec = parse_spec(
        {
            "objective": [{"metric": "score"}],
            "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
            "template": {"command": ["python", "o.py"]},
        }
    )
    done = {
        "phase": "Succeeded",
        "observedGeneration": 1,
        "conditions": [{"type": "SpecValid", "status": "True"}],
    }
    check = verdict.check_spec(spec, default_image=None, default_storage=True, previous=done, generation=1)
    assert check.left and str(check.error).startswith("spec.template.image: required")
    left = verdict.left_as_is(check.error, done)  # type: ignore[arg-type]
    assert left.kind == "left" and left.terminal and left.phase == "Succeeded" and left.status is None
    assert left.log[0][1].startswith(
        "Succeeded with this spec, left as it is (the operator could not run it: "
    )
    # Its spec changed (a new generation): judged in full.
    assert not verdict.check_spec(
        spec, default_image=None, default_storage=True, previous=done, generation=2
    ).left
    # Not finished: judged in full.
    assert not verdict.check_spec(
        spec, default_image=None, default_storage=True, previous={**done, "phase": "Running"}, generation=1
    ).left
    assert (
        verdict.check_spec(spec, default_image="img", default_storage=True, previous={}, generation=1).error
        is None
    )


# ----------------------------------------------------------------------------------------- storage


def test_the_storage_back_off_doubles_up_to_a_minute() -> None:
    assert [verdict.backoff(n) for n in range(1, 8)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]


def test_a_storage_outage_is_told_once_and_its_end_too_even_across_a_restart() -> None:
    spec = make_spec()
    first = verdict.waiting(
        "connection refused", failures=1, storage=True, generation=1, previous={}, now=NOW
    )
    assert first.kind == "waiting" and first.retry_in == 5.0 and first.message == "connection refused"
    assert first.events == (
        PostEvent("Warning", "StorageUnavailable", "waiting for the storage: connection refused"),
    )
    assert first.log == (("warning", "connection refused; retrying in 5s"),)
    assert first.status is not None and first.status["phase"] == "Pending"  # a new study: not blank
    ready = cond(first.status, "StorageReady")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "StorageUnavailable"
    assert ready["message"] == "waiting for the storage: connection refused; retrying in 5s"

    # Still down (the next try, or a new operator reading the status): the condition, no second Event.
    down = written(first.status)
    second = verdict.waiting(
        "connection refused", failures=2, storage=True, generation=1, previous=down, now=LATER
    )
    assert second.events == () and second.retry_in == 10.0
    assert cond(second.status or {}, "StorageReady")["message"].endswith("retrying in 10s")  # type: ignore[index]

    # It answers again: StorageReady=True, and an Event saying so, once.
    obs = observation(spec, [running(0)], down)
    plan = decide(spec, obs, LATER)
    back = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous=down, now=LATER)
    assert PostEvent("Normal", "StorageReady", "the storage answers again") in back.events
    assert cond(back.status or {}, "StorageReady")["status"] == "True"  # type: ignore[index]
    after = written(back.status, down)
    again = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous=after, now=LATER)
    assert "StorageReady" not in reasons(again)


def test_an_api_server_that_does_not_answer_is_only_logged() -> None:
    report = verdict.waiting(
        "cannot list the pods", failures=3, storage=False, generation=1, previous={}, now=NOW
    )
    assert report.status is None and report.events == () and report.retry_in == 20.0
    assert report.log == (("warning", "cannot list the pods; retrying in 20s"),)


# ------------------------------------------------------------------------------------------- quota


def test_a_quota_refusal_is_told_once_and_cleared_when_pods_fit() -> None:
    spec = make_spec(total=2, parallelism=2)
    obs = observation(spec, [running(0)], {})
    plan = decide(spec, obs, NOW)
    never = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous={}, now=NOW)
    assert never.status is not None and cond(never.status, "TrialPodsAdmitted") is None  # never held back

    quota = "exceeded quota: one-pod, requested: pods=1, used: pods=1, limited: pods=1"
    held = verdict.reconciled(spec, obs, plan, quota=quota, generation=1, previous={}, now=NOW)
    assert not held.terminal
    message = f"waiting for room in a ResourceQuota: {quota}"
    assert held.events == (PostEvent("Warning", "QuotaExceeded", f"a trial pod is {message}"),)
    assert held.log == (("warning", f"a trial pod is {message}"),)
    admitted = cond(held.status or {}, "TrialPodsAdmitted")
    assert admitted is not None and admitted["status"] == "False" and admitted["reason"] == "QuotaExceeded"
    assert admitted["message"] == message
    assert [c["type"] for c in (held.status or {})["conditions"]][-1] == "TrialPodsAdmitted"

    # Still held back (or a restarted operator): no second Event.
    status = written(held.status)
    still = verdict.reconciled(spec, obs, plan, quota=quota, generation=1, previous=status, now=LATER)
    assert still.events == () and still.log == ()

    # The pod fits: True again, once; then nothing changes.
    fits = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous=status, now=LATER)
    assert fits.events == ()
    ok = cond(fits.status or {}, "TrialPodsAdmitted")
    assert ok is not None and ok["status"] == "True" and ok["reason"] == "Admitted"
    after = written(fits.status, status)
    same = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous=after, now=LATER)
    assert cond(same.status or after, "TrialPodsAdmitted") == ok


def test_an_unchanged_status_is_not_written_again() -> None:
    spec = make_spec()
    obs = observation(spec, [running(0)], {})
    plan = decide(spec, obs, NOW)
    first = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous={}, now=NOW)
    assert first.status is not None
    again = verdict.reconciled(
        spec, obs, plan, quota=None, generation=1, previous=written(first.status), now=LATER
    )
    assert again.status is None and again.kind == "reconciled" and again.phase == first.phase


def test_a_spec_accepted_but_not_run_as_written_is_told_once_per_change() -> None:
    spec = parse_spec(
        {
            "objective": [{"metric": "score"}],
            "searchSpace": [
                {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
                {"name": "c", "type": "categorical", "choices": ["a", "b"]},
                {"name": "n", "type": "int", "low": 0, "high": 10, "step": 4},
            ],
            "trials": {"total": 3, "parallelism": 1},
            "sampler": {"type": "CMAES"},
            "template": {"image": "img", "command": ["python", "o.py"]},
        }
    )
    obs = observation(spec, [running(0)], {})
    plan = decide(spec, obs, NOW)
    first = verdict.reconciled(spec, obs, plan, quota=None, generation=1, previous={}, now=NOW)
    assert reasons(first) == ["RangeCut", "SamplerFallsBack"]
    assert first.events[0].type == "Warning"
    assert first.events[0].message.startswith("spec.searchSpace[2].step: the range [0, 10] of 'n'")
    assert first.events[1].message.startswith("spec.sampler.type: the CMAES sampler cannot sample")
    assert [line for _, line in first.log] == [e.message for e in first.events]
    # The same again, or after an operator restart (the status says it already): nothing new.
    again = verdict.reconciled(
        spec, obs, plan, quota=None, generation=1, previous=written(first.status), now=LATER
    )
    assert again.events == ()
