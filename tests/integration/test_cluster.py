"""Acceptance tests of the test harness: a real control plane, a node that runs pods, clean teardown.

They run against the harness cluster, or against the cluster ``KUBECONFIG`` names (pod images are set so
the same pods run on kind); tests that need the node agent's internals (pids, pod directories) skip there.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.harness.binaries import K8S_VERSION
from tests.harness.cluster import Cluster, pid_alive
from tests.harness.handle import ClusterHandle

REPO = Path(__file__).resolve().parents[2]
IMAGE = "python:3.11-slim"  # not run by the harness node agent; makes the same pods work on kind
T = TypeVar("T")


def pod_manifest(
    name: str,
    code: str,
    *,
    gpus: int = 0,
    env: list[dict[str, Any]] | None = None,
    grace: int | None = None,
    message_policy: str | None = None,
    owner: dict[str, Any] | None = None,
    extra_container: dict[str, Any] | None = None,
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": IMAGE, "command": ["python", "-c", code]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    if env:
        container["env"] = env
    if message_policy:
        container["terminationMessagePolicy"] = message_policy
    container.update(extra_container or {})
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], **(extra_spec or {})}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    metadata: dict[str, Any] = {"name": name, "labels": {"app": "harness-test"}}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 60, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pod_gone(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def require_agent(cluster: ClusterHandle) -> None:
    if cluster.external:
        pytest.skip(
            "needs the harness node agent (pod pids and directories); KUBECONFIG names an external cluster"
        )


def require_gpus(cluster: ClusterHandle) -> None:
    if cluster.gpus == 0:
        pytest.skip("the cluster has no allocatable nvidia.com/gpu")


# ---------------------------------------------------------------------------------------------
def test_server_reports_pinned_version(cluster: ClusterHandle) -> None:
    if cluster.external:
        pytest.skip(f"the pinned version {K8S_VERSION} applies to the harness cluster, not KUBECONFIG's")
    assert cluster.server_version == K8S_VERSION
    with cluster.api_client() as api:
        raw = api.call_api(
            *api.param_serialize("GET", "/version", header_params={"Accept": "application/json"})
        )
        raw.read()
    info = json.loads(raw.data)
    assert info["gitVersion"] == K8S_VERSION
    assert (info["major"], info["minor"]) == ("1", "37")
    kubectl = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert kubectl["serverVersion"]["gitVersion"] == K8S_VERSION


def _versions(version_json: str) -> tuple[str, str]:
    """(client, server) gitVersion from `kubectl version -o json`."""
    info = json.loads(version_json)
    return info["clientVersion"]["gitVersion"], info["serverVersion"]["gitVersion"]


def test_kubectl_is_the_servers_release(cluster: ClusterHandle, tmp_path: Path) -> None:
    """The handle, a handle found by ``harness.json`` and the shell of ``up`` run the harness's kubectl."""
    if cluster.external:
        pytest.skip("KUBECONFIG names an external cluster: the handle runs the kubectl on PATH there")
    assert cluster.kubectl_binary is not None
    assert _versions(cluster.kubectl("version", "-o", "json").stdout) == (K8S_VERSION, K8S_VERSION)
    plain = cluster.kubectl("version")
    assert f"Client Version: {K8S_VERSION}" in plain.stdout
    assert "WARNING" not in plain.stderr, plain.stderr  # no version-skew warning

    # A cluster started by `python -m tests.harness up` is found through the harness.json by its kubeconfig.
    found = ClusterHandle.from_kubeconfig(cluster.kubeconfig)
    assert not found.external and found.kubectl_binary == cluster.kubectl_binary
    assert _versions(found.kubectl("version", "-o", "json").stdout) == (K8S_VERSION, K8S_VERSION)

    # `eval "$(python -m tests.harness up)"` (here: already up, as this cluster is) puts that kubectl first
    # on PATH, so a person's plain `kubectl` is the matching client.
    assert cluster.state_dir is not None
    state = tmp_path / "state"
    state.mkdir()
    (state / "cluster").symlink_to(cluster.state_dir, target_is_directory=True)
    up = shlex.join([sys.executable, "-m", "tests.harness", "--state-dir", str(state), "up", "--no-postgres"])
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "HPO_TEST_POSTGRES_URL")}
    shell = subprocess.run(
        ["bash", "-c", f'set -e; eval "$({up})"; command -v kubectl; kubectl version -o json'],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    which, _, version_json = shell.stdout.partition("\n")
    assert Path(which) == cluster.state_dir / "bin" / "kubectl"
    assert Path(which).resolve() == Path(cluster.kubectl_binary).resolve()
    assert _versions(version_json) == (K8S_VERSION, K8S_VERSION)
    assert "WARNING" not in shell.stderr, shell.stderr


def test_node_is_ready_with_gpus(cluster: ClusterHandle) -> None:
    require_gpus(cluster)
    table = cluster.kubectl("get", "nodes", "--no-headers").stdout
    row = next((line.split() for line in table.splitlines() if line.split()[0] == cluster.node_name), None)
    assert row is not None, f"node {cluster.node_name} missing from `kubectl get nodes`:\n{table}"
    assert row[1] == "Ready"
    node = json.loads(cluster.kubectl("get", "node", cluster.node_name, "-o", "json").stdout)
    assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1
    if not cluster.external:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(cluster.gpus) == "2"
        # The Lease is renewed: a fresh renewTime within the lease duration.
        lease = json.loads(
            cluster.kubectl("get", "lease", "-n", "kube-node-lease", cluster.node_name, "-o", "json").stdout
        )
        assert lease["spec"]["holderIdentity"] == cluster.node_name
        assert lease["spec"]["leaseDurationSeconds"] == 40


def test_pod_succeeds_with_its_environment_and_log(cluster: ClusterHandle, namespace: str) -> None:
    core = cluster.core()
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"url": "postgresql://secret-url"}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"mode": "fast"}})
    code = (
        "import os, time; time.sleep(1.5); "
        "print('hello from', os.environ['POD_NAME'], os.environ['POD_NAMESPACE'], os.environ['APP'], "
        "os.environ['STORAGE'], os.environ['MODE'], os.environ['GREETING'], flush=True)"
    )
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "STORAGE", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "url"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "WHO", "value": "world"},
        {"name": "GREETING", "value": "hi-$(WHO)"},
    ]
    created = core.create_namespaced_pod(namespace, pod_manifest("ok", code, env=env))
    phases: list[str] = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_pod,
        namespace,
        field_selector="metadata.name=ok",
        resource_version=created.metadata.resource_version,
        timeout_seconds=90,
    ):
        phase = event["raw_object"].get("status", {}).get("phase")
        if phase and (not phases or phases[-1] != phase):
            phases.append(phase)
        if phase in ("Succeeded", "Failed"):
            w.stop()
            break
    assert phases[-1] == "Succeeded", phases
    assert "Running" in phases, phases
    pod = core.read_namespaced_pod("ok", namespace)
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0
    assert terminated.reason == "Completed"
    line = f"hello from ok {namespace} harness-test postgresql://secret-url fast hi-world"
    assert line in cluster.pod_log(namespace, "ok")
    # The same output through the API server (the agent serves the kubelet's log endpoint).
    assert cluster.kubectl("logs", "ok", "-n", namespace).stdout == line + "\n"
    assert core.read_namespaced_pod_log("ok", namespace, tail_lines=1) == line + "\n"


