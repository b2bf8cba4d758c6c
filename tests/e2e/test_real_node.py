"""The product in real containers on a real kubelet: both images built from the repository's Dockerfiles,
the chart installed with them, a study of the built-in recipe run to Succeeded, and nothing left behind.

The tests run in order on one real-node cluster (``real_node`` in conftest.py) and build on each other:
images, the node, the chart and a study, deletion and uninstall, teardown. The steps after "a cluster
exists" are ``scripts/e2e.sh``, the same script ``scripts/kind-e2e.sh`` runs on kind.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, RealNodeCluster
from tests.harness.images import POSTGRES_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(3600)]

TAG = "e2e"
OPERATOR_IMAGE = f"hpo-operator:{TAG}"
TRIAL_IMAGE = f"hpo-trial:{TAG}"
TRIAL_TEST_IMAGE = f"hpo-trial-test:{TAG}"
STUDY_FILE = ROOT / "tests" / "e2e" / "studies" / "builtin-cpu.yaml"
STUDY = "builtin-cpu"
NS = "hpo-e2e"
SYSTEM_NS = "hpo-system"
RELEASE = "hpo-operator"


def _docker_run(rn: RealNodeCluster, image: str, *argv: str, entrypoint: str | None = None) -> str:
    args = ["run", "--rm", "--network", "none"]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    return rn.engine.docker(*args, image, *argv, timeout=300).strip()


def _get(rn: RealNodeCluster, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(rn.kubectl("get", *args, "-o", "json"))
    return data


def _wait(what: str, check: Any, timeout: float = 300, interval: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def _apply(rn: RealNodeCluster, manifest: dict[str, Any]) -> None:
    """``kubectl apply`` one object."""
    subprocess.run(
        [str(rn.cluster.kubectl), f"--kubeconfig={rn.cluster.kubeconfig}", "apply", "-f", "-"],
        input=json.dumps(manifest),
        text=True,
        check=True,
        capture_output=True,
    )


def _host_path_volume(rn: RealNodeCluster, name: str, uid: int, size: str, reclaim: str, **spec: Any) -> Path:
    """A PersistentVolume on a directory of the node's disk owned by ``uid``, as a cluster's provisioner
    would make one (the pod's fsGroup would make it writable there); its directory."""
    directory = rn.state_dir / f"pv-{name}"
    directory.mkdir()
    os.chown(directory, uid, uid)
    volume = {
        "capacity": {"storage": size},
        "accessModes": ["ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": reclaim,
        "hostPath": {"path": str(directory), "type": "Directory"},
        **spec,
    }
    _apply(rn, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name}, "spec": volume})
    return directory


def test_images_build_from_the_repository_dockerfiles(real_node: RealNodeCluster) -> None:
    engine = real_node.engine
    images = (OPERATOR_IMAGE, TRIAL_IMAGE, TRIAL_TEST_IMAGE)
    before = {i: engine.id_of(i) for i in images}
    result = real_node.script("build")
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    # The operator image: non-root uid 65532, the operator importable, no torch.
    assert _docker_run(real_node, OPERATOR_IMAGE, "-u", entrypoint="id") == "65532"
    # The entry point itself starts (the real package, not a stand-in of an earlier layer).
    assert "usage" in _docker_run(real_node, OPERATOR_IMAGE, "--help").lower()
    assert "ok" in _docker_run(
        real_node, OPERATOR_IMAGE, "-c",
        "import hpo_operator, kopf, kubernetes, psycopg2; print(hpo_operator.__version__, 'ok')",
        entrypoint="python",
    )  # fmt: skip
    no_torch = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", OPERATOR_IMAGE, "-c",
         "import torch"],
        env=real_node.engine.env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert no_torch.stdout == ""
    assert no_torch.returncode != 0, "the operator image must not contain torch"
    # The trial image: hpo_trial and torch as uid 1000.
    out = _docker_run(
        real_node,
        TRIAL_IMAGE,
        "-c",
        "import os, hpo_trial.runner, torch; print(os.getuid(), torch.__version__, hpo_trial.__version__)",
        entrypoint="python",
    )
    assert out.startswith("1000 "), out
    # The test image adds what a cluster here cannot download: the model and the data.
    real_node.engine.build(
        TRIAL_TEST_IMAGE,
        ROOT,
        ROOT / "tests" / "harness" / "images" / "trial-test" / "Dockerfile",
        TRIAL_IMAGE=TRIAL_IMAGE,
    )
    # An image a rebuild replaced went with its layers (a warm cache keeps one copy of each image); the
    # trial image's goes with the test image built on it.
    replaced = [old for i, old in before.items() if old is not None and engine.id_of(i) != old]
    assert not [old for old in replaced if engine.has(old)], replaced


