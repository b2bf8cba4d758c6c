"""The per-study numbers the operator exports to Prometheus, as plain values.

:func:`study_series` reads what one reconcile saw and concluded (the observed trials and runs, ``decide``'s
assessment) and returns a :class:`StudySeries`; ``shell/metrics`` turns it into the ``hpo_study_*``
series labelled by namespace and study, and forgets them when the study is deleted. Pure, so the numbers
are tested with literal values.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpo_operator.core.observe import FINISHED_STATES, Observed
from hpo_operator.core.plan import Assessment
from hpo_operator.core.spec import StudySpec

# The trial states counted in ``hpo_study_trials{state}``: Optuna's, in lower case.
TRIAL_STATES = ("waiting", "running", "complete", "pruned", "failed")


@dataclass(frozen=True)
class StudySeries:
    """One study's numbers after a reconcile."""

    budget: int  # spec.trials.total
    trials: tuple[tuple[str, int], ...]  # (state, count) for each of TRIAL_STATES
    running: int  # trials whose run (pod) is Pending or Running now
    best: tuple[str, float] | None  # single objective: (metric, the best trial's value); else None
    last_duration: float | None  # seconds from start to end of the trial that finished last


def study_series(spec: StudySpec, observed: Observed, assessment: Assessment) -> StudySeries:
    counts = assessment.counts
    by_state = {
        "waiting": counts.waiting,
        "running": counts.running,
        "complete": counts.complete,
        "pruned": counts.pruned,
        "failed": counts.failed,
    }
    best = None
    if assessment.best is not None and len(spec.metrics) == 1:
        best = (spec.metrics[0], float(assessment.best[1]))
    finished = [
        t
        for t in observed.trials
        if t.state in FINISHED_STATES and t.started is not None and t.completed is not None
    ]
    last_duration = None
    if finished:
        last = max(finished, key=lambda t: (t.completed, t.number))
        assert last.completed is not None and last.started is not None
        last_duration = max(0.0, (last.completed - last.started).total_seconds())
    return StudySeries(
        budget=counts.budget,
        trials=tuple((s, by_state[s]) for s in TRIAL_STATES),
        running=counts.active_runs,
        best=best,
        last_duration=last_duration,
    )
