"""The operator run with exactly what the chart gives its pod, on the real control plane.

The chart is installed with ``operator.replicas=0`` (the harness's node agent runs commands, not images;
see test_install.py), and the operator runs here as a local process with the pod's identity (a token of
the chart's ServiceAccount, from the TokenRequest API) and the pod's environment (the Deployment's env,
Secrets resolved as the kubelet would). It must complete an example study without a single request
refused by the chart's RBAC.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.harness.handle import ClusterHandle

from .conftest import free_port
from .release import Release

ROOT = Path(__file__).resolve().parents[2]


def pod_environment(release: Release, pod_name: str | None = None) -> dict[str, str]:
    """The operator container's environment as the kubelet would build it for pod ``pod_name`` (Secrets
    resolved; ``pod_name`` is needed where the chart passes the pod's name, as with leader election).

    The stand-in node runs trials as this host's processes, without the cluster's DNS: the report URL,
    the chart's Service, is checked and then pointed at the operator's own port on loopback."""
    manifests = release.manifests()
    (deployment,) = [d for d in manifests if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            assert pod_name is not None, f"{var['name']} is the pod's name: pass pod_name"
            env[var["name"]] = pod_name
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            secret = release.cluster.core().read_namespaced_secret(ref["name"], release.namespace)
            env[var["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
    if "HPO_REPORT_URL" in env:
        (service,) = [
            d for d in manifests if d["kind"] == "Service" and d["metadata"]["name"].endswith("-report")
        ]
        port = env["HPO_REPORT_PORT"]
        assert service["spec"]["ports"][0]["port"] == int(port)
        assert env["HPO_REPORT_URL"] == f"http://{service['metadata']['name']}.{release.namespace}.svc:{port}"
        env |= {"HPO_REPORT_URL": f"http://127.0.0.1:{port}", "HPO_REPORT_HOST": "127.0.0.1"}
    return env


def token_kubeconfig(cluster: ClusterHandle, release: Release, path: Path) -> Path:
    """A kubeconfig for the API server that authenticates with a token of the chart's ServiceAccount."""
    token = cluster.kubectl(
        "create", "token", release.service_account, "-n", release.namespace, "--duration=1h"
    ).stdout.strip()
    admin: dict[str, Any] = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    server = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [server],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": server["name"], "user": "operator"}}
                ],
                "current-context": "operator",
            }
        )
    )
    return path


def wait_until(what: str, check: Any, timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-6000:] if log is not None and log.exists() else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def create_storage_secret(cluster: ClusterHandle, namespace: str, url: str) -> None:
    """The Secret ``hpo-storage`` (key ``url``) that ``storage.external.existingSecret`` names."""
    cluster.core().create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="hpo-storage"), string_data={"url": url})
    )


RBAC_REFUSALS = ("Forbidden", "Not enough permissions", " 403")


def assert_rbac_allowed(log: Path, symptoms: tuple[str, ...] = RBAC_REFUSALS) -> None:
    """The operator's log shows none of ``symptoms`` of the chart's RBAC refusing it something."""
    text = log.read_text(errors="replace")
    for symptom in symptoms:
        assert symptom not in text, f"the chart's RBAC refused the operator something:\n{text}"


def start_operator(env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """``python -m hpo_operator`` with ``env`` over this environment less its ``HPO_*`` and ``KUBECONFIG``
    (the pod's environment stands in for them), its output in ``log``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HPO_", "KUBECONFIG"))}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hpo_operator"],
            env={**base, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 30 seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(600)
def test_operator_with_the_chart_identity_completes_an_example(
    install, cluster: ClusterHandle, namespace: str, postgres_url: str, tmp_path: Path
) -> None:
    create_storage_secret(cluster, namespace, postgres_url)
    health, metrics = free_port(), free_port()
    release = install(
        namespace,
        "storage.mode=external",
        "storage.external.existingSecret=hpo-storage",
        f"operator.watchNamespaces={{{namespace}}}",
        f"operator.healthPort={health}",
        f"metrics.port={metrics}",
    )
    env = pod_environment(release)
    assert env["HPO_DEFAULT_STORAGE_URL"] == postgres_url
    assert env["HPO_WATCH_NAMESPACES"] == namespace
    kubeconfig = token_kubeconfig(cluster, release, tmp_path / "operator-kubeconfig")
    log = tmp_path / "operator.log"
    operator = start_operator({**env, "KUBECONFIG": str(kubeconfig)}, log, tmp_path)
    try:
        wait_until(
            "the operator's liveness endpoint", lambda: http_ok(f"http://127.0.0.1:{health}/healthz"), 60, log
        )
        cluster.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples/custom-container-study.yaml"))

        def phase() -> str | None:
            got = cluster.kubectl(
                "get", "hpostudy", "logreg-custom", "-n", namespace, "-o", "jsonpath={.status.phase}"
            ).stdout
            assert got != "Failed", cluster.kubectl(
                "describe", "hpostudy", "logreg-custom", "-n", namespace
            ).stdout
            return got == "Succeeded"

        wait_until("the study to succeed", phase, 300, log)

        table = cluster.kubectl("get", "hps", "-n", namespace).stdout
        header, row = table.splitlines()[:2]
        assert header.split()[:4] == ["NAME", "PHASE", "TRIALS", "BEST"]
        name, phase_col, trials, best = row.split()[:4]
        assert (name, phase_col) == ("logreg-custom", "Succeeded")
        assert trials.startswith("8/8") or trials == "8/8", table
        assert 0 < float(best) < 0.7, table  # validation log-loss; 0.69 is a coin flip

        described = cluster.kubectl("describe", "hps", "logreg-custom", "-n", namespace).stdout
        events = described.split("Events:", 1)[1]
        for reason in ("TrialCompleted", "StudySucceeded"):
            assert re.search(rf"^\s*Normal\s+{reason}\s", events, re.M), described

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        # Scraped through the chart's metrics port: the study's 8 trials, finished as complete or pruned.
        assert "hpo_trials_started_total 8.0" in exposition, exposition
        finished = re.findall(r'^hpo_trials_finished_total\{state="(\w+)"\} (\d+)', exposition, re.M)
        assert sum(float(n) for state, n in finished if state in ("complete", "pruned")) == 8, exposition
        assert 'hpo_studies{phase="Succeeded"} 1.0' in exposition, exposition

        assert_rbac_allowed(log)
    finally:
        stop(operator)
