"""Two operator processes with what the chart gives its pods when it elects a leader, on the real control
plane: the chart's ServiceAccount token (so its Lease Role is what they may do), the Deployment's
environment (``HPO_IDENTITY`` from the pod name, as the kubelet would resolve it). One leads, the other
waits on standby; stopping the leader hands the Lease over, a standby stops cleanly, and no request is
refused by RBAC.

As in test_operator_with_chart.py, the chart is installed with ``operator.replicas=0`` (the node agent
runs commands, not images), with ``operator.leaderElection.enabled`` so the Deployment still elects.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.handle import ClusterHandle

from .test_operator_with_chart import (
    assert_rbac_allowed,
    create_storage_secret,
    free_port,
    http_ok,
    pod_environment,
    start_operator,
    stop,
    token_kubeconfig,
    wait_until,
)


def leader_gauge(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    m = re.search(r"^hpo_operator_leader (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def on_standby(ports: tuple[int, int]) -> bool:
    health, metrics = ports
    return leader_gauge(metrics) == 0 and http_ok(f"http://127.0.0.1:{health}/healthz")


@pytest.mark.timeout(300)
def test_the_charts_lease_rbac_lets_one_replica_lead_and_hand_over(
    install, cluster: ClusterHandle, namespace: str, postgres_url: str, tmp_path: Path
) -> None:
    create_storage_secret(cluster, namespace, postgres_url)
    release = install(
        namespace,
        "storage.mode=external",
        "storage.external.existingSecret=hpo-storage",
        f"operator.watchNamespaces={{{namespace}}}",
        "operator.leaderElection.enabled=true",
        "operator.leaderElection.leaseDuration=6",
        "operator.leaderElection.renewDeadline=4",
        "operator.leaderElection.retryPeriod=1",
    )
    kubeconfig = token_kubeconfig(cluster, release, tmp_path / "operator-kubeconfig")
    lease_name = f"{release.name}-leader"
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[tuple[int, int]] = []
    logs: list[Path] = []

    def start(n: int) -> None:
        health, metrics = free_port(), free_port()
        env = pod_environment(release, f"{release.name}-{n}")
        assert env["HPO_LEADER_ELECTION_LEASE"] == f"{namespace}/{lease_name}"
        env |= {
            "HPO_METRICS_PORT": str(metrics),
            "HPO_LIVENESS_ENDPOINT": f"http://127.0.0.1:{health}/healthz",
            "KUBECONFIG": str(kubeconfig),
        }
        logs.append(tmp_path / f"operator-{n}.log")
        procs.append(start_operator(env, logs[-1], tmp_path))
        ports.append((health, metrics))

    def holder() -> str:
        lease = client.CoordinationV1Api(cluster.api_client()).read_namespaced_lease(lease_name, namespace)
        return str(lease.spec.holder_identity or "")

    try:
        start(0)
        wait_until("replica 0 to lead", lambda: leader_gauge(ports[0][1]) == 1, 60, logs[0])
        assert holder().startswith(f"{release.name}-0_")
        start(1)
        # A candidate exports 0 from its first scrape; on standby once its health endpoint answers too.
        wait_until("replica 1 on standby", lambda: on_standby(ports[1]), 60, logs[1])
        assert http_ok(f"http://127.0.0.1:{ports[1][0]}/healthz")  # the standby is alive and ready
        assert http_ok(f"http://127.0.0.1:{ports[0][0]}/healthz")  # kopf's endpoint on the leader

        procs[0].terminate()  # a clean stop (a rollout): the Lease is released, replica 1 takes it
        assert procs[0].wait(timeout=30) == 0
        wait_until("replica 1 to lead", lambda: leader_gauge(ports[1][1]) == 1, 15, logs[1])
        assert holder().startswith(f"{release.name}-1_")
        for log in logs:
            assert_rbac_allowed(log, ("Forbidden", "forbidden", " 403"))
        assert "released the Lease" in logs[0].read_text()

        # A standby stops at once when told to (SIGTERM), without ever having acted.
        start(2)
        wait_until("replica 2 on standby", lambda: on_standby(ports[2]), 60, logs[2])
        procs[2].terminate()
        assert procs[2].wait(timeout=10) == 0
        assert holder().startswith(f"{release.name}-1_")
        assert "kopf" not in logs[2].read_text()
    finally:
        for proc in procs:
            stop(proc)
