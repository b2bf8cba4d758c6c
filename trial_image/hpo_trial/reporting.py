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

**Two ways to the study, one behaviour.** Where the operator (or ``hpo run``) gives the trial a report
endpoint (``HPO_REPORT_URL`` with the trial's own ``HPO_REPORT_TOKEN``), ``current_trial()`` reports
through it (:class:`hpo_trial.remote.RemoteTrial`: the standard library's HTTP client, no database
client, no Optuna in the trial process; the token lets it write its own trial's current attempt and
nothing else). Without one it opens the shared storage itself (:class:`hpo_trial.direct.TrialHandle`,
Optuna and SQLAlchemy). Importing this module loads neither.

A storage (or report endpoint) that does not answer (a database restart, an operator restart) is no
fault of the trial, and this module has the one outage policy for the built-in runner and custom
containers alike:

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

from typing import TYPE_CHECKING, Any

from hpo_trial.contract import TrialContract
from hpo_trial.policy import (
    RETRY_FIRST_DELAY,
    RETRY_MAX_DELAY,
    AttemptSuperseded,
    EndpointUnavailable,
    MetricNotFound,
    StorageUnavailable,
    TrialBase,
    is_storage_error,
    process_rank,
    skip_on_outage,
    with_storage_retries,
)

if TYPE_CHECKING:
    from hpo_trial.direct import TrialHandle
    from hpo_trial.remote import RemoteTrial

__all__ = [
    "RETRY_FIRST_DELAY",
    "RETRY_MAX_DELAY",
    "AttemptSuperseded",
    "EndpointUnavailable",
    "MetricNotFound",
    "StorageUnavailable",
    "TrialBase",
    "current_trial",
    "is_storage_error",
    "process_rank",
    "skip_on_outage",
    "with_storage_retries",
]

# The public errors are this module's, wherever they are defined (tracebacks name them so).
for _error in (AttemptSuperseded, EndpointUnavailable, MetricNotFound, StorageUnavailable):
    _error.__module__ = __name__

# The names of the direct path, loaded (with Optuna) only when asked for.
_DIRECT = ("TrialHandle", "STORAGE_ERRORS", "RUNG_ATTR_PREFIX", "open_storage")


def __getattr__(name: str) -> Any:
    if name in _DIRECT:
        from hpo_trial import direct

        return getattr(direct, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def current_trial() -> TrialHandle | RemoteTrial:
    """The trial this process runs, from the environment the operator (or ``hpo run``) set: through its
    report endpoint when it has one, else straight against the storage."""
    contract = TrialContract.from_env()
    if contract.report_url:
        from hpo_trial.remote import RemoteTrial

        return RemoteTrial(contract)
    from hpo_trial.direct import TrialHandle

    return TrialHandle(contract)
