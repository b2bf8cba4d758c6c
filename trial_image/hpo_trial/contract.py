"""The trial contract: what the operator (or `hpo run`) tells a trial process, through its environment.

Standard library only: the operator imports this module and nothing else that runs training.

Every trial process, whether the built-in Sentence Transformers runner or a user's own container,
receives these variables:

========================  ===============================================================
``HPO_STORAGE_URL``        SQLAlchemy URL of the shared Optuna storage (from a Secret on a cluster).
``HPO_STUDY_NAME``         Name of the Optuna study (derived from namespace, name and uid).
``HPO_TRIAL_NUMBER``       The Optuna trial number this process runs.
``HPO_TRIAL_PARAMS``       The trial's parameters, a JSON object ``{"learning_rate": 3e-05, ...}``.
``HPO_OBJECTIVE``          The objectives, a JSON list ``[{"metric": "...", "direction": "maximize"}]``.
``HPO_PRUNER``             The study's pruner, a JSON object (``{"type": "None"}`` when pruning is off).
``HPO_TRAINER``            The training recipe (``spec.trainer``), a JSON object; ``{}`` for custom images.
``HPO_TRIAL_ATTEMPT``      0 for the first attempt, 1.. for retries of the same trial.
``HPO_OUTPUT_DIR``         Optional: where the trial may write its model and checkpoints.
``HPO_RUN_NAME``           Optional: ``<study>-trial-<number>`` (the HPOStudy's name), the name of
                           the trial's run in an experiment tracker (``report_to``).
``HPO_REPORT_URL``         Optional: the operator's (or ``hpo run``'s) report endpoint; with it,
                           :func:`hpo_trial.reporting.current_trial` reports through it instead
                           of opening the storage (``HPO_STORAGE_URL`` is then not required).
``HPO_REPORT_TOKEN``       With ``HPO_REPORT_URL``: this attempt's token, good for its own trial
                           and attempt only.
========================  ===============================================================

Set by the user (``template.env``), not by the operator:

=============================  ==========================================================
``HPO_STORAGE_RETRY_SECONDS``   How long a trial keeps retrying its final tell (complete,
                                pruned, fail) while the storage does not answer, with
                                doubling delays; default 300 (5 minutes), 0 tries once.
=============================  ==========================================================

Reporting is done through the report endpoint, or straight against the storage without one (see
:mod:`hpo_trial.reporting`): intermediate values
with ``trial.report`` so the study's pruner can stop the trial, and the final value(s) with ``study.tell``.
A storage that does not answer skips an intermediate report; the final tell is retried for
``HPO_STORAGE_RETRY_SECONDS``.
A process that exits 0 without having told its final value is failed by the operator with that reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STORAGE_URL = "HPO_STORAGE_URL"
STUDY_NAME = "HPO_STUDY_NAME"
TRIAL_NUMBER = "HPO_TRIAL_NUMBER"
TRIAL_PARAMS = "HPO_TRIAL_PARAMS"
OBJECTIVE = "HPO_OBJECTIVE"
PRUNER = "HPO_PRUNER"
TRAINER = "HPO_TRAINER"
TRIAL_ATTEMPT = "HPO_TRIAL_ATTEMPT"
OUTPUT_DIR = "HPO_OUTPUT_DIR"
RUN_NAME = "HPO_RUN_NAME"
REPORT_URL = "HPO_REPORT_URL"
REPORT_TOKEN = "HPO_REPORT_TOKEN"
STORAGE_RETRY_SECONDS = "HPO_STORAGE_RETRY_SECONDS"
DEFAULT_STORAGE_RETRY_SECONDS = 300.0

REQUIRED = (STORAGE_URL, STUDY_NAME, TRIAL_NUMBER, TRIAL_PARAMS, OBJECTIVE)

# Trial user attributes written by trial processes and read back by the operator and `hpo`.
ATTR_FAIL_REASON = "hpo:fail_reason"
# With a FAIL: the objective metric the evaluation did not produce (every trial would fail the same way,
# so the operator stops the study naming spec.objective[i].metric).
ATTR_MISSING_METRIC = "hpo:missing_metric"
ATTR_MODEL_PATH = "hpo:model_path"
ATTR_ATTEMPTS = "hpo:attempts"
# A model a trial saved and that was deleted since (trainer.saveModel mode best: not a best trial): True.
ATTR_MODEL_DELETED = "hpo:model_deleted"


class ContractError(ValueError):
    """The environment does not carry a valid trial contract; the message names the variable."""


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" | "minimize"


@dataclass(frozen=True)
class TrialContract:
    storage_url: str
    study_name: str
    trial_number: int
    params: dict[str, Any]
    objectives: tuple[Objective, ...]
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "None"})
    trainer: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    output_dir: str | None = None
    run_name: str | None = None
    report_url: str | None = None
    report_token: str | None = field(default=None, repr=False)

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry this contract (the storage URL included)."""
        env = {
            STORAGE_URL: self.storage_url,
            STUDY_NAME: self.study_name,
            TRIAL_NUMBER: str(self.trial_number),
            TRIAL_PARAMS: json.dumps(self.params, sort_keys=True),
            OBJECTIVE: json.dumps([{"metric": o.metric, "direction": o.direction} for o in self.objectives]),
            PRUNER: json.dumps(self.pruner, sort_keys=True),
            TRAINER: json.dumps(self.trainer, sort_keys=True),
            TRIAL_ATTEMPT: str(self.attempt),
        }
        if self.output_dir:
            env[OUTPUT_DIR] = self.output_dir
        if self.run_name:
            env[RUN_NAME] = self.run_name
        if self.report_url:
            env[REPORT_URL] = self.report_url
            env[REPORT_TOKEN] = self.report_token or ""
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrialContract:
        env = os.environ if environ is None else environ
        report_url = env.get(REPORT_URL) or None
        required = [k for k in REQUIRED if not (k == STORAGE_URL and report_url)]
        if report_url:
            required.append(REPORT_TOKEN)
        missing = [k for k in required if not env.get(k)]
        if missing:
            raise ContractError(
                f"missing trial contract variable(s): {', '.join(missing)}; "
                "a trial process is started by the HPO operator or `hpo run`"
            )
        try:
            number = int(env[TRIAL_NUMBER])
        except ValueError:
            raise ContractError(f"{TRIAL_NUMBER} must be an integer, got {env[TRIAL_NUMBER]!r}") from None
        params = _json(env, TRIAL_PARAMS, dict)
        raw_objectives = _json(env, OBJECTIVE, list)
        objectives = []
        for i, o in enumerate(raw_objectives):
            if not isinstance(o, dict) or not isinstance(o.get("metric"), str):
                raise ContractError(f"{OBJECTIVE}[{i}] must be an object with a 'metric' string")
            direction = o.get("direction", "maximize")
            if direction not in ("maximize", "minimize"):
                raise ContractError(
                    f"{OBJECTIVE}[{i}].direction must be maximize or minimize, got {direction!r}"
                )
            objectives.append(Objective(o["metric"], direction))
        if not objectives:
            raise ContractError(f"{OBJECTIVE} must name at least one metric")
        pruner = _json(env, PRUNER, dict) if env.get(PRUNER) else {"type": "None"}
        trainer = _json(env, TRAINER, dict) if env.get(TRAINER) else {}
        attempt = int(env.get(TRIAL_ATTEMPT) or 0)
        return cls(
            storage_url=env.get(STORAGE_URL, ""),
            study_name=env[STUDY_NAME],
            trial_number=number,
            params=params,
            objectives=tuple(objectives),
            pruner=pruner,
            trainer=trainer,
            attempt=attempt,
            output_dir=env.get(OUTPUT_DIR) or None,
            run_name=env.get(RUN_NAME) or None,
            report_url=report_url,
            report_token=env.get(REPORT_TOKEN) or None,
        )


