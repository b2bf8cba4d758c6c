"""Fixtures for the chart tests: the pinned Helm binary and the chart's location."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.handle import ClusterHandle
from tests.harness.helm import Helm, ensure_helm

from .release import Release

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hpo-operator"


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    """Helm at the version tests/harness/helm/go.mod pins, with private config and cache directories."""
    yield Helm(ensure_helm(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def chart() -> Path:
    return CHART


@pytest.fixture
def install(helm: Helm, cluster: ClusterHandle) -> Iterator[Callable[..., Release]]:
    """``install(namespace, *settings)`` installs the chart; every release is uninstalled afterwards."""
    releases: list[Release] = []

    def make(namespace: str, *sets: str) -> Release:
        release = Release(helm, cluster, namespace, *sets)
        releases.append(release)
        return release

    yield make
    for release in releases:
        release.uninstall()
