"""Start and stop a real Kubernetes control plane as local processes, plus the test node agent.

``Cluster(state_dir).start()`` generates certificates, starts etcd and kube-apiserver (RBAC and Node
authorization, service-account token signing, an admin client certificate in ``system:masters``),
then kube-controller-manager, kube-scheduler and the node agent (``node_agent.py``), and waits until the
API server is ready, both controllers report healthy, the node is Ready and schedulable and the
``default`` ServiceAccount exists. Everything listens on 127.0.0.1 on free ports; all state (etcd data,
certificates, kubeconfigs, logs, pod directories) lives in ``state_dir``. ``stop()`` ends every process
it started (and any pod process left behind) and waits until their ports are closed.

The pids, ports and paths are written to ``<state_dir>/harness.json`` as soon as they are known, so
``Cluster.load(state_dir).stop()`` can tear down a detached cluster from another process
(``python -m tests.harness down``). The ``kubectl`` of the same release is recorded there too and linked as
``<state_dir>/bin/kubectl``: the client to use against this cluster (a system kubectl may be releases behind).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pki
from .binaries import K8S_VERSION, cache_root, ensure_control_plane, ensure_coredns
from .processes import pid_alive
from .real_node import NodePorts, RealNode

NODE_AGENT = Path(__file__).resolve().parent / "node_agent.py"
# The agent publishes its GPUs as devices of this DRA driver (node_agent.DRA_DRIVER); the cluster's admin
# creates the DeviceClass that selects them, as a DRA driver's installation does.
DRA_DRIVER = "gpu.harness.hpo.dev"
DEVICE_CLASS_NAME = "gpu.harness.hpo.dev"
DEVICE_CLASS: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceClass",
    "metadata": {"name": DEVICE_CLASS_NAME},
    "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRA_DRIVER}"'}}]},
}
STATE_FILE = "harness.json"
DEFAULT_NODE_NAME = "hpo-test-node"
# The two kinds of node: the node agent (pods' commands as host processes, the fast tier) and a real
# kubelet with containerd (real_node.py), which runs pods' images.
NODE_KINDS = ("agent", "kubelet")
# RBAC the real node needs beyond the defaults: CoreDNS reads Services and EndpointSlices, and the API
# server may call the kubelet (logs, exec) as kubeadm binds it.
NODE_RBAC: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "hpo-harness:kube-apiserver-kubelet-client"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "kube-apiserver-kubelet-client"}
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "system:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
    },
]
SERVICE_CIDR = "10.0.0.0/24"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
# All on-by-default controllers (garbage collector, namespace, serviceaccount and its token
# controller, root-ca-certificate-publisher, node-lifecycle, job, replicaset, ...). Release 1.37 has
# no cloud-provider controllers left in kube-controller-manager, so nothing needs turning off.
CONTROLLERS = "*"
# Variables of the starting process that must not reach the node agent or its pods.
_PRIVATE_ENV_PREFIXES = ("KUBECONFIG", "KUBERNETES_", "PYTEST_", "HPO_HARNESS_")


class HarnessError(RuntimeError):
    """A harness component failed to start or stop."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not between fork and exec
_PR_SET_PDEATHSIG = 1


def set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    """In a child before exec: receive ``sig`` when the harness process dies (no orphans left behind)."""
    _PRCTL(_PR_SET_PDEATHSIG, int(sig))


