"""``python -m tests.harness up|down|status``: the test cluster and PostgreSQL for a person's shell.

``up`` starts the control plane, the node agent and PostgreSQL as detached processes and prints the
variables to export (only those go to stdout, so ``eval "$(python -m tests.harness up)"`` works):
``KUBECONFIG``, ``PATH`` with ``<state>/cluster/bin`` first (its ``kubectl`` is the cluster's own release,
which a system kubectl may be many releases behind) and ``HPO_TEST_POSTGRES_URL``;
pytest then uses that cluster and server instead of starting its own. ``down`` stops everything through
the recorded pids; ``status`` reports what is running.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import sys
import time
from pathlib import Path

from .binaries import K8S_VERSION, cache_root
from .cluster import (
    DEFAULT_NODE_NAME,
    NODE_KINDS,
    STATE_FILE,
    Cluster,
    HarnessError,
    pid_alive,
    port_is_listening,
)
from .postgres import STATE_FILE as PG_STATE_FILE
from .postgres import PostgresServer


def default_state_dir() -> Path:
    return cache_root() / "harness"


def _exports(state_dir: Path) -> list[str]:
    cluster = Cluster.load(state_dir / "cluster")
    lines = [f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}"]
    if (cluster.bin_dir / "kubectl").exists():  # a cluster started before the harness built kubectl has none
        lines.append(f'export PATH={shlex.quote(str(cluster.bin_dir))}:"$PATH"')
    if (state_dir / PG_STATE_FILE).is_file():
        lines.append(f"export HPO_TEST_POSTGRES_URL={PostgresServer.load(state_dir).admin_url}")
    return lines


def _cluster_running(state_dir: Path) -> bool:
    try:
        cluster = Cluster.load(state_dir / "cluster")
    except HarnessError:
        return False
    return any(pid_alive(pid) for pid in cluster.pids().values())


def up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    if _cluster_running(state_dir):
        print(f"[harness] already up (state in {state_dir}); `down` stops it", file=sys.stderr)
        print("\n".join(_exports(state_dir)))
        return 0
    shutil.rmtree(state_dir / "cluster", ignore_errors=True)  # stale etcd data and certificates
    started = time.monotonic()
    cluster = Cluster(
        state_dir / "cluster", node_name=args.node_name, gpus=args.gpus, detached=True, node=args.node
    )
    cluster.start()
    if not args.no_postgres:
        with contextlib.suppress(HarnessError):
            PostgresServer.load(state_dir).stop()  # a server left over from an earlier `up`
        try:
            PostgresServer(state_dir, detached=True).start()
        except BaseException:
            cluster.stop()
            raise
    print(
        f"[harness] up in {time.monotonic() - started:.1f}s: API server {cluster.server}, node "
        f"{cluster.node_name} with {cluster.gpus} nvidia.com/gpu; pod logs in {cluster.pods_dir}; "
        f"kubectl {K8S_VERSION} in {cluster.bin_dir} (the PATH export puts it first)",
        file=sys.stderr,
    )
    print("\n".join(_exports(state_dir)))
    return 0


def down(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    stopped = []
    with contextlib.suppress(HarnessError):
        Cluster.load(state_dir / "cluster").stop()
        (state_dir / "cluster" / STATE_FILE).unlink()  # logs and pod directories stay for reading
        stopped.append("cluster")
    with contextlib.suppress(HarnessError):
        PostgresServer.load(state_dir).stop()
        stopped.append("postgres")
    print(f"[harness] stopped: {', '.join(stopped) or 'nothing was running'}", file=sys.stderr)
    return 0


def load(args: argparse.Namespace) -> int:
    """Import Docker images into the real node's containerd (the harness's `kind load docker-image`)."""
    from .images import DockerEngine, load_into_node

    cluster = Cluster.load(args.state_dir / "cluster")
    if cluster.real_node is None:
        raise HarnessError(
            "`load` needs a cluster started with --node kubelet (the node agent runs no images)"
        )
    engine = DockerEngine(args.state_dir).start()
    try:
        imported = load_into_node(engine, cluster.real_node, args.images)
    finally:
        engine.stop()
    print(
        f"[harness] loaded {', '.join(args.images)} ({len(imported)} imported, the rest already there)",
        file=sys.stderr,
    )
    return 0


def status(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    healthy = True
    try:
        cluster = Cluster.load(state_dir / "cluster")
    except HarnessError:
        print(f"cluster: not started (no state in {state_dir / 'cluster'})")
        healthy = False
    else:
        print(f"cluster: {cluster.server}  kubeconfig {cluster.kubeconfig}")
        if cluster.kubectl is not None:
            print(f"  kubectl {cluster.bin_dir / 'kubectl'} -> {cluster.kubectl}")
        for name, comp in cluster.components.items():
            alive = pid_alive(comp.pid)
            healthy &= alive
            ports = ", ".join(f"{p}{'' if port_is_listening(p) else ' (closed)'}" for p in comp.ports)
            print(f"  {name:24} pid {comp.pid:<8} {'running' if alive else 'DEAD':8} {ports}  log {comp.log}")
    try:
        server = PostgresServer.load(state_dir)
    except HarnessError:
        print("postgres: not started")
    else:
        alive = server.pid is not None and pid_alive(server.pid)
        healthy &= alive
        print(f"postgres: {server.admin_url}  pid {server.pid}  {'running' if alive else 'DEAD'}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where pids, certificates, logs and data live (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster and PostgreSQL, print the exports")
    p_up.add_argument("--gpus", type=int, default=2, help="nvidia.com/gpu of the test node (default 2)")
    p_up.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    p_up.add_argument("--no-postgres", action="store_true", help="start only the cluster")
    p_up.add_argument(
        "--node",
        choices=NODE_KINDS,
        default="agent",
        help="agent: pods' commands as host processes (fast); kubelet: a real kubelet with containerd, "
        "which runs images (needs root; see tests/harness/README.md)",
    )
    p_load = sub.add_parser(
        "load", help="import Docker images into the real node (as `kind load docker-image`)"
    )
    p_load.add_argument("images", nargs="+", metavar="IMAGE")
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("status", help="show what is running")
    args = parser.parse_args(argv)
    args.state_dir = args.state_dir.expanduser().resolve()
    if args.command == "up" and args.gpus < 0:
        parser.error(f"--gpus must be >= 0, got {args.gpus}")
    handlers = {"up": up, "down": down, "status": status, "load": load}
    try:
        return handlers[args.command](args)
    except HarnessError as exc:
        print(f"[harness] error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
