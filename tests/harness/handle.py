"""What tests get from the ``cluster`` fixture: one interface for a harness cluster and a real one.

``ClusterHandle.for_harness(cluster)`` wraps a cluster this process started; ``ClusterHandle.from_kubeconfig``
wraps whatever ``KUBECONFIG`` names: a cluster started by ``python -m tests.harness up`` (recognised by the
``harness.json`` next to its kubeconfig, so its node agent's pod logs and directories are available), or an
external cluster such as kind (``external=True``: pod logs through the API, no pod directories or pids).

``ClusterHandle.kubectl`` runs the ``kubectl`` the harness built from the cluster's own release on a harness
cluster (either kind of start), so client and server versions match; on an external cluster it runs the
``kubectl`` on PATH, the one its owner uses with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from kubernetes import client
from kubernetes import config as kube_config

from .binaries import ensure_kubectl
from .cluster import STATE_FILE, Cluster

KUBECTL_TIMEOUT_S = 120


class ClusterHandle:
    def __init__(
        self,
        kubeconfig: str,
        *,
        external: bool,
        node_name: str,
        gpus: int,
        state_dir: Path | None,
        harness: Cluster | None = None,
        kubectl_binary: Path | None = None,
    ) -> None:
        """``kubectl_binary`` is the client ``kubectl()`` runs; None means the ``kubectl`` on PATH."""
        self.kubeconfig = kubeconfig
        self.external = external
        self.node_name = node_name
        self.gpus = gpus
        self.state_dir = state_dir
        self.harness = harness
        self.kubectl_binary = kubectl_binary
        self._core: client.CoreV1Api | None = None
        self.server_version = self._git_version()

    # ---- constructors ------------------------------------------------------------------------
    @classmethod
    def for_harness(cls, cluster: Cluster) -> ClusterHandle:
        return cls(
            str(cluster.kubeconfig),
            external=False,
            node_name=cluster.node_name,
            gpus=cluster.gpus,
            state_dir=cluster.state_dir,
            harness=cluster,
            kubectl_binary=cluster.kubectl or ensure_kubectl(),
        )

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str) -> ClusterHandle:
        state = Path(kubeconfig).parent / STATE_FILE
        if ":" not in kubeconfig and state.is_file():
            data = json.loads(state.read_text())
            recorded = data.get("kubectl")  # absent in state written before the harness built kubectl
            return cls(
                kubeconfig,
                external=False,
                node_name=data["node_name"],
                gpus=int(data["gpus"]),
                state_dir=Path(data["state_dir"]),
                kubectl_binary=Path(recorded) if recorded else ensure_kubectl(),
            )
        handle = cls(kubeconfig, external=True, node_name="", gpus=0, state_dir=None)
        nodes = handle.core().list_node().items
        if not nodes:
            raise RuntimeError(f"the cluster in KUBECONFIG={kubeconfig} has no nodes")

        def gpu_count(node: client.V1Node) -> int:
            allocatable = (node.status.allocatable if node.status else None) or {}
            return int(allocatable.get("nvidia.com/gpu", "0"))

        handle.gpus = sum(gpu_count(n) for n in nodes)
        best = max(nodes, key=gpu_count)
        handle.node_name = best.metadata.name if best.metadata else ""
        return handle

    # ---- clients -----------------------------------------------------------------------------
    def api_client(self) -> client.ApiClient:
        """A new client for the admin identity (close it, or use it as a context manager)."""
        return kube_config.new_client_from_config(config_file=self.kubeconfig)

    def core(self) -> client.CoreV1Api:
        if self._core is None:
            self._core = client.CoreV1Api(self.api_client())
        return self._core

    def _git_version(self) -> str:
        with self.api_client() as api:
            info = client.VersionApi(api).get_code()
        return str(info.git_version)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = KUBECTL_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl`` against this cluster; raises with its stderr when ``check`` fails.

        The harness's own build of the cluster's release on a harness cluster, the ``kubectl`` on PATH on an
        external one.
        """
        if self.kubectl_binary is not None:
            kubectl = str(self.kubectl_binary)
            if not os.access(kubectl, os.X_OK):
                raise RuntimeError(
                    f"the harness kubectl {kubectl} is missing or not executable; "
                    "`python -m tests.harness.binaries` rebuilds it"
                )
        else:
            found = shutil.which("kubectl")
            if found is None:
                raise RuntimeError("kubectl is not on PATH; install kubectl to run this test")
            kubectl = found
        argv = [kubectl, f"--kubeconfig={self.kubeconfig}", *args]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        done = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
        return done

    # ---- pods on the test node ---------------------------------------------------------------
    def pod_dir(self, namespace: str, name: str) -> Path:
        """The node agent's directory of a pod (``log``, ``pid``, ``work/``); harness clusters only."""
        if self.state_dir is None:
            raise RuntimeError("pod directories exist only on harness clusters (this one is external)")
        return self.state_dir / "pods" / namespace / name

    def pod_log(self, namespace: str, name: str) -> str:
        """The pod's output: the agent's log file on a harness cluster, the API's pod log elsewhere."""
        if self.external:
            return str(self.core().read_namespaced_pod_log(name, namespace))
        path = self.pod_dir(namespace, name) / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_pod_phase(
        self,
        namespace: str,
        name: str,
        phases: tuple[str, ...] = ("Succeeded", "Failed"),
        timeout: float = 60,
    ) -> client.V1Pod:
        """Poll until the pod's phase is one of ``phases``; raises TimeoutError with the last status."""
        deadline = time.monotonic() + timeout
        pod = None
        while time.monotonic() < deadline:
            pod = self.core().read_namespaced_pod(name, namespace)
            if pod.status and pod.status.phase in phases:
                return pod
            time.sleep(0.2)
        status = pod.status.to_dict() if pod is not None and pod.status else None
        raise TimeoutError(f"pod {namespace}/{name} did not reach {phases} in {timeout}s; status: {status}")
