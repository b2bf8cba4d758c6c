"""Shared fixtures: a real Kubernetes control plane with a test node, and a real PostgreSQL.

- ``cluster`` (session): a :class:`tests.harness.handle.ClusterHandle`. Without ``KUBECONFIG`` the harness
  builds (once, cached) and starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
  node agent; with ``KUBECONFIG`` set the tests run against that cluster instead.
- ``namespace`` (function): a fresh namespace with its ``default`` ServiceAccount, deleted afterwards.
- ``postgres`` (session): a :class:`tests.harness.postgres.PostgresServer` (``HPO_TEST_POSTGRES_URL`` reuses a
  running one); ``postgres_url`` (function): a fresh, empty database's SQLAlchemy URL, dropped afterwards.

Tests using these fixtures get the ``cluster`` / ``postgres`` marks automatically. A harness that cannot
start is an error, never a skip.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness.binaries import ensure_control_plane
from tests.harness.cluster import Cluster
from tests.harness.handle import ClusterHandle
from tests.harness.postgres import PostgresServer

CLUSTER_FIXTURES = {"cluster", "namespace"}
POSTGRES_FIXTURES = {"postgres", "postgres_url"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if used & POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterHandle]:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        yield ClusterHandle.from_kubeconfig(kubeconfig)
        return
    # A cold build of the control plane takes minutes: show its progress instead of capturing it.
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            ensure_control_plane()
    harness = Cluster(tmp_path_factory.mktemp("k8s-harness"))
    harness.start()
    try:
        yield ClusterHandle.for_harness(harness)
    finally:
        harness.stop()


def _namespace_name(node: pytest.Item) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", node.name.lower()).strip("-")[:40].strip("-") or "test"
    return f"{base}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    name = _namespace_name(request.node)
    core = cluster.core()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods cannot be created before the serviceaccount controller made the `default` ServiceAccount.
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if url:
        yield PostgresServer.from_url(url)
        return
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test module's own, for tests that stop and start it (``pause``,
    ``resume``): the session's shared server must stay up for everyone else."""
    with PostgresServer(tmp_path_factory.mktemp("own-postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)