def test_failed_pod_reports_exit_code_and_log_tail(cluster: ClusterHandle, namespace: str) -> None:
    core = cluster.core()
    code = (
        "import sys\n"
        "for i in range(100): print('noise line', i)\n"
        "print('fatal: the study storage is unreachable', flush=True)\n"
        "sys.exit(3)\n"
    )
    core.create_namespaced_pod(namespace, pod_manifest("fails", code, message_policy="FallbackToLogsOnError"))
    core.create_namespaced_pod(namespace, pod_manifest("fails-quietly", code))  # default policy: File
    pod = cluster.wait_for_pod_phase(namespace, "fails")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"
    assert terminated.message is not None
    assert terminated.message.rstrip().endswith("fatal: the study storage is unreachable")
    assert "noise line 99" in terminated.message
    assert "noise line 0\n" not in terminated.message  # only the tail (80 lines)
    quiet = cluster.wait_for_pod_phase(namespace, "fails-quietly")
    assert quiet.status.phase == "Failed"
    assert quiet.status.container_statuses[0].state.terminated.exit_code == 3
    assert not quiet.status.container_statuses[0].state.terminated.message


def test_gpu_capacity_limits_concurrent_pods(cluster: ClusterHandle, namespace: str) -> None:
    require_gpus(cluster)
    if cluster.gpus > 4:
        pytest.skip(f"{cluster.gpus} GPUs: the test sizes itself for small nodes")
    core = cluster.core()
    names = [f"gpu-{i}" for i in range(cluster.gpus + 1)]
    for name in names:
        core.create_namespaced_pod(namespace, pod_manifest(name, "import time; time.sleep(3)", gpus=1))
    max_running = 0
    saw_unschedulable = False
    deadline = time.monotonic() + 120
    while True:
        pods = core.list_namespaced_pod(namespace).items
        phases = {p.metadata.name: p.status.phase for p in pods}
        running = sum(1 for phase in phases.values() if phase == "Running")
        max_running = max(max_running, running)
        assert running <= cluster.gpus, f"{running} pods Running on {cluster.gpus} GPUs: {phases}"
        for p in pods:
            for cond in p.status.conditions or []:
                if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
                    saw_unschedulable = True
        if len(phases) == len(names) and all(phase == "Succeeded" for phase in phases.values()):
            break
        assert not any(phase == "Failed" for phase in phases.values()), phases
        assert time.monotonic() < deadline, f"not all GPU pods succeeded in time: {phases}"
        time.sleep(0.1)
    assert max_running == cluster.gpus, "the GPU pods never ran side by side"
    assert saw_unschedulable, "no pod ever waited for a GPU"


