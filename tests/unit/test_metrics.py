"""The per-study numbers (``core/series``) and the ``hpo_study_*`` series ``shell/metrics`` exports."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hpo_operator.core.observe import Announced, Observed, RunView, StudyView, TrialView
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.reconcile import decide
from hpo_operator.core.series import TRIAL_STATES, study_series
from hpo_operator.shell.metrics import PHASES, Metrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

NOW = dt.datetime(2025, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
UID = "uid-1"


def spec(*objectives: str, total: int = 6) -> Any:
    return parse_spec(
        {
            "objective": [{"metric": m} for m in objectives or ("score",)],
            "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
            "trials": {"total": total, "parallelism": 2, "maxFailed": 3},
            "template": {"image": "img", "command": ["python", "objective.py"]},
        }
    )


def at(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def trial(number: int, state: str, *, started: float, completed: float | None = None, **kw: Any) -> TrialView:
    return TrialView(
        number=number,
        state=state,  # type: ignore[arg-type]
        params={"x": float(number)},
        launched=0,
        started=at(started),
        completed=at(completed) if completed is not None else None,
        **kw,
    )


def observed(trials: list[TrialView], runs: list[RunView], directions: tuple[str, ...]) -> Observed:
    finished = [t.number for t in trials if t.state in ("COMPLETE", "PRUNED", "FAIL")]
    return Observed(
        name="demo",
        study_name="ns.demo.uid-1",
        owner_uid=UID,
        study=StudyView("ns.demo.uid-1", directions, 0, Announced().add(finished)),
        trials=tuple(trials),
        runs=tuple(runs),
        previous_phase="Running",
    )


def run(number: int, phase: str) -> RunView:
    return RunView(name=f"demo-trial-{number}", trial=number, attempt=0, phase=phase, owner_uid=UID)  # type: ignore[arg-type]


TRIALS = [
    trial(0, "COMPLETE", started=100, completed=70, values=(0.5,)),  # 30 s
    trial(1, "COMPLETE", started=90, completed=40, values=(0.9,)),  # 50 s, finished last
    trial(2, "PRUNED", started=80, completed=60, values=(0.1,)),
    trial(3, "FAIL", started=75, completed=65),
    trial(4, "RUNNING", started=30),
]
RUNS = [run(0, "Succeeded"), run(1, "Succeeded"), run(2, "Succeeded"), run(3, "Failed"), run(4, "Running")]


def test_a_studys_numbers_come_from_what_one_reconcile_saw_and_decided() -> None:
    s = spec("score", total=6)
    plan = decide(s, observed(TRIALS, RUNS, ("maximize",)), NOW)
    series = study_series(s, observed(TRIALS, RUNS, ("maximize",)), plan.assessment)
    assert dict(series.trials) == {"waiting": 0, "running": 1, "complete": 2, "pruned": 1, "failed": 1}
    assert [state for state, _ in series.trials] == list(TRIAL_STATES)
    assert series.budget == 6
    assert series.running == 1  # trial 4's pod; the finished pods do not count
    assert series.best == ("score", 0.9)
    assert series.last_duration == 50.0  # trial 1 finished last (40 s ago), after 50 s


def test_a_multi_objective_study_has_no_single_best_value_and_a_new_one_no_duration() -> None:
    s = spec("a", "b")
    done = trial(0, "COMPLETE", started=10, completed=5, values=(1.0, 2.0))
    seen = observed([done], [], ("maximize", "maximize"))
    series = study_series(s, seen, decide(s, seen, NOW).assessment)
    assert series.best is None
    assert series.last_duration == 5.0
    empty = observed([], [], ("maximize",))
    fresh = study_series(spec(), empty, decide(spec(), empty, NOW).assessment)
    assert fresh.last_duration is None and fresh.best is None
    assert dict(fresh.trials) == dict.fromkeys(TRIAL_STATES, 0)


Key = tuple[str, tuple[tuple[str, str], ...]]


def key(name: str, **labels: str) -> Key:
    return name, tuple(sorted(labels.items()))


def samples(metrics: Metrics) -> dict[Key, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_studys_series_are_labelled_by_namespace_and_study_and_go_when_it_is_forgotten() -> None:
    metrics = Metrics()
    s = spec("score", total=6)
    seen = observed(TRIALS, RUNS, ("maximize",))
    metrics.set_series("team-a/demo", study_series(s, seen, decide(s, seen, NOW).assessment))
    metrics.set_phase("team-a/demo", "Running")
    metrics.set_phase("team-b/other", "Succeeded")
    got = samples(metrics)
    a = {"namespace": "team-a", "study": "demo"}
    assert got[key("hpo_study_trials", **a, state="complete")] == 2
    assert got[key("hpo_study_trials", **a, state="running")] == 1
    assert got[key("hpo_study_trials_budget", **a)] == 6
    assert got[key("hpo_study_running_trials", **a)] == 1
    assert got[key("hpo_study_best_value", **a, metric="score")] == 0.9
    assert got[key("hpo_study_last_trial_duration_seconds", **a)] == 50.0
    for phase in PHASES:
        assert got[key("hpo_study_phase", **a, phase=phase)] == (phase == "Running")
    other = key("hpo_study_phase", namespace="team-b", study="other", phase="Succeeded")
    assert got[other] == 1
    assert got[key("hpo_studies", phase="Running")] == 1
    assert got[key("hpo_operator_leader")] == 1

    metrics.set_phase("team-a/demo", None)  # the HPOStudy was deleted
    after = samples(metrics)
    assert not [k for k in after if k[0].startswith("hpo_study_") and ("namespace", "team-a") in k[1]]
    assert after[other] == 1  # the other study keeps its series
    assert after[key("hpo_studies", phase="Running")] == 0


def test_a_candidate_for_the_lease_never_exports_itself_as_leader_before_it_holds_it() -> None:
    from hpo_operator.__main__ import serve_metrics
    from hpo_operator.config import OperatorConfig

    alone = serve_metrics(OperatorConfig.from_env({"HPO_METRICS_PORT": "0"}))
    assert alone.registry.get_sample_value("hpo_operator_leader") == 1.0
    candidate = serve_metrics(
        OperatorConfig.from_env(
            {"HPO_METRICS_PORT": "0", "HPO_LEADER_ELECTION": "true", "HPO_LEADER_ELECTION_LEASE": "hpo/lead"}
        )
    )
    assert candidate.registry.get_sample_value("hpo_operator_leader") == 0.0
