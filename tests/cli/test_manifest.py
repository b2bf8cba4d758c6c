"""Manifests are read the way kubectl and the API server read them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hpo_operator.cli.manifest import ManifestError, load_manifest

MANIFEST = """\
apiVersion: hpo.dev/v1alpha1
kind: HPOStudy
metadata: {name: floats}
spec:
  objective: [{metric: score, direction: maximize}]
  searchSpace:
    - {name: learning_rate, type: float, low: 1e-6, high: 1e-4, log: true}
    - {name: warmup_ratio, type: float, low: .0, high: 3e-1}
  trials: {total: 2}
  template: {command: [python, objective.py]}
"""


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # PyYAML's YAML 1.1 resolver reads `1e-6` as the string "1e-6"; kubectl (YAML 1.2) reads a number.
    path = tmp_path / "study.yaml"
    path.write_text(MANIFEST)
    manifest = load_manifest(path)
    params = {p.name: p for p in manifest.spec.search_space}
    assert params["learning_rate"].low == pytest.approx(1e-6)
    assert params["learning_rate"].high == pytest.approx(1e-4)
    assert params["warmup_ratio"].high == pytest.approx(0.3)


def test_a_quoted_exponent_stays_a_string_and_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(MANIFEST.replace("low: 1e-6", 'low: "1e-6"'))
    with pytest.raises(ManifestError, match=r"searchSpace\[0\]\.low"):
        load_manifest(path)
