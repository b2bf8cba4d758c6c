"""The ledger of finished trials (``core.ledger``): the same figures however trials are added, and the
same decisions and status as from every trial at once."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace

import pytest
from hpo_operator.core.ledger import Ledger, Summary, summarize
from hpo_operator.core.observe import Announced, Observed, RunView, StudyView, TrialView
from hpo_operator.core.reconcile import decide
from hpo_operator.core.status import build_status
from optuna.distributions import CategoricalDistribution, FloatDistribution

from tests.unit.test_reconcile import NAME, NOW, STUDY, UID, make_spec, run

X = FloatDistribution(-5.0, 5.0)


def random_trials(rng: random.Random, n: int, *, objectives: int = 1) -> list[TrialView]:
    out = []
    for i in range(n):
        state = rng.choice(["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"])
        values = tuple(float(rng.randint(0, 5)) for _ in range(objectives)) if state == "COMPLETE" else None
        reason = None
        if state == "FAIL":
            reason = rng.choice(["diverged", "stopped: the study failed (x)", "OOM"])
        started = NOW - dt.timedelta(seconds=rng.randint(10, 1000)) if state != "WAITING" else None
        completed = (
            NOW - dt.timedelta(seconds=rng.randint(0, 9)) if state in ("COMPLETE", "PRUNED", "FAIL") else None
        )
        dists = {"x": X} if state != "WAITING" else {}
        if rng.random() < 0.1:
            dists = {"x": FloatDistribution(-5.0, 5.0, log=False, step=0.5)}
        out.append(
            TrialView(
                number=i,
                state=state,  # type: ignore[arg-type]
                params={"x": 1.0, "n": 2} if dists else {},
                values=values,
                fail_reason=reason,
                missing_metric="score" if reason == "OOM" and rng.random() < 0.3 else None,
                started=started,
                completed=completed,
                launched=0 if state != "WAITING" else -1,
                distributions=dists,
            )
        )
    return out


def figures(s: Summary) -> tuple[object, ...]:
    return (
        dict(s.finished),
        s.live,
        dict(s.counts),
        s.best,
        s.failed,
        s.last_failed,
        dict(s.missing_metric),
        {k: dict(v) for k, v in s.distributions.items()},
        s.front,
        s.first_started,
        s.last_completed,
        s.top,
    )


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("objectives", [1, 2])
def test_the_order_trials_are_added_in_does_not_change_the_figures(seed: int, objectives: int) -> None:
    rng = random.Random(seed)
    trials = random_trials(rng, 60, objectives=objectives)
    directions = ("maximize",) if objectives == 1 else ("maximize", "minimize")
    whole = summarize(directions, trials)
    shuffled = trials[:]
    rng.shuffle(shuffled)
    ledger = Ledger(directions)
    for t in shuffled:
        ledger.add(t)
        ledger.add(t)  # a finished trial added twice counts once
    live = [t for t in trials if not t.finished]
    assert figures(ledger.summary(live)) == figures(whole)
    assert sum(whole.counts.values()) == len(whole.finished) == sum(1 for t in trials if t.finished)


@pytest.mark.parametrize("seed", range(30))
def test_decide_and_the_status_are_the_same_with_the_shells_summary(seed: int) -> None:
    rng = random.Random(seed)
    trials = random_trials(rng, rng.randint(0, 40))
    spec = make_spec(total=rng.randint(10, 60), parallelism=3, maxFailed=rng.randint(0, 20))
    runs: list[RunView] = [run(t.number, rng.choice(["Running", "Failed", "Succeeded"])) for t in trials[-4:]]
    announced = Announced().add(t.number for t in trials if t.finished and rng.random() < 0.7)
    study = StudyView(STUDY, ("maximize",), 0, announced)
    plain = Observed(NAME, STUDY, UID, study, tuple(trials), tuple(runs), previous_phase="Running")
    # The shell's ledger, filled in another order over several observations.
    ledger = Ledger(("maximize",))
    for t in sorted((t for t in trials if t.finished), key=lambda t: -t.number):
        ledger.add(t)
    kept = replace(plain, summary=ledger.summary(t for t in trials if not t.finished))
    a, b = decide(spec, plain, NOW), decide(spec, kept, NOW)
    assert a == b
    assert build_status(spec, plain, a.assessment, generation=1, now=NOW) == build_status(
        spec, kept, b.assessment, generation=1, now=NOW
    )


def test_a_stored_categorical_choice_clash_names_the_first_trial_that_used_it() -> None:
    old = CategoricalDistribution(["a", "b"])
    trials = [
        TrialView(5, "COMPLETE", {"x": "a"}, (0.1,), completed=NOW, distributions={"x": old}),
        TrialView(2, "RUNNING", {"x": "a"}, launched=0, distributions={"x": old}),
    ]
    summary = summarize(("maximize",), trials)
    assert summary.distributions == {"x": {old: 5}}  # the ledger holds the finished one
    from hpo_operator.core.ledger import stored_distributions

    assert stored_distributions(summary) == {"x": [(old, 2)]}  # the live one is older
