"""A restarted node agent re-adopts the processes of its pods, as a kubelet does its containers.

The agent is killed (SIGKILL, as in a crash) and started again with its flags while pods run. Their
processes run under the agent's shim (``tests/harness/pod_shim.py``), in sessions of their own, so they
outlive the agent; the new agent finds them through the pod directories, follows them to their end and
reports their real exit codes. Before, it marked such pods Failed (137) while their processes ran on: the
operator then retried trials whose first attempt was still running.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.harness.cluster import pid_alive
from tests.harness.handle import ClusterHandle
from tests.integration.test_cluster import pod_gone, pod_manifest, require_agent, wait_until

# Waits for its gate file (in its working directory), then exits with the code the file holds.
GATED = (
    "import os, sys, time; open('pid', 'w').write(str(os.getpid())); print('up', flush=True)\n"
    "while not os.path.exists('gate'): time.sleep(0.05)\n"
    "print('gate open', flush=True); sys.exit(int(open('gate').read()))"
)


def _pid(cluster: ClusterHandle, namespace: str, name: str) -> int:
    pid_file = cluster.pod_dir(namespace, name) / "work" / "pid"
    wait_until(f"{name} to write its pid", lambda: pid_file.exists() and pid_file.read_text(), timeout=30)
    return int(pid_file.read_text())


def _open_gate(cluster: ClusterHandle, namespace: str, name: str, code: int) -> None:
    gate = cluster.pod_dir(namespace, name) / "work" / "gate"
    tmp = gate.with_name("gate.tmp")
    tmp.write_text(str(code))
    tmp.rename(gate)


def _terminated(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, object] | None:
    pod = cluster.core().read_namespaced_pod(name, namespace)
    if pod.status.phase not in ("Succeeded", "Failed"):
        return None
    state = pod.status.container_statuses[0].state.terminated
    return {
        "phase": pod.status.phase,
        "exit": state.exit_code,
        "id": pod.status.container_statuses[0].container_id,
    }


def test_a_restarted_agent_re_adopts_running_pods_and_reports_their_real_exit(
    cluster: ClusterHandle, namespace: str
) -> None:
    require_agent(cluster)
    if cluster.harness is None:
        pytest.skip("kills and restarts the node agent: needs a harness cluster this test process started")
    core = cluster.core()
    names = ("ends-after", "ends-during", "deleted-after")
    for name in names:
        core.create_namespaced_pod(namespace, pod_manifest(name, GATED, grace=5))
    pids = {}
    for name in names:
        cluster.wait_for_pod_phase(namespace, name, ("Running",))
        pids[name] = _pid(cluster, namespace, name)
    agent_log = Path(cluster.harness.components["node-agent"].log)

    cluster.harness.kill("node-agent")  # SIGKILL: the agent is gone, its pods' processes are not
    assert all(pid_alive(p) for p in pids.values())
    _open_gate(cluster, namespace, "ends-during", 0)  # ends while no agent runs: its shim records it
    wait_until("ends-during to exit", lambda: not pid_alive(pids["ends-during"]), timeout=30)
    cluster.harness.restart("node-agent")

    wait_until(
        "ends-during to be reported", lambda: _terminated(cluster, namespace, "ends-during"), timeout=60
    )
    assert _terminated(cluster, namespace, "ends-during") == {
        "phase": "Succeeded",
        "exit": 0,
        "id": f"harness://{pids['ends-during']}",
    }
    time.sleep(3.0)  # the new agent has listed its pods: the running ones are followed, not failed
    for name in ("ends-after", "deleted-after"):
        pod = core.read_namespaced_pod(name, namespace)
        assert pod.status.phase == "Running", (name, pod.status)
        assert pid_alive(pids[name])

    _open_gate(cluster, namespace, "ends-after", 3)
    wait_until("ends-after to be reported", lambda: _terminated(cluster, namespace, "ends-after"), timeout=60)
    assert _terminated(cluster, namespace, "ends-after") == {
        "phase": "Failed",
        "exit": 3,  # the process's own exit code, through the shim
        "id": f"harness://{pids['ends-after']}",
    }

    core.delete_namespaced_pod("deleted-after", namespace)  # an adopted pod's deletion ends its process
    wait_until("deleted-after to disappear", lambda: pod_gone(core, namespace, "deleted-after"), timeout=30)
    assert not pid_alive(pids["deleted-after"])
    text = agent_log.read_text(errors="replace")
    assert "re-adopted pid" in text and "found no record of its process" not in text
