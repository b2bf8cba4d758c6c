"""The best trial, judged in one place.

A single-objective study's best trial is its best COMPLETE trial (the lowest number among equals); a
multi-objective study has a Pareto front instead. ``decide`` judges by the *stored* study's directions
(a spec whose objectives were edited is refused, and its trials are still the stored study's) and puts
the verdict in :attr:`hpo_operator.core.plan.Assessment.best`; the status, the Events and ``hpo run``
read it from there. :func:`better` is the same comparison, one trial at a time, for the "best so far"
of the trial Events, which follow the order trials finished.
"""

from __future__ import annotations

from collections.abc import Sequence

from hpo_operator.core.observe import TrialView


def _score(directions: Sequence[str], t: TrialView) -> float | None:
    """The value to minimise, or ``None`` for a trial that cannot be best (not COMPLETE, no value, or
    a multi-objective study)."""
    if len(directions) != 1 or t.state != "COMPLETE" or not t.values:
        return None
    return -t.values[0] if directions[0] == "maximize" else t.values[0]


def best_trial(directions: Sequence[str], trials: Sequence[TrialView]) -> TrialView | None:
    """The best COMPLETE trial of a single-objective study (the lowest number among equals)."""
    scored = [(s, t.number, t) for t in trials if (s := _score(directions, t)) is not None]
    return min(scored, key=lambda x: (x[0], x[1]))[2] if scored else None


def better(directions: Sequence[str], best: TrialView | None, t: TrialView) -> TrialView | None:
    """``t`` if it beats ``best`` (strictly: the earlier of equals stays), else ``best``."""
    score = _score(directions, t)
    if score is None:
        return best
    if best is None:
        return t
    held = _score(directions, best)
    return t if held is None or score < held else best


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
        if not any(_dominates(f, point) for f, _ in front):
            front.append((point, t))
    return sorted((t for _, t in front), key=lambda t: t.number)


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))
