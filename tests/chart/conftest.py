"""Fixtures for the chart tests: the pinned Helm binary and the chart's location."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.handle import ClusterHandle
from tests.harness.helm import Helm, ensure_helm

from .release import Release

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "hpo-operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    """Helm at the version tests/harness/helm/go.mod pins, with private config and cache directories."""
    yield Helm(ensure_helm(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def chart() -> Path:
    return CHART


@pytest.fixture
def install(helm: Helm, cluster: ClusterHandle) -> Iterator[Callable[..., Release]]:
    """``install(namespace, *settings)`` installs the chart; every release is uninstalled afterwards.
    Each release's report endpoint gets a port of its own (the operators these tests start listen on
    this host), unless the settings give one."""
    releases: list[Release] = []

    def make(namespace: str, *sets: str) -> Release:
        if not any(s.startswith("reports.") for s in sets):
            sets = (*sets, f"reports.port={free_port()}")
        release = Release(helm, cluster, namespace, *sets)
        releases.append(release)
        return release

    yield make
    for release in releases:
        release.uninstall()
