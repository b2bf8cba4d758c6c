"""One trial of the built-in runner: read the contract, build the recipe, train, report, prune, finish.

The order of work, and what happens when something is wrong:

1. Read the trial contract from the environment (no contract: exit 2, nothing can be told).
2. Open the study with its own pruner (rank 0 only; in a multi-GPU pod the other ranks never touch
   the storage).
3. Validate the recipe and the parameter names (parse only, before torch is imported; training-argument
   names and values are left to the installed library), then check the names against the library's
   fields and build arguments, data, evaluator, model and loss (:func:`hpo_trial.recipe.prepare`).
   A bad recipe ends the trial FAIL with ``hpo:fail_reason`` naming the field, and the process exits 1.
4. Train with ``SentenceTransformerTrainer``. After every evaluation, the first objective is reported at
   step ``round(epoch * 100)`` (hundredths of an epoch: the same progress in every trial whatever its
   batch size; with ``evalEveryEpochs`` the step is the scheduled mark itself) and the study's pruner
   is asked; when it says prune, training stops, the trial is told PRUNED and the process exits 0.
5. Evaluate at the end, optionally save the model (``saveModel``, recorded in ``hpo:model_path``; with
   mode ``best`` only when no complete trial is better, and models the study's best trials beat are
   deleted after the tell: :mod:`hpo_trial.keep`), and tell the objective values looked up by their
   exact metric names. A missing name fails the trial with the list of names that exist.
6. With ``report_to`` (a training argument), each trial is one run per tracker, named
   ``<study>-trial-<number>``, with its parameters and objective (:mod:`hpo_trial.tracking`).

A storage that does not answer is not the trial's fault; the policy is :mod:`hpo_trial.reporting`'s, the
same as for custom containers. During training an evaluation it cannot take goes unreported (training
goes on; the next evaluation reports again). At the end, the final tell is retried with backoff for
``HPO_STORAGE_RETRY_SECONDS`` (default 300 s); if the storage still does not answer, the process exits 3
without telling FAIL, so the operator counts a failed attempt and its retries (``spec.trials.retries``)
apply. FAIL is told only for the trial's own errors: its recipe, its metrics, its training.

Opening the study at the start follows the same outage policy: it is retried for
``HPO_STORAGE_RETRY_SECONDS``, so a trial started during a database restart waits for the database.

An attempt that no longer owns its trial (the trial already finished, told by an earlier attempt, or a
newer attempt of it runs: :class:`hpo_trial.reporting.AttemptSuperseded`) stops where it is, writes
nothing more and exits 0, at the start or during training: it is not a failure.

Exit codes: 0 for a trial completed or pruned, or an attempt superseded; 1 for a trial failed (told
FAIL); 2 when the contract could not be read or the study does not exist; 3 when the storage did not
answer (at the start or the end, for the whole retry time) (2 and 3: nothing told; the operator retries
the trial or fails it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from hpo_trial import keep
from hpo_trial.contract import ATTR_MODEL_PATH, ContractError, TrialContract, storage_retry_seconds
from hpo_trial.reporting import (
    AttemptSuperseded,
    MetricNotFound,
    StorageUnavailable,
    TrialHandle,
    is_storage_error,
    process_rank,
    skip_on_outage,
)
from hpo_trial.tracking import Tracking
from hpo_trial.trainer_spec import (
    TRIAL_PARAMS_PATH,
    TrainerSpec,
    TrainerSpecError,
    check_pruning,
    validate_param_names,
    validate_trainer,
)

log = logging.getLogger("hpo_trial")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NO_CONTRACT = 2
EXIT_STORAGE = 3


@dataclass
class TrialOutcome:
    """What one run of the runner did (returned by :func:`run_trial`, for tests and benchmarks)."""

    state: TrialState
    exit_code: int
    values: list[float] | None = None
    reason: str | None = None
    reported: dict[int, float] = field(default_factory=dict)
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)
    model_path: str | None = None


class _Failed(Exception):
    """Ends the trial as FAIL with this reason."""


def _output_dirs(contract: TrialContract, spec: TrainerSpec, base: str) -> tuple[str, str | None]:
    """The trial's working directory under ``base``, and where it saves its model (None: it does not)."""
    trial_dir = str(Path(base) / f"trial-{contract.trial_number}")
    model_dir = None
    if spec.save_model is not None and spec.saves_model:
        root = spec.save_model.resolve(contract.output_dir, os.getcwd())
        model_dir = keep.model_dir(root, contract.trial_number)
    return trial_dir, model_dir


