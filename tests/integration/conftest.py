"""The operator's integration fixtures: the CRD applied (once per module), a storage URL with a password in
it, the operator subprocess and a namespace's pod watch. ``cluster``, ``namespace`` and ``postgres_url`` come
from ``tests/conftest.py``; the classes and helpers are in ``operator_env.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.integration.operator_env import PASSWORD, ROOT, Operator, Pods, assert_no_secret


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpostudies.hpo.dev", "--timeout=60s")


@pytest.fixture
def storage_url(postgres_url: str) -> str:
    """The test database's URL with a password (the server trusts local connections and ignores it)."""
    return make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def operator(cluster: Any, namespace: str, storage_url: str, crd: None, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(cluster, namespace, storage_url, tmp_path / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
        log = op.log
        print(log[-6000:])  # shown when a test fails
        assert_no_secret(log, storage_url, "the operator's log")
        assert "reconcile failed" not in log, "a reconcile crashed"


@pytest.fixture
def pods(cluster: Any, namespace: str) -> Iterator[Pods]:
    tracker = Pods(cluster, namespace)
    yield tracker
    tracker.stop()
