"""The HPO operator: HPOStudy resources run as Optuna studies, one pod per trial."""

__version__ = "0.1.0"
