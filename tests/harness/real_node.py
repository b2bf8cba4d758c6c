"""The harness's real node: a kubelet with containerd, runc, CNI, kube-proxy and CoreDNS on this host.

The control plane is the same as with the node agent (``cluster.py``); only the node differs. It is set up
the way Kubernetes' own ``hack/local-up-cluster.sh`` runs a single-node cluster on a host:

- **network**: a bridge of this run's own (``hpo<hash>``) holding the node's IP, the first address of a
  /24 pod network derived from the state directory. The API server listens on that IP (the kubelet refuses
  a loopback node IP, and pods reach the API server through the ``kubernetes`` Service, whose endpoint it
  is). The CNI ``bridge`` plugin puts each pod on it (``host-local`` addresses, no masquerade), and one
  iptables rule, added first in FORWARD, drops anything from the pod network to an address outside it:
  no pod traffic leaves the machine, whatever kube-proxy adds;
- **containerd** (Debian's 1.6) as an instance of its own (socket, state and config under the state
  directory; its content store under ``~/.cache/hpo-operator/containerd`` so imported images survive
  between runs), with its CRI plugin, runc and the CNI plugins of ``containernetworking-plugins``;
- **the kubelet** and **kube-proxy** built from the same pinned ``k8s.io/kubernetes`` module as the
  control plane (``binaries.py``), the kubelet with ``cgroupfs`` under a cgroup root of its own;
- **CoreDNS** as a host process on the node IP (the kubelet's ``clusterDNS``), answering for
  ``cluster.local`` only: nothing is forwarded outside the machine;
- the **pause image**, compiled from the module's ``build/pause/linux/pause.c`` and imported as
  ``registry.k8s.io/pause:3.10``.

Once the node is Ready its status gets ``nvidia.com/gpu`` capacity, as the Kubernetes docs advertise an
extended resource, so GPU requests schedule.

``RealNode.stop()`` deletes every pod through the kubelet first (so volumes are unmounted and CNI
releases the addresses), then stops the processes it started by pid, removes any container, task,
mount, network namespace, cgroup, bridge and iptables rule this run left, and restores the two sysctls
it changed. ``leftovers()`` lists what would still be there, for tests to assert nothing is.

Needs root and Debian's ``containerd``, ``runc``, ``containernetworking-plugins`` and ``iptables``
(``ensure_packages()`` installs them with apt-get when missing).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from .processes import pid_alive

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN_DIR = Path("/usr/lib/cni")
CONTAINERD_NAMESPACE = "k8s.io"
# Debian packages the real node (and the image builds) need; installed with apt-get when missing.
NODE_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "iptables", "iproute2")
# The iptables tables kube-proxy writes to, in IPv4 and IPv6.
IPTABLES = tuple(
    (family, table) for family in ("iptables", "ip6tables") for table in ("filter", "nat", "mangle")
)
_SYSCTLS = ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")


# Which real node runs on this machine: "<pid of the process that started it> <its node directory>".
REGISTRY = Path("/run/lock/hpo-harness-real-node")


def _node_running(holder: list[str]) -> bool:
    """Whether the registered node still runs: its starter is alive, or (a detached `up`) one of the
    node processes recorded in its cluster's harness.json is."""
    if pid_alive(int(holder[0])):
        return True
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads((Path(holder[1]).parent / "harness.json").read_text())
        return any(
            pid_alive(int(c["pid"]))
            for name, c in state["components"].items()
            if name in ("containerd", "kubelet", "kube-proxy", "coredns")
        )
    return False


class RealNodeError(RuntimeError):
    """A piece of the real node could not be set up."""


