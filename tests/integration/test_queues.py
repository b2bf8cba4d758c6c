"""Queues and cluster policy on a real control plane: trial pods held back by scheduling gates (as Kueue
holds back the pods of a LocalQueue without room) are waiting, not failed; once the gates are removed
they are scheduled and run, and the study succeeds. The template's cluster-policy fields reach the pods,
the API server accepts the rendered pod, and the CRD refuses the operator's own labels.

The operator, the pod watch and the helpers are those of ``conftest.py`` and ``operator_env.py`` (the
operator as a subprocess, trials as local processes on the harness node). No Kueue runs here: the test
plays Kueue's part, removing the gates it finds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import optuna
import pytest
from hpo_operator.core import names
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.pods import Owner, render_pod, storage_secret
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.operator_env import (
    TRIALS,
    Operator,
    Pods,
    apply,
    assert_nothing_leaks,
    condition,
    events,
    get_study,
    load_study,
    study_manifest,
    wait_for,
)

GATE = "example.com/approval"
QUEUE = "team-a-gpus"


def gated(pod: client.V1Pod) -> bool:
    return bool(pod.spec.scheduling_gates)


def ungate(cluster: Any, namespace: str, name: str) -> None:
    """Remove every scheduling gate of a pod, as Kueue does when it admits it."""
    patch = '[{"op": "remove", "path": "/spec/schedulingGates"}]'
    cluster.kubectl("patch", "pod", name, "-n", namespace, "--type=json", "-p", patch)


def test_gated_trial_pods_wait_without_failing_and_run_once_the_gates_are_removed(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    slow = [{"name": "TRIAL_STEP_SECONDS", "value": "0.3"}]
    manifest = study_manifest(
        "gated",
        namespace,
        queueName=QUEUE,
        trials={"total": 3, "parallelism": 2, "maxFailed": 0, "retries": 1},
        template={
            "command": ["python", str(TRIALS / "quadratic.py")],
            "env": slow,
            "schedulingGates": [{"name": GATE}],
            "metadata": {"labels": {"team": "nlp"}, "annotations": {"example.com/owner": "ana"}},
            "imagePullSecrets": [{"name": "regcred"}],
            "schedulerName": "default-scheduler",
            "securityContext": {"runAsNonRoot": False},
        },
    )
    apply(cluster, manifest)

    # Both trials of the parallelism are asked; their pods wait for their gate, and the study says so.
    def shows_gated() -> dict[str, Any] | None:
        body = get_study(cluster, namespace, "gated")
        conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}
        admitted = conds.get("TrialPodsAdmitted")
        if admitted and admitted["reason"] == "SchedulingGated" and body["status"]["trials"]["running"] == 2:
            return body
        return None

    body = wait_for("TrialPodsAdmitted=False (SchedulingGated)", shows_gated, timeout=60)
    admitted = condition(body, "TrialPodsAdmitted")
    assert admitted["status"] == "False"
    assert admitted["message"].startswith("2 trial pod(s) waiting for admission (scheduling gates): ")
    assert f"is gated by {GATE}" in admitted["message"]
    assert body["status"]["phase"] == "Pending"
    assert "waiting for the first trial to start" in body["status"]["message"]
    assert "SchedulingGated" in body["status"]["message"]

    current = pods.current()
    assert sorted(p.metadata.name for p in current) == ["gated-trial-0", "gated-trial-1"]
    for pod in current:
        assert gated(pod) and pod.status.phase == "Pending" and not pod.spec.node_name
        labels = pod.metadata.labels
        assert labels["kueue.x-k8s.io/queue-name"] == QUEUE and labels["team"] == "nlp"
        assert labels[names.LABEL_STUDY] == "gated" and labels[names.LABEL_MANAGED_BY] == names.MANAGER
        assert pod.metadata.annotations["example.com/owner"] == "ana"
        assert [s.name for s in pod.spec.image_pull_secrets] == ["regcred"]
        assert pod.spec.scheduler_name == "default-scheduler"
        assert pod.spec.security_context.run_as_non_root is False

    # Held back for several reconciles (one a second): nothing fails, nothing is retried or deleted,
    # nothing more is asked (the two gated trials hold the parallelism).
    time.sleep(8)
    body = get_study(cluster, namespace, "gated")
    assert body["status"]["phase"] == "Pending", body["status"]
    assert body["status"]["trials"]["failed"] == 0 and body["status"]["trials"]["started"] == 2
    assert condition(body, "TrialPodsAdmitted")["reason"] == "SchedulingGated"
    trials = load_study(storage_url, body).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.RUNNING] * 2
    assert all(t.user_attrs.get("hpo:attempts", 1) == 1 for t in trials)
    assert set(pods.seen) == {"gated-trial-0", "gated-trial-1"}, "a gated pod was replaced"
    assert all(gated(p) for p in pods.current()), "a gated pod was deleted or changed"
    reasons = {e.reason for e in events(cluster, namespace, "gated")}
    assert not reasons & {"TrialFailed", "TrialRetried", "StudyFailed"}, reasons

    # Playing Kueue: each gated pod is admitted (its gate removed); the trials run, the third trial's
    # pod is gated in turn and admitted the same way, and the study succeeds.
    def admit_and_check() -> dict[str, Any] | None:
        for pod in pods.current():
            if gated(pod) and pod.metadata.deletion_timestamp is None:
                ungate(cluster, namespace, pod.metadata.name)
        body = get_study(cluster, namespace, "gated")
        return body if body["status"]["phase"] in ("Succeeded", "Failed") else None

    body = wait_for(
        "the study to finish once its pods are admitted",
        admit_and_check,
        timeout=120,
        interval=0.5,
        diagnose=lambda: json.dumps(get_study(cluster, namespace, "gated").get("status"), indent=1)[-3000:],
    )
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    assert status["trials"]["complete"] == 3 and status["trials"]["failed"] == 0
    trials = load_study(storage_url, body).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert all(t.user_attrs.get("hpo:attempts", 1) == 1 for t in trials), "a gated pod cost a retry"
    wait_for("the pod watch to see every pod", lambda: len(pods.seen) >= 3, timeout=10)
    assert sorted(pods.seen) == ["gated-trial-0", "gated-trial-1", "gated-trial-2"]
    assert all(
        p["spec"]["schedulingGates"] == [{"name": GATE}]
        for p in pods.seen.values()
        if p["spec"].get("schedulingGates")
    )
    ok = condition(body, "TrialPodsAdmitted")
    assert (ok["status"], ok["reason"]) == ("True", "Admitted")
    assert pods.max_active <= 2
    reasons = {e.reason for e in events(cluster, namespace, "gated")}
    assert "StudySucceeded" in reasons and not reasons & {"TrialFailed", "TrialRetried"}
    assert_nothing_leaks(cluster, namespace, "gated", storage_url)


def test_the_api_server_accepts_a_trial_pod_with_every_cluster_policy_field(
    cluster: Any, namespace: str
) -> None:
    # A RuntimeClass must exist for a pod to name it (the RuntimeClass admission plugin checks).
    node = client.NodeV1Api(cluster.api_client())
    runtime = f"hpo-test-{namespace[-6:]}"
    node.create_runtime_class(
        client.V1RuntimeClass(metadata=client.V1ObjectMeta(name=runtime), handler="runc")
    )
    try:
        spec = parse_spec(
            {
                **study_manifest("policy", namespace)["spec"],
                "queueName": QUEUE,
                "template": {
                    "command": ["python", "o.py"],
                    "resources": {"limits": {"nvidia.com/gpu": 1}, "claims": [{"name": "gpu"}]},
                    "metadata": {"labels": {"team": "nlp"}, "annotations": {"note": "free text"}},
                    "imagePullSecrets": [{"name": "regcred"}],
                    "schedulerName": "default-scheduler",
                    "runtimeClassName": runtime,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 2000},
                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "one-gpu"}],
                    "schedulingGates": [{"name": GATE}],
                },
            }
        )
        owner = Owner("policy", namespace, "0c2f6f7e-1111-2222-3333-444455556666")
        pod = render_pod(
            spec,
            owner=owner,
            optuna_study=names.optuna_study_name(namespace, "policy", owner.uid),
            trial=0,
            attempt=0,
            params={"x": 1.0},
            secret=storage_secret(spec, "policy"),
            default_image="hpo-trial:test",
        )
        pod["metadata"].pop("ownerReferences")  # no such HPOStudy: the garbage collector would take it
        created = cluster.core().create_namespaced_pod(namespace, pod, dry_run="All")
        assert created.spec.runtime_class_name == runtime
        assert created.spec.resource_claims[0].resource_claim_template_name == "one-gpu"
        assert created.spec.scheduling_gates[0].name == GATE
        assert created.metadata.labels["kueue.x-k8s.io/queue-name"] == QUEUE
    finally:
        node.delete_runtime_class(runtime)


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({"labels": {"hpo.dev/study": "x"}}, "the operator's own labels"),
        ({"labels": {"app.kubernetes.io/managed-by": "me"}}, "the operator's own labels"),
        ({"labels": {"kueue.x-k8s.io/queue-name": "q"}}, "set from spec.queueName"),
        ({"annotations": {"hpo.dev/optuna-study": "x"}}, "the operator's own annotations"),
    ],
)
def test_the_crd_refuses_the_operators_own_pod_labels(
    cluster: Any, namespace: str, crd: None, metadata: dict[str, Any], words: str
) -> None:
    manifest = study_manifest("owned", namespace)
    manifest["spec"]["template"]["metadata"] = metadata
    with cluster.api_client() as api, pytest.raises(ApiException) as refused:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.PLURAL, manifest, dry_run="All"
        )
    assert refused.value.status == 422
    assert words in refused.value.body and "spec.template.metadata" in refused.value.body
    # The same spec is refused by the parser (hpo validate, hpo run) naming the key.
    with pytest.raises(ValueError, match=r"spec\.template\.metadata\.(labels|annotations)\."):
        parse_spec(manifest["spec"])
