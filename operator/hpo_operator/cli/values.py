"""How ``hpo`` writes a parameter value or a duration in a table cell (terminal and report alike)."""

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


def fmt_duration(seconds: float | None) -> str:
    """``42.3s``, ``1m25s``, ``2h05m``; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
