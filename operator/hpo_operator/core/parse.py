"""``parse_spec(dict) -> StudySpec``: the one way in for an HPOStudy spec.

The fields first (:func:`hpo_operator.core.spec.parse_fields`: the CRD schema's rules and what it cannot
check, the recipe included), then, once they are sound, what needs the search space as Optuna
distributions (:func:`hpo_operator.core.search_space.validate`: the sampler can handle the space, its
options fit its constructor, enqueued parameter sets fit the space). Kept apart from both so that
``search_space`` builds on ``spec`` and neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpo_operator.core import search_space
from hpo_operator.core.spec import StudySpec, parse_fields


def parse_spec(raw: Mapping[str, Any] | None) -> StudySpec:
    """``HPOStudy.spec`` (a plain dict, as the API server or YAML gives it) → :class:`StudySpec`.

    Raises :class:`~hpo_operator.core.spec.SpecError` listing every problem with the field path of each.
    """
    spec = parse_fields(raw)
    search_space.validate(spec)  # needs valid parameters, so it comes once the rest is sound
    return spec
