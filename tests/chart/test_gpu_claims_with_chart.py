"""Shared GPU claims with exactly the chart's RBAC: the operator, as the chart's ServiceAccount, creates,
shares and deletes a study's ResourceClaims and reads its DeviceClass (the chart's ``gpu.deviceClassName``)
without a request refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.cluster import DEVICE_CLASS_NAME
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

ROOT = Path(__file__).resolve().parents[2]
QUADRATIC = ROOT / "tests" / "integration" / "trials" / "quadratic.py"


@pytest.mark.timeout(600)
def test_the_chart_lets_the_operator_share_gpus_through_claims(
    install: Any, cluster: ClusterHandle, namespace: str, postgres_url: str, tmp_path: Path
) -> None:
    if cluster.external:
        pytest.skip("needs the harness node agent's DRA devices")
    create_storage_secret(cluster, namespace, postgres_url)
    health = free_port()
    release = install(
        namespace,
        "storage.mode=external",
        "storage.external.existingSecret=hpo-storage",
        f"operator.watchNamespaces={{{namespace}}}",
        f"operator.healthPort={health}",
        "metrics.enabled=false",
        f"gpu.deviceClassName={DEVICE_CLASS_NAME}",
    )
    env = pod_environment(release)
    assert env["HPO_GPU_DEVICE_CLASS"] == DEVICE_CLASS_NAME
    kubeconfig = token_kubeconfig(cluster, release, tmp_path / "operator-kubeconfig")
    log = tmp_path / "operator.log"
    study = {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "HPOStudy",
        "metadata": {"name": "shared", "namespace": namespace},
        "spec": {
            "objective": [{"metric": "score"}],
            "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
            "trials": {"total": 4, "parallelism": 2, "perGPU": 2, "maxFailed": 0},
            "template": {"image": "hpo-trial:test", "command": ["python", str(QUADRATIC)]},
        },
    }
    operator = start_operator({**env, "KUBECONFIG": str(kubeconfig)}, log, tmp_path)
    try:
        wait_until(
            "the operator's liveness endpoint", lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), 60, log
        )
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(study))

        def phase() -> bool:
            got = cluster.kubectl(
                "get", "hpostudy", "shared", "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
            assert got != "Failed", cluster.kubectl("describe", "hpostudy", "shared", "-n", namespace).stdout
            return got == "Succeeded"

        wait_until("the study to succeed", phase, 300, log)
        pods = cluster.core().list_namespaced_pod(namespace, label_selector="hpo.dev/study=shared").items
        assert len(pods) == 4
        assert {r.resource_claim_name for p in pods for r in p.spec.resource_claims} <= {
            "shared-gpu-0",
            "shared-gpu-1",
        }

        def claims_gone() -> bool:
            got = cluster.kubectl("get", "resourceclaims", "-n", namespace, "-o", "name").stdout
            return not got.strip()

        wait_until("the study's idle claims to be deleted", claims_gone, 60, log)
        assert_rbac_allowed(log)
    finally:
        stop(operator)
