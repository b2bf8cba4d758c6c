"""Short, human formatting of values and parameters for tables and the HTML report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_value(v: Any) -> str:
    """Floats with four significant decimals (small ones in scientific notation), anything else as is."""
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:.4f}"


def format_params(params: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in params.items()) + "}"
