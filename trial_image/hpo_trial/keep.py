"""The trials' models on disk: where a trial saves its model, and which models ``trainer.saveModel`` keeps.

Every trial saves under ``<saveModel.path>/trial-<number>`` and records the path in its user attribute
``hpo:model_path`` *before* it writes the model, so a model that a killed trial half wrote is still
known to the study. The study's storage is the only record: nothing here lives in a process's memory,
so the operator (and ``hpo status``) finds the best trial's model after any restart.

With ``mode: best`` a trial keeps its model only while it is among the study's best trials (Optuna's
``best_trials``: the best value, or the Pareto front with several objectives):

1. before saving, a trial that a complete trial already beats does not save at all;
2. after it is told COMPLETE, the trial deletes the model of every *finished* trial that is not among
   the best (its own included, when a trial that finished meanwhile beat it). Running trials' models
   are left alone: they are still being written, and their own trial judges them when it finishes.

Two trials that finish at once both read the study after telling, so whichever reads last sees both
and the beaten model goes; the best trial's model is never deleted (a trial deletes only models of
trials outside the best set it read, and the best set only changes by a better trial completing, which
then deletes in turn).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpo_trial.contract import ATTR_MODEL_PATH

log = logging.getLogger("hpo_trial")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def model_dir(root: str, number: int) -> str:
    """Where trial ``number`` saves its model under the resolved ``saveModel`` path ``root``."""
    return str((Path(root) / f"trial-{number}").resolve())


def _beats(a: Sequence[float], b: Sequence[float], directions: Sequence[StudyDirection]) -> bool:
    """Whether values ``a`` dominate ``b``: no worse on every objective, better on one."""
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == StudyDirection.MAXIMIZE:
            x, y = -x, -y
        if x > y:
            return False
        better = better or x < y
    return better


def could_be_best(study: Any, number: int, values: Sequence[float]) -> bool:
    """Whether a trial with ``values`` would be among the best: no complete trial beats it."""
    directions = study.directions
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number != number and t.values is not None and _beats(t.values, values, directions):
            return False
    return True


def remove_beaten(study: Any) -> list[str]:
    """Delete the saved models of finished trials that are not among the study's best; return their paths."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if not complete:
        return []
    best = {t.number for t in study.best_trials}
    removed = []
    for t in trials:
        path = t.user_attrs.get(ATTR_MODEL_PATH)
        if not path or t.state not in FINISHED or t.number in best:
            continue
        target = Path(str(path))
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
            if not target.exists():
                removed.append(str(target))
                log.info("Trial %d's model removed (saveModel mode best): %s", t.number, target)
    return removed
