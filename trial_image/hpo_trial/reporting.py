"""The small public API for trial processes, the built-in runner's and a custom container's alike.

A custom training loop needs five calls::

    from hpo_trial import reporting

    trial = reporting.current_trial()          # reads the trial contract from the environment
    lr = trial.params["learning_rate"]
    for epoch in range(10):
        score = train_one_epoch(lr)
        trial.report(score, step=epoch)        # intermediate value, for the study's pruner
        if trial.should_prune():
            trial.prune()                      # marks the trial PRUNED; then exit 0
            raise SystemExit(0)
    trial.complete(score)                      # the final objective value (a list for multi-objective)

``trial.fail(reason)`` ends the trial as FAIL with a reason the operator shows in the study's status.

A storage that does not answer (a database restart) is no fault of the trial, and this module has the
one outage policy for the built-in runner and custom containers alike:

- ``report()`` and ``should_prune()`` log a warning and carry on: the report is skipped (``report``
  returns False) and ``should_prune`` answers False; the next report tries again.
- The final tell (``complete``, ``prune``, ``fail``) and ``set_attr`` are retried with doubling delays
  (1 s, 2 s, ... at most 30 s apart) for ``HPO_STORAGE_RETRY_SECONDS`` (default 300 s); then
  :class:`StorageUnavailable` says what could not be told. A process that gets it should exit non-zero
  (an uncaught exception does): the operator counts a failed attempt and its retries apply.

Opening the storage and loading the study when the trial starts (``current_trial()``) is retried the
same way as the final tell: a trial that starts during a database restart waits for it, and only when
the storage stays away for the whole retry time does :class:`StorageUnavailable` say so, naming the
cause (the driver's first line, never the SQL statement).

**One attempt writes.** The operator records the attempt it is about to start (the trial's user
attribute ``hpo:attempts``, attempts so far) before it starts it. An attempt that is no longer the
current one (a node that dropped out while its process kept running, and a retry started meanwhile), or
whose trial already finished (an earlier attempt told it), writes nothing more: its ``report``,
``set_attr`` and final tell raise :class:`AttemptSuperseded`, a ``SystemExit`` with code 0, so a custom
training loop ends cleanly without a line of its own, and the operator counts no failure.

A retry of a trial (``HPO_TRIAL_ATTEMPT`` > 0) reuses the same Optuna trial. Its reports replace the
earlier attempt's at the same steps, and its pruning decisions see only its own reports and its own
SuccessiveHalving/Hyperband rungs (the failed attempt's ``completed_rung_*`` marks are hidden from the
pruner). A pruned retry's value is its own last report (Optuna would take the value at the last stored
step, which may be the failed attempt's), or none when it reported nothing.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState

from hpo_trial.contract import (
    ATTR_ATTEMPTS,
    ATTR_FAIL_REASON,
    ATTR_MISSING_METRIC,
    STORAGE_RETRY_SECONDS,
    TrialContract,
    engine_kwargs,
    storage_retry_seconds,
)
from hpo_trial.pruners import build_pruner

log = logging.getLogger("hpo_trial")

T = TypeVar("T")


class StorageUnavailable(RuntimeError):
    """The storage did not answer for the whole retry time; the message says what could not be told."""


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


# What a storage that does not answer raises: Optuna wraps most database errors in StorageInternalError,
# and a connection that cannot be made or is cut surfaces as SQLAlchemy's (or the socket's) own error.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    StorageInternalError,
    sqlalchemy.exc.SQLAlchemyError,
    ConnectionError,
    TimeoutError,
    StorageUnavailable,
)

# What optuna.pruners.SuccessiveHalvingPruner (and Hyperband's brackets) name the system attribute that
# records the value with which a trial completed a rung.
RUNG_ATTR_PREFIX = "completed_rung_"

# with_storage_retries: 1 s before the second try, doubling, at most RETRY_MAX_DELAY apart, for as long as
# HPO_STORAGE_RETRY_SECONDS (the handle's retry_seconds) allows.
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 30.0


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 without it; only rank 0 touches the storage."""
    return int(os.environ.get("RANK", "0") or 0)


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` is the storage not answering (infrastructure), not a fault of the trial."""
    return isinstance(error, STORAGE_ERRORS)


def _first_line(error: BaseException) -> str:
    """The error in one line: for a database error the driver's own message (``connection refused``),
    not SQLAlchemy's wrapping with the SQL statement and its parameters."""
    if isinstance(error, StorageInternalError) and error.__cause__ is not None:
        error = error.__cause__  # Optuna's wrapping guesses ("e.g. exceeding max length"); the cause says
    orig = getattr(error, "orig", None)
    text = str(orig if isinstance(orig, BaseException) else error)
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def with_storage_retries(call: Callable[[], T], what: str, retry_seconds: float | None = None) -> T:
    """``call()``, retried on storage errors with doubling delays for ``retry_seconds``.

    ``retry_seconds`` defaults to ``HPO_STORAGE_RETRY_SECONDS`` (300 s). The delays start at
    :data:`RETRY_FIRST_DELAY` and double up to :data:`RETRY_MAX_DELAY`; the last try is made at the end
    of the retry time at the latest. When the storage still does not answer, :class:`StorageUnavailable`
    (from the last error) names ``what`` and how long it was tried. Each call must be safe to repeat.
    """
    budget = storage_retry_seconds() if retry_seconds is None else retry_seconds
    deadline = time.monotonic() + budget
    delay = RETRY_FIRST_DELAY
    tries = 0
    while True:
        tries += 1
        try:
            return call()
        except STORAGE_ERRORS as e:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageUnavailable(
                    f"{what}: the storage did not answer for {budget:g} s ({tries} tries; "
                    f"{STORAGE_RETRY_SECONDS} sets how long): {_first_line(e)}"
                ) from None  # the message has the cause in one line (no SQL statement)
            wait = min(delay, left)
            log.warning(
                "%s: the storage did not answer (%s); trying again in %.1f s (%.0f s of %g s left)",
                what,
                _first_line(e),
                wait,
                left,
                budget,
            )
            time.sleep(wait)
            delay = min(delay * 2, RETRY_MAX_DELAY)


def skip_on_outage(call: Callable[[], T], what: str, default: T) -> T:
    """``call()``, or ``default`` with a warning when the storage does not answer (nothing is retried)."""
    try:
        return call()
    except STORAGE_ERRORS as e:
        log.warning("%s: the storage did not answer (%s); going on without it", what, _first_line(e))
        return default


class MetricNotFound(KeyError):
    """The evaluation did not produce the objective's metric; the message lists those it did."""

    def __str__(self) -> str:
        return str(self.args[0])


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The shared Optuna storage, with engine options fit for long-lived pools and concurrent writers.

    The study exists before any trial process starts (the operator, or ``hpo run``, created its tables
    and checked their schema): a trial skips creating the tables (a dozen catalogue queries) and the
    schema check (it loads Alembic's migration scripts), a good part of a cheap trial's start-up."""
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=True, skip_table_creation=True
    )


class TrialHandle:
    """One running trial of the shared study, as the trial process sees it.

    ``retry_seconds``: how long the final tell is retried while the storage does not answer (default
    ``HPO_STORAGE_RETRY_SECONDS``, read here so that a bad value is an error at the start, not at the end).
    """

    def __init__(
        self,
        contract: TrialContract,
        storage: optuna.storages.BaseStorage | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        self.contract = contract
        self.retry_seconds = storage_retry_seconds() if retry_seconds is None else retry_seconds
        self.reported: dict[int, float] = {}  # what THIS attempt reported (and the storage took)
        self.finished = False
        self.missing_metric: str | None = None  # told with FAIL (ATTR_MISSING_METRIC)
        self.superseded: str | None = None  # why this attempt no longer owns its trial
        # Opening the storage and loading the study: the same outage policy as the final tell (a trial
        # started during a database restart waits for it instead of failing its attempt).
        self.storage, self.study, self.trial_id, trial = self._retried(
            lambda: self._open(storage), f"Trial {contract.trial_number}: opening study {contract.study_name}"
        )
        self._trial = optuna.Trial(self.study, self.trial_id)
        self._check_current(trial)
        # A retry: the rungs the failed attempts completed (SuccessiveHalving/Hyperband write them as
        # system attributes), hidden from this attempt's pruner until it completes them itself.
        self._earlier_rungs: dict[str, Any] = {}
        if self.attempt > 0:
            self._earlier_rungs = {
                k: v for k, v in trial.system_attrs.items() if k.startswith(RUNG_ATTR_PREFIX)
            }

    def _open(
        self, storage: optuna.storages.BaseStorage | None
    ) -> tuple[optuna.storages.BaseStorage, optuna.Study, int, optuna.trial.FrozenTrial]:
        contract = self.contract
        opened = storage if storage is not None else open_storage(contract.storage_url)
        study = optuna.load_study(
            study_name=contract.study_name,
            storage=opened,
            # A trial never samples (its parameters come from the contract): the cheapest sampler will do.
            sampler=optuna.samplers.RandomSampler(),
            pruner=build_pruner(contract.pruner),
        )
        study_id = opened.get_study_id_from_name(contract.study_name)
        trial_id = opened.get_trial_id_from_study_id_trial_number(study_id, contract.trial_number)
        return opened, study, trial_id, opened.get_trial(trial_id)

    def _check_current(self, trial: optuna.trial.FrozenTrial) -> None:
        """Raise :class:`AttemptSuperseded` unless this attempt still owns ``trial`` (as just read)."""
        if self.superseded is not None:
            raise AttemptSuperseded(self.superseded)  # said once already
        if trial.state.is_finished():
            self._superseded(f"it is already finished ({trial.state.name})")
        stored = trial.user_attrs.get(ATTR_ATTEMPTS)
        if isinstance(stored, int) and stored - 1 > self.attempt:
            self._superseded(f"attempt {stored - 1} runs it now")

    def _superseded(self, why: str) -> None:
        # Nothing more is written by this attempt: every later write raises again.
        self.superseded = (
            f"Trial {self.number}, attempt {self.attempt}: {why}; this attempt writes nothing more and exits"
        )
        log.warning("%s", self.superseded)
        raise AttemptSuperseded(self.superseded)

    def _current(self) -> None:
        """Raise :class:`AttemptSuperseded` unless this attempt still owns its trial (read now)."""
        self._check_current(self.storage.get_trial(self.trial_id))

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

    def state(self) -> TrialState:
        return self.storage.get_trial(self.trial_id).state

    def report(self, value: float, step: int) -> bool:
        """Report the first objective's intermediate value at a progress step (same units in every trial).

        Returns whether the storage took it: a storage that does not answer skips this report with a
        warning (the next report tries again). A retry's report replaces the earlier attempt's value at
        the same step. Multi-objective studies report nothing (Optuna prunes single-objective ones only).
        """
        if len(self.contract.objectives) > 1:
            return False
        value, step = float(value), int(step)

        def report() -> bool:
            self._current()
            try:
                self._report(value, step)
            except UpdateFinishedTrialError:
                self._superseded("it finished meanwhile")
            return True

        taken = skip_on_outage(report, f"Trial {self.number}: the report at step {step} is skipped", False)
        if taken and self.attempt == 0:
            self.reported.setdefault(step, value)  # Optuna's Trial.report keeps the first value at a step
        elif taken:
            self.reported[step] = value
        return taken

    def _report(self, value: float, step: int) -> None:
        if self.attempt == 0:
            self._trial.report(value, step)
            return
        # A retry reuses the trial: Trial.report would ignore (with a warning) every step the failed
        # attempt reported, while the storage's own write replaces the value at that step.
        if step < 0:
            raise ValueError(f"`step={step}` must be non-negative.")
        self.storage.set_trial_intermediate_value(self.trial_id, step, value)

    def should_prune(self) -> bool:
        """The study's pruner's decision on this attempt's reports; False during a storage outage."""
        if len(self.contract.objectives) > 1:
            return False
        # bool(): pruners answer numpy booleans
        return bool(skip_on_outage(self._should_prune, f"Trial {self.number}: no pruning check", False))

    def _should_prune(self) -> bool:
        try:
            return self._pruner_says()
        except UpdateFinishedTrialError:  # a rung mark on a trial that finished meanwhile
            self._superseded("it finished meanwhile")
            return False  # pragma: no cover - _superseded raises

    def _pruner_says(self) -> bool:
        if self.attempt == 0:
            return self._trial.should_prune()
        # The pruner sees the trial as stored, but with only this attempt's intermediate values and rungs:
        # a failed attempt that reached step 5 must not make a retry at step 2 look as if it were at step 5.
        # A rung mark still holding the value the failed attempt left is the failed attempt's; once this
        # attempt completes the rung, the pruner writes its own value there.
        frozen = copy.copy(self.storage.get_trial(self.trial_id))
        frozen.intermediate_values = dict(self.reported)
        frozen.system_attrs = {
            k: v
            for k, v in frozen.system_attrs.items()
            if not (k in self._earlier_rungs and self._earlier_rungs[k] == v)
        }
        return self.study.pruner.prune(self.study, frozen)

    def prune(self) -> None:
        """End the trial as PRUNED (retried while the storage does not answer)."""
        self._finish(state=TrialState.PRUNED)
        log.info("Trial %d pruned.", self.number)

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
        self._finish(values=vals)

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

    def set_attr(self, key: str, value: Any) -> None:
        """A user attribute on the trial (retried while the storage does not answer)."""

        def write() -> None:
            self._current()
            self.storage.set_trial_user_attr(self.trial_id, key, value)

        self._retried(write, f"Trial {self.number}: setting {key}")

    def fail(self, reason: str) -> None:
        """End the trial as FAIL with a reason; the operator shows it in the study's status."""

        def tell() -> bool:
            if self.finished:
                return False
            trial = self.storage.get_trial(self.trial_id)
            if trial.state.is_finished():
                return False
            self._check_current(trial)
            self.storage.set_trial_user_attr(self.trial_id, ATTR_FAIL_REASON, reason[:1000])
            if self.missing_metric is not None:
                self.storage.set_trial_user_attr(self.trial_id, ATTR_MISSING_METRIC, self.missing_metric)
            self.study.tell(self.number, state=TrialState.FAIL, skip_if_finished=True)
            return True

        told = self._retried(tell, f"Trial {self.number}: telling FAIL")
        self.finished = True
        if told:
            log.error("Trial %d failed: %s", self.number, reason)
        else:
            log.warning("Trial %d is already finished; not failing it: %s", self.number, reason)

    def _finish(self, values: list[float] | None = None, state: TrialState | None = None) -> None:
        def tell() -> None:
            if self.finished:
                return
            trial = self.storage.get_trial(self.trial_id)
            if trial.state.is_finished():
                return
            self._check_current(trial)
            if state == TrialState.PRUNED and self.attempt > 0:
                # Optuna's tell stores a pruned trial's value at its last stored step, which may be a
                # step only the failed attempt reached; store this attempt's own last report instead.
                last = self.reported[max(self.reported)] if self.reported else None
                value = [last] if last is not None and math.isfinite(last) else None
                self.storage.set_trial_state_values(self.trial_id, TrialState.PRUNED, value)
                return
            self.study.tell(self.number, values=values, state=state, skip_if_finished=True)

        what = "telling the final value" if values is not None else f"telling {state.name if state else ''}"
        self._retried(tell, f"Trial {self.number}: {what}")
        self.finished = True

    def _retried(self, call: Callable[[], T], what: str) -> T:
        return with_storage_retries(call, what, self.retry_seconds)


def current_trial() -> TrialHandle:
    """The trial this process runs, from the environment the operator (or ``hpo run``) set."""
    return TrialHandle(TrialContract.from_env())
