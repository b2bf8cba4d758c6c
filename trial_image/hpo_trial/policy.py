"""What both ways to the study share (:mod:`hpo_trial.direct`, :mod:`hpo_trial.remote`): the outage
policy, the errors a trial process sees, and the checks made before a final value is told. Standard
library only; :mod:`hpo_trial.reporting` describes the behaviour and re-exports the public names.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from hpo_trial.contract import STORAGE_RETRY_SECONDS, TrialContract, storage_retry_seconds

log = logging.getLogger("hpo_trial")

T = TypeVar("T")

# with_storage_retries: 1 s before the second try, doubling, at most RETRY_MAX_DELAY apart, for as long as
# HPO_STORAGE_RETRY_SECONDS (the handle's retry_seconds) allows.
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 30.0


class StorageUnavailable(RuntimeError):
    """The storage did not answer for the whole retry time; the message says what could not be told."""


class EndpointUnavailable(ConnectionError):
    """The report endpoint did not answer, or answered that the storage behind it does not (an outage)."""


class AttemptSuperseded(SystemExit):
    """This attempt no longer owns its trial: the trial finished, or a newer attempt runs it.

    A ``SystemExit`` with code 0: unless caught, the process ends cleanly (the warning logged before it
    is raised says why), and the operator, which already moved on, counts no failure. ``reason`` says why.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(0)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class MetricNotFound(KeyError):
    """The evaluation did not produce the objective's metric; the message lists those it did."""

    def __str__(self) -> str:
        return str(self.args[0])


