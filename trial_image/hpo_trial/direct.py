"""The direct way to the study: a trial process that opens the shared Optuna storage itself.

:func:`hpo_trial.reporting.current_trial` gives a :class:`TrialHandle` where the trial has no report
endpoint; the built-in runner always uses one (it reads other trials to keep the best model), and the
operator's report endpoint runs one per reporting trial on its own side. The behaviour, the outage
policy and the attempt fencing are those :mod:`hpo_trial.reporting` describes.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState

from hpo_trial.contract import (
    ATTR_ATTEMPTS,
    ATTR_FAIL_REASON,
    ATTR_MISSING_METRIC,
    TrialContract,
    engine_kwargs,
    storage_retry_seconds,
)
from hpo_trial.policy import (
    OUTAGE_ERRORS,
    AttemptSuperseded,
    TrialBase,
)
from hpo_trial.pruners import build_pruner

log = logging.getLogger("hpo_trial")


# What a storage that does not answer raises: Optuna wraps most database errors in StorageInternalError,
# and a connection that cannot be made or is cut surfaces as SQLAlchemy's (or the socket's) own error.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (
    StorageInternalError,
    sqlalchemy.exc.SQLAlchemyError,
    *OUTAGE_ERRORS,
)

# What optuna.pruners.SuccessiveHalvingPruner (and Hyperband's brackets) name the system attribute that
# records the value with which a trial completed a rung.
RUNG_ATTR_PREFIX = "completed_rung_"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The shared Optuna storage, with engine options fit for long-lived pools and concurrent writers.

    The study exists before any trial process starts (the operator, or ``hpo run``, created its tables
    and checked their schema): a trial skips creating the tables (a dozen catalogue queries) and the
    schema check (it loads Alembic's migration scripts), a good part of a cheap trial's start-up."""
    return optuna.storages.RDBStorage(
        url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=True, skip_table_creation=True
    )


class TrialHandle(TrialBase):
    """One running trial of the shared study, as the trial process sees it.

    ``retry_seconds``: how long the final tell is retried while the storage does not answer (default
    ``HPO_STORAGE_RETRY_SECONDS``, read here so that a bad value is an error at the start, not at the end).

    The report endpoint keeps one per reporting attempt, with ``retry_seconds=0`` (the trial process
    retries) and, for an attempt it had not seen (the endpoint restarted), ``adopt=True``: the attempt's
    own reports and its earlier rungs come from the trial process, and whether it still owns its trial is
    checked at each write instead of at the start.
    """

    outage_errors = STORAGE_ERRORS

    def __init__(
        self,
        contract: TrialContract,
        storage: optuna.storages.BaseStorage | None = None,
        retry_seconds: float | None = None,
        *,
        adopt: bool = False,
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
        if not adopt:
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

    def refresh(self) -> None:
        """Read the trial afresh (what Optuna's Trial keeps of it: its reports), for a handle that is not
        the trial's only writer (the report endpoint's, where several replicas answer)."""
        self._trial = optuna.Trial(self.study, self.trial_id)

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

    def state(self) -> TrialState:
        return self.storage.get_trial(self.trial_id).state

    def report_once(self, value: float, step: int) -> None:
        """One try at a report; a storage that does not answer raises (the endpoint's trial retries)."""
        self._current()
        try:
            self._report(value, step)
        except UpdateFinishedTrialError:
            self._superseded("it finished meanwhile")

    def _report(self, value: float, step: int) -> None:
        if self.attempt == 0:
            self._trial.report(value, step)
            return
        # A retry reuses the trial: Trial.report would ignore (with a warning) every step the failed
        # attempt reported, while the storage's own write replaces the value at that step.
        if step < 0:
            raise ValueError(f"`step={step}` must be non-negative.")
        self.storage.set_trial_intermediate_value(self.trial_id, step, value)

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

    def set_attr(self, key: str, value: Any) -> None:
        """A user attribute on the trial (retried while the storage does not answer)."""

        def write() -> None:
            self._current()
            self.storage.set_trial_user_attr(self.trial_id, key, value)

        self._retried(write, f"Trial {self.number}: setting {key}")

    def fail(self, reason: str) -> bool:
        """End the trial as FAIL with a reason; the operator shows it in the study's status. Whether this
        told it (False: the trial was already finished)."""

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
        self._told(told, reason)
        return told

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