def agent_base_env(extra_path: str | None = None) -> dict[str, str]:
    """The node agent's environment: ours without Kubernetes/pytest internals, venv bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_ENV_PREFIXES)}
    bin_dir = extra_path or os.path.dirname(sys.executable)
    path = [
        p for p in env.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep) if p and p != bin_dir
    ]
    env["PATH"] = os.pathsep.join([bin_dir, *path])
    env.setdefault("HOME", str(Path.home()))
    return env


@dataclass
class Component:
    name: str
    pid: int
    log: str
    ports: list[int] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)  # how it was started: restart() starts it the same way


class Cluster:
    """A local control plane and one test node. Use ``start()``/``stop()`` or ``with Cluster(...)``."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        node_name: str = DEFAULT_NODE_NAME,
        gpus: int = 2,
        detached: bool = False,
        node: str = "agent",
    ) -> None:
        if gpus < 0:
            raise ValueError(f"gpus must be >= 0, got {gpus}")
        if node not in NODE_KINDS:
            raise ValueError(f"node must be one of {NODE_KINDS}, got {node!r}")
        self.state_dir = Path(state_dir).resolve()
        self.node_name = node_name
        self.gpus = gpus
        self.detached = detached
        self.node = node
        self.real_node = (
            RealNode(self.state_dir, node_name, gpus, cache_root()) if node == "kubelet" else None
        )
        self.server = ""
        self.components: dict[str, Component] = {}
        self.kubectl: Path | None = None  # the matching client, known once start() has the binaries
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._launch: dict[str, tuple[dict[str, str] | None, int]] = {}  # name -> (env, death signal)
        self.startup_seconds: float | None = None

    # ---- paths -------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (client certificate in ``system:masters``)."""
        return self.state_dir / "kubeconfig"

    @property
    def bin_dir(self) -> Path:
        """Holds ``kubectl``, a link to the client of this cluster's release (put it first on PATH)."""
        return self.state_dir / "bin"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    def pod_dir(self, namespace: str, name: str) -> Path:
        """The node agent's directory for a pod: ``log``, ``pid`` and the working directory ``work``."""
        return self.pods_dir / namespace / name

    # ---- state file --------------------------------------------------------------------------
    def _save(self) -> None:
        data = {
            "version": K8S_VERSION,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "node_name": self.node_name,
            "gpus": self.gpus,
            "node": self.node,
            "real_node": self.real_node.to_state() if self.real_node else None,
            "state_dir": str(self.state_dir),
            "kubectl": str(self.kubectl) if self.kubectl else None,
            "components": {n: vars(c) for n, c in self.components.items()},
        }
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.state_dir / STATE_FILE)

    @classmethod
    def load(cls, state_dir: Path | str) -> Cluster:
        """The cluster described by ``<state_dir>/harness.json`` (started by this or another process)."""
        path = Path(state_dir) / STATE_FILE
        if not path.is_file():
            raise HarnessError(f"no harness cluster state at {path}")
        data = json.loads(path.read_text())
        cluster = cls(
            data["state_dir"],
            node_name=data["node_name"],
            gpus=data["gpus"],
            detached=True,
            node=data.get("node", "agent"),
        )
        if cluster.real_node is not None:
            cluster.real_node.load_state(data.get("real_node") or {})
        cluster.server = data["server"]
        cluster.kubectl = Path(data["kubectl"]) if data.get("kubectl") else None  # older state files lack it
        cluster.components = {n: Component(**c) for n, c in data["components"].items()}
        return cluster

    # ---- process control ---------------------------------------------------------------------
    def _spawn(
        self,
        name: str,
        argv: list[str],
        ports: list[int],
        env: dict[str, str] | None = None,
        death_signal: int = signal.SIGKILL,
    ) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.logs_dir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                env=env,
                start_new_session=True,  # own process group: signals reach the whole component
                preexec_fn=None if self.detached else functools.partial(set_pdeathsig, death_signal),
            )
        self._procs[name] = proc
        self._launch[name] = (env, death_signal)
        self.components[name] = Component(name, proc.pid, str(log), ports, list(argv))
        self._save()

    # ---- faults ------------------------------------------------------------------------------
    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill a component's process group with ``sig`` (SIGKILL: a crash) and wait until it is gone.
        Pod processes are not in it: the node agent's pods run in sessions of their own, under their
        shims, and outlive a killed agent as containers outlive a kubelet."""
        comp = self.components[name]
        _signal_group(comp.pid, sig)
        if not _wait_dead(comp.pid, self._procs.get(name), 20.0):
            _signal_group(comp.pid, signal.SIGKILL)
            _wait_dead(comp.pid, self._procs.get(name), 10.0)

    def restart(self, name: str, *, timeout: float = 60.0) -> float:
        """Start a component again with the same command line, environment and ports (killing it first
        if it still runs), and wait until it serves again; returns the seconds that took. For the fault
        tests: an API server restarted with its flags, etcd on its data, the node agent re-adopting its
        pods' processes."""
        comp = self.components[name]
        if not comp.argv or name not in self._launch:
            raise HarnessError(f"{name} was not started by this Cluster object; it cannot be restarted")
        if pid_alive(comp.pid):
            self.kill(name)
        started = time.monotonic()
        deadline = started + timeout
        # A port the killed process held may linger a moment in the kernel.
        while any(port_is_listening(p) for p in comp.ports) and time.monotonic() < deadline:
            time.sleep(0.1)
        env, death_signal = self._launch[name]
        self._spawn(name, comp.argv, comp.ports, env=env, death_signal=death_signal)
        if name == "kube-apiserver":
            ctx = self._admin_context()
            self._wait(
                "kube-apiserver /readyz", lambda: _https_ok(f"{self.server}/readyz", ctx), timeout, (name,)
            )
        else:
            ports = comp.ports[:1]
            self._wait(
                f"{name} to listen", lambda: all(port_is_listening(p) for p in ports), timeout, (name,)
            )
        return time.monotonic() - started

    def _log_tail(self, name: str, lines: int = 40) -> str:
        comp = self.components.get(name)
        if comp is None or not Path(comp.log).exists():
            return "(no log)"
        return "\n".join(Path(comp.log).read_text(errors="replace").splitlines()[-lines:])

    def _check_alive(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise HarnessError(
                f"{name} exited with code {proc.returncode} during start-up; last lines of "
                f"{self.components[name].log}:\n{self._log_tail(name)}"
            )

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, watch: tuple[str, ...]) -> None:
        deadline = time.monotonic() + timeout
        last_error: object = None
        while time.monotonic() < deadline:
            for name in watch:
                self._check_alive(name)
            try:
                if check():
                    return
            except Exception as exc:  # not ready yet: connection refused, 500, 404 ...
                last_error = exc
            time.sleep(0.2)
        logs = "\n".join(f"--- {n} ({self.components[n].log}):\n{self._log_tail(n)}" for n in watch)
        raise HarnessError(
            f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})\n{logs}"
        )

    # ---- start -------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> Cluster:
        started = time.monotonic()
        binaries = ensure_control_plane()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if (self.state_dir / STATE_FILE).exists() and any(
            pid_alive(c.pid) for c in Cluster.load(self.state_dir).components.values()
        ):
            raise HarnessError(f"a harness cluster is already running from {self.state_dir}; stop it first")
        self.kubectl = binaries["kubectl"]
        self.bin_dir.mkdir(exist_ok=True)
        link = self.bin_dir / "kubectl"
        link.unlink(missing_ok=True)
        link.symlink_to(self.kubectl)
        try:
            if self.real_node is not None:
                # The bridge holds the address the API server listens on. Its claim may wait for another
                # run's real node to stop (one per machine): the start-up clock starts after it.
                self.real_node.prepare()
                self._save()
                started = time.monotonic()
            self._start(binaries, started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _start(self, binaries: dict[str, Path], deadline: float) -> None:
        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        real = self.real_node
        host = "127.0.0.1"
        if real is not None:
            host = real.network.node_ip  # start() has set up its bridge
        keys = pki.create_pki(self.pki_dir, self.node_name, host)
        etcd_port, etcd_peer, api_port, kcm_port, sched_port, kubelet_port = (free_port() for _ in range(6))
        self.server = f"https://{host}:{api_port}"
        kubeconfigs = self.state_dir / "kubeconfigs"
        kubeconfigs.mkdir(exist_ok=True)
        pki.write_kubeconfig(self.kubeconfig, self.server, keys.ca_pem, keys.clients["admin"], "admin")
        kcfg = {
            name: str(
                pki.write_kubeconfig(kubeconfigs / f"{name}.yaml", self.server, keys.ca_pem, pair, name)
            )
            for name, pair in keys.clients.items()
            if name not in ("admin", "apiserver-kubelet-client")
        }

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer}"
        self._spawn(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=harness",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=harness={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            [etcd_port, etcd_peer],
        )
        # The API server retries etcd on its own, so both start together.
        self._spawn(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={host}",
                f"--advertise-address={host}",
                f"--secure-port={api_port}",
                f"--tls-cert-file={keys.apiserver_cert}",
                f"--tls-private-key-file={keys.apiserver_key}",
                f"--client-ca-file={keys.ca_cert}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={keys.sa_pub}",
                f"--service-account-signing-key-file={keys.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # With the real node, pods reach the API server through the `kubernetes` Service, whose
                # endpoint the lease reconciler keeps; the node agent's pods use the kubeconfig instead.
                f"--endpoint-reconciler-type={'lease' if real else 'none'}",
                # Pod logs come from the node's kubelet endpoint (the agent's on 127.0.0.1).
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={keys.ca_cert}",
                f"--kubelet-client-certificate={self.pki_dir / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={self.pki_dir / 'apiserver-kubelet-client.key'}",
                "--allow-privileged=true",
                f"--cert-dir={self.state_dir / 'apiserver'}",
                "--profiling=false",
                "--v=1",
            ],
            [api_port],
        )
        self._save()
        admin_ctx = ssl.create_default_context(cafile=str(keys.ca_cert))
        admin_ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        self._wait(
            "kube-apiserver /readyz",
            lambda: _https_ok(f"{self.server}/readyz", admin_ctx),
            left(),
            ("etcd", "kube-apiserver"),
        )

        def delegated(name: str, port: int) -> list[str]:
            return [
                f"--kubeconfig={kcfg[name]}",
                f"--authentication-kubeconfig={kcfg[name]}",
                f"--authorization-kubeconfig={kcfg[name]}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.state_dir / name}",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ]

        self._spawn(
            "kube-controller-manager",
            [
                str(binaries["kube-controller-manager"]),
                *delegated("kube-controller-manager", kcm_port),
                "--use-service-account-credentials=true",
                f"--root-ca-file={keys.ca_cert}",
                f"--service-account-private-key-file={keys.sa_key}",
                f"--cluster-signing-cert-file={keys.ca_cert}",
                f"--cluster-signing-key-file={keys.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--cluster-name=hpo-harness",
                f"--controllers={CONTROLLERS}",
            ],
            [kcm_port],
        )
        self._spawn(
            "kube-scheduler",
            [str(binaries["kube-scheduler"]), *delegated("kube-scheduler", sched_port)],
            [sched_port],
        )
        if real is not None:
            self._post_all(NODE_RBAC)
            node_components = real.spawn(
                self._spawn,
                self._wait,
                {**binaries, "coredns": ensure_coredns()},
                self.pki_dir,
                kcfg,
                NodePorts(kubelet_port, free_port(), free_port(), free_port(), free_port(), free_port()),
                deadline,
            )
            watch = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", *node_components)
            self._wait_for_node(watch, left)
            real.advertise_gpus(self._patch_node_status)
            self._wait("nvidia.com/gpu on the node", self._gpus_advertised, left(), watch)
            return
        self._spawn(
            "node-agent",
            [
                sys.executable,
                str(NODE_AGENT),
                f"--kubeconfig={kcfg['node']}",
                f"--node-name={self.node_name}",
                f"--gpus={self.gpus}",
                f"--state-dir={self.state_dir}",
                f"--kubelet-port={kubelet_port}",
                f"--serving-cert={self.pki_dir / 'kubelet-serving.crt'}",
                f"--serving-key={self.pki_dir / 'kubelet-serving.key'}",
                f"--client-ca={keys.ca_cert}",
            ],
            [kubelet_port],
            env=agent_base_env(),
            death_signal=signal.SIGTERM,  # lets the agent end its pods' processes first
        )
        all_components = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "node-agent")
        self._wait_for_node(all_components, left)
        if self.gpus:
            # The cluster admin's part of a DRA driver's installation: its DeviceClass.
            self._request("POST", "/apis/resource.k8s.io/v1/deviceclasses", DEVICE_CLASS, "application/json")
            self._wait("the node's ResourceSlice of GPUs", self._devices_published, left(), all_components)

    def _wait_for_node(self, all_components: tuple[str, ...], left: Callable[[], float]) -> None:
        kcm_port, sched_port = (
            self.components["kube-controller-manager"].ports[0],
            self.components["kube-scheduler"].ports[0],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for name, port in (("kube-controller-manager", kcm_port), ("kube-scheduler", sched_port)):
            self._wait(
                f"{name} /healthz",
                lambda port=port: _https_ok(f"https://127.0.0.1:{port}/healthz", insecure),
                left(),
                all_components,
            )
        self._wait("the test node to be Ready and schedulable", self._node_ready, left(), all_components)
        self._wait(
            "the default ServiceAccount and kube-root-ca.crt (controller-manager)",
            self._service_accounts_ready,
            left(),
            all_components,
        )

    def _admin_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return ctx

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.server}{path}", context=self._admin_context(), timeout=5) as resp:
            result: dict[str, Any] = json.load(resp)
            return result

    def _request(self, method: str, path: str, body: dict[str, Any], content_type: str) -> None:
        req = urllib.request.Request(
            f"{self.server}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": content_type},
        )
        try:
            with urllib.request.urlopen(req, context=self._admin_context(), timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already there: a cluster restarted on the same etcd data
                raise

    def _post_all(self, objects: list[dict[str, Any]]) -> None:
        paths = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}
        for obj in objects:
            self._request(
                "POST", f"/apis/rbac.authorization.k8s.io/v1/{paths[obj['kind']]}", obj, "application/json"
            )

    def _patch_node_status(self, patch: dict[str, Any]) -> None:
        self._request(
            "PATCH", f"/api/v1/nodes/{self.node_name}/status", patch, "application/strategic-merge-patch+json"
        )

    def _gpus_advertised(self) -> bool:
        node = self._get(f"/api/v1/nodes/{self.node_name}")
        return str(node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu", "0")) == str(self.gpus)

    def _devices_published(self) -> bool:
        slices = self._get(
            f"/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName={self.node_name}"
        )
        return any(
            s["spec"].get("driver") == DRA_DRIVER and len(s["spec"].get("devices") or ()) == self.gpus
            for s in slices.get("items") or ()
        )

    def _node_ready(self) -> bool:
        node = self._get(f"/api/v1/nodes/{self.node_name}")
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        blocking = [t for t in node.get("spec", {}).get("taints", []) if t.get("effect") == "NoSchedule"]
        return ready and not blocking

    def _service_accounts_ready(self) -> bool:
        self._get("/api/v1/namespaces/default/serviceaccounts/default")
        self._get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
        return True

    # ---- stop --------------------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        return {n: c.pid for n, c in self.components.items()}

    def ports(self) -> list[int]:
        return [p for c in self.components.values() for p in c.ports]

    def leftover_pod_pids(self) -> list[int]:
        """Pids of pod processes the agent recorded and that are still alive, then of their shims
        (``pod_shim.py``, which outlive a node agent that is killed)."""
        pids, shims = [], []
        for pid_file in self.pods_dir.glob("*/*/pid"):
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
                data = json.loads(pid_file.read_text())
                if pid_alive(int(data["pid"])):
                    pids.append(int(data["pid"]))
                if data.get("shim") and pid_alive(int(data["shim"])):
                    shims.append(int(data["shim"]))
        return pids + shims

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the node (the agent ends its pods; the real node's containers are killed and removed,
        and its mounts, namespaces, cgroups, rules and bridge with them), then the controllers, the
        API server and etcd."""
        node = ["node-agent"] if self.real_node is None else ["coredns", "kube-proxy", "kubelet"]
        order = [*node, "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
        for name in order:
            comp = self.components.get(name)
            if comp is not None:
                self._terminate(name, comp.pid, timeout)
            if name == "node-agent":
                for pid in self.leftover_pod_pids():
                    self._terminate(f"pod process {pid}", pid, 5.0)
            if name == "kubelet" and self.real_node is not None:
                self.real_node.cleanup_runtime()
                comp = self.components.get("containerd")
                if comp is not None:
                    self._terminate("containerd", comp.pid, timeout)
                self.real_node.cleanup_host()
        deadline = time.monotonic() + timeout
        busy = self.ports()
        while busy and time.monotonic() < deadline:
            busy = [p for p in busy if port_is_listening(p)]
            if busy:
                time.sleep(0.1)
        if busy:
            raise HarnessError(f"ports still listening after stop: {busy}")

    def _terminate(self, name: str, pid: int, timeout: float) -> None:
        proc = self._procs.get(name)
        if not pid_alive(pid):
            if proc is not None:
                proc.wait()
            return
        _signal_group(pid, signal.SIGTERM)
        if not _wait_dead(pid, proc, timeout):
            _signal_group(pid, signal.SIGKILL)
            if not _wait_dead(pid, proc, 10.0):
                raise HarnessError(f"{name} (pid {pid}) did not exit after SIGKILL")
        # The process group may hold children that outlived their leader.
        _signal_group(pid, signal.SIGKILL)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError:
        return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_dead(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if proc is not None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    return not pid_alive(pid)