def storage_retry_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``HPO_STORAGE_RETRY_SECONDS`` (default :data:`DEFAULT_STORAGE_RETRY_SECONDS`), a number >= 0."""
    env = os.environ if environ is None else environ
    raw = (env.get(STORAGE_RETRY_SECONDS) or "").strip()
    if not raw:
        return DEFAULT_STORAGE_RETRY_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0 or seconds == float("inf"):
        raise ContractError(f"{STORAGE_RETRY_SECONDS} must be a number of seconds >= 0, got {raw!r}")
    return seconds


def _json(env: Mapping[str, str], name: str, kind: type) -> Any:
    try:
        value = json.loads(env[name])
    except json.JSONDecodeError as e:
        raise ContractError(f"{name} is not valid JSON: {e}") from None
    if not isinstance(value, kind):
        raise ContractError(f"{name} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for the shared storage, the same in the operator, `hpo` and trials.

    SQLite waits for its lock (local trial processes write concurrently). A database server gets
    long-lived-pool hygiene (pre-ping, recycle) and, for PostgreSQL, bounded connects, TCP keepalives
    (a dead peer is noticed in about a minute) and a statement timeout, so a database that stops
    answering fails a call instead of hanging it.
    """
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 1800}
    if url.startswith(("postgresql://", "postgresql+psycopg2://", "postgres://")):
        kwargs["connect_args"] = {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "options": "-c statement_timeout=60000",
        }
    return kwargs
