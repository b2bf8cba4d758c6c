"""Fixtures for the end-to-end tests: Helm (shared with the chart tests) and the harness's real node.

``real_node`` (module scope) is a harness cluster whose node is a real kubelet with containerd
(``tests/harness/real_node.py``), a Docker engine to build images with, and the local base images. It is
skipped, saying why, where a real node cannot run (not root, no bridge netfilter) and when ``KUBECONFIG``
names a cluster (there, ``scripts/kind-e2e.sh`` is the same workflow).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chart.conftest import helm
from tests.harness.binaries import ensure_control_plane, ensure_coredns
from tests.harness.cluster import Cluster
from tests.harness.helm import Helm
from tests.harness.images import PYTHON_BASE, DockerEngine
from tests.harness.real_node import real_node_unavailable

__all__ = ["helm", "real_node"]

ROOT = Path(__file__).resolve().parents[2]
E2E_SCRIPT = ROOT / "scripts" / "e2e.sh"


@dataclass
class RealNodeCluster:
    """What the real-node tests share: the cluster, the Docker engine and the e2e script's environment."""

    state_dir: Path
    cluster: Cluster
    engine: DockerEngine
    helm: Helm
    stopped: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def script(self, *args: str, timeout: float = 3000) -> subprocess.CompletedProcess[str]:
        """Run ``scripts/e2e.sh *args`` against this cluster; output is returned, not printed."""
        return subprocess.run(
            ["bash", str(E2E_SCRIPT), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        assert self.cluster.kubectl is not None
        result = subprocess.run(
            [str(self.cluster.kubectl), f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            try:
                self.cluster.stop()
            finally:
                self.engine.stop()


@pytest.fixture(scope="module")
def real_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, helm: Helm
) -> Iterator[RealNodeCluster]:
    if os.environ.get("KUBECONFIG"):
        pytest.skip(
            "KUBECONFIG names a cluster; the real-node tests start their own (see scripts/kind-e2e.sh)"
        )
    reason = real_node_unavailable()
    if reason is not None:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("real-node")
    capman = request.config.pluginmanager.getplugin("capturemanager")
    engine = DockerEngine(state_dir)
    # Builds take minutes when cold: show their progress instead of capturing it.
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        ensure_control_plane()
        ensure_coredns()
        engine.start()
        engine.ensure_python_base()
        engine.ensure_torch_base()
        engine.ensure_postgres()
    cluster = Cluster(state_dir / "cluster", node="kubelet", gpus=2)
    try:
        cluster.start(timeout=240)
    except BaseException:
        engine.stop()
        raise
    assert cluster.kubectl is not None
    env = {
        **helm.env(),
        "KUBECONFIG": str(cluster.kubeconfig),
        "KUBECTL": str(cluster.kubectl),
        "HELM": str(helm.binary),
        "DOCKER_HOST": engine.host,
        "DOCKER_BUILDKIT": "0",
        "E2E_BASE_IMAGE": PYTHON_BASE,
        "E2E_TRIAL_BASE_IMAGE": engine.ensure_torch_base(),
        "E2E_BUILD_NETWORK": "host",
        "E2E_LOAD": f"{sys.executable} -m tests.harness --state-dir {state_dir} load",
    }
    rn = RealNodeCluster(state_dir, cluster, engine, helm.with_kubeconfig(cluster.kubeconfig), env=env)
    try:
        yield rn
    finally:
        rn.stop()
