"""The finished trials of a study, kept incrementally: what ``decide`` and the status need of them.

A finished trial (COMPLETE, PRUNED, FAIL) never changes, so the shell reads and converts it once and
adds it to a :class:`Ledger`, which keeps its counts, the best trial, the failures that count toward
``maxFailed``, the parameters' stored distributions, the Pareto front and the study's first start and
last completion as trials are added. Each observation hands ``decide`` a :class:`Summary`: the ledger's
figures and the trials that can still change (RUNNING, WAITING), read afresh. So a reconcile costs what
is running, not what has finished: at 5,000 finished trials, reading and walking every trial each
reconcile was most of its time.

Without a summary from the shell (the unit tests, a one-off reader), :func:`summarize` builds one from
every trial with the same :class:`Ledger`, so both paths are the same code. The order trials are added
in does not matter: every figure is a function of the set (the best trial by :mod:`core.best`'s rule,
first distributions and failures by trial number), and an operator that restarts rebuilds the same
summary by adding the stored trials again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from optuna.distributions import BaseDistribution

from hpo_operator.core.best import better, dominates
from hpo_operator.core.observe import TrialView

# A RUNNING trial told FAIL because its study stopped (or its HPOStudy was deleted): not a failure of
# its own, so it does not count toward spec.trials.maxFailed.
STOPPED_PREFIX = "stopped: "


@dataclass(frozen=True)
class Summary:
    """The trials of a study as one observation saw them: the finished ones as the :class:`Ledger`
    keeps them, and the ones that can still change (``live``), by number."""

    directions: tuple[str, ...]  # the stored study's: the best trial and the front are judged by them
    finished: Mapping[int, TrialView]  # every finished trial, by number (read-only)
    live: tuple[TrialView, ...]  # RUNNING and WAITING trials, by number
    counts: Mapping[str, int]  # finished trials by state: COMPLETE, PRUNED, FAIL
    best: TrialView | None  # single objective: the best COMPLETE trial (core.best's rule)
    failed: int  # FAIL trials that count toward maxFailed (not stopped by the operator)
    last_failed: TrialView | None  # the highest-numbered of those
    missing_metric: Mapping[str, TrialView]  # metric → the lowest-numbered FAIL trial that missed it
    distributions: Mapping[str, Mapping[BaseDistribution, int]]  # name → distribution → first trial
    front: tuple[TrialView, ...] = ()  # multi-objective: the Pareto front of the COMPLETE trials
    first_started: dt.datetime | None = None
    last_completed: dt.datetime | None = None
    top: int = -1  # the highest trial number seen

    def trial(self, number: int) -> TrialView | None:
        """The trial ``number``, finished or live, or ``None``."""
        found = self.finished.get(number)
        if found is not None:
            return found
        return next((t for t in self.live if t.number == number), None)

    def recent(self, count: int) -> list[TrialView]:
        """The last ``count`` trials by number (WAITING ones left out), oldest first: O(count + live)."""
        live = {t.number: t for t in self.live if t.state != "WAITING"}
        out: list[TrialView] = []
        n = self.top
        while n >= 0 and len(out) < count:
            t = self.finished.get(n) or live.get(n)
            if t is not None:
                out.append(t)
            n -= 1
        return out[::-1]


@dataclass
class Ledger:
    """The figures of a study's finished trials, kept as trials are added (each once)."""

    directions: tuple[str, ...]
    finished: dict[int, TrialView] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0})
    best: TrialView | None = None
    failed: int = 0
    last_failed: TrialView | None = None
    missing_metric: dict[str, TrialView] = field(default_factory=dict)
    distributions: dict[str, dict[BaseDistribution, int]] = field(default_factory=dict)
    front: list[tuple[tuple[float, ...], TrialView]] = field(default_factory=list)
    first_started: dt.datetime | None = None
    last_completed: dt.datetime | None = None
    top: int = -1

    def add(self, t: TrialView) -> None:
        """Count a finished trial (one already counted is left as it is: finished trials are final)."""
        if not t.finished or t.number in self.finished:
            return
        self.finished[t.number] = t
        self.counts[t.state] += 1
        self.top = max(self.top, t.number)
        self.best = better(self.directions, self.best, t)
        if t.state == "FAIL" and not (t.fail_reason or "").startswith(STOPPED_PREFIX):
            self.failed += 1
            if self.last_failed is None or t.number > self.last_failed.number:
                self.last_failed = t
        if t.state == "FAIL" and t.missing_metric is not None:
            held = self.missing_metric.get(t.missing_metric)
            if held is None or t.number < held.number:
                self.missing_metric[t.missing_metric] = t
        _add_distributions(self.distributions, t)
        if t.started is not None and (self.first_started is None or t.started < self.first_started):
            self.first_started = t.started
        if t.completed is not None and (self.last_completed is None or t.completed > self.last_completed):
            self.last_completed = t.completed
        if len(self.directions) > 1:
            self._add_to_front(t)

    def _add_to_front(self, t: TrialView) -> None:
        if t.state != "COMPLETE" or t.values is None or len(t.values) != len(self.directions):
            return
        point = tuple(
            (1.0 if d == "minimize" else -1.0) * v for d, v in zip(self.directions, t.values, strict=True)
        )
        if any(dominates(p, point) for p, _ in self.front):
            return
        self.front = [(p, f) for p, f in self.front if not dominates(point, p)]
        self.front.append((point, t))

    def summary(self, live: Iterable[TrialView]) -> Summary:
        """What one observation hands ``decide``: these figures and the ``live`` trials as read now.

        The mappings are read-only views of the ledger's own (no copy): build the summary right before
        ``decide`` and add nothing meanwhile."""
        live_sorted = tuple(sorted(live, key=lambda t: t.number))
        top = max(self.top, live_sorted[-1].number) if live_sorted else self.top
        return Summary(
            directions=self.directions,
            finished=MappingProxyType(self.finished),
            live=live_sorted,
            counts=MappingProxyType(self.counts),
            best=self.best,
            failed=self.failed,
            last_failed=self.last_failed,
            missing_metric=MappingProxyType(self.missing_metric),
            distributions=MappingProxyType(self.distributions),
            front=tuple(t for _, t in sorted(self.front, key=lambda x: x[1].number)),
            first_started=self.first_started,
            last_completed=self.last_completed,
            top=top,
        )


def summarize(directions: Sequence[str], trials: Iterable[TrialView]) -> Summary:
    """A summary of every trial at once (what the shell's ledger holds after adding them one by one)."""
    ledger = Ledger(tuple(directions))
    live = []
    for t in trials:
        if t.finished:
            ledger.add(t)
        else:
            live.append(t)
    return ledger.summary(live)


def stored_distributions(summary: Summary) -> dict[str, list[tuple[BaseDistribution, int]]]:
    """Every parameter's distinct stored distributions with the first trial that used each, by that
    trial's number: the finished trials' (from the ledger) and the live ones'."""
    merged: dict[str, dict[BaseDistribution, int]] = {n: dict(d) for n, d in summary.distributions.items()}
    for t in summary.live:
        _add_distributions(merged, t)
    return {name: sorted(d.items(), key=lambda x: x[1]) for name, d in merged.items()}


def _add_distributions(into: dict[str, dict[BaseDistribution, int]], t: TrialView) -> None:
    for name, dist in t.distributions.items():
        held = into.setdefault(name, {})
        if dist not in held or t.number < held[dist]:
            held[dist] = t.number
