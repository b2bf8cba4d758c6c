"""``hpo`` against a real API server: validation agrees with the schema; status and trials of a study."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cli.conftest import CustomStudy, RunHpo, hpo_env, local_storage, manifest
from tests.cli.test_report import _free_port, _get

REPO = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((REPO / "examples" / "seed-study.yaml").read_text())


@pytest.fixture
def crd(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/hpostudies.hpo.dev", "--timeout=60s")


def seed_with(mutate: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SEED)
    mutate(doc["spec"])
    return doc


INVALID = [
    (lambda s: s["searchSpace"][2].update(low=0.5, high=0.3), "spec.searchSpace[2].low"),
    (lambda s: s["searchSpace"][3].update(low=0.0), "spec.searchSpace[3].low"),
    (lambda s: s["objective"][0].update(direction="max"), "spec.objective[0].direction"),
    (lambda s: s["trials"].update(parallelism=0), "spec.trials.parallelism"),
    (lambda s: s["sampler"].update(type="Bayes"), "spec.sampler.type"),
    (lambda s: s.update(pruner={"type": "Hyperband"}), "spec.pruner.maxResource"),
]


@pytest.mark.parametrize(("mutate", "field"), INVALID)
def test_hpo_validate_and_the_api_server_refuse_the_same_field(
    cluster: Any, crd: None, namespace: str, run_hpo: RunHpo, tmp_path: Path, mutate: Any, field: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(seed_with(mutate)))

    ours = run_hpo("validate", str(path), cwd=tmp_path)
    assert ours.code == 2
    m = re.search(rf"{re.escape(str(path))}: (spec[^:]*): ", " ".join(ours.err.split()))
    assert m and m.group(1) == field, ours.err

    server = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert server.returncode != 0, server.stdout
    assert "is invalid" in server.stderr and field in server.stderr, server.stderr


def test_the_seed_example_passes_both(cluster: Any, crd: None, namespace: str, run_hpo: RunHpo) -> None:
    seed = REPO / "examples" / "seed-study.yaml"
    assert run_hpo("validate", str(seed), cwd=REPO).code == 0
    cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(seed))


def _status(study_name: str) -> dict[str, Any]:
    return {
        "phase": "Running",
        "observedGeneration": 1,
        "studyName": study_name,
        "progress": "2/5",
        "trials": {
            "total": 5,
            "started": 3,
            "running": 1,
            "complete": 1,
            "pruned": 0,
            "failed": 1,
            "waiting": 0,
        },
        "bestValue": 0.0025,
        "bestTrial": {"number": 0, "value": 0.0025, "values": [0.0025], "params": {"x": 0.25, "y": 0}},
        "recentTrials": [
            {"number": 0, "state": "COMPLETE", "value": 0.0025, "params": {"x": 0.25, "y": 0}},
            {
                "number": 1,
                "state": "FAIL",
                "params": {"x": 0.7, "y": 1},
                "attempts": 2,
                "reason": "exit code 3",
            },
            {"number": 2, "state": "RUNNING", "params": {"x": 0.5, "y": 2}, "step": 3},
        ],
        "message": "2 of 5 trials finished (1 complete, 0 pruned, 1 failed), 1 running.",
        "conditions": [
            {
                "type": "SpecValid",
                "status": "True",
                "reason": "Valid",
                "message": "the spec is valid",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }


def test_status_and_trials_of_a_study_on_the_cluster(
    cluster: Any, crd: None, namespace: str, run_hpo: RunHpo, custom_study: CustomStudy
) -> None:
    # A real study in a storage this machine reaches, and an HPOStudy whose status and Secret point at it
    # (the operator's job on a real cluster; here written directly).
    path = custom_study("onk8s", trials={"total": 3, "parallelism": 1})
    assert run_hpo("run", str(path), cwd=path.parent).code == 0
    body = manifest("onk8s", yaml.safe_load(path.read_text())["spec"])
    # Parameters are shown in the search space's order (the API server sorts the status's keys).
    body["spec"]["searchSpace"] = list(reversed(body["spec"]["searchSpace"]))
    with cluster.api_client() as api:
        objects = client.CustomObjectsApi(api)
        objects.create_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpostudies", body)
        objects.patch_namespaced_custom_object_status(
            "hpo.dev", "v1alpha1", namespace, "hpostudies", "onk8s", {"status": _status("local.onk8s")}
        )
    env = {"KUBECONFIG": cluster.kubeconfig}

    status = run_hpo("status", "onk8s", "-n", namespace, cwd=path.parent, env=env)
    assert status.code == 0, status.text
    assert (
        f"Reading HPOStudy {namespace}/onk8s on the cluster: its status, kept by the operator" in status.err
    )
    text = status.out
    assert (
        f"{namespace}/onk8s" in text
        and "Running" in text
        and "2/5 finished (1 running, 1 complete, 1 failed)" in text
    )
    assert "Best trial 0: value 0.0025, parameters {'y': 0, 'x': 0.25}" in text
    assert "exit code 3" in text and "2 attempts" in text
    assert "SpecValid" in text and "local.onk8s" in text
    # --storage (which trials and report need when the Secret's host is not reachable) is accepted too.
    with_storage = run_hpo(
        "status", "onk8s", "-n", namespace, "--storage", local_storage(path), cwd=path.parent, env=env
    )
    assert with_storage.code == 0 and "Best trial 0" in with_storage.out, with_storage.text

    # The storage URL is in the study's Secret; without it, `hpo trials` says what to do.
    missing = run_hpo("trials", "onk8s", "-n", namespace, cwd=path.parent, env=env)
    assert missing.code == 1 and f"Secret {namespace}/onk8s-storage: not found" in missing.err
    assert "--storage" in missing.err
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="onk8s-storage"),
        data={"url": base64.b64encode(local_storage(path).encode()).decode()},
    )
    cluster.core().create_namespaced_secret(namespace, secret)
    trials = run_hpo("trials", "onk8s", "-n", namespace, cwd=path.parent, env=env)
    assert trials.code == 0, trials.text
    rows = [ln for ln in trials.out.splitlines() if re.match(r"^\d+\s", ln)]
    assert len(rows) == 3 and all("COMPLETE" in r for r in rows)
    assert (
        f"Reading HPOStudy {namespace}/onk8s on the cluster: Optuna study local.onk8s in sqlite:///"
        in trials.err
    )

    # kubectl finds the plugin on PATH (next to this interpreter): `kubectl hpo ...` is the same commands.
    kubectl = str(cluster.kubectl_binary) if cluster.kubectl_binary is not None else shutil.which("kubectl")
    assert kubectl, "no kubectl"
    plugin_env = hpo_env(
        {
            "KUBECONFIG": cluster.kubeconfig,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
    )

    def kubectl_hpo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "hpo", *args],
            cwd=path.parent,
            env=plugin_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listed = subprocess.run(
        [kubectl, "plugin", "list"], env=plugin_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert str(Path(sys.executable).parent / "kubectl-hpo") in listed.stdout, listed.stdout + listed.stderr
    via_kubectl = kubectl_hpo("status", "onk8s", "-n", namespace)
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert "2/5 finished (1 running, 1 complete, 1 failed)" in via_kubectl.stdout
    as_json = kubectl_hpo("trials", "onk8s", "-n", namespace, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["source"] == {"kind": "cluster", "name": f"{namespace}/onk8s"} and len(data["trials"]) == 3

    # The report and the dashboard take the same name.
    out = path.parent / "k8s-report.html"
    report = run_hpo("report", "onk8s", "-n", namespace, "-o", str(out), cwd=path.parent, env=env)
    assert report.code == 0, report.text
    assert f"Reading HPOStudy {namespace}/onk8s on the cluster: Optuna study local.onk8s" in report.err
    assert "<th>Objective</th><td>loss (minimize)</td>" in out.read_text()
    port = _free_port()
    dashboard = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hpo_operator.cli.main",
            "dashboard",
            "onk8s",
            "-n",
            namespace,
            "--port",
            str(port),
        ],
        cwd=path.parent,
        env=hpo_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while body is None and time.monotonic() < deadline:
            try:
                body = json.loads(_get(f"http://127.0.0.1:{port}/api/studies")[1])
            except OSError:
                assert dashboard.poll() is None, dashboard.stdout.read() if dashboard.stdout else ""
                time.sleep(0.3)
        assert body is not None and [s["study_name"] for s in body["study_summaries"]] == ["local.onk8s"]
    finally:
        dashboard.terminate()
        dashboard.communicate(timeout=30)

    absent = run_hpo("status", "nope", "-n", namespace, cwd=path.parent, env=env)
    assert absent.code == 1 and f"no HPOStudy 'nope' in namespace '{namespace}'" in absent.err


def test_status_of_a_failed_study_exits_non_zero(
    cluster: Any, crd: None, namespace: str, run_hpo: RunHpo
) -> None:
    body = copy.deepcopy(SEED)
    body["metadata"] = {"name": "broken"}
    with cluster.api_client() as api:
        objects = client.CustomObjectsApi(api)
        objects.create_namespaced_custom_object("hpo.dev", "v1alpha1", namespace, "hpostudies", body)
        status = {"phase": "Failed", "message": "invalid spec: spec.trainer.loss.name: unknown loss 'X'"}
        objects.patch_namespaced_custom_object_status(
            "hpo.dev", "v1alpha1", namespace, "hpostudies", "broken", {"status": status}
        )
    result = run_hpo("status", "broken", "-n", namespace, cwd=REPO, env={"KUBECONFIG": cluster.kubeconfig})
    assert result.code == 1
    assert "Failed" in result.out and "unknown loss 'X'" in result.out