def run_trial(contract: TrialContract, handle: TrialHandle | None) -> TrialOutcome:
    """Run one trial; ``handle`` is None on ranks other than 0. Tells the storage through ``handle``."""
    number = contract.trial_number
    try:
        return _run(contract, handle)
    except AttemptSuperseded as e:  # logged by the handle: nothing more is written, not a failure
        return TrialOutcome(TrialState.RUNNING, EXIT_OK, reason=e.reason)
    except _Failed as e:
        reason = str(e)
    except TrainerSpecError as e:
        reason = str(e)
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
        if is_storage_error(e):  # the infrastructure's fault: leave the trial to the operator's retries
            log.error(
                "Trial %d: the storage does not answer (%s); exiting without telling FAIL so the "
                "operator can run the trial again",
                number,
                reason.splitlines()[0],
            )
            return TrialOutcome(TrialState.RUNNING, EXIT_STORAGE, reason=reason)
        log.error("Trial %d: %s", number, traceback.format_exc())  # training or evaluation broke
    if handle is None:
        log.error("Trial %d failed: %s", number, reason)
        return TrialOutcome(TrialState.FAIL, EXIT_FAILED, reason=reason)
    try:
        handle.fail(reason)  # retried while the storage does not answer
    except AttemptSuperseded as e:
        return TrialOutcome(TrialState.RUNNING, EXIT_OK, reason=e.reason)
    except Exception as e:  # the storage is gone too: exit non-zero all the same; the operator ends it
        log.error(
            "Trial %d failed (%s) and FAIL could not be told: %s: %s", number, reason, type(e).__name__, e
        )
    return TrialOutcome(TrialState.FAIL, EXIT_FAILED, reason=reason)


def _run(contract: TrialContract, handle: TrialHandle | None) -> TrialOutcome:
    # Parse only: training-argument names and values are checked against the installed library by
    # recipe.prepare, not against the apply-time table (which may be older or newer than this image's).
    spec = validate_trainer(contract.trainer, known_arguments=None)
    validate_param_names(spec, list(contract.params), TRIAL_PARAMS_PATH, known_arguments=None)
    if len(contract.objectives) == 1:  # Optuna prunes single-objective studies only
        warning = check_pruning(spec, contract.pruner, contract.params)
        if warning:
            log.warning("Trial %d: %s", contract.trial_number, warning)
    objective = contract.objectives[0].metric
    if contract.output_dir:
        return _train(contract, handle, spec, objective, contract.output_dir)
    with tempfile.TemporaryDirectory(prefix="hpo-trial-") as tmp:
        return _train(contract, handle, spec, objective, tmp)


def _train(
    contract: TrialContract, handle: TrialHandle | None, spec: TrainerSpec, objective: str, base: str
) -> TrialOutcome:
    import datasets
    from transformers.utils import logging as hf_logging

    from hpo_trial import recipe as recipes

    hf_logging.set_verbosity_warning()
    hf_logging.disable_progress_bar()
    logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
    datasets.disable_progress_bars()
    number = contract.trial_number
    trial_dir, model_dir = _output_dirs(contract, spec, base)
    started = time.monotonic()
    r = recipes.prepare(spec, contract.params, trial_dir)
    log.info(
        "Trial %d: recipe ready in %.1f s (model %s, loss %s)",
        number,
        time.monotonic() - started,
        spec.model,
        spec.loss.name,
    )

    tracking = Tracking(contract, r.args, main_process=handle is not None)
    tracking.start()
    state, values = TrialState.FAIL, None
    try:
        outcome = _fit(contract, handle, spec, objective, r, model_dir, started)
        state, values = outcome.state, outcome.values
        return outcome
    finally:
        tracking.finish(state, values)


