"""One-line messages about trials and studies, in the seed's words.

``Trial 13 finished with value 0.8020 and parameters {'learning_rate': 2.69e-05, ...}. Best is trial 13
with value 0.8020.`` These are the Events posted on the HPOStudy and the lines ``hpo`` prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

MAX_MESSAGE = 1000  # Kubernetes Event messages are cut at 1 KiB


def fmt_value(value: float | None) -> str:
    """0.80201 → ``0.8020``; very small or very large values keep four significant digits."""
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4f}"
    return f"{value:.4g}"


def fmt_values(values: Sequence[float]) -> str:
    return "[" + ", ".join(fmt_value(v) for v in values) + "]"


def fmt_params(params: Mapping[str, Any]) -> str:
    """``{'learning_rate': 2.686e-06, 'num_train_epochs': 1}``: floats to four significant digits."""
    parts = []
    for name, value in params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else repr(value)
        parts.append(f"{name!r}: {shown}")
    return "{" + ", ".join(parts) + "}"


def clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def trial_completed(
    number: int,
    values: Sequence[float],
    params: Mapping[str, Any],
    best: tuple[int, float] | None = None,
) -> str:
    """``Trial 13 finished with value 0.8020 and parameters {…}. Best is trial 13 with value 0.8020.``"""
    if len(values) == 1:
        message = (
            f"Trial {number} finished with value {fmt_value(values[0])} and parameters {fmt_params(params)}."
        )
        if best is not None:
            message += f" Best is trial {best[0]} with value {fmt_value(best[1])}."
    else:
        message = (
            f"Trial {number} finished with values {fmt_values(values)} and parameters {fmt_params(params)}."
        )
    return clip(message)


def trial_pruned(number: int, step: int | None, value: float | None, params: Mapping[str, Any]) -> str:
    at = f" at step {step} with value {fmt_value(value)}" if step is not None else ""
    return clip(f"Trial {number} pruned{at}; parameters {fmt_params(params)}.")


def trial_failed(number: int, reason: str | None, params: Mapping[str, Any]) -> str:
    return clip(f"Trial {number} failed: {reason or 'no reason recorded'}; parameters {fmt_params(params)}.")


def trial_retried(number: int, attempt: int, retries: int, reason: str) -> str:
    """A failed attempt ``attempt`` (0-based) is run again as attempt ``attempt + 1``."""
    return clip(
        f"Trial {number} attempt {attempt + 1} of {retries + 1} failed: {reason}. "
        f"Running it again with the same parameters (attempt {attempt + 2} of {retries + 1})."
    )


def best_sentence(best: tuple[int, float] | None) -> str:
    return f"Best is trial {best[0]} with value {fmt_value(best[1])}." if best else "No trial completed."
