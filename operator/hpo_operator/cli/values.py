"""How ``hpo`` writes one parameter value in a table cell: as the spec writes it, whatever its type."""

from __future__ import annotations

from typing import Any


def fmt_param(value: Any) -> str:
    """``'adamw'`` → ``adamw``, ``True`` → ``True``, ``16`` → ``16``, ``2.686123e-05`` → ``2.686e-05``.

    Floats keep four significant digits (as in Events); a boolean or integer choice is never shown as a
    float, and a string choice is shown without quotes (the column says which parameter it is).
    """
    if isinstance(value, bool | int | str):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return ""
    return repr(value)