def test_real_node_runs_the_trial_image_and_leaves_a_gpu_hog_pending(real_node: RealNodeCluster) -> None:
    # One `load` for every image, so the layers they share are saved once.
    real_node.env["E2E_EXTRA_IMAGES"] = f"{TRIAL_TEST_IMAGE} {POSTGRES_IMAGE}"
    load = real_node.script("load", timeout=3000)
    assert load.returncode == 0, (load.stdout + load.stderr)[-8000:]
    node = _get(real_node, "node", real_node.cluster.node_name)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    real_node.kubectl("create", "namespace", "node-check")
    # A pod of the trial image runs to Succeeded as uid 1000, resolving a Service name through CoreDNS.
    script = (
        "import os, socket, hpo_trial, torch; "
        "print('uid', os.getuid(), 'api', socket.gethostbyname('kubernetes.default.svc.cluster.local'))"
    )
    _apply(
        real_node,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trial-image", "namespace": "node-check"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": TRIAL_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["python", "-c", script],
                        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
                    }
                ],
            },
        },
    )
    phase = _wait(
        "the trial-image pod to finish",
        lambda: (
            _get(real_node, "pod", "-n", "node-check", "trial-image")["status"].get("phase")
            in ("Succeeded", "Failed")
            and _get(real_node, "pod", "-n", "node-check", "trial-image")["status"]["phase"]
        ),
        timeout=300,
    )
    logs = real_node.kubectl("logs", "-n", "node-check", "trial-image")
    assert phase == "Succeeded", logs
    assert re.search(r"uid 1000 api 10\.0\.0\.1\b", logs), logs
    # A pod asking for more GPUs than the node has stays Pending with the scheduler's reason.
    _apply(
        real_node,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gpu-hog", "namespace": "node-check"},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": TRIAL_IMAGE,
                        "imagePullPolicy": "Never",
                        "resources": {"limits": {"nvidia.com/gpu": "3"}},
                    }
                ]
            },
        },
    )

    def unschedulable() -> str:
        pod = _get(real_node, "pod", "-n", "node-check", "gpu-hog")
        for cond in pod["status"].get("conditions", []):
            if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return str(cond.get("message", ""))
        return ""

    message = _wait("the GPU hog to be refused by the scheduler", unschedulable, timeout=60)
    assert "Insufficient nvidia.com/gpu" in message
    assert _get(real_node, "pod", "-n", "node-check", "gpu-hog")["status"]["phase"] == "Pending"
    real_node.kubectl("delete", "namespace", "node-check", "--wait=true", timeout=180)