def test_deleting_running_pods_ends_their_processes(cluster: ClusterHandle, namespace: str) -> None:
    require_agent(cluster)
    core = cluster.core()
    sleeper = (
        "import os, time; open('pid', 'w').write(str(os.getpid())); print('up', flush=True); time.sleep(300)"
    )
    stubborn = (
        "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open('pid', 'w').write(str(os.getpid())); print('up', flush=True); time.sleep(300)"
    )
    core.create_namespaced_pod(namespace, pod_manifest("sleeper", sleeper, grace=30))
    core.create_namespaced_pod(namespace, pod_manifest("stubborn", stubborn, grace=30))
    pids: dict[str, int] = {}
    for name in ("sleeper", "stubborn"):
        pod = cluster.wait_for_pod_phase(namespace, name, ("Running",))
        pid_file = cluster.pod_dir(namespace, name) / "work" / "pid"
        wait_until(f"{name} to write its pid", lambda f=pid_file: f.exists() and f.read_text(), timeout=30)
        wait_until(
            f"{name} to ignore SIGTERM", lambda n=name: "up" in cluster.pod_log(namespace, n), timeout=30
        )
        pids[name] = int(pid_file.read_text())
        assert pod.status.container_statuses[0].container_id == f"harness://{pids[name]}"
        assert pid_alive(pids[name])

    started = time.monotonic()
    core.delete_namespaced_pod("sleeper", namespace)  # grace 30s, but SIGTERM ends it at once
    core.delete_namespaced_pod("stubborn", namespace, grace_period_seconds=2)  # needs SIGKILL after 2s
    wait_until("sleeper to disappear", lambda: pod_gone(core, namespace, "sleeper"), timeout=30)
    sleeper_gone = time.monotonic() - started
    wait_until("stubborn to disappear", lambda: pod_gone(core, namespace, "stubborn"), timeout=30)
    stubborn_gone = time.monotonic() - started
    assert not pid_alive(pids["sleeper"])
    assert not pid_alive(pids["stubborn"])
    assert sleeper_gone < 15, (
        f"SIGTERM should end the sleeper well within its 30s grace ({sleeper_gone:.1f}s)"
    )
    assert stubborn_gone >= 1.5, f"the grace period was not honoured ({stubborn_gone:.1f}s)"


