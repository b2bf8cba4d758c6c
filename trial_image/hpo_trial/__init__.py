"""The training container: runs one HPOStudy trial and reports it to the shared Optuna storage."""

__version__ = "0.1.0"
