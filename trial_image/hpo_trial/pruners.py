"""The study's pruner, rebuilt in every trial process from the ``HPO_PRUNER`` JSON.

Optuna keeps pruners out of the storage, so the operator hands the study's pruner configuration
to each trial, and ``trial.should_prune()`` there consults exactly the study's own pruner.
The JSON uses the HPOStudy spec's field names (``spec.pruner``).
"""

from __future__ import annotations

from typing import Any

import optuna

PRUNER_TYPES = ("None", "Median", "Percentile", "SuccessiveHalving", "Hyperband")


def build_pruner(config: dict[str, Any] | None) -> optuna.pruners.BasePruner:
    """``{"type": "Median", "nStartupTrials": 5, ...}`` → the Optuna pruner; ``None`` type → NopPruner."""
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
            raise ValueError("pruner.maxResource is required for the Hyperband pruner")
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=take("minResource", 1),
            max_resource=take("maxResource", None),
            reduction_factor=take("reductionFactor", 3),
        )
    else:
        raise ValueError(f"pruner.type {kind!r} is not one of {', '.join(PRUNER_TYPES)}")
    if cfg:
        raise ValueError(f"pruner.{sorted(cfg)[0]} is not a field of the {kind} pruner")
    return pruner
