"""Experiment trackers per trial: what ``report_to`` (a training argument) does in a study.

The library's own integrations do the logging (the Trainer's ``MLflowCallback``, ``WandbCallback``,
``TensorBoardCallback``); this module makes each trial one run that a person finds and compares:

* the run is named ``<study>-trial-<number>`` (``HPO_RUN_NAME``; the HPOStudy's name, not the Optuna
  study's) unless the recipe sets ``run_name``; the attempt is a tag (a retry is a new run with the
  same name and the next ``hpo.attempt``);
* the trial's parameters are logged as ``hpo.params.<name>`` (the library logs the training arguments
  under their own names too; a ``loss.*`` parameter is only in the ``hpo.`` ones), and the Optuna trial
  number as ``hpo.trial_number``;
* the objective is logged once the trial is told, as ``hpo.objective`` (and ``hpo.objective.<i>`` with
  several objectives), with the trial's state as the tag ``hpo.state`` (COMPLETE, PRUNED, FAIL).

Per tracker:

* **MLflow** (``report_to: mlflow``): the runner starts the run itself (so the library's callback logs
  into it and leaves it open for the final evaluation), in the experiment ``MLFLOW_EXPERIMENT_NAME``,
  else one named after the HPOStudy; ``MLFLOW_TRACKING_URI`` and credentials
  (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``) come from the environment, i.e. from
  ``spec.template.env`` (``valueFrom.secretKeyRef`` on a cluster). A pruned trial's run ends KILLED, a
  failed one FAILED.
* **Weights & Biases** (``report_to: wandb``): the run's name as above, ``WANDB_RUN_GROUP`` the study
  (unless set), tags ``trial-<n>`` and ``attempt-<a>`` (added to ``WANDB_TAGS``); the parameters go into
  the run's config and the objective into its summary. ``WANDB_API_KEY`` (from a Secret),
  ``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_BASE_URL`` come from the environment.
* **TensorBoard** (``report_to: tensorboard``): event files under the trial's output directory,
  ``<HPO_OUTPUT_DIR>/trial-<n>/runs/<run name>`` (``TENSORBOARD_LOGGING_DIR`` overrides it); set
  ``spec.template.outputDir`` to a mounted volume (without one they go to a temporary directory that
  the trial deletes). No service is needed: ``tensorboard --logdir <outputDir>`` reads them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from hpo_trial.contract import TrialContract

log = logging.getLogger("hpo_trial")

_MLFLOW_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def run_name(contract: TrialContract) -> str:
    """``<study>-trial-<number>``: from ``HPO_RUN_NAME``, else after the Optuna study's name."""
    return contract.run_name or f"{contract.study_name}-trial-{contract.trial_number}"


def study_of(contract: TrialContract) -> str:
    """The HPOStudy's name (the run name without ``-trial-<number>``)."""
    name = run_name(contract)
    suffix = f"-trial-{contract.trial_number}"
    return name[: -len(suffix)] if name.endswith(suffix) else contract.study_name


def logged_params(contract: TrialContract) -> dict[str, Any]:
    """What every tracker gets as the trial's parameters."""
    out: dict[str, Any] = {"hpo.trial_number": contract.trial_number}
    out.update({f"hpo.params.{k}": v for k, v in sorted(contract.params.items())})
    return out


def tags(contract: TrialContract) -> dict[str, str]:
    return {
        "hpo.study": study_of(contract),
        "hpo.optuna_study": contract.study_name,
        "hpo.trial_number": str(contract.trial_number),
        "hpo.attempt": str(contract.attempt),
    }


class Tracking:
    """The trial's runs in the trackers ``args.report_to`` names; :meth:`start` before the trainer is
    built, :meth:`finish` once the trial's state is known (always: a failure ends the runs too)."""

    def __init__(self, contract: TrialContract, args: Any, *, main_process: bool = True) -> None:
        self.contract = contract
        self.args = args
        self.report_to: list[str] = list(getattr(args, "report_to", None) or ())
        self.main_process = main_process
        self._mlflow: Any = None
        self._wandb_env: dict[str, str] = {}

    @property
    def active(self) -> bool:
        return bool(self.report_to)

    def start(self) -> None:
        if not self.report_to:
            return
        if self.args.run_name is None:
            self.args.run_name = run_name(self.contract)
        name = self.args.run_name
        if "tensorboard" in self.report_to and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(self.args.output_dir) / "runs" / name)
        if "wandb" in self.report_to:
            extra = [f"trial-{self.contract.trial_number}", f"attempt-{self.contract.attempt}"]
            given = [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t]
            os.environ["WANDB_TAGS"] = ",".join([*given, *extra])
            os.environ.setdefault("WANDB_RUN_GROUP", study_of(self.contract))
        if "mlflow" in self.report_to and self.main_process:
            import mlflow

            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or study_of(self.contract))
            mlflow.start_run(run_name=name, tags=tags(self.contract))
            mlflow.log_params(logged_params(self.contract))
            self._mlflow = mlflow
            log.info(
                "Trial %d: MLflow run %s (%s) at %s",
                self.contract.trial_number,
                name,
                mlflow.active_run().info.run_id,
                mlflow.get_tracking_uri(),
            )

    def finish(self, state: TrialState, values: Sequence[float] | None) -> None:
        """Log the objective and the state, and end the runs this trial started."""
        if self._mlflow is not None:
            self._finish_mlflow(state, values)
        if "wandb" in self.report_to and self.main_process:
            self._finish_wandb(state, values)

    def _finish_mlflow(self, state: TrialState, values: Sequence[float] | None) -> None:
        mlflow, self._mlflow = self._mlflow, None
        try:
            if mlflow.active_run() is None:
                return
            mlflow.set_tag("hpo.state", state.name)
            if values:
                mlflow.log_metrics(objective_metrics(values))
            mlflow.end_run(status=_MLFLOW_STATUS.get(state, "FAILED"))
        except Exception as e:  # the tracker is not the trial's result: say so and go on
            log.warning("Trial %d: MLflow: %s: %s", self.contract.trial_number, type(e).__name__, e)

    def _finish_wandb(self, state: TrialState, values: Sequence[float] | None) -> None:
        try:
            import wandb
        except ImportError:
            return
        run = wandb.run
        if run is None:
            return
        try:
            run.config.update(logged_params(self.contract), allow_val_change=True)
            run.summary["hpo.state"] = state.name
            for key, value in objective_metrics(values or ()).items():
                run.summary[key] = value
            wandb.finish(exit_code=0 if state != TrialState.FAIL else 1)
        except Exception as e:
            log.warning("Trial %d: W&B: %s: %s", self.contract.trial_number, type(e).__name__, e)


def objective_metrics(values: Sequence[float]) -> Mapping[str, float]:
    """``hpo.objective`` (the first objective) and, with several, ``hpo.objective.<i>`` for each."""
    if not values:
        return {}
    out = {"hpo.objective": float(values[0])}
    if len(values) > 1:
        out.update({f"hpo.objective.{i}": float(v) for i, v in enumerate(values)})
    return out