def test_garbage_collector_deletes_orphaned_pods(cluster: ClusterHandle, namespace: str) -> None:
    core = cluster.core()
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}, "data": {"k": "v"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    code = "import time; time.sleep(300)"
    core.create_namespaced_pod(namespace, pod_manifest("dependent", code, grace=5, owner=ref))
    core.create_namespaced_pod(namespace, pod_manifest("independent", code, grace=5))
    cluster.wait_for_pod_phase(namespace, "dependent", ("Running",))
    core.delete_namespaced_config_map("owner", namespace)
    wait_until(
        "the garbage collector to delete the dependent pod", lambda: pod_gone(core, namespace, "dependent")
    )
    assert core.read_namespaced_pod("independent", namespace).metadata.deletion_timestamp is None


def test_rbac_forbids_a_service_account_without_roles(cluster: ClusterHandle, namespace: str) -> None:
    core = cluster.core()
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace, "--duration=10m").stdout.strip()
    assert token.count(".") == 2, "kubectl create token did not print a JWT"
    request = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"audiences": [], "expirationSeconds": 600}}
    )
    assert request.status.token

    with cluster.api_client() as admin:
        config = client.Configuration()
        config.host = admin.configuration.host
        config.ssl_ca_cert = admin.configuration.ssl_ca_cert
    for bearer in (token, request.status.token):
        config.api_key = {"BearerToken": bearer}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        with client.ApiClient(config) as api:
            review = client.AuthenticationV1Api(api).create_self_subject_review({})
            assert review.status.user_info.username == f"system:serviceaccount:{namespace}:nobody"
            with pytest.raises(ApiException) as denied:
                client.CoreV1Api(api).list_namespaced_pod(namespace)
            assert denied.value.status == 403

    # The same identity is allowed once a Role grants it: RBAC decides, not a blanket denial.
    rbac = client.RbacAuthorizationV1Api(cluster.api_client())
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "nobody-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        },
    )
    with client.ApiClient(config) as api:

        def allowed() -> bool:
            try:
                client.CoreV1Api(api).list_namespaced_pod(namespace)
            except ApiException as exc:
                if exc.status != 403:
                    raise
                return False
            return True

        wait_until("the RoleBinding to take effect", allowed, timeout=30)


def test_pod_without_command_fails_clearly(cluster: ClusterHandle, namespace: str) -> None:
    require_agent(cluster)
    core = cluster.core()
    manifest = pod_manifest("no-command", "")
    del manifest["spec"]["containers"][0]["command"]
    core.create_namespaced_pod(namespace, manifest)
    pod = cluster.wait_for_pod_phase(namespace, "no-command")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.reason == "StartError"
    assert "has no `command`" in terminated.message
    assert "does not run images" in terminated.message


def test_empty_dir_mount_is_a_per_pod_directory(cluster: ClusterHandle, namespace: str) -> None:
    core = cluster.core()
    code = (
        "import os, pathlib; out = pathlib.Path(os.environ['OUT']); out.mkdir(parents=True, exist_ok=True); "
        "(out / 'model.txt').write_text('ok'); "
        "print('wrote', sorted(p.name for p in out.iterdir()), flush=True)"
    )
    manifest = pod_manifest(
        "writer",
        code,
        env=[{"name": "OUT", "value": "/output/run"}],
        extra_container={"volumeMounts": [{"name": "out", "mountPath": "/output"}]},
        extra_spec={"volumes": [{"name": "out", "emptyDir": {}}]},
    )
    core.create_namespaced_pod(namespace, manifest)
    pod = cluster.wait_for_pod_phase(namespace, "writer")
    assert pod.status.phase == "Succeeded", cluster.pod_log(namespace, "writer")
    assert "wrote ['model.txt']" in cluster.pod_log(namespace, "writer")
    if not cluster.external:
        written = cluster.pod_dir(namespace, "writer") / "volumes" / "out" / "run" / "model.txt"
        assert written.read_text() == "ok"
        assert not Path("/output/run/model.txt").exists()


# ---------------------------------------------------------------------------------------------
def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(proc.name)):
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.mark.cluster
def test_teardown_leaves_no_process_and_no_port(tmp_path: Path) -> None:
    if os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG names an external cluster; this test starts a second harness cluster")
    harness = Cluster(tmp_path / "second", node_name="teardown-node", gpus=1)
    harness.start()
    try:
        handle = ClusterHandle.for_harness(harness)
        core = handle.core()
        core.create_namespaced_pod(
            "default",
            pod_manifest(
                "lingering", "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(300)"
            ),
        )
        handle.wait_for_pod_phase("default", "lingering", ("Running",))
        pid_file = handle.pod_dir("default", "lingering") / "work" / "pid"
        wait_until("the pod's pid file", lambda: pid_file.exists() and pid_file.read_text())
        pod_pid = int(pid_file.read_text())
        pids = harness.pids()
        ports = harness.ports()
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "node-agent",
        }
        assert len(ports) == 6 and all(_listening(p) for p in ports)
        assert all(pid_alive(p) for p in [*pids.values(), pod_pid])
        assert _processes_mentioning(str(tmp_path / "second"))
    finally:
        harness.stop()
    assert [n for n, p in pids.items() if pid_alive(p)] == []
    assert not pid_alive(pod_pid), "the pod's process outlived the cluster"
    assert [p for p in ports if _listening(p) or not _bindable(p)] == []
    assert _processes_mentioning(str(tmp_path / "second")) == []
    with pytest.raises(subprocess.CalledProcessError):
        handle.kubectl("get", "nodes", "--request-timeout=3s")
