"""An API server that does not answer (a restart) is a transient outage, not a crashed reconcile.

The operator's own ``Kube``, ``Driver`` and start-up handler against an address where no API server
listens, as during a kube-apiserver restart: every call is :class:`KubeUnavailable` with one line naming
the cause; a reconcile ends in ``Waiting`` with the usual back-off (1 s, 2 s, ...) and one warning line,
no traceback; an operator started meanwhile waits until HPOStudies are served. (The fault-injection
suite, ``test_chaos.py``, restarts the real API server under a running operator.)
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from hpo_operator import handlers
from hpo_operator.__main__ import TransientRetries
from hpo_operator.config import OperatorConfig
from hpo_operator.core import names
from hpo_operator.shell.driver import Driver, Waiting
from hpo_operator.shell.kube import Kube, KubeUnavailable
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import Storages
from kubernetes import client
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE = r"^cannot reach the API server \(.*Connection refused\)$"


@pytest.fixture
def kube() -> Iterator[Kube]:
    """A ``Kube`` whose API server address refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        configuration = client.Configuration()
        configuration.host = f"https://127.0.0.1:{sock.getsockname()[1]}"
        configuration.verify_ssl = False
        with client.ApiClient(configuration) as api:
            yield Kube(api)


def _study() -> dict[str, object]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "quad", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {
            "objective": [{"metric": "score"}],
            "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
            "template": {"command": ["python", "quadratic.py"]},
        },
    }


def test_every_call_of_an_api_server_that_does_not_answer_is_kube_unavailable(kube: Kube) -> None:
    owner = {"namespace": "ns", "name": "quad", "uid": "u-1"}
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}}
    secret = {"metadata": {"name": "s", "namespace": "ns"}, "data": {}}
    calls = {
        "list_pods": lambda: kube.list_pods("ns", "quad"),
        "create_pod": lambda: kube.create_pod(pod, "u-1"),
        "read_pod": lambda: kube.read_pod("ns", "p"),
        "delete_pod": lambda: kube.delete_pod("ns", "p"),
        "read_secret_value": lambda: kube.read_secret_value("ns", "s", "url"),
        "ensure_secret": lambda: kube.ensure_secret(secret, "u-1"),
        "post_event": lambda: kube.post_event(owner, "Normal", "R", "m"),
        "patch_status": lambda: kube.patch_status("ns", "quad", {"phase": "Running"}),
        "read_study": lambda: kube.read_study("ns", "quad"),
        "serves": lambda: kube.serves(names.GROUP, names.VERSION, names.PLURAL),
    }
    for name, call in calls.items():
        with pytest.raises(KubeUnavailable, match=UNREACHABLE) as raised:
            call()
        text = str(raised.value)
        assert "HTTPSConnection" not in text and "object at 0x" not in text, (name, text)


def test_a_reconcile_during_an_api_server_restart_waits_with_one_warning_line(
    kube: Kube, caplog: pytest.LogCaptureFixture, tmp_path: object
) -> None:
    config = OperatorConfig(default_storage_url="sqlite:///:memory:", trial_image="hpo-trial:test")
    driver = Driver(config, kube, Storages(), Metrics(CollectorRegistry()))
    caplog.set_level(logging.INFO, logger="hpo_operator")
    delays = []
    for _ in range(3):
        caplog.clear()
        with pytest.raises(Waiting) as waiting:
            driver.reconcile(_study())
        delays.append(waiting.value.delay)
        lines = [r for r in caplog.records if r.name.startswith("hpo_operator")]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None
        message = lines[0].getMessage()
        assert (
            message.startswith("ns/quad: cannot reach the API server (") and "Connection refused" in message
        )
        assert message.endswith(f"; retrying in {waiting.value.delay:g}s")
    assert delays == sorted(delays) and delays[0] < delays[-1]  # the usual back-off


def test_start_up_waits_until_the_api_server_serves_hpostudies(
    kube: Kube, caplog: pytest.LogCaptureFixture
) -> None:
    """kopf looks its resources up once, after start-up: an operator started while the API server does
    not answer (or before its discovery lists the CRD) waits in start-up instead of never serving them."""
    memo = kopf.Memo()
    memo.driver = SimpleNamespace(kube=kube)
    memo.executor = ThreadPoolExecutor(max_workers=2)
    caplog.set_level(logging.INFO, logger="hpo_operator")

    async def wait() -> None:
        await asyncio.wait_for(handlers._until_served(memo), timeout=2.5)

    with pytest.raises(TimeoutError):
        asyncio.run(wait())
    memo.executor.shutdown()
    lines = [r for r in caplog.records if r.name == "hpo_operator"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert re.match(
        rf"^waiting for the API server to serve {names.PLURAL}\.{names.GROUP}/{names.VERSION}: "
        r"cannot reach the API server \(.*Connection refused\)$",
        lines[0].getMessage(),
    ), lines[0].getMessage()


def test_serves_says_whether_discovery_lists_a_resource(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpostudies.hpo.dev", "--timeout=60s")
    with cluster.api_client() as api:
        kube = Kube(api)
        deadline = time.monotonic() + 30
        while not kube.serves(names.GROUP, names.VERSION, names.PLURAL):
            assert time.monotonic() < deadline, "discovery never listed hpostudies"
            time.sleep(0.2)
        assert not kube.serves(names.GROUP, names.VERSION, "nothings")
        assert not kube.serves("nothing.example.com", "v1", "things")


def test_the_clients_retries_during_a_restart_are_not_errors() -> None:
    """urllib3's per-retry warnings are dropped (the reconcile's one line says it), kopf's watch-stream
    retries are warnings; kopf giving up ("escalating") and everything else are left as they are."""

    def record(name: str, level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    keep = TransientRetries()
    retry = record(
        "urllib3.connectionpool", logging.WARNING, "Retrying (Retry(total=2)) after connection broken"
    )
    assert not keep.filter(retry)
    attempt = record(
        "kopf._cogs.clients.watching", logging.ERROR, "Request attempt #1/9 failed; will retry: GET"
    )
    assert keep.filter(attempt) and attempt.levelno == logging.WARNING and attempt.levelname == "WARNING"
    final = record(
        "kopf._cogs.clients.watching", logging.ERROR, "Request attempt #9/9 failed; escalating: GET"
    )
    assert keep.filter(final) and final.levelno == logging.ERROR
    other = record("hpo_operator", logging.WARNING, "Retrying (a name that only looks the same)")
    assert keep.filter(other) and other.levelno == logging.WARNING
