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

A storage that does not answer (a database restart) raises one of :data:`STORAGE_ERRORS`. That is no
fault of the trial: a loop may skip that report and try again at the next one, and a process that cannot
tell its final value should exit non-zero *without* ``trial.fail`` (the operator's retries then apply);
:func:`with_storage_retries` retries a call a few times first.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState

from hpo_trial.contract import ATTR_FAIL_REASON, TrialContract, engine_kwargs
from hpo_trial.pruners import build_pruner

log = logging.getLogger("hpo_trial")

T = TypeVar("T")

# What a storage that does not answer raises: Optuna wraps most database errors in StorageInternalError,
# and a connection that cannot be made or is cut surfaces as SQLAlchemy's (or the socket's) own error.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    StorageInternalError,
    sqlalchemy.exc.SQLAlchemyError,
    ConnectionError,
    TimeoutError,
)


# with_storage_retries: 4 attempts, 2 s before the second, doubling (2 + 4 + 8 s of waiting in all).
RETRY_ATTEMPTS = 4
RETRY_FIRST_DELAY = 2.0


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 without it; only rank 0 touches the storage."""
    return int(os.environ.get("RANK", "0") or 0)


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` is the storage not answering (infrastructure), not a fault of the trial."""
    return isinstance(error, STORAGE_ERRORS)


def with_storage_retries(
    call: Callable[[], T], what: str, attempts: int | None = None, first_delay: float | None = None
) -> T:
    """``call()``, retried on storage errors with doubling delays.

    By default (:data:`RETRY_ATTEMPTS`, :data:`RETRY_FIRST_DELAY`) 4 attempts, 2, 4 and 8 s apart.

    The last error is raised. Each call must be safe to repeat (the handle's tells are).
    """
    attempts = RETRY_ATTEMPTS if attempts is None else attempts
    delay = RETRY_FIRST_DELAY if first_delay is None else first_delay
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except STORAGE_ERRORS as e:
            if attempt == attempts:
                raise
            log.warning(
                "%s: the storage did not answer (%s: %s); trying again in %.0f s (%d/%d)",
                what,
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
                delay,
                attempt,
                attempts - 1,
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


class MetricNotFound(KeyError):
    """The evaluation did not produce the objective's metric; the message lists those it did."""

    def __str__(self) -> str:
        return str(self.args[0])


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The shared Optuna storage, with engine options fit for long-lived pools and concurrent writers."""
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))


class TrialHandle:
    """One running trial of the shared study, as the trial process sees it."""

    def __init__(self, contract: TrialContract, storage: optuna.storages.BaseStorage | None = None) -> None:
        self.contract = contract
        self.storage = storage if storage is not None else open_storage(contract.storage_url)
        self.study = optuna.load_study(
            study_name=contract.study_name,
            storage=self.storage,
            # A trial never samples (its parameters come from the contract): the cheapest sampler will do.
            sampler=optuna.samplers.RandomSampler(),
            pruner=build_pruner(contract.pruner),
        )
        study_id = self.storage.get_study_id_from_name(contract.study_name)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, contract.trial_number)
        self._trial = optuna.Trial(self.study, self.trial_id)
        self.finished = False

    @property
    def number(self) -> int:
        return self.contract.trial_number

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.contract.params)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(o.metric for o in self.contract.objectives)

    def state(self) -> TrialState:
        return self.storage.get_trial(self.trial_id).state

    def report(self, value: float, step: int) -> None:
        """Report the first objective's intermediate value at a progress step (same units in every trial)."""
        if len(self.contract.objectives) > 1:
            return  # Optuna prunes single-objective studies only
        self._trial.report(float(value), int(step))

    def should_prune(self) -> bool:
        if len(self.contract.objectives) > 1:
            return False
        return self._trial.should_prune()

    def prune(self) -> None:
        self._finish(state=TrialState.PRUNED)
        log.info("Trial %d pruned.", self.number)

    def complete(self, values: float | Sequence[float]) -> None:
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
        """The objectives' values looked up by their exact names; :class:`MetricNotFound` lists the names."""
        missing = [m for m in self.metrics if m not in metrics]
        if missing:
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
        self.storage.set_trial_user_attr(self.trial_id, key, value)

    def fail(self, reason: str) -> None:
        """End the trial as FAIL with a reason; the operator shows it in the study's status."""
        if self.finished or self.state().is_finished():
            self.finished = True
            log.warning("Trial %d is already finished; not failing it: %s", self.number, reason)
            return
        self.set_attr(ATTR_FAIL_REASON, reason[:1000])
        self._finish(state=TrialState.FAIL)
        log.error("Trial %d failed: %s", self.number, reason)

    def _finish(self, values: list[float] | None = None, state: TrialState | None = None) -> None:
        if self.finished or self.state().is_finished():
            self.finished = True
            return
        self.study.tell(self.number, values=values, state=state, skip_if_finished=True)
        self.finished = True


def current_trial() -> TrialHandle:
    """The trial this process runs, from the environment the operator (or ``hpo run``) set."""
    return TrialHandle(TrialContract.from_env())