def test_chart_runs_a_builtin_recipe_study_in_real_containers(real_node: RealNodeCluster) -> None:
    # The bundled PostgreSQL keeps its data on a PersistentVolumeClaim (the chart's default): a volume
    # for it, as a cluster's provisioner would make, on the node's disk and owned by its uid 70.
    _host_path_volume(real_node, "e2e-postgres", uid=70, size="8Gi", reclaim="Delete")
    real_node.env["E2E_HELM_SET"] = " ".join(
        [
            f"postgresql.image.repository={POSTGRES_IMAGE.split(':')[0]}",
            f"postgresql.image.tag={POSTGRES_IMAGE.split(':')[1]}",
            "postgresql.image.pullPolicy=Never",
        ]
    )
    install = real_node.script("install")
    assert install.returncode == 0, (install.stdout + install.stderr)[-8000:]
    # The operator runs under the chart's own ServiceAccount and RBAC, Ready, not restarting.
    deploy = _get(real_node, "deployment", "-n", SYSTEM_NS, RELEASE)
    assert deploy["status"].get("readyReplicas") == 1
    pods = _get(real_node, "pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=operator")["items"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    operator_pod = pods[0]
    assert operator_pod["spec"]["serviceAccountName"] == RELEASE
    assert operator_pod["status"]["containerStatuses"][0]["restartCount"] == 0
    # Its liveness endpoint answers on the pod, its metrics through the metrics Service.
    pod_ip = operator_pod["status"]["podIP"]
    live = urllib.request.urlopen(f"http://{pod_ip}:8080/healthz", timeout=10)
    assert live.status == 200
    svc = _get(real_node, "service", "-n", SYSTEM_NS, f"{RELEASE}-metrics")
    port = svc["spec"]["ports"][0]["port"]

    def scraped() -> bytes | None:
        # A Service answers once kube-proxy has programmed the ready pod's endpoint, a moment after
        # the pod is Ready (until then it refuses the connection).
        try:
            return urllib.request.urlopen(
                f"http://{svc['spec']['clusterIP']}:{port}/metrics", timeout=10
            ).read()
        except OSError:
            return None

    metrics = _wait("the metrics Service to answer", scraped, timeout=60, interval=1)
    assert b"hpo_" in metrics

    # The study keeps its best model on a claim bound to a volume on the node's disk, writable by the
    # trial image's uid 1000 (as a provisioner's volume with the pod's fsGroup would be).
    real_node.kubectl("create", "namespace", NS)
    models_dir = _host_path_volume(
        real_node, "e2e-models", uid=1000, size="2Gi", reclaim="Retain", storageClassName=""
    )
    _apply(
        real_node,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "e2e-models", "namespace": NS},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": "e2e-models",
                "resources": {"requests": {"storage": "2Gi"}},
            },
        },
    )

    run = real_node.script("run", "--example", str(STUDY_FILE), "--timeout", "1500", timeout=1800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-12000:]

    study = _get(real_node, "hpostudy", "-n", NS, STUDY)
    status = study["status"]
    assert status["phase"] == "Succeeded"
    counts = status["trials"]
    assert counts["complete"] == 2 and counts["pruned"] == 1, counts
    assert status["bestTrial"]["value"] > 0.5, status["bestTrial"]
    events = real_node.kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={STUDY}")
    assert "pruned" in events.lower(), events
    trial_pods = _get(real_node, "pods", "-n", NS, "-l", f"hpo.dev/study={STUDY}")["items"]
    assert len(trial_pods) == 3
    for pod in trial_pods:
        state = pod["status"]["containerStatuses"][0]["state"]
        # Every trial, the pruned one included, exits cleanly from its real container.
        assert pod["status"]["phase"] == "Succeeded", (pod["metadata"]["name"], state)
        assert state["terminated"]["exitCode"] == 0
        assert pod["status"]["containerStatuses"][0]["imageID"]
    first = sorted(p["metadata"]["name"] for p in trial_pods)[0]
    log = real_node.kubectl("logs", "-n", NS, first)
    assert "eval_sts-dev_spearman_cosine" in log, log[-3000:]

    # `hpo status` and `hpo trials` read the study from outside the cluster: the storage through the
    # bundled PostgreSQL's Service (reachable from this host as from a port-forward).
    secret = _get(real_node, "secret", "-n", SYSTEM_NS, f"{RELEASE}-postgresql")["data"]
    user, password, database = (
        base64.b64decode(secret[k]).decode() for k in ("username", "password", "database")
    )
    pg = _get(real_node, "service", "-n", SYSTEM_NS, f"{RELEASE}-postgresql")["spec"]
    url = f"postgresql+psycopg2://{user}:{password}@{pg['clusterIP']}:{pg['ports'][0]['port']}/{database}"
    hpo = Path(sys.executable).parent / "hpo"
    env = {**real_node.env, "KUBECONFIG": str(real_node.cluster.kubeconfig)}
    for command in ("status", "trials"):
        out = subprocess.run(
            [str(hpo), command, STUDY, "-n", NS, "--storage", url],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "PRUNED" in out.stdout.upper(), out.stdout

    # Best-only: exactly one model is left on the volume, the best trial's, and the status points at it.
    # `hpo export` copies it out through a pod that mounts the claim (this machine does not see /models),
    # then deletes that pod.
    best = status["bestTrial"]
    assert best["modelPath"] == f"/models/builtin-cpu/trial-{best['number']}", best
    kept_models = sorted(p.name for p in (models_dir / "builtin-cpu").iterdir())
    assert kept_models == [f"trial-{best['number']}"], kept_models
    exported = real_node.state_dir / "exported-model"
    out = subprocess.run(
        [str(hpo), "export", STUDY, str(exported), "-n", NS],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "through pod" in out.stdout + out.stderr, out.stdout + out.stderr
    saved = models_dir / "builtin-cpu" / f"trial-{best['number']}"
    want = sorted(str(p.relative_to(saved)) for p in saved.rglob("*") if p.is_file())
    got = sorted(str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file())
    assert got == want and "config.json" in got, (got, want)
    for name in want:
        assert (exported / name).read_bytes() == (saved / name).read_bytes(), name
    _wait(
        "the export pod to be deleted",
        lambda: not _get(real_node, "pods", "-n", NS, "-l", "hpo.dev/export=" + STUDY)["items"],
        timeout=60,
    )

    # Deleting the study removes its pods.
    real_node.kubectl("delete", "hpostudy", "-n", NS, STUDY, "--wait=true", timeout=120)
    _wait(
        "the study's pods to be garbage-collected",
        lambda: not _get(real_node, "pods", "-n", NS, "-l", f"hpo.dev/study={STUDY}")["items"],
        timeout=120,
    )


# A custom container's program: the public reporting API only. It checks that it reported through the
# operator's report endpoint without loading a database client or Optuna, and exits 1 otherwise.
LIGHT_TRIAL = """
import sys
from hpo_trial import reporting
trial = reporting.current_trial()
x = float(trial.params["x"])
for step in range(3):
    trial.report(-((x - 1.0) ** 2) - (2 - step), step)
    if trial.should_prune():
        trial.prune()
        break
else:
    trial.complete(-((x - 1.0) ** 2))
heavy = sorted(m for m in ("optuna", "sqlalchemy", "psycopg2") if m in sys.modules)
print("reported through", type(trial).__name__, "loaded:", heavy or "no database client", flush=True)
sys.exit(1 if heavy or type(trial).__name__ != "RemoteTrial" else 0)
"""


def test_custom_trials_report_through_the_operators_endpoint(real_node: RealNodeCluster) -> None:
    # The chart's report Service fronts the operator; trial pods reach it by its DNS name (CoreDNS,
    # kube-proxy) from their own network namespaces, each with the token of its own attempt.
    name = "light"
    _apply(
        real_node,
        {
            "apiVersion": "hpo.dev/v1alpha1",
            "kind": "HPOStudy",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "objective": [{"metric": "score", "direction": "maximize"}],
                "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
                "trials": {"total": 4, "parallelism": 2, "maxFailed": 0},
                "sampler": {"type": "Random", "seed": 3},
                "pruner": {"type": "Median", "nStartupTrials": 1, "nWarmupSteps": 0},
                "template": {
                    "command": ["python", "-c", LIGHT_TRIAL],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                },
            },
        },
    )
    study = _wait(
        "the light study to finish",
        lambda: (
            (s := _get(real_node, "hpostudy", "-n", NS, name)).get("status", {}).get("phase")
            in ("Succeeded", "Failed")
            and s
        ),
        timeout=600,
    )
    status = study["status"]
    assert status["phase"] == "Succeeded", json.dumps(status)[-3000:]
    counts = status["trials"]
    assert counts["complete"] + counts["pruned"] == 4 and counts["failed"] == 0, counts
    trial_pods = _get(real_node, "pods", "-n", NS, "-l", f"hpo.dev/study={name}")["items"]
    assert len(trial_pods) == 4, [p["metadata"]["name"] for p in trial_pods]
    tokens = set()
    for pod in trial_pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["HPO_REPORT_URL"] == f"http://{RELEASE}-report.{SYSTEM_NS}.svc:8090", env
        tokens.add(env["HPO_REPORT_TOKEN"])
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        log = real_node.kubectl("logs", "-n", NS, pod["metadata"]["name"])
        assert "reported through RemoteTrial loaded: no database client" in log, log[-2000:]
    assert len(tokens) == 4  # one per attempt
    real_node.kubectl("delete", "hpostudy", "-n", NS, name, "--wait=true", "--timeout=120s")


def test_helm_uninstall_and_teardown_leave_nothing(real_node: RealNodeCluster) -> None:
    real_node.helm("uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "5m", timeout=400)
    _wait(
        "the release's pods to go",
        lambda: not _get(real_node, "pods", "-n", SYSTEM_NS)["items"],
        timeout=180,
    )
    # What the chart keeps on purpose, so a reinstall finds its data: the database's volume claim and the
    # Secret with the password matching it (helm.sh/resource-policy: keep). The README says how to remove
    # them; a user who does is left with nothing.
    kept = _get(real_node, "secrets", "-n", SYSTEM_NS)["items"]
    assert [s["metadata"]["name"] for s in kept] == [f"{RELEASE}-postgresql"]
    assert kept[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    claims = [c["metadata"]["name"] for c in _get(real_node, "pvc", "-n", SYSTEM_NS)["items"]]
    assert claims == [f"data-{RELEASE}-postgresql-0"], claims
    real_node.kubectl("delete", "pvc,secret", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=postgresql")
    _wait(
        "the kept claim and Secret to go",
        lambda: not _get(real_node, "pvc,secrets", "-n", SYSTEM_NS)["items"],
    )
    left = {
        kind: [i["metadata"]["name"] for i in _get(real_node, kind, "-n", SYSTEM_NS)["items"]]
        for kind in ("deployments", "statefulsets", "services", "secrets", "configmaps", "roles")
    }
    left["configmaps"] = [n for n in left["configmaps"] if n != "kube-root-ca.crt"]
    assert not any(left.values()), left
    roles = [
        i["metadata"]["name"]
        for kind in ("clusterroles", "clusterrolebindings")
        for i in _get(real_node, kind)["items"]
        if i["metadata"]["name"].startswith(RELEASE)
    ]
    assert not roles, roles
    # Teardown: every process stopped by pid, and no container, mount, netns, cgroup, bridge or rule left.
    node = real_node.cluster.real_node
    assert node is not None
    pids = real_node.cluster.pids()
    real_node.stop()
    from tests.harness.cluster import pid_alive

    assert not [name for name, pid in pids.items() if pid_alive(pid)]
    assert node.leftovers() == []
    assert real_node.engine.mounts() == []
