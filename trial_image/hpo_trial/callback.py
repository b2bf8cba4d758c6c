"""The Trainer callback of the built-in runner: evaluation schedule, reports, pruning, progress lines.

Evaluations: with ``every_epochs`` the callback asks the Trainer to evaluate at the first optimizer step at
or past each mark (``every_epochs``, ``2 * every_epochs``, ...). After every evaluation during training,
rank 0 reports the objective at step ``round(mark * 100)`` (hundredths of an epoch; ``round(epoch * 100)``
for evaluations the Trainer scheduled itself), asks the study's pruner, and broadcasts the decision
(continue, prune, or fail with a reason) so that every rank stops together.

A storage that does not answer (a database restart) is not the trial's fault: that evaluation goes
unreported and unchecked, training goes on, and the next evaluation reports again. An attempt that no
longer owns its trial (``AttemptSuperseded``: the trial finished, or a newer attempt runs it) stops
training on every rank and writes nothing more. Any other error while deciding becomes a "fail: ..."
decision that is still broadcast, so no rank is left waiting.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from transformers import TrainerCallback

from hpo_trial.reporting import AttemptSuperseded, MetricNotFound, TrialHandle, process_rank

log = logging.getLogger("hpo_trial")

CONTINUE = "continue"
PRUNE = "prune"
SUPERSEDED = "superseded"  # this attempt no longer owns its trial: stop, write nothing, exit 0


def _broadcast(decision: str) -> str:
    """Rank 0's decision, on every rank (a no-op without a multi-process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [decision]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])
    return decision


class TrialCallback(TrainerCallback):
    """Schedules evaluations, reports them, asks the study's pruner and stops training when told.

    ``handle`` is None on ranks other than 0: those only receive rank 0's decision.
    """

    def __init__(
        self, handle: TrialHandle | None, objective: str, every_epochs: float | None, trial_number: int
    ) -> None:
        self.handle = handle
        self.objective = objective
        self.every_epochs = every_epochs
        self.trial_number = trial_number
        self.training = False
        self.marks_done = 0
        self.pending_mark: float | None = None
        self.decision = CONTINUE
        self.reason: str | None = None
        self.reported: dict[int, float] = {}
        self.unreported: list[int] = []  # steps whose report the storage did not take
        self.last_eval: tuple[int, dict[str, float]] | None = None
        self.started = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = True
        self.started = time.monotonic()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every_epochs is None or state.epoch is None:
            return
        # Evaluate at the first optimizer step at or past each mark (every_epochs, 2 * every_epochs, ...).
        next_mark = (self.marks_done + 1) * self.every_epochs
        if state.epoch + 1e-9 >= next_mark:
            while (self.marks_done + 1) * self.every_epochs <= state.epoch + 1e-9:
                self.marks_done += 1
            self.pending_mark = self.marks_done * self.every_epochs
            control.should_evaluate = True

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any
    ) -> None:
        if not self.training:
            return
        progress = self.pending_mark if self.pending_mark is not None else float(state.epoch or 0.0)
        self.pending_mark = None
        step = round(progress * 100)
        self.last_eval = (state.global_step, dict(metrics))
        decision = CONTINUE
        if self.handle is not None:
            decision = self.decide(metrics, step, progress)
        decision = _broadcast(decision)
        if decision != CONTINUE:
            self.decision = decision
            control.should_training_stop = True
            if self.handle is None:
                log.info(
                    "Trial %d: rank %d stops with rank 0 (%s)", self.trial_number, process_rank(), decision
                )

    def decide(self, metrics: dict[str, float], step: int, progress: float) -> str:
        """Rank 0's decision after an evaluation: ``continue``, ``prune`` or ``fail: <reason>``.

        Never raises: every rank waits for this decision.
        """
        try:
            return self._decide(metrics, step, progress)
        except AttemptSuperseded as e:  # logged by the handle
            self.reason = e.reason
            return SUPERSEDED
        except Exception as e:  # the decision is broadcast whatever happened, or the other ranks would hang
            log.error("Trial %d: %s", self.trial_number, traceback.format_exc())
            self.reason = f"{type(e).__name__}: {e}"
            return f"fail: {self.reason}"

    def _decide(self, metrics: dict[str, float], step: int, progress: float) -> str:
        assert self.handle is not None
        try:
            value = self.handle.objective_values(metrics)[0]
        except MetricNotFound as e:
            self.reason = str(e)
            return f"fail: {e}"
        if step in self.reported:
            return CONTINUE
        if len(self.handle.contract.objectives) > 1:  # Optuna prunes single-objective studies only
            log.info("Trial %d: epoch %.2f: %s = %.6g", self.trial_number, progress, self.objective, value)
            return CONTINUE
        # The outage policy is the handle's (hpo_trial.reporting): a report the storage does not take is
        # skipped with a warning, and so is the pruning check.
        if not self.handle.report(value, step):
            self.unreported.append(step)
            log.warning(
                "Trial %d: epoch %.2f: %s = %.6g was not reported; training goes on without a pruning "
                "check, the next evaluation reports again",
                self.trial_number,
                progress,
                self.objective,
                value,
            )
            return CONTINUE
        self.reported[step] = value
        prune = self.handle.should_prune()
        log.info(
            "Trial %d: epoch %.2f: %s = %.6g (reported at step %d)",
            self.trial_number,
            progress,
            self.objective,
            value,
            step,
        )
        if prune:
            log.info("Trial %d: the study's pruner stops it at epoch %.2f", self.trial_number, progress)
            return PRUNE
        return CONTINUE

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        elapsed = time.monotonic() - self.started
        lr = logs.get("learning_rate")
        log.info(
            "Trial %d: epoch %.2f step %d/%d loss %.4f%s (%.0f s)",
            self.trial_number,
            state.epoch or 0.0,
            state.global_step,
            state.max_steps,
            float(logs["loss"]),
            f" lr {lr:.3g}" if isinstance(lr, int | float) else "",
            elapsed,
        )