def _log(message: str) -> None:
    import sys

    print(f"[harness] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], *, check: bool = True, timeout: float = 120, **kw: object) -> str:
    """Run a host command; its stdout, or RealNodeError naming the command and its stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        raise RealNodeError(f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return str(proc.stdout)


def missing_packages(packages: tuple[str, ...] = NODE_PACKAGES) -> list[str]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Status}\\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    installed = {line.split()[0] for line in out.splitlines() if line.endswith("install ok installed")}
    return [p for p in packages if p not in installed]


def ensure_packages(packages: tuple[str, ...] = NODE_PACKAGES) -> None:
    """apt-get install whatever of ``packages`` is missing (once per machine)."""
    missing = missing_packages(packages)
    if not missing:
        return
    if os.geteuid() != 0:
        raise RealNodeError(f"the real node needs root to install {', '.join(missing)}")
    _log(f"installing Debian packages: {', '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lists = Path("/var/lib/apt/lists")
    if not any(lists.glob("*Packages*")):
        run(["apt-get", "update", "-qq"], timeout=600, env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], timeout=1800, env=env)


def real_node_unavailable() -> str | None:
    """Why a real node cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "the real node needs root (containerd, network namespaces, iptables)"
    if not Path("/proc/sys/net/bridge").is_dir():
        return "the kernel has no bridge netfilter (/proc/sys/net/bridge), which kube-proxy's Services need"
    if shutil.which("apt-get") is None and missing_packages():
        return f"missing {', '.join(missing_packages())} and no apt-get to install them"
    return None


# ---- network ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeNetwork:
    """The run's bridge and pod network, derived from the state directory so two runs never clash."""

    bridge: str
    cidr: str
    node_ip: str
    tag: str  # comment on this run's iptables rules

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> NodeNetwork:
        digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()
        third = 100 + int(digest[:4], 16) % 150  # 10.244.100.0/24 ... 10.244.249.0/24
        net = ipaddress.ip_network(f"10.244.{third}.0/24")
        return cls(f"hpo{digest[:8]}", str(net), str(net.network_address + 1), f"hpo-harness-{digest[:8]}")

    @property
    def prefix(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen

    def forward_rule(self) -> list[str]:
        """The rule that keeps pod traffic on the machine: from the pod network to outside it, dropped."""
        return [
            "FORWARD", "-s", self.cidr, "!", "-d", self.cidr,
            "-m", "comment", "--comment", self.tag, "-j", "DROP",
        ]  # fmt: skip

    def up(self, saved_sysctls: dict[str, str]) -> None:
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
        with contextlib.suppress(RealNodeError):  # already there from an interrupted run
            run(["ip", "addr", "add", f"{self.node_ip}/{self.prefix}", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for key in _SYSCTLS:
            path = Path("/proc/sys") / key
            saved_sysctls.setdefault(key, path.read_text().strip())
            path.write_text("1\n")
        if subprocess.run(
            ["iptables", "-C", *self.forward_rule()], capture_output=True, check=False
        ).returncode:
            run(["iptables", "-I", *self.forward_rule()])

    def down(self, saved_sysctls: dict[str, str]) -> None:
        while not subprocess.run(
            ["iptables", "-D", *self.forward_rule()], capture_output=True, check=False
        ).returncode:
            pass
        if Path(f"/sys/class/net/{self.bridge}").exists():
            run(["ip", "link", "delete", self.bridge], check=False)
        for key, value in saved_sysctls.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key).write_text(value + "\n")

    def leftovers(self) -> list[str]:
        found = []
        if Path(f"/sys/class/net/{self.bridge}").exists():
            found.append(f"bridge {self.bridge}")
        rules = run(["iptables-save"], check=False) + run(["iptables-save", "-t", "nat"], check=False)
        found += [f"iptables rule: {line}" for line in rules.splitlines() if self.tag in line]
        return found


# ---- the node --------------------------------------------------------------------------------
@dataclass
class NodePorts:
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    dns_health: int
    dns_ready: int


class RealNode:
    """The kubelet side of a harness cluster. ``Cluster`` drives it: ``prepare()`` before the API server
    starts (the bridge holds the API server's address), ``spawn()`` once the API server is ready,
    ``after_ready()`` once the node is Ready, ``stop()`` before the control plane stops."""

    def __init__(self, state_dir: Path, node_name: str, gpus: int, cache_dir: Path) -> None:
        self.state_dir = state_dir
        self.node_name = node_name
        self.gpus = gpus
        self.network = NodeNetwork.for_state_dir(state_dir)
        self.cache_dir = cache_dir
        self.saved_sysctls: dict[str, str] = {}
        # KUBE-* chains that existed before this run (another node's): never removed, never reported.
        self.kube_chains_before: dict[str, list[str]] = {}

    # paths
    @property
    def dir(self) -> Path:
        return self.state_dir / "node"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        # Images are content-addressed: keeping them between runs saves importing gigabytes again.
        return self.cache_dir / "containerd" / "root"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def cgroup_root(self) -> str:
        return f"/{self.network.bridge}"

    def to_state(self) -> dict[str, object]:
        return {
            "saved_sysctls": self.saved_sysctls,
            "kube_chains_before": self.kube_chains_before,
            "network": vars(self.network),
        }

    def load_state(self, data: dict[str, object]) -> None:
        self.saved_sysctls = dict(data.get("saved_sysctls") or {})  # type: ignore[call-overload]
        self.kube_chains_before = dict(data.get("kube_chains_before") or {})  # type: ignore[call-overload]

    def ctr(self, *args: str, timeout: float = 600, **kw: object) -> str:
        return run(
            ["ctr", "--address", str(self.containerd_socket), "-n", CONTAINERD_NAMESPACE, *args],
            timeout=timeout,
            **kw,
        )

    # ---- before the API server -----------------------------------------------------------------
    def prepare(self, wait_s: float = 3600) -> None:
        ensure_packages()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.claim_machine(wait_s)
        self.kube_chains_before = {
            f"{family}/{table}": kube_chains(family, table) for family, table in IPTABLES
        }
        self.network.up(self.saved_sysctls)
        self.make_cgroup_root()

    def claim_machine(self, wait_s: float) -> None:
        """One real node per machine: two kube-proxies would rewrite each other's iptables chains. The
        node that runs is recorded in ``REGISTRY``; another run waits (up to ``wait_s``) until that one's
        kubelet has stopped, so two test runs on one machine take turns instead of breaking each other."""
        import fcntl

        deadline = time.monotonic() + wait_s
        announced = False
        while True:
            with open(REGISTRY.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                holder = REGISTRY.read_text().split() if REGISTRY.exists() else []
                alive = len(holder) == 2 and holder[1] != str(self.dir) and _node_running(holder)
                if not alive:
                    if len(holder) == 2 and holder[1] != str(self.dir):
                        self._clean_up_after(Path(holder[1]).parent)
                    REGISTRY.write_text(f"{os.getpid()} {self.dir}\n")
                    return
            if time.monotonic() > deadline:
                raise RealNodeError(
                    f"another real node (pid {holder[0]}, {holder[1]}) still runs on this machine"
                )
            if not announced:
                _log(f"waiting for the real node of pid {holder[0]} ({holder[1]}) to stop: one per machine")
                announced = True
            time.sleep(5)

    def _clean_up_after(self, state_dir: Path) -> None:
        """A real node whose processes died without a teardown (its test process was killed): remove
        what it left (containers, mounts, netns, cgroups, rules, bridge) before this one starts."""
        dead = RealNode(state_dir, self.node_name, 0, self.cache_dir)
        with contextlib.suppress(OSError, ValueError, KeyError):
            dead.load_state(json.loads((state_dir / "harness.json").read_text())["real_node"] or {})
        if dead.leftovers():
            _log(f"removing what the real node of {state_dir} left: {', '.join(dead.leftovers()[:5])} ...")
            dead.cleanup_host()

    def release_machine(self) -> None:
        with contextlib.suppress(OSError):
            holder = REGISTRY.read_text().split()
            if len(holder) == 2 and holder[1] == str(self.dir):
                REGISTRY.unlink()

    def make_cgroup_root(self) -> None:
        """The kubelet's ``cgroupRoot`` in every cgroup v1 hierarchy (the kubelet requires it to exist);
        a new cpuset cgroup starts with no CPUs or memory nodes, so it gets its parent's."""
        name = self.cgroup_root.lstrip("/")
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            if not hierarchy.is_dir() or hierarchy.name == "unified":
                continue
            path = hierarchy / name
            path.mkdir(exist_ok=True)
            for key in ("cpuset.cpus", "cpuset.mems"):
                if (path / key).exists() and not (path / key).read_text().strip():
                    (path / key).write_text((hierarchy / key).read_text())

    # ---- configuration files -------------------------------------------------------------------
    def _write_configs(self, pki_dir: Path, kubeconfigs: dict[str, str], ports: NodePorts) -> dict[str, Path]:
        d = self.dir
        net = self.network
        (d / "containerd").mkdir(parents=True, exist_ok=True)
        (d / "cni" / "net.d").mkdir(parents=True, exist_ok=True)
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        containerd_toml = d / "containerd" / "config.toml"
        containerd_toml.write_text(
            f"""version = 2
root = "{self.containerd_root}"
state = "{d / "containerd" / "state"}"
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = "{self.containerd_socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE in the user namespace it runs in: runc may only raise scores.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d / "cni" / "net.d"}"
"""
        )
        cni = {
            "cniVersion": "1.0.0",
            "name": "hpo-harness",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": True,
                    # The route to Services: their ClusterIPs are translated on the node (kube-proxy).
                    "isDefaultGateway": True,
                    "ipMasq": False,  # nothing is translated to the host's address: pods stay on the machine
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.cidr, "gateway": net.node_ip}]],
                        "dataDir": str(d / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (d / "cni" / "net.d" / "10-hpo-harness.conflist").write_text(json.dumps(cni, indent=2))
        # Pods resolve through CoreDNS only; the host's resolvers are never handed to a pod.
        resolv = d / "resolv.conf"
        resolv.write_text(f"nameserver {net.node_ip}\n")
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": net.node_ip,
            "port": ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports.kubelet_healthz,
            "tlsCertFile": str(pki_dir / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki_dir / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failCgroupV1": False,
            "failSwapOn": False,
            "enforceNodeAllocatable": ["pods"],
            "evictionHard": {},
            "makeIPTablesUtilChains": False,
            "clusterDNS": [net.node_ip],
            "clusterDomain": "cluster.local",
            "resolvConf": str(resolv),
            "podLogsDir": str(d / "pod-logs"),
            "volumePluginDir": str(d / "volume-plugins"),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "maxPods": 110,
            "podPidsLimit": 4096,
            "serverTLSBootstrap": False,
            "rotateCertificates": False,
            "protectKernelDefaults": False,
            "localStorageCapacityIsolation": True,
        }
        kubelet_yaml = d / "kubelet.yaml"
        kubelet_yaml.write_text(yaml.safe_dump(kubelet_config, sort_keys=False))
        proxy_config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": kubeconfigs["kube-proxy"]},
            "mode": "iptables",
            "clusterCIDR": net.cidr,
            "hostnameOverride": self.node_name,
            "bindAddress": net.node_ip,
            "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
            # NodePorts only on the run's bridge, never on the machine's other interfaces.
            "nodePortAddresses": [f"{net.node_ip}/32"],
            # Leave the machine's conntrack sysctls as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpCloseWaitTimeout": "0s",
                "tcpEstablishedTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        }
        proxy_yaml = d / "kube-proxy.yaml"
        proxy_yaml.write_text(yaml.safe_dump(proxy_config, sort_keys=False))
        corefile = d / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {net.node_ip}
    ready 127.0.0.1:{ports.dns_ready}
    health 127.0.0.1:{ports.dns_health}
    errors
    cache 5
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfigs["coredns"]}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
}}
"""
        )
        return {
            "containerd": containerd_toml,
            "kubelet": kubelet_yaml,
            "proxy": proxy_yaml,
            "corefile": corefile,
        }

    # ---- start ---------------------------------------------------------------------------------
    def spawn(
        self,
        spawn: Callable[..., None],
        wait: Callable[[str, Callable[[], bool], float, tuple[str, ...]], None],
        binaries: dict[str, Path],
        pki_dir: Path,
        kubeconfigs: dict[str, str],
        ports: NodePorts,
        deadline: float,
    ) -> tuple[str, ...]:
        """Start containerd, import the pause image, then the kubelet, kube-proxy and CoreDNS."""
        configs = self._write_configs(pki_dir, kubeconfigs, ports)

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        spawn("containerd", ["containerd", "--config", str(configs["containerd"])], [])
        wait("containerd", self._containerd_ready, left(), ("containerd",))
        self.ensure_pause_image()
        spawn(
            "kubelet",
            [
                str(binaries["kubelet"]),
                f"--config={configs['kubelet']}",
                f"--kubeconfig={kubeconfigs['node']}",
                f"--root-dir={self.kubelet_root}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={self.node_name}",
                f"--node-ip={self.network.node_ip}",
                "--v=1",
            ],
            [ports.kubelet, ports.kubelet_healthz],
        )
        spawn("kube-proxy", [str(binaries["kube-proxy"]), f"--config={configs['proxy']}", "--v=1"], [])
        spawn("coredns", [str(binaries["coredns"]), "-conf", str(configs["corefile"])], [])
        return ("containerd", "kubelet", "kube-proxy", "coredns")

    def _containerd_ready(self) -> bool:
        return self.containerd_socket.exists() and bool(self.ctr("version", check=False, timeout=10))

    def images(self) -> set[str]:
        out = self.ctr("images", "ls", "-q")
        return {line.strip() for line in out.splitlines() if line.strip()}

    def ensure_pause_image(self) -> None:
        """Compile ``pause.c`` from the pinned module statically and import it as the sandbox image."""
        if PAUSE_IMAGE in self.images():
            return
        from .binaries import K8S_MODULE_DIR, _find_go

        source = (
            Path(
                run(
                    [_find_go(), "list", "-m", "-f", "{{.Dir}}", "k8s.io/kubernetes"], cwd=K8S_MODULE_DIR
                ).strip()
            )
            / "build"
            / "pause"
            / "linux"
            / "pause.c"
        )
        with tempfile.TemporaryDirectory() as tmp:
            binary = Path(tmp) / "pause"
            run(["gcc", "-Os", "-static", "-o", str(binary), str(source), "-DVERSION=3.10-hpo-harness"])
            archive = Path(tmp) / "pause.tar"
            write_single_layer_oci(archive, PAUSE_IMAGE, {"pause": binary}, entrypoint=["/pause"])
            self.ctr("images", "import", str(archive))

    def import_docker_archive(self, archive: IO[bytes]) -> None:
        """Import ``docker save`` output, read from a stream, into the node's containerd (what
        ``kind load`` does)."""
        self.ctr("images", "import", "--all-platforms", "-", timeout=1800, stdin=archive)

    # ---- once Ready ----------------------------------------------------------------------------
    def advertise_gpus(self, patch_status: Callable[[dict[str, object]], None]) -> None:
        """Advertise ``nvidia.com/gpu`` the way the docs advertise an extended resource."""
        if self.gpus:
            patch_status({"status": {"capacity": {"nvidia.com/gpu": str(self.gpus)}}})

    # ---- stop ----------------------------------------------------------------------------------
    def cleanup_runtime(self) -> None:
        """After the kubelet stopped: kill and remove this containerd's containers and their tasks."""
        if not self.containerd_socket.exists():
            return
        for cid in self.ctr("containers", "ls", "-q", check=False, timeout=30).split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False, timeout=30)
            self.ctr("tasks", "delete", "-f", cid, check=False, timeout=30)
            self.ctr("containers", "delete", cid, check=False, timeout=30)

    def shim_pids(self) -> list[int]:
        """containerd-shim processes of this containerd (they outlive it by design)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if (
                    argv
                    and argv[0].endswith(b"containerd-shim-runc-v2")
                    and str(self.containerd_socket).encode() in argv
                ):
                    pids.append(int(proc.name))
        return pids

    def our_mounts(self) -> list[str]:
        roots = (str(self.dir), str(self.containerd_root), "/run/netns/cni-", "/var/run/netns/cni-")
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith((str(self.dir), str(self.containerd_root))) or point.startswith(roots[2:]):
                mounts.append(point)
        return mounts

    def unmount_all(self) -> None:
        for point in sorted(self.our_mounts(), key=len, reverse=True):
            run(["umount", "-l", point], check=False)

    def our_netns(self) -> list[str]:
        """The network namespaces CNI made for this run's pods (found by the bridge's veth peers)."""
        found = []
        for ns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").is_dir() else []:
            ips = run(["ip", "-n", ns.name, "-4", "-o", "addr"], check=False, timeout=10)
            net = ipaddress.ip_network(self.network.cidr)
            for word in ips.split():
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_interface(word).ip in net:
                        found.append(ns.name)
                        break
        return found

    def remove_netns(self) -> None:
        for name in self.our_netns():
            run(["ip", "netns", "delete", name], check=False)

    def our_cgroups(self) -> list[Path]:
        base = Path("/sys/fs/cgroup")
        return [
            c / self.cgroup_root.lstrip("/")
            for c in base.iterdir()
            if (c / self.cgroup_root.lstrip("/")).is_dir()
        ]

    def cgroup_pids(self) -> list[int]:
        """Every process in the node's cgroup tree (its pods' containers)."""
        pids: set[int] = set()
        for top in self.our_cgroups():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(line) for line in procs.read_text().split())
        return sorted(pids)

    def remove_cgroups(self) -> None:
        for top in self.our_cgroups():
            for path in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    path.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    def cleanup_host(self) -> None:
        """After every node process stopped: shims, mounts, netns, cgroups, kube-proxy's rules, network."""
        import signal

        # Whatever still runs in the node's cgroups (containers of a node whose containerd died
        # first, e.g. when the test process was killed) is this run's: end it, then the shims.
        deadline = time.monotonic() + 10
        while (pids := self.cgroup_pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        for pid in self.shim_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.unmount_all()
        self.remove_netns()
        self.remove_cgroups()
        self.cleanup_proxy_rules()
        self.network.down(self.saved_sysctls)
        self.release_machine()

    def cleanup_proxy_rules(self) -> None:
        """Remove the KUBE-* chains kube-proxy made, and the rules that jump to them (what
        ``kube-proxy --cleanup`` does, plus the KUBE-FIREWALL chain it leaves), in IPv4 and IPv6.
        Chains that were there before this run started are left alone."""
        for (family, table), chains in self.new_kube_chains().items():
            if chains:
                dump = run([f"{family}-save", "-t", table], check=False)
                for line in dump.splitlines():
                    words = shlex.split(line) if line.startswith("-A ") else []
                    target = words[words.index("-j") + 1] if "-j" in words else ""
                    if target in chains and words[1] not in chains:
                        run([family, "-t", table, "-D", *words[1:]], check=False)
                for chain in chains:
                    run([family, "-t", table, "-F", chain], check=False)
                for chain in chains:
                    run([family, "-t", table, "-X", chain], check=False)

    def leftovers(self) -> list[str]:
        """What this run left on the machine: mounts, netns, cgroups, containers, bridge, rules."""
        found = [f"containerd-shim pid {p}" for p in self.shim_pids()]
        found += [f"container process pid {p}" for p in self.cgroup_pids()]
        found += [f"mount {m}" for m in self.our_mounts()]
        found += [f"netns {n}" for n in self.our_netns()]
        found += [f"cgroup {c}" for c in self.our_cgroups()]
        found += self.network.leftovers()
        for key, value in self.saved_sysctls.items():
            now = (Path("/proc/sys") / key).read_text().strip()
            if now != value:
                found.append(f"sysctl {key.replace('/', '.')} is {now}, was {value}")
        for (family, table), chains in self.new_kube_chains().items():
            found += [f"{family} -t {table} chain {c}" for c in chains]
        return found

    def new_kube_chains(self) -> dict[tuple[str, str], list[str]]:
        """The KUBE-* chains of each iptables table that were not there when this node was prepared."""
        return {
            (family, table): [
                c
                for c in kube_chains(family, table)
                if c not in self.kube_chains_before.get(f"{family}/{table}", [])
            ]
            for family, table in IPTABLES
        }


def kube_chains(family: str, table: str) -> list[str]:
    """The KUBE-* chains of one iptables table."""
    dump = run([f"{family}-save", "-t", table], check=False)
    return [line[1:].split()[0] for line in dump.splitlines() if line.startswith(":KUBE-")]


def write_single_layer_oci(
    archive: Path, name: str, files: dict[str, Path], *, entrypoint: list[str], user: str = "65535:65535"
) -> None:
    """An OCI image archive of one layer holding ``files`` (path in image -> host file), for ctr import."""
    import gzip
    import io

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w") as tar:
        for inside, host in files.items():
            info = tar.gettarinfo(str(host), arcname=inside)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(host, "rb") as f:
                tar.addfile(info, f)
    diff_id = "sha256:" + hashlib.sha256(layer_tar.getvalue()).hexdigest()
    layer_digest, layer = blob(gzip.compress(layer_tar.getvalue(), mtime=0))
    config_digest, config = blob(
        json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": entrypoint, "User": user},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode()
    )
    manifest_digest, manifest = blob(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    with tarfile.open(archive, "w") as out:

        def add(path: str, data: bytes) -> None:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in ((layer_digest, layer), (config_digest, config), (manifest_digest, manifest)):
            add(f"blobs/sha256/{digest.split(':', 1)[1]}", data)
