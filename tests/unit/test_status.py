"""The status: phase, counts, best trial, Pareto front, bounded recent trials, conditions."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import random
from typing import Any

from hpo_operator.core import names
from hpo_operator.core.best import pareto_front
from hpo_operator.core.observe import Announced, Observed, RunView, StudyView, TrialView
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.reconcile import decide
from hpo_operator.core.spec import SpecError, StudySpec
from hpo_operator.core.status import (
    PARETO_FRONT,
    RECENT_TRIALS,
    build_status,
    invalid_spec_status,
    storage_waiting_status,
)

NOW = dt.datetime(2025, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
STUDY = names.optuna_study_name("ns", "demo", "uid")


def make_spec(objectives: list[dict[str, str]] | None = None, total: int = 10) -> StudySpec:
    return parse_spec(
        {
            "objective": objectives or [{"metric": "score"}],
            "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
            "trials": {"total": total, "parallelism": 2, "maxFailed": 100},
            "template": {"image": "img", "command": ["python", "o.py"]},
        }
    )


def t(number: int, state: str = "COMPLETE", values: tuple[float, ...] | None = None, **kw: Any) -> TrialView:
    if state == "COMPLETE" and values is None:
        values = (float(number),)
    kw.setdefault("started", NOW - dt.timedelta(minutes=60 - number))
    if state in ("COMPLETE", "PRUNED", "FAIL"):
        kw.setdefault("completed", NOW - dt.timedelta(minutes=59 - number))
    return TrialView(number, state, {"x": number / 100}, values, launched=0, **kw)  # type: ignore[arg-type]


def status_for(
    spec: StudySpec, trials: list[TrialView], runs: list[RunView] = (), **kw: Any
) -> dict[str, Any]:  # type: ignore[assignment]
    study = StudyView(STUDY, spec.directions, 0, Announced().add(x.number for x in trials if x.finished))
    obs = Observed(
        "demo", STUDY, "uid", study, tuple(trials), tuple(runs), kw.pop("previous_phase", "Running")
    )
    plan = decide(spec, obs, NOW)
    return build_status(spec, obs, plan.assessment, generation=kw.pop("generation", 2), now=NOW, **kw)


def test_a_running_study_reports_counts_progress_and_the_best_trial() -> None:
    spec = make_spec(total=10)
    trials = [
        t(0, values=(0.5,)),
        t(1, values=(0.9,)),
        t(2, "PRUNED", last_step=3, last_intermediate=0.1),
        t(3, "FAIL", fail_reason="CUDA out of memory"),
        t(4, "RUNNING", values=None, last_step=7, last_intermediate=0.33),
        t(5, "WAITING", values=None, started=None),
    ]
    runs = [RunView("demo-trial-4", 4, 0, "Running", owner_uid="uid")]
    s = status_for(spec, trials, runs, generation=7)
    assert s["phase"] == "Running"
    assert s["observedGeneration"] == 7
    assert s["studyName"] == STUDY
    assert s["progress"] == "4/10"
    assert s["trials"] == {
        "total": 10,
        "started": 5,
        "running": 1,
        "complete": 2,
        "pruned": 1,
        "failed": 1,
        "waiting": 1,
    }
    assert s["bestValue"] == 0.9
    assert s["bestTrial"] == {"number": 1, "value": 0.9, "values": [0.9], "params": {"x": 0.01}}
    assert "Best is trial 1 with value 0.9000" in s["message"]
    rows = {r["number"]: r for r in s["recentTrials"]}
    assert sorted(rows) == [0, 1, 2, 3, 4]  # WAITING trials have not started
    assert rows[0] == {"number": 0, "state": "COMPLETE", "value": 0.5, "params": {"x": 0.0}}
    assert rows[2]["step"] == 3 and rows[2]["intermediateValue"] == 0.1
    assert rows[3]["reason"] == "CUDA out of memory"
    assert rows[4]["state"] == "RUNNING" and rows[4]["step"] == 7
    assert s["completionTime"] is None
    assert s["startTime"] == "2025-01-02T11:00:00Z"


def test_minimize_picks_the_lowest_value() -> None:
    spec = make_spec([{"metric": "loss", "direction": "minimize"}])
    s = status_for(spec, [t(0, values=(0.5,)), t(1, values=(0.2,)), t(2, values=(0.2,))])
    assert s["bestTrial"]["number"] == 1 and s["bestValue"] == 0.2


def test_after_a_refused_direction_change_the_best_trial_follows_the_stored_directions() -> None:
    spec = make_spec([{"metric": "loss", "direction": "maximize"}], total=2)  # the stored study minimizes
    trials = [t(0, values=(0.1666,)), t(1, values=(8.27e-05,))]
    study = StudyView(STUDY, ("minimize",), 0, Announced(2))
    obs = Observed("demo", STUDY, "uid", study, tuple(trials), (), "Succeeded")
    plan = decide(spec, obs, NOW)
    s = build_status(spec, obs, plan.assessment, generation=3, now=NOW)
    assert s["phase"] == "Failed" and plan.assessment.field == "spec.objective"
    assert s["bestTrial"]["number"] == 1 and s["bestValue"] == 8.27e-05


def test_no_best_before_a_trial_completes() -> None:
    s = status_for(make_spec(), [t(0, "RUNNING", values=None)], [RunView("demo-trial-0", 0, 0, "Pending")])
    assert s["phase"] == "Pending"
    assert s["bestTrial"] is None and s["bestValue"] is None


def test_conditions_say_why_and_keep_their_transition_time() -> None:
    spec = make_spec(total=2)
    done = [t(0, values=(0.5,)), t(1, values=(0.7,))]
    first = status_for(spec, done)
    conds = {c["type"]: c for c in first["conditions"]}
    assert [c["type"] for c in first["conditions"]] == ["SpecValid", "StorageReady", "Complete", "Failed"]
    assert conds["Complete"]["status"] == "True" and conds["Complete"]["reason"] == "AllTrialsFinished"
    assert conds["Failed"]["status"] == "False"
    assert conds["SpecValid"]["status"] == "True" and conds["StorageReady"]["status"] == "True"
    assert first["phase"] == "Succeeded" and first["completionTime"] == "2025-01-02T11:02:00Z"
    # Later, with the previous status: transition times stay.
    later = build_status(
        spec,
        Observed("demo", STUDY, "uid", StudyView(STUDY, ("maximize",)), tuple(done), (), "Succeeded"),
        decide(spec, Observed("demo", STUDY, "uid", None, tuple(done), (), "Succeeded"), NOW).assessment,
        generation=2,
        now=NOW + dt.timedelta(hours=1),
        previous=first,
    )
    assert [c["lastTransitionTime"] for c in later["conditions"]] == [
        c["lastTransitionTime"] for c in first["conditions"]
    ]


def test_a_failed_study_names_the_reason_and_the_field() -> None:
    spec = make_spec(total=10)
    raw = spec.model_dump(by_alias=True, exclude_none=True)
    raw["trials"]["maxFailed"] = 1
    spec = parse_spec(raw)
    s = status_for(spec, [t(0, "FAIL", fail_reason="a"), t(1, "FAIL", fail_reason="b")])
    assert s["phase"] == "Failed"
    failed = next(c for c in s["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "TooManyFailedTrials"
    assert failed["message"].startswith(
        "spec.trials.maxFailed: 2 trials failed, more than spec.trials.maxFailed (1)"
    )


def test_invalid_spec_status_names_the_field() -> None:
    error = SpecError.at("spec.searchSpace[1]", "the Grid sampler needs discrete values")
    s = invalid_spec_status(error, generation=3, now=NOW)
    assert s["phase"] == "Failed" and s["observedGeneration"] == 3
    conds = {c["type"]: c for c in s["conditions"]}
    assert conds["SpecValid"] == {
        "type": "SpecValid",
        "status": "False",
        "reason": "InvalidSpec",
        "message": "spec.searchSpace[1]: the Grid sampler needs discrete values",
        "lastTransitionTime": "2025-01-02T12:00:00Z",
        "observedGeneration": 3,
    }
    assert conds["Failed"]["status"] == "True"


def test_storage_waiting_changes_one_condition_only() -> None:
    before = status_for(make_spec(), [t(0)])
    s = storage_waiting_status("connection refused", retry_in=10, generation=2, now=NOW, previous=before)
    assert set(s) == {"conditions", "message"}
    conds = {c["type"]: c for c in s["conditions"]}
    assert (
        conds["StorageReady"]["status"] == "False" and conds["StorageReady"]["reason"] == "StorageUnavailable"
    )
    assert conds["StorageReady"]["message"] == "waiting for the storage: connection refused; retrying in 10s"
    assert conds["Complete"] == next(c for c in before["conditions"] if c["type"] == "Complete")


def test_a_new_study_waiting_for_its_storage_is_pending_not_blank() -> None:
    s = storage_waiting_status("connection refused", retry_in=5, generation=1, now=NOW, previous=None)
    assert s["phase"] == "Pending"  # `kubectl get hpostudies` shows a phase from the first reconcile
    assert s["conditions"][0]["type"] == "StorageReady" and s["conditions"][0]["status"] == "False"


def test_ten_thousand_trials_stay_far_below_the_object_size_limit() -> None:
    spec = make_spec(total=10_000)
    trials = [t(i, values=(random.Random(i).random(),)) for i in range(10_000)]
    s = status_for(spec, trials)
    assert len(s["recentTrials"]) == RECENT_TRIALS
    assert [r["number"] for r in s["recentTrials"]] == list(range(10_000 - RECENT_TRIALS, 10_000))
    best = max(x.values[0] for x in trials)  # type: ignore[index]
    assert s["bestTrial"]["value"] == best
    assert s["bestValue"] == float(f"{best:.6g}") and s["bestValue"] != best
    assert len(json.dumps(s)) < 64 * 1024  # the API server's limit is 1.5 MiB


def test_multi_objective_status_has_the_pareto_front() -> None:
    spec = make_spec([{"metric": "acc"}, {"metric": "latency", "direction": "minimize"}])
    trials = [
        t(0, values=(0.8, 10.0)),
        t(1, values=(0.9, 20.0)),
        t(2, values=(0.7, 15.0)),  # dominated by 0
        t(3, values=(0.8, 10.0)),  # equal to 0: both on the front
        t(4, values=(0.95, 30.0)),
    ]
    s = status_for(spec, trials)
    assert [p["number"] for p in s["paretoFront"]] == [0, 1, 3, 4]
    assert s["paretoFront"][1] == {"number": 1, "values": [0.9, 20.0], "params": {"x": 0.01}}
    assert s["paretoFrontSize"] == 4
    assert s["bestTrial"] is None and s["bestValue"] is None
    assert s["recentTrials"][0]["values"] == [0.8, 10.0]


def test_pareto_front_agrees_with_optuna() -> None:
    import optuna

    rng = random.Random(5)
    directions = ["maximize", "minimize", "maximize"]
    study = optuna.create_study(directions=directions)
    views = []
    for i in range(300):
        vals = [round(rng.random(), 2) for _ in directions]
        study.add_trial(optuna.trial.create_trial(values=vals, params={}, distributions={}))
        views.append(t(i, values=tuple(vals)))
    ours = [x.number for x in pareto_front(directions, views)]
    theirs = sorted(x.number for x in study.best_trials)
    assert ours == theirs


def test_the_pareto_front_in_status_is_bounded() -> None:
    spec = make_spec([{"metric": "a"}, {"metric": "b"}])
    trials = [t(i, values=(float(i), float(-i))) for i in range(PARETO_FRONT + 30)]  # all non-dominated
    s = status_for(spec, trials)
    assert len(s["paretoFront"]) == PARETO_FRONT and s["paretoFrontSize"] == PARETO_FRONT + 30


def test_values_json_cannot_carry_are_left_out() -> None:
    spec = make_spec([{"metric": "loss", "direction": "minimize"}])
    s = status_for(spec, [t(0, values=(float("-inf"),)), t(1, values=(0.5,))])
    json.dumps(s, allow_nan=False)
    assert s["recentTrials"][0]["value"] is None
    assert s["bestValue"] is None and s["bestTrial"]["number"] == 0


def test_a_suspended_study_shows_its_phase_and_a_suspended_condition_until_resumed() -> None:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
        "trials": {"total": 10, "parallelism": 2, "maxFailed": 100},
        "template": {"image": "img", "command": ["python", "o.py"]},
    }
    assert "Suspended" not in [c["type"] for c in status_for(make_spec(), [t(0)])["conditions"]]
    suspended = status_for(parse_spec({**raw, "suspend": True}), [t(0)])
    assert suspended["phase"] == "Suspended" and suspended["progress"] == "1/10"
    cond = {c["type"]: c for c in suspended["conditions"]}["Suspended"]
    assert cond["status"] == "True" and cond["reason"] == "Suspended"
    assert cond["message"].startswith("suspended (spec.suspend): no trial is asked or started")
    assert {c["type"]: c for c in suspended["conditions"]}["Complete"]["status"] == "False"
    resumed = status_for(parse_spec(raw), [t(0)], previous=suspended, previous_phase="Suspended")
    cond = {c["type"]: c for c in resumed["conditions"]}["Suspended"]
    assert resumed["phase"] == "Running" and cond["status"] == "False" and cond["reason"] == "Resumed"


def test_a_sampler_that_samples_some_parameters_at_random_says_so_in_a_condition() -> None:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [
            {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
            {"name": "y", "type": "float", "low": 0.0, "high": 1.0},
            {"name": "optim", "type": "categorical", "choices": ["adamw", "sgd"]},
        ],
        "trials": {"total": 10, "parallelism": 2, "maxFailed": 100},
        "sampler": {"type": "CMAES"},
        "template": {"image": "img", "command": ["python", "o.py"]},
    }
    falls = status_for(parse_spec(raw), [t(0)])
    cond = {c["type"]: c for c in falls["conditions"]}["SamplerFitsSpace"]
    assert cond["status"] == "False" and cond["reason"] == "SamplerFallsBack"
    assert "cannot sample categorical parameters ('optim')" in cond["message"]
    assert "at random (RandomSampler)" in cond["message"]
    assert falls["phase"] == "Running"  # said, not refused
    # A space the sampler models entirely: no such condition; after an edit that fixes it, True.
    raw["searchSpace"] = raw["searchSpace"][:2]
    assert "SamplerFitsSpace" not in [c["type"] for c in status_for(parse_spec(raw), [t(0)])["conditions"]]
    fixed = status_for(parse_spec(raw), [t(0)], previous=falls)
    cond = {c["type"]: c for c in fixed["conditions"]}["SamplerFitsSpace"]
    assert cond["status"] == "True" and cond["reason"] == "Fits"
    for kind in ("TPE", "GP", "QMC", "Random"):
        raw["searchSpace"].append({"name": "c", "type": "categorical", "choices": [1, 2]})
        raw["sampler"] = {"type": kind}
        spec = parse_spec(raw)
        shown = {c["type"]: c for c in status_for(spec, [t(0)])["conditions"]}.get("SamplerFitsSpace")
        if kind == "GP" and shown is not None:
            # Optuna's GP warns (once a process) that it optimizes sequentially without greenlet: when
            # the trial run is the first to see it, it is said, as every warning.
            assert importlib.util.find_spec("greenlet") is None
            assert shown["reason"] == "SamplerWarned", shown
            assert "Optuna warned when the GP sampler was tried: The 'greenlet' package" in shown["message"]
        else:
            assert shown is None, kind
        raw["searchSpace"].pop()


def test_a_range_that_is_not_a_multiple_of_its_step_and_optunas_warnings_are_said_in_conditions() -> None:
    raw: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": [
            {"name": "x", "type": "float", "low": 0.0, "high": 0.2, "step": 0.15},
            {"name": "y", "type": "float", "low": 0.0, "high": 1.0},
        ],
        "trials": {"total": 10, "parallelism": 2, "maxFailed": 100},
        "sampler": {"type": "CMAES", "options": {"use_separable_cma": True}},
        "template": {"image": "img", "command": ["python", "o.py"]},
    }
    status = status_for(parse_spec(raw), [t(0)])
    conds = {c["type"]: c for c in status["conditions"]}
    space = conds["SearchSpaceAsWritten"]
    assert space["status"] == "False" and space["reason"] == "RangeCut"
    assert space["message"] == (
        "spec.searchSpace[0].step: the range [0.0, 0.2] of 'x' is not a multiple of step 0.15: Optuna "
        "searches [0.0, 0.15] and never tries 0.2; make high 0.15 or 0.3"
    )
    assert "SamplerFitsSpace" not in conds  # CMA-ES with separable CMA over two dimensions: no warning
    # One continuous dimension: Optuna ignores use_separable_cma and warns; the condition quotes it.
    raw["searchSpace"] = [{"name": "x", "type": "int", "low": 1, "high": 8, "step": 3}]
    later = status_for(parse_spec(raw), [t(0)], previous=status)
    conds = {c["type"]: c for c in later["conditions"]}
    assert conds["SearchSpaceAsWritten"]["message"].startswith(
        "spec.searchSpace[0].step: the range [1, 8] of 'x' is not a multiple of step 3: Optuna searches "
        "[1, 7] and never tries 8; make high 7 or 10"
    )
    fits = conds["SamplerFitsSpace"]
    assert fits["status"] == "False" and fits["reason"] == "SamplerWarned"
    assert fits["message"].startswith(
        "spec.sampler: Optuna warned when the CMAES sampler was tried: Separable CMA-ES does not operate "
        "meaningfully on single-dimensional search spaces"
    )
    # Fixed: True again, kept, naming nothing.
    raw["searchSpace"] = [{"name": "x", "type": "int", "low": 1, "high": 7, "step": 3}]
    raw["sampler"] = {"type": "TPE"}
    fixed = {c["type"]: c for c in status_for(parse_spec(raw), [t(0)], previous=later)["conditions"]}
    assert fixed["SearchSpaceAsWritten"]["status"] == "True"
    assert fixed["SamplerFitsSpace"]["status"] == "True"
