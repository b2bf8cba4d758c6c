"""Several trials on one GPU through shared DRA ResourceClaims, on the real control plane.

The harness's node agent publishes a ResourceSlice with its two GPUs (driver ``gpu.harness.hpo.dev``)
and the harness admin created the DeviceClass selecting them; the real v1.37 scheduler allocates the
operator's claims and the agent hands each pod the device its claim got (``CUDA_VISIBLE_DEVICES``), as
a DRA driver does through CDI. Trials are ``trials/gpu_probe.py``: they record the device they saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from kubernetes import client

from tests.harness.cluster import DEVICE_CLASS_NAME, DRA_DRIVER
from tests.integration.operator_env import (
    TRIALS,
    Operator,
    PodWatch,
    apply,
    assert_nothing_leaks,
    condition,
    events,
    get_study,
    load_study,
    study_manifest,
    wait_for,
    wait_phase,
)

pytestmark = pytest.mark.cluster
PROBE = ["python", str(TRIALS / "gpu_probe.py")]


@pytest.fixture(autouse=True)
def _agent_only(cluster: Any) -> None:
    if cluster.external:
        pytest.skip("needs the harness node agent's DRA devices (a ResourceSlice of its own driver)")


class ClaimWatch(PodWatch):
    """Watches the namespace's pods from the start of a test: the most active pods on one claim at once,
    and every pod's claim."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.claim_of: dict[str, str | None] = {}
        self.active: dict[str, bool] = {}
        self.max_on_claim = 0
        self.max_active = 0
        super().__init__(cluster, namespace)

    def on_event(self, kind: str, pod: client.V1Pod) -> None:
        name = pod.metadata.name
        refs = pod.spec.resource_claims or []
        self.claim_of[name] = next((r.resource_claim_name for r in refs if r.name == "gpu"), None)
        phase = pod.status.phase or "Pending"
        self.active[name] = kind != "DELETED" and phase in ("Pending", "Running")
        on: dict[str | None, int] = {}
        for n, is_active in self.active.items():
            if is_active:
                on[self.claim_of.get(n)] = on.get(self.claim_of.get(n), 0) + 1
        self.max_on_claim = max([self.max_on_claim, *on.values()])
        self.max_active = max(self.max_active, sum(on.values()))


@pytest.fixture
def claim_watch(cluster: Any, namespace: str) -> Iterator[ClaimWatch]:
    tracker = ClaimWatch(cluster, namespace)
    yield tracker
    tracker.stop()


def list_claims(cluster: Any, namespace: str) -> list[dict[str, Any]]:
    with cluster.api_client() as api:
        listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "resource.k8s.io", "v1", namespace, "resourceclaims"
        )
    return list(listed.get("items") or [])


