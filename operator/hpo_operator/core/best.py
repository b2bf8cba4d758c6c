"""The best trial, judged in one place.

A single-objective study's best trial is its best COMPLETE trial; among equal values, the one that
reached it first: the earliest finished (``datetime_complete``), then the lower number. One rule, so
the status, ``hpo run`` and every trial Event's "Best is trial N" name the same trial: the Events,
posted in the order trials finished, never name a trial that finished later with a value already
reached (by trial number, "Trial 0 finished ... Best is trial 0" followed "Best is trial 1" with the
same value). A multi-objective study has a Pareto front instead. ``decide`` judges by the *stored*
study's directions (a spec whose objectives were edited is refused, and its trials are still the
stored study's) and puts the verdict in :attr:`hpo_operator.core.plan.Assessment.best`; the status,
the Events and ``hpo run`` read it from there. :func:`better` is the same comparison, one trial at a
time, for the "best so far" of the trial Events, which follow the order trials finished, and for the
operator's running tally.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from hpo_operator.core.observe import TrialView

_NEVER = dt.datetime.max.replace(tzinfo=dt.UTC)


def _score(directions: Sequence[str], t: TrialView) -> float | None:
    """The value to minimise, or ``None`` for a trial that cannot be best (not COMPLETE, no value, or
    a multi-objective study)."""
    if len(directions) != 1 or t.state != "COMPLETE" or not t.values:
        return None
    return -t.values[0] if directions[0] == "maximize" else t.values[0]


def finish_order(t: TrialView) -> tuple[dt.datetime, int]:
    """The order trials finished in: their completion time, then their number (unfinished last)."""
    return (t.completed or _NEVER, t.number)


def _key(score: float, t: TrialView) -> tuple[float, dt.datetime, int]:
    return (score, *finish_order(t))


def best_trial(directions: Sequence[str], trials: Sequence[TrialView]) -> TrialView | None:
    """The best COMPLETE trial of a single-objective study (among equals, the first to finish)."""
    scored = [(_key(s, t), t) for t in trials if (s := _score(directions, t)) is not None]
    return min(scored, key=lambda x: x[0])[1] if scored else None


def better(directions: Sequence[str], best: TrialView | None, t: TrialView) -> TrialView | None:
    """The better of ``best`` and ``t`` by the rule of :func:`best_trial` (among equals, the first to
    finish), so that folding trials one at a time in any order gives :func:`best_trial`'s answer."""
    score = _score(directions, t)
    if score is None:
        return best
    held = _score(directions, best) if best is not None else None
    if best is None or held is None:
        return t
    return t if _key(score, t) < _key(held, best) else best


def pair(t: TrialView | None) -> tuple[int, float] | None:
    """``(number, value)`` of a single-objective trial, as messages quote it."""
    return (t.number, t.values[0]) if t is not None and t.values else None


def pareto_front(directions: Sequence[str], trials: Sequence[TrialView]) -> list[TrialView]:
    """The COMPLETE trials no other COMPLETE trial dominates, by trial number.

    Points are sorted lexicographically (in minimization form); a point can only be dominated by one
    before it, and a dominated point is dominated by some point of the front, so one sweep against the
    front found so far suffices: O(n · front).
    """
    signs = [1.0 if d == "minimize" else -1.0 for d in directions]
    points = [
        (tuple(s * v for s, v in zip(signs, t.values, strict=True)), t)
        for t in trials
        if t.state == "COMPLETE" and t.values is not None and len(t.values) == len(signs)
    ]
    points.sort(key=lambda p: (p[0], p[1].number))
    front: list[tuple[tuple[float, ...], TrialView]] = []
    for point, t in points:
        if not any(dominates(f, point) for f, _ in front):
            front.append((point, t))
    return sorted((t for _, t in front), key=lambda t: t.number)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Point ``a`` dominates ``b`` (both in minimization form)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))
