"""The study's pruner, rebuilt in every trial process from the ``HPO_PRUNER`` JSON.

Optuna keeps pruners out of the storage, so the operator hands the study's pruner configuration
to each trial, and ``trial.should_prune()`` there consults exactly the study's own pruner.
The JSON uses the HPOStudy spec's field names (``spec.pruner``).
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

# Optuna warns that some pruners are experimental (Wilcoxon, Patient) from the line that builds them;
# a trial's log (and every spec check) would repeat it.
warnings.filterwarnings(
    "ignore", category=optuna.exceptions.ExperimentalWarning, module=r"hpo_trial\.pruners$"
)

PRUNER_TYPES = (
    "None",
    "Median",
    "Percentile",
    "SuccessiveHalving",
    "Hyperband",
    "Wilcoxon",
    "Threshold",
    "Patient",
)


def build_pruner(config: dict[str, Any] | None, path: str = "pruner") -> optuna.pruners.BasePruner:
    """``{"type": "Median", "nStartupTrials": 5, ...}`` → the Optuna pruner; ``None`` type → NopPruner.

    A Patient pruner wraps the pruner in its ``wrappedPruner`` (any type but Patient; absent: none, and
    it prunes on patience alone). Errors name the field from ``path`` (``pruner.wrappedPruner.type``).
    """
    cfg = dict(config or {})
    kind = cfg.pop("type", "None")

    def take(name: str, default: Any) -> Any:
        return cfg.pop(name, default)

    if kind == "None":
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    elif kind == "Median":
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=take("nStartupTrials", 5),
            n_warmup_steps=take("nWarmupSteps", 0),
            interval_steps=take("intervalSteps", 1),
            n_min_trials=take("nMinTrials", 1),
        )
    elif kind == "Percentile":
        pruner = optuna.pruners.PercentilePruner(
            percentile=take("percentile", 25.0),
            n_startup_trials=take("nStartupTrials", 5),
            n_warmup_steps=take("nWarmupSteps", 0),
            interval_steps=take("intervalSteps", 1),
            n_min_trials=take("nMinTrials", 1),
        )
    elif kind == "SuccessiveHalving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=take("minResource", "auto"),
            reduction_factor=take("reductionFactor", 4),
            min_early_stopping_rate=take("minEarlyStoppingRate", 0),
        )
    elif kind == "Hyperband":
        if "maxResource" not in cfg:
            raise ValueError(f"{path}.maxResource is required for the Hyperband pruner")
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=take("minResource", 1),
            max_resource=take("maxResource", None),
            reduction_factor=take("reductionFactor", 3),
        )
    elif kind == "Wilcoxon":
        pruner = optuna.pruners.WilcoxonPruner(
            p_threshold=take("pThreshold", 0.1),
            n_startup_steps=take("nStartupSteps", 2),
        )
    elif kind == "Threshold":
        lower, upper = take("lower", None), take("upper", None)
        if lower is None and upper is None:
            raise ValueError(f"{path}.lower: the Threshold pruner needs lower, upper or both")
        if lower is not None and upper is not None and not lower < upper:
            raise ValueError(f"{path}.lower: must be less than upper ({lower!r} >= {upper!r})")
        pruner = optuna.pruners.ThresholdPruner(
            lower=lower,
            upper=upper,
            n_warmup_steps=take("nWarmupSteps", 0),
            interval_steps=take("intervalSteps", 1),
        )
    elif kind == "Patient":
        if "patience" not in cfg:
            raise ValueError(f"{path}.patience is required for the Patient pruner")
        wrapped_cfg = take("wrappedPruner", None)
        wrapped = None
        if wrapped_cfg is not None:
            if not isinstance(wrapped_cfg, dict):
                raise ValueError(f"{path}.wrappedPruner: must be an object, got {wrapped_cfg!r}")
            if wrapped_cfg.get("type", "None") == "Patient":
                raise ValueError(f"{path}.wrappedPruner.type: a Patient pruner cannot wrap another one")
            wrapped = build_pruner(wrapped_cfg, f"{path}.wrappedPruner")
        pruner = optuna.pruners.PatientPruner(
            wrapped, patience=take("patience", None), min_delta=take("minDelta", 0.0)
        )
    else:
        raise ValueError(f"{path}.type {kind!r} is not one of {', '.join(PRUNER_TYPES)}")
    if cfg:
        raise ValueError(f"{path}.{sorted(cfg)[0]} is not a field of the {kind} pruner")
    return pruner