def allocated_device(claim: dict[str, Any]) -> str | None:
    results = (((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get(
        "results"
    ) or []
    return next((r["device"] for r in results if r.get("driver") == DRA_DRIVER), None)


def gpu_study(name: str, namespace: str, *, total: int, parallelism: int, per_gpu: int, **extra: Any) -> dict:
    env = extra.pop("env", [])
    return study_manifest(
        name,
        namespace,
        trials={
            "total": total,
            "parallelism": parallelism,
            "maxFailed": 0,
            "perGPU": per_gpu,
            **extra.pop("trials", {}),
        },
        gpu={"deviceClassName": extra.pop("device_class", DEVICE_CLASS_NAME)},
        template={"command": PROBE, "env": env},
        **extra,
    )


# ---------------------------------------------------------------------------------------------- tests


def test_six_trials_share_two_gpus_three_each_and_see_their_claims_device(
    cluster: Any,
    namespace: str,
    operator: Operator,
    claim_watch: ClaimWatch,
    storage_url: str,
    tmp_path: Path,
) -> None:
    assert cluster.gpus == 2
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = [
        {"name": "GPU_BARRIER_DIR", "value": str(barrier)},
        {"name": "GPU_BARRIER_COUNT", "value": "6"},
        {"name": "GPU_HOLD_SECONDS", "value": "2"},
    ]
    apply(cluster, gpu_study("shared", namespace, total=6, parallelism=6, per_gpu=3, env=env))

    # All six run at once (each waits until the six have started): read the claims while they hold.
    def six_running() -> list[dict[str, Any]] | None:
        if len(list(barrier.iterdir())) < 6:
            return None
        claims = list_claims(cluster, namespace)
        return claims if all(allocated_device(c) for c in claims) else None

    claims = wait_for("six trials running at once", six_running, timeout=120)
    assert sorted(c["metadata"]["name"] for c in claims) == ["shared-gpu-0", "shared-gpu-1"]
    device_of = {c["metadata"]["name"]: allocated_device(c) for c in claims}
    assert sorted(device_of.values()) == ["gpu-0", "gpu-1"]  # one device each: three trials per GPU
    for c in claims:
        assert c["metadata"]["ownerReferences"][0]["kind"] == "HPOStudy"
        assert len(c["status"]["reservedFor"]) == 3, c["status"]["reservedFor"]
    per_device: dict[str, int] = {}
    for pod in cluster.core().list_namespaced_pod(namespace).items:
        claim = next(r.resource_claim_name for r in pod.spec.resource_claims if r.name == "gpu")
        seen = json.loads((cluster.pod_dir(namespace, pod.metadata.name) / "devices").read_text())
        assert seen == [device_of[claim]], (pod.metadata.name, claim, seen)  # the pod sees its claim's device
        assert "nvidia.com/gpu" not in (pod.spec.containers[0].resources.limits or {})
        per_device[seen[0]] = per_device.get(seen[0], 0) + 1
    assert per_device == {"gpu-0": 3, "gpu-1": 3}

    body = wait_phase(cluster, namespace, "shared", ("Succeeded", "Failed"), timeout=120)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    trials = load_study(storage_url, body).get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # the process saw the index of the device its claim got
        assert t.user_attrs["cuda_visible_devices_0"] == t.user_attrs["devices_0"].removeprefix("gpu-")
    assert claim_watch.max_on_claim == 3 and claim_watch.max_active == 6
    # No trial left to run: the claims go once their pods have ended.
    wait_for("the idle claims to be deleted", lambda: not list_claims(cluster, namespace), timeout=60)
    ready = condition(get_study(cluster, namespace, "shared"), "GPUClaimsReady")
    assert ready["status"] == "True"
    assert_nothing_leaks(cluster, namespace, "shared", storage_url)


def test_a_failing_trial_on_a_shared_gpu_leaves_its_neighbours_alone_and_is_retried_on_a_free_slot(
    cluster: Any, namespace: str, operator: Operator, claim_watch: ClaimWatch, storage_url: str
) -> None:
    env = [
        {"name": "CRASH_TRIAL", "value": "1"},
        {"name": "CRASH_AFTER_SECONDS", "value": "1"},
        {"name": "GPU_HOLD_SECONDS", "value": "5"},
    ]
    manifest = gpu_study(
        "crashy", namespace, total=3, parallelism=3, per_gpu=3, env=env, trials={"retries": 1}
    )
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "crashy", ("Succeeded", "Failed"), timeout=150)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    trials = {t.number: t for t in load_study(storage_url, body).get_trials()}
    assert sorted(trials) == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials.values())
    # The neighbours ran once, undisturbed; the crashed trial ran again, on the device of a free slot.
    assert (
        trials[0].user_attrs.get("hpo:attempts", 1) == 1 and trials[2].user_attrs.get("hpo:attempts", 1) == 1
    )
    assert trials[1].user_attrs["hpo:attempts"] == 2
    assert trials[1].user_attrs["devices_1"] in ("gpu-0", "gpu-1")
    pods = {p.metadata.name: p for p in cluster.core().list_namespaced_pod(namespace).items}
    assert pods["crashy-trial-1"].status.phase == "Failed"
    assert pods["crashy-trial-1-r1"].status.phase == "Succeeded"
    for name in ("crashy-trial-0", "crashy-trial-2"):
        assert pods[name].status.phase == "Succeeded"
        assert pods[name].status.container_statuses[0].state.terminated.exit_code == 0
    assert claim_watch.max_on_claim <= 3
    # Three trials per GPU, three at a time: one claim did it all.
    assert {claim_watch.claim_of[n] for n in pods} == {"crashy-gpu-0"}
    reasons = [e.reason for e in events(cluster, namespace, "crashy")]
    assert reasons.count("TrialRetried") == 1
    assert_nothing_leaks(cluster, namespace, "crashy", storage_url)


def test_deleting_the_study_removes_its_claims_and_pods(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    env = [{"name": "GPU_HOLD_SECONDS", "value": "60"}]
    apply(cluster, gpu_study("gone", namespace, total=4, parallelism=4, per_gpu=2, env=env))

    def running() -> bool:
        pods = cluster.core().list_namespaced_pod(namespace).items
        return (
            sum(1 for p in pods if p.status.phase == "Running") == 4
            and len(list_claims(cluster, namespace)) == 2
        )

    wait_for("four trials running on two claims", running, timeout=120)
    cluster.kubectl("delete", "hpostudy", "gone", "-n", namespace, "--wait=false")

    def all_gone() -> bool:
        return not cluster.core().list_namespaced_pod(namespace).items and not list_claims(cluster, namespace)

    wait_for("the pods and claims to be garbage-collected", all_gone, timeout=120)


def test_a_killed_operator_resumes_with_the_same_slot_accounting_and_no_duplicate_trial(
    cluster: Any, namespace: str, operator: Operator, claim_watch: ClaimWatch, storage_url: str
) -> None:
    env = [{"name": "GPU_HOLD_SECONDS", "value": "1.5"}]
    apply(cluster, gpu_study("tough", namespace, total=15, parallelism=6, per_gpu=3, env=env))
    kills = 0
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        status = get_study(cluster, namespace, "tough").get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        started = (status.get("trials") or {}).get("started", 0)
        if kills < 3 and started >= 1 + 4 * kills:
            operator.kill()  # SIGKILL, wherever it is (between a claim's creation and its pod's, too)
            kills += 1
            time.sleep(1.0)
            operator.start()
        time.sleep(0.3)
    assert kills == 3, f"the study finished before the operator was killed 3 times ({kills})"
    body = wait_phase(cluster, namespace, "tough", ("Succeeded", "Failed"), timeout=150)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    trials = load_study(storage_url, body).get_trials()
    assert [t.number for t in trials] == list(range(15))
    assert all(
        t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("hpo:attempts", 1) == 1
        for t in trials
    )
    pods = cluster.core().list_namespaced_pod(namespace).items
    assert sorted(p.metadata.name for p in pods) == sorted(f"tough-trial-{i}" for i in range(15))
    # Never more than three trials on one claim (one GPU), never more than the parallelism.
    assert claim_watch.max_on_claim <= 3 and claim_watch.max_active <= 6
    used = {claim_watch.claim_of[p.metadata.name] for p in pods}
    assert used and all(c is not None and c.startswith("tough-gpu-") for c in used)
    assert len(used) <= 3, used  # claims reused across waves, not one per pod
    wait_for("the idle claims to be deleted", lambda: not list_claims(cluster, namespace), timeout=60)


def test_a_missing_then_unmatched_device_class_is_told_and_waited_for_without_losing_a_trial(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    cls = f"absent-{namespace}"[:63]
    apply(cluster, gpu_study("waits", namespace, total=3, parallelism=3, per_gpu=3, device_class=cls))

    def told(reason: str) -> dict[str, Any] | None:
        body = get_study(cluster, namespace, "waits")
        conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or ()}
        c = conds.get("GPUClaimsReady")
        return body if c and c["status"] == "False" and c["reason"] == reason else None

    body = wait_for(
        "GPUClaimsReady=False (DeviceClassNotFound)", lambda: told("DeviceClassNotFound"), timeout=60
    )
    message = condition(body, "GPUClaimsReady")["message"]
    assert message.startswith("spec.gpu.deviceClassName: ") and cls in message, message
    assert "DeviceClassNotFound" in [e.reason for e in events(cluster, namespace, "waits")]
    time.sleep(3)  # several reconciles: no pod, no claim, and at most the one trial that waits for them
    assert not cluster.core().list_namespaced_pod(namespace).items and not list_claims(cluster, namespace)
    assert get_study(cluster, namespace, "waits")["status"]["trials"]["started"] <= 1
    assert get_study(cluster, namespace, "waits")["status"]["phase"] in ("Pending", "Running")

    # The class appears but selects no device: the claim stays unallocated, and that is told too.
    device_class = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": cls},
        "spec": {"selectors": [{"cel": {"expression": 'device.driver == "no-such-driver.example.com"'}}]},
    }
    with cluster.api_client() as api:
        custom = client.CustomObjectsApi(api)
        custom.create_cluster_custom_object("resource.k8s.io", "v1", "deviceclasses", device_class)
        try:
            body = wait_for(
                "GPUClaimsReady=False (ClaimsUnallocated)", lambda: told("ClaimsUnallocated"), timeout=120
            )
            message = condition(body, "GPUClaimsReady")["message"]
            assert "waits-gpu-0" in message and "cannot allocate all claims" in message, message
            assert "ClaimsUnallocated" in [e.reason for e in events(cluster, namespace, "waits")]
            # Fixed: the class selects the node's GPUs; the waiting trials run, none lost or duplicated.
            device_class["spec"]["selectors"][0]["cel"]["expression"] = f'device.driver == "{DRA_DRIVER}"'
            custom.patch_cluster_custom_object("resource.k8s.io", "v1", "deviceclasses", cls, device_class)
            body = wait_phase(cluster, namespace, "waits", ("Succeeded", "Failed"), timeout=240)
        finally:
            custom.delete_cluster_custom_object("resource.k8s.io", "v1", "deviceclasses", cls)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    trials = load_study(storage_url, body).get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(
        t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("hpo:attempts", 1) == 1
        for t in trials
    )
    assert condition(body, "GPUClaimsReady")["status"] == "True"
    assert "GPUClaimsReady" in [e.reason for e in events(cluster, namespace, "waits")]


def test_per_gpu_one_without_gpu_settings_keeps_the_device_plugin_limit(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    manifest = study_manifest("plain", namespace, trials={"total": 1, "parallelism": 1})
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "plain", ("Succeeded", "Failed"), timeout=90)
    assert body["status"]["phase"] == "Succeeded"
    (pod,) = cluster.core().list_namespaced_pod(namespace).items
    assert pod.spec.containers[0].resources.limits == {"nvidia.com/gpu": "1"}
    assert not pod.spec.resource_claims and not list_claims(cluster, namespace)
    assert "GPUClaimsReady" not in {c["type"] for c in body["status"]["conditions"]}


def test_per_gpu_below_one_is_refused_by_the_api_server_naming_the_field(
    cluster: Any, namespace: str, crd: None
) -> None:
    refused = apply(cluster, study_manifest("bad", namespace, trials={"perGPU": 0}), check=False)
    assert refused.returncode != 0 and "spec.trials.perGPU" in refused.stderr, refused.stderr
