"""A release of the chart installed on the test cluster, for the install tests."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml

from tests.harness.handle import ClusterHandle
from tests.harness.helm import Helm

CHART = Path(__file__).resolve().parents[2] / "charts" / "hpo-operator"
# Every install sets it: the harness's node agent runs container commands as local processes, not
# images, so it would fail the chart's operator pod (which runs the image's entrypoint) over and over.
# Tests that need the operator run it as a local process with the pod's identity and environment.
NO_OPERATOR_POD = "operator.replicas=0"


class Release:
    """One installed release of the chart; uninstalled (cluster-scoped RBAC included) afterwards."""

    def __init__(self, helm: Helm, cluster: ClusterHandle, namespace: str, *sets: str) -> None:
        self.helm = helm.with_kubeconfig(Path(cluster.kubeconfig))
        self.cluster = cluster
        self.namespace = namespace
        # The release name contains the chart name, so it is also every object's name prefix.
        self.name = f"hpo-operator-{uuid.uuid4().hex[:6]}"
        self.service_account = self.name
        self.user = f"system:serviceaccount:{namespace}:{self.service_account}"
        args = [arg for s in (NO_OPERATOR_POD, *sets) for arg in ("--set", s)]
        self.output = self.helm("install", self.name, str(CHART), "-n", namespace, *args).stdout

    def manifests(self) -> list[dict]:
        out = self.helm("get", "manifest", self.name, "-n", self.namespace).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "-n", self.namespace, "--wait", check=False)