def _fit(
    contract: TrialContract,
    handle: TrialHandle | None,
    spec: TrainerSpec,
    objective: str,
    r: Any,
    model_dir: str | None,
    started: float,
) -> TrialOutcome:
    from transformers import PrinterCallback

    from hpo_trial import recipe as recipes
    from hpo_trial.callback import CONTINUE, PRUNE, SUPERSEDED, TrialCallback

    number = contract.trial_number
    callback = TrialCallback(handle, objective, spec.eval_every_epochs, number)
    trainer = recipes.make_trainer(r, [callback])
    if "disable_tqdm" not in spec.arguments and "disable_tqdm" not in contract.params:
        trainer.remove_callback(PrinterCallback)  # our progress lines replace the raw dicts
    train_output = trainer.train()
    train_metrics = {k: float(v) for k, v in train_output.metrics.items() if isinstance(v, int | float)}
    reported = dict(callback.reported)
    decision = callback.decision
    if decision == SUPERSEDED:
        return TrialOutcome(TrialState.RUNNING, EXIT_OK, reason=callback.reason, reported=reported)
    if decision == PRUNE:
        if handle is not None:
            handle.prune()
        return TrialOutcome(TrialState.PRUNED, EXIT_OK, reported=reported, train_metrics=train_metrics)
    if decision != CONTINUE:
        raise _Failed(callback.reason or decision.removeprefix("fail: "))

    last_eval = callback.last_eval
    if last_eval is not None and last_eval[0] == trainer.state.global_step:
        eval_metrics = last_eval[1]  # the last scheduled evaluation was at the final step: reuse it
    else:
        eval_metrics = trainer.evaluate()
        step = round(float(trainer.state.epoch or 0.0) * 100)
        if handle is not None and objective in eval_metrics and step not in reported:
            value = float(eval_metrics[objective])
            if handle.report(value, step):  # skipped when the storage does not answer
                reported[step] = value
    metrics: dict[str, Any] = {**train_metrics, **eval_metrics}
    values = None
    if handle is not None:
        try:
            values = handle.objective_values(metrics)
        except MetricNotFound as e:
            raise _Failed(str(e)) from None
        bad = [v for v in values if math.isnan(v) or math.isinf(v)]
        if bad:
            raise _Failed(f"objective value is {bad[0]}")
    best_only = spec.save_model is not None and spec.save_model.mode == "best"
    if model_dir is not None and best_only and handle is not None and values is not None:
        beaten = not skip_on_outage(
            lambda: keep.could_be_best(handle.study, number, values), "read the best trial", True
        )
        if beaten:
            log.info("Trial %d: model not saved (saveModel mode best): a complete trial is better", number)
            model_dir = None
    if model_dir is not None:
        if handle is not None:  # recorded first: a model half written by a killed trial is still known
            handle.set_attr(ATTR_MODEL_PATH, model_dir)
        trainer.save_model(model_dir)
        log.info("Trial %d: model saved to %s", number, model_dir)
    if handle is not None and values is not None:
        handle.complete(values)
        shown = ", ".join(f"{o.metric} = {v:.6g}" for o, v in zip(contract.objectives, values, strict=True))
        log.info("Trial %d finished in %.0f s: %s", number, time.monotonic() - started, shown)
        if best_only:
            skip_on_outage(lambda: keep.remove_beaten(handle.study), "remove beaten models", [])
    return TrialOutcome(
        TrialState.COMPLETE,
        EXIT_OK,
        values=values,
        reported=reported,
        train_metrics=train_metrics,
        eval_metrics={k: float(v) for k, v in eval_metrics.items() if isinstance(v, int | float)},
        model_path=model_dir,
    )


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m hpo_trial``: run the trial the environment describes; returns the exit code."""
    _setup_logging()
    rank = process_rank()
    try:
        contract = TrialContract.from_env()
        storage_retry_seconds()  # a bad HPO_STORAGE_RETRY_SECONDS is an error now, not at the end
    except ContractError as e:
        log.error("%s", e)
        return EXIT_NO_CONTRACT
    handle: TrialHandle | None = None
    if rank == 0:
        try:
            handle = TrialHandle(contract)  # opening the study is retried while the storage does not answer
        except AttemptSuperseded:  # logged: the trial finished, or a newer attempt runs it
            return EXIT_OK
        except StorageUnavailable as e:  # the message names the cause; nothing was told
            log.error("%s", e)
            return EXIT_STORAGE
        except ValueError as e:  # the pruner configuration: tell FAIL with the reason
            try:
                handle = TrialHandle(dataclasses.replace(contract, pruner={"type": "None"}))
            except Exception:
                log.error("Trial %d: cannot open the study: %s", contract.trial_number, e)
                return EXIT_NO_CONTRACT
            handle.fail(f"HPO_PRUNER: {e}")
            return EXIT_FAILED
        except Exception as e:
            log.error(
                "Trial %d: cannot open study %r in the storage: %s: %s",
                contract.trial_number,
                contract.study_name,
                type(e).__name__,
                e,
            )
            return EXIT_NO_CONTRACT
    log.info(
        "Trial %d (attempt %d) of study %s%s: parameters %s",
        contract.trial_number,
        contract.attempt,
        contract.study_name,
        f" on rank {rank}" if rank else "",
        json.dumps(contract.params, sort_keys=True),
    )
    outcome = run_trial(contract, handle)
    if outcome.state == TrialState.PRUNED:
        log.info("Trial %d pruned after reporting steps %s", contract.trial_number, sorted(outcome.reported))
    return outcome.exit_code
