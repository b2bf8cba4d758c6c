"""Spec helpers shared by the unit tests."""

from __future__ import annotations

from typing import Any

import pytest
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError


def custom_spec(*params: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A minimal spec for a custom container (no recipe to validate): ``params`` replace the default
    search space (a float ``x``, an int ``n``, a categorical ``kind``), ``changes`` replace top fields."""
    spec: dict[str, Any] = {
        "objective": [{"metric": "score"}],
        "searchSpace": list(params)
        or [
            {"name": "x", "type": "float", "low": -5.0, "high": 5.0},
            {"name": "n", "type": "int", "low": 1, "high": 4},
            {"name": "kind", "type": "categorical", "choices": ["a", "b"]},
        ],
        "template": {"image": "example/trial:1", "command": ["python", "objective.py"]},
    }
    spec.update(changes)
    return spec


def error_of(raw: dict[str, Any]) -> SpecError:
    """The :class:`SpecError` that ``parse_spec(raw)`` raises (the test fails if it raises none)."""
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return info.value
