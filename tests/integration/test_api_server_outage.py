"""An API server that does not answer (a restart) is a transient outage, not a crashed reconcile.

The operator's own ``Kube`` and ``Driver`` against an address where no API server listens, as during a
kube-apiserver restart: every call is :class:`KubeUnavailable` with one line naming the cause, and a
reconcile ends in ``Waiting`` with the usual back-off (1 s, 2 s, ...) and one warning line, no
traceback. (The fault-injection suite, ``test_chaos.py``, restarts the real API server under a running
operator.)
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest
from hpo_operator.config import OperatorConfig
from hpo_operator.core import names
from hpo_operator.shell.driver import Driver, Waiting
from hpo_operator.shell.kube import Kube, KubeUnavailable
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.storage import Storages
from kubernetes import client
from prometheus_client import CollectorRegistry

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