# What an outage is on either path, before the direct path's own errors (Optuna's, SQLAlchemy's) join.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, StorageUnavailable)


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 without it; only rank 0 touches the storage."""
    return int(os.environ.get("RANK", "0") or 0)


def outage_errors() -> tuple[type[BaseException], ...]:
    """What a storage that does not answer raises here: the direct path's errors once it is loaded."""
    direct = sys.modules.get("hpo_trial.direct")
    return direct.STORAGE_ERRORS if direct is not None else OUTAGE_ERRORS


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` is the storage not answering (infrastructure), not a fault of the trial."""
    return isinstance(error, outage_errors())


def first_line(error: BaseException) -> str:
    """The error in one line: for a database error the driver's own message (``connection refused``),
    not SQLAlchemy's wrapping with the SQL statement and its parameters."""
    if type(error).__name__ == "StorageInternalError" and error.__cause__ is not None:
        error = error.__cause__  # Optuna's wrapping guesses ("e.g. exceeding max length"); the cause says
    orig = getattr(error, "orig", None)
    text = str(orig if isinstance(orig, BaseException) else error)
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def with_storage_retries(
    call: Callable[[], T],
    what: str,
    retry_seconds: float | None = None,
    errors: tuple[type[BaseException], ...] | None = None,
) -> T:
    """``call()``, retried on storage errors with doubling delays for ``retry_seconds``.

    ``retry_seconds`` defaults to ``HPO_STORAGE_RETRY_SECONDS`` (300 s); ``errors`` to
    :func:`outage_errors`. The delays start at :data:`RETRY_FIRST_DELAY` and double up to
    :data:`RETRY_MAX_DELAY`; the last try is made at the end of the retry time at the latest. When the
    storage still does not answer, :class:`StorageUnavailable` (from the last error) names ``what`` and
    how long it was tried. Each call must be safe to repeat.
    """
    budget = storage_retry_seconds() if retry_seconds is None else retry_seconds
    catch = outage_errors() if errors is None else errors
    deadline = time.monotonic() + budget
    delay = RETRY_FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        try:
            return call()
        except catch as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageUnavailable(
                    f"{what}: the storage did not answer for {budget:g} s ({tries} tries; "
                    f"{STORAGE_RETRY_SECONDS} sets how long): {first_line(e)}"
                ) from None  # the message has the cause in one line (no SQL statement)
            wait = min(delay, left)
            log.warning(
                "%s: the storage did not answer (%s); trying again in %.1f s (%.0f s of %g s left)",
                what,
                first_line(e),
                wait,
                left,
                budget,
            )
            time.sleep(wait)
            delay = min(delay * 2, RETRY_MAX_DELAY)


def skip_on_outage(
    call: Callable[[], T], what: str, default: T, errors: tuple[type[BaseException], ...] | None = None
) -> T:
    """``call()``, or ``default`` with a warning when the storage does not answer (nothing is retried)."""
    catch = outage_errors() if errors is None else errors
    try:
        return call()
    except catch as e:
        log.warning("%s: the storage did not answer (%s); going on without it", what, first_line(e))
        return default


class TrialBase:
    """What both ways to the study share: the contract's views, this attempt's own reports, and the
    checks made before a final value is told. Subclasses write to the study."""

    contract: TrialContract
    retry_seconds: float  # how long the final tell (and opening) is retried
    # What a storage (or report endpoint) that does not answer raises on this way to the study.
    outage_errors: tuple[type[BaseException], ...] = OUTAGE_ERRORS
    # Whether the outcome is said in this process's log (the report endpoint's handles say nothing: the
    # trial process says it, and the operator posts its Events).
    says_outcome = True
    reported: dict[int, float]  # what THIS attempt reported (and the storage took)
    missing_metric: str | None  # told with FAIL (ATTR_MISSING_METRIC)

    @property
    def number(self) -> int:
        return self.contract.trial_number

    @property
    def attempt(self) -> int:
        return self.contract.attempt

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.contract.params)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(o.metric for o in self.contract.objectives)

    def _took(self, step: int, value: float) -> None:
        """Keep a report the study took: Optuna's Trial.report keeps the first value at a step; a retry's
        report replaces the earlier attempt's."""
        if self.attempt == 0:
            self.reported.setdefault(step, value)
        else:
            self.reported[step] = value

    def report(self, value: float, step: int) -> bool:
        """Report the first objective's intermediate value at a progress step (same units in every trial).

        Returns whether the study took it: a storage (or endpoint) that does not answer skips this report
        with a warning (the next report tries again). A retry's report replaces the earlier attempt's
        value at the same step. Multi-objective studies report nothing (Optuna prunes single-objective
        ones only).
        """
        if len(self.contract.objectives) > 1:
            return False
        value, step = float(value), int(step)

        def report() -> bool:
            self.report_once(value, step)
            return True

        taken = skip_on_outage(
            report, f"Trial {self.number}: the report at step {step} is skipped", False, self.outage_errors
        )
        if taken:
            self._took(step, value)
        return taken

    def should_prune(self) -> bool:
        """The study's pruner's decision on this attempt's reports; False during an outage."""
        if len(self.contract.objectives) > 1:
            return False
        # bool(): pruners answer numpy booleans
        return bool(
            skip_on_outage(
                self._should_prune, f"Trial {self.number}: no pruning check", False, self.outage_errors
            )
        )

    def report_once(self, value: float, step: int) -> None:
        """One try at a report; an outage raises (:meth:`report` skips it)."""
        raise NotImplementedError

    def _should_prune(self) -> bool:
        """One try at the pruner's decision; an outage raises (:meth:`should_prune` answers False)."""
        raise NotImplementedError

    def _retried(self, call: Callable[[], T], what: str) -> T:
        return with_storage_retries(call, what, self.retry_seconds, self.outage_errors)

    def fail(self, reason: str) -> bool:
        raise NotImplementedError

    def _finish(self, values: list[float]) -> None:
        raise NotImplementedError

    def complete(self, values: float | Sequence[float]) -> None:
        """End the trial with its final value(s) (retried while the storage does not answer)."""
        vals = [float(values)] if isinstance(values, int | float) else [float(v) for v in values]
        if len(vals) != len(self.contract.objectives):
            raise ValueError(
                f"trial {self.number} expects {len(self.contract.objectives)} value(s), got {len(vals)}"
            )
        bad = [v for v in vals if math.isnan(v) or math.isinf(v)]
        if bad:
            self.fail(f"objective value is {bad[0]}")
            return
        self._finish(vals)

    def objective_values(self, metrics: Mapping[str, Any]) -> list[float]:
        """The objectives' values looked up by their exact names; :class:`MetricNotFound` lists the names
        (and the missing one is told with the trial's FAIL, as ``hpo:missing_metric``)."""
        missing = [m for m in self.metrics if m not in metrics]
        if missing:
            self.missing_metric = missing[0]
            raise MetricNotFound(
                f"objective metric {missing[0]!r} was not produced by the evaluation; "
                f"the metrics that exist are: {', '.join(sorted(metrics))}"
            )
        return [float(metrics[m]) for m in self.metrics]

    def complete_from_metrics(self, metrics: Mapping[str, Any]) -> list[float]:
        """Complete with the objective metrics looked up by their exact names in ``metrics``."""
        values = self.objective_values(metrics)
        self.complete(values)
        return values

    def _told(self, told: bool, reason: str) -> None:
        if not self.says_outcome:
            return
        if told:
            log.error("Trial %d failed: %s", self.number, reason)
        else:
            log.warning("Trial %d is already finished; not failing it: %s", self.number, reason)
