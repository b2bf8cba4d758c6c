"""The operator on a real control plane and PostgreSQL.

The operator runs as a subprocess (``python -m hpo_operator``) against the harness cluster; trial pods
run as local processes on the harness node (``tests/integration/trials/``: a quadratic objective that
reports through ``hpo_trial.reporting``, and a crashing one). Trials take a second or two, budgets
are small, parallelism is 2, so the whole file runs in a few minutes on two cores.

Every test checks that the storage URL (with a password in it) appears in no status, Event or
operator log line.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import optuna
import pytest
from hpo_operator.core import names
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sqlalchemy.engine import make_url

from tests.integration.operator_env import (
    TRIALS,
    Operator,
    Pods,
    apply,
    assert_no_secret,
    assert_nothing_leaks,
    condition,
    events,
    free_port,
    get_study,
    load_study,
    study_manifest,
    study_on_a_storage_that_fails,
    wait_for,
    wait_phase,
)


def test_a_study_runs_to_its_budget_and_reports_the_true_best(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    manifest = study_manifest(
        "quad",
        namespace,
        trials={"total": 6, "parallelism": 2, "maxFailed": 0},
        enqueue=[{"x": 1.5}],
    )
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "quad", ("Succeeded", "Failed"), timeout=150)
    status = body["status"]
    assert status["phase"] == "Succeeded", status
    uid = body["metadata"]["uid"]
    assert status["studyName"] == f"{namespace}.quad.{uid}"

    # Exactly the budget, in the storage the trials reported to; the enqueued set is trial 0.
    study = load_study(storage_url, body)
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[0].params == {"x": 1.5}
    assert trials[0].value == pytest.approx(-0.25)

    # The status holds every trial's value and the true best.
    assert status["progress"] == "6/6"
    assert status["trials"] == {
        "total": 6,
        "started": 6,
        "running": 0,
        "complete": 6,
        "pruned": 0,
        "failed": 0,
        "waiting": 0,
    }
    assert {r["number"]: r["value"] for r in status["recentTrials"]} == {t.number: t.value for t in trials}
    assert status["bestTrial"]["number"] == study.best_trial.number
    assert status["bestTrial"]["value"] == study.best_value
    assert status["bestValue"] == float(f"{study.best_value:.6g}")
    assert status["bestTrial"]["params"] == study.best_trial.params
    assert condition(body, "Complete")["status"] == "True"
    assert condition(body, "Complete")["reason"] == "AllTrialsFinished"
    assert status["observedGeneration"] == body["metadata"]["generation"]

    # One pod per trial, owned by the study, one GPU each, never more than the parallelism at once.
    wait_for("the pod watch to see every pod", lambda: len(pods.seen) >= 6, timeout=10)
    assert sorted(pods.seen) == sorted(f"quad-trial-{i}" for i in range(6))
    assert 1 <= pods.max_active <= 2
    for pod in pods.seen.values():
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == uid
        assert pod["spec"]["restartPolicy"] == "Never"
        env = {e["name"]: e for e in container["env"]}
        assert env["HPO_STORAGE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "quad-storage", "key": "url"}
    assert all(p.status.phase == "Succeeded" for p in pods.current())

    # Events in the seed's words, one per trial, and one for the study.
    evs = events(cluster, namespace, "quad")
    done = [e.message for e in evs if e.reason == "TrialCompleted"]
    assert len(done) == 6
    pattern = (
        r"^Trial \d+ finished with value -?\d+\.\d{4} and parameters \{'x': .+\}\. "
        r"Best is trial \d+ with value -?\d+\.\d{4}\.$"
    )
    assert all(re.match(pattern, m) for m in done), done
    assert any(e.reason == "StudySucceeded" for e in evs)

    # Health and metrics endpoints.
    assert operator.get(operator.liveness_port, "/healthz")[0] == 200
    metrics = operator.get(operator.metrics_port, "/metrics")[1]
    assert "hpo_trials_started_total 6.0" in metrics
    assert 'hpo_trials_finished_total{state="complete"} 6.0' in metrics
    assert 'hpo_studies{phase="Succeeded"} 1.0' in metrics

    # `kubectl get` shows the printer columns.
    table = cluster.kubectl("get", "hps", "-n", namespace).stdout
    assert re.search(r"quad\s+Succeeded\s+6/6\s+-?\d", table), table
    assert_nothing_leaks(cluster, namespace, "quad", storage_url)


def test_a_failing_trial_is_retried_then_failed_and_too_many_failures_fail_the_study(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    manifest = study_manifest(
        "crashy",
        namespace,
        trials={"total": 5, "parallelism": 1, "maxFailed": 1, "retries": 1},
        template={"command": ["python", str(TRIALS / "crash.py")]},
    )
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "crashy", ("Failed", "Succeeded"), timeout=120)
    assert body["status"]["phase"] == "Failed"
    failed = condition(body, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "TooManyFailedTrials"
    assert "2 trials failed, more than spec.trials.maxFailed (1)" in failed["message"]

    study = load_study(storage_url, body)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1]  # the study stopped: no third trial
    for t in trials:
        assert t.state == optuna.trial.TrialState.FAIL
        assert t.user_attrs["hpo:attempts"] == 2
        reason = t.user_attrs["hpo:fail_reason"]
        assert "exit code 3" in reason and "illegal memory access" in reason and "attempt 2 of 2" in reason
    # Each trial ran twice, the retry in its own pod with the same parameters.
    wait_for("the pod watch", lambda: len(pods.seen) >= 4, timeout=10)
    assert sorted(pods.seen) == ["crashy-trial-0", "crashy-trial-0-r1", "crashy-trial-1", "crashy-trial-1-r1"]
    for number in (0, 1):
        first, retry = pods.seen[f"crashy-trial-{number}"], pods.seen[f"crashy-trial-{number}-r1"]
        env0 = {e["name"]: e.get("value") for e in first["spec"]["containers"][0]["env"]}
        env1 = {e["name"]: e.get("value") for e in retry["spec"]["containers"][0]["env"]}
        assert env0["HPO_TRIAL_PARAMS"] == env1["HPO_TRIAL_PARAMS"]
        assert (env0["HPO_TRIAL_ATTEMPT"], env1["HPO_TRIAL_ATTEMPT"]) == ("0", "1")
    reasons = [e.reason for e in events(cluster, namespace, "crashy")]
    assert reasons.count("TrialRetried") == 2 and reasons.count("TrialFailed") == 2
    assert "StudyFailed" in reasons
    rows = {r["number"]: r for r in body["status"]["recentTrials"]}
    assert rows[0]["state"] == "FAIL" and rows[0]["attempts"] == 2 and "exit code 3" in rows[0]["reason"]
    assert_nothing_leaks(cluster, namespace, "crashy", storage_url)


def test_killing_the_operator_mid_study_loses_and_duplicates_nothing(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    manifest = study_manifest(
        "tough",
        namespace,
        trials={"total": 10, "parallelism": 2, "maxFailed": 0},
        template={
            "command": ["python", str(TRIALS / "quadratic.py")],
            "env": [{"name": "TRIAL_STEP_SECONDS", "value": "0.3"}],
        },
    )
    apply(cluster, manifest)
    kills = 0
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        body = get_study(cluster, namespace, "tough")
        status = body.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        started = (status.get("trials") or {}).get("started", 0)
        if kills < 4 and started >= 1 + 2 * kills:
            operator.kill()  # SIGKILL, wherever it is
            kills += 1
            time.sleep(1.0)
            operator.start()
        time.sleep(0.5)
    assert kills == 4, f"the study finished before the operator was killed 4 times ({kills})"
    body = wait_phase(cluster, namespace, "tough", ("Succeeded", "Failed"), timeout=120)
    assert body["status"]["phase"] == "Succeeded", body["status"]

    trials = load_study(storage_url, body).get_trials()
    numbers = [t.number for t in trials]
    assert numbers == list(range(10)), numbers  # same final count, no duplicate trial numbers
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # No orphan pods: exactly one pod per trial, each owned by the study, none left running.
    wait_for("the pod watch", lambda: len(pods.seen) >= 10, timeout=10)
    current = pods.current()
    assert sorted(p.metadata.name for p in current) == sorted(f"tough-trial-{i}" for i in range(10))
    assert all(p.status.phase == "Succeeded" for p in current)
    assert all(p.metadata.owner_references[0].uid == body["metadata"]["uid"] for p in current)
    assert pods.max_active <= 2
    assert body["status"]["trials"]["complete"] == 10
    assert_nothing_leaks(cluster, namespace, "tough", storage_url)


def test_pruning_stops_a_bad_trial_early(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    manifest = study_manifest(
        "pruned",
        namespace,
        trials={"total": 3, "parallelism": 1, "maxFailed": 0},
        pruner={"type": "Median", "nStartupTrials": 2, "nWarmupSteps": 0},
        enqueue=[{"x": 2.0}, {"x": 2.5}, {"x": -4.0}],
        template={
            "command": ["python", str(TRIALS / "quadratic.py")],
            "env": [{"name": "TRIAL_STEPS", "value": "6"}, {"name": "TRIAL_STEP_SECONDS", "value": "0.1"}],
        },
    )
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "pruned", ("Succeeded", "Failed"), timeout=120)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    trials = load_study(storage_url, body).get_trials()
    assert [t.params["x"] for t in trials] == [2.0, 2.5, -4.0]  # the enqueued sets, in order
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    bad = trials[2]
    assert max(bad.intermediate_values) < 5  # stopped before its last step
    pod = cluster.core().read_namespaced_pod("pruned-trial-2", namespace)
    assert pod.status.phase == "Succeeded"  # the pod exited by itself
    assert "pruned at step" in cluster.pod_log(namespace, "pruned-trial-2")
    assert body["status"]["trials"]["pruned"] == 1
    assert any(
        e.reason == "TrialPruned" and e.message.startswith("Trial 2 pruned at step")
        for e in events(cluster, namespace, "pruned")
    )
    assert_nothing_leaks(cluster, namespace, "pruned", storage_url)


def test_deleting_a_running_study_removes_its_pods(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    manifest = study_manifest(
        "doomed",
        namespace,
        trials={"total": 4, "parallelism": 2},
        template={
            "command": ["python", str(TRIALS / "quadratic.py")],
            "env": [{"name": "TRIAL_STEPS", "value": "100"}, {"name": "TRIAL_STEP_SECONDS", "value": "1"}],
        },
    )
    apply(cluster, manifest)
    wait_for(
        "two running trial pods",
        lambda: sum(1 for p in pods.current() if p.status.phase == "Running") == 2,
        timeout=60,
    )
    body = get_study(cluster, namespace, "doomed")
    study_name = names.optuna_study_name(namespace, "doomed", body["metadata"]["uid"])
    cluster.kubectl("delete", "hps", "doomed", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("the study's pods to be garbage-collected", lambda: not pods.current(), timeout=90)
    with pytest.raises(ApiException) as gone:
        cluster.core().read_namespaced_secret("doomed-storage", namespace)
    assert gone.value.status == 404  # the default storage Secret went with its owner
    # The Optuna study stays (deleteStudyOnDelete is false); its running trials were stopped.
    study = optuna.load_study(study_name=study_name, storage=storage_url)

    def stopped() -> bool:
        return all(t.state != optuna.trial.TrialState.RUNNING for t in study.get_trials())

    wait_for("the running trials to be failed", stopped, timeout=30)
    reasons = {t.user_attrs.get("hpo:fail_reason") for t in study.get_trials()}
    assert reasons == {"stopped: the HPOStudy was deleted"}


def test_delete_study_on_delete_removes_the_optuna_study(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    manifest = study_manifest(
        "tidy", namespace, trials={"total": 1, "parallelism": 1}, storage={"deleteStudyOnDelete": True}
    )
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "tidy", ("Succeeded",), timeout=90)
    assert "hpo.dev/finalizer" in body["metadata"]["finalizers"]
    study_name = body["status"]["studyName"]
    assert study_name in optuna.get_all_study_names(storage_url)
    cluster.kubectl("delete", "hps", "tidy", "-n", namespace, "--wait=true", "--timeout=60s")
    assert study_name not in optuna.get_all_study_names(storage_url)


def test_a_bad_spec_is_refused_naming_the_field(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    # What the schema can check, the API server refuses at once, naming the field.
    grid = study_manifest("griddy", namespace, sampler={"type": "Grid"})
    refused = apply(cluster, grid, check=False)
    assert refused.returncode != 0
    assert "spec.searchSpace" in refused.stderr and "Grid sampler needs discrete values" in refused.stderr

    # What needs Optuna: the operator refuses it with a condition and an Event naming the field.
    grid = study_manifest(
        "griddy",
        namespace,
        sampler={"type": "Grid"},
        searchSpace=[{"name": "x", "type": "float", "low": 0.0, "high": 1.0, "step": 0.5}],
        trials={"total": 5, "parallelism": 2},
    )
    apply(cluster, grid)
    body = wait_phase(cluster, namespace, "griddy", ("Failed",), timeout=60)
    spec_valid = condition(body, "SpecValid")
    assert spec_valid["status"] == "False" and spec_valid["reason"] == "InvalidSpec"
    assert spec_valid["message"].startswith("spec.trials.total: 5 trials but the grid has only 3 points")
    wait_for(
        "an InvalidSpec Event",
        lambda: [e for e in events(cluster, namespace, "griddy") if e.reason == "InvalidSpec"],
        timeout=20,
    )
    invalid = [e for e in events(cluster, namespace, "griddy") if e.reason == "InvalidSpec"]
    assert invalid[0].type == "Warning" and "spec.trials.total" in invalid[0].message
    assert not cluster.core().list_namespaced_pod(namespace).items  # nothing ran
    # Reported once, as a warning naming the study; not also as a kopf handler error with a traceback.
    assert f"{namespace}/griddy: invalid spec: spec.trials.total" in operator.log
    assert "Handler 'spec_changed' failed" not in operator.log

    # Fixing the spec runs the study.
    cluster.kubectl(
        "patch", "hps", "griddy", "-n", namespace, "--type=merge", "-p", '{"spec":{"trials":{"total":3}}}'
    )
    body = wait_phase(cluster, namespace, "griddy", ("Succeeded",), timeout=90)
    assert condition(body, "SpecValid")["status"] == "True"
    trials = load_study(storage_url, body).get_trials()
    assert sorted(t.params["x"] for t in trials) == [0.0, 0.5, 1.0]  # the whole grid, once each
    assert_nothing_leaks(cluster, namespace, "griddy", storage_url)


def test_an_unreachable_storage_is_waited_for_without_showing_its_url(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    dead = make_url(storage_url).set(port=free_port()).render_as_string(hide_password=False)
    body = study_on_a_storage_that_fails(cluster, namespace, "waits", dead)
    ready = condition(body, "StorageReady")
    assert ready["reason"] == "StorageUnavailable"
    assert ready["message"].startswith("waiting for the storage: ")
    assert body["status"]["phase"] == "Pending"  # not a blank PHASE column
    assert_no_secret(json.dumps(body), dead, "the HPOStudy")
    wait_for(
        "a StorageUnavailable Event",
        lambda: any(e.reason == "StorageUnavailable" for e in events(cluster, namespace, "waits")),
        timeout=30,
    )
    assert_nothing_leaks(cluster, namespace, "waits", dead)
    assert_no_secret(operator.log, dead, "the operator's log")

    # The database comes back (here: the Secret is corrected): the study runs; nothing was lost.
    cluster.core().patch_namespaced_secret("db", namespace, {"stringData": {"url": storage_url}})
    body = wait_phase(cluster, namespace, "waits", ("Succeeded",), timeout=120)
    assert condition(body, "StorageReady")["status"] == "True"
    assert_nothing_leaks(cluster, namespace, "waits", storage_url)


def test_a_storage_url_sqlalchemy_cannot_use_is_named_by_its_secret(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    bad = "notaurl://hpo:s3cret-pw@db:5432/hpo"
    body = study_on_a_storage_that_fails(cluster, namespace, "badurl", bad)
    message = condition(body, "StorageReady")["message"]
    assert (
        f"spec.storage.secretRef: Secret {namespace}/db, key 'url', holds not a usable storage URL "
        "(no SQLAlchemy dialect or driver 'notaurl' is installed)"
    ) in message, message
    assert_nothing_leaks(cluster, namespace, "badurl", bad)
    # The Secret is fixed: the study runs (the operator retries with backoff).
    cluster.core().patch_namespaced_secret("db", namespace, {"stringData": {"url": storage_url}})
    wait_phase(cluster, namespace, "badurl", ("Succeeded",), timeout=150)


def test_a_trial_that_exits_without_a_value_is_failed_with_that_reason(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    manifest = study_manifest(
        "silent",
        namespace,
        trials={"total": 2, "parallelism": 1, "maxFailed": 0, "retries": 2},
        template={"command": ["python", str(TRIALS / "silent.py")]},
    )
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "silent", ("Failed", "Succeeded"), timeout=90)
    assert condition(body, "Failed")["reason"] == "TooManyFailedTrials"
    (trial,) = load_study(storage_url, body).get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "exited 0 without reporting a final value" in trial.user_attrs["hpo:fail_reason"]
    assert trial.user_attrs.get("hpo:attempts", 1) == 1  # a broken process is not retried
    pod_names = [p.metadata.name for p in cluster.core().list_namespaced_pod(namespace).items]
    assert pod_names == ["silent-trial-0"]


def test_an_objective_metric_the_trial_does_not_produce_stops_the_study_naming_the_field(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    manifest = study_manifest(
        "nometric",
        namespace,
        objective=[{"metric": "eval_sts-dev_spearman_cosin", "direction": "maximize"}],
        trials={"total": 4, "parallelism": 1, "maxFailed": 3},
        template={"command": ["python", str(TRIALS / "wrong_metric.py")]},
    )
    apply(cluster, manifest)
    body = wait_phase(cluster, namespace, "nometric", ("Failed", "Succeeded"), timeout=90)
    failed = condition(body, "Failed")
    assert failed["reason"] == "ObjectiveMetricNotFound"
    assert failed["message"].startswith("spec.objective[0].metric: trial 0: objective metric")
    assert "eval_sts-dev_spearman_cosine" in failed["message"]  # the metrics that exist are listed
    assert len(load_study(storage_url, body).get_trials()) == 1  # stopped at once, not after maxFailed
    wait_for(
        "a StudyFailed Event naming the field",
        lambda: any(
            e.reason == "StudyFailed" and "spec.objective[0].metric" in e.message
            for e in events(cluster, namespace, "nometric")
        ),
        timeout=20,
    )
    assert_nothing_leaks(cluster, namespace, "nometric", storage_url)


def test_a_trial_pod_the_api_server_refuses_is_reported_naming_the_template(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    # The template passes the dry run; then a LimitRange arrives and the next trial pod is refused.
    slow = [{"name": "TRIAL_STEPS", "value": "10"}, {"name": "TRIAL_STEP_SECONDS", "value": "0.5"}]
    template = {
        "command": ["python", str(TRIALS / "quadratic.py")],
        "env": slow,
        "resources": {"limits": {"cpu": "200m"}},
    }
    manifest = study_manifest("limited", namespace, trials={"total": 2, "parallelism": 1}, template=template)
    apply(cluster, manifest)
    wait_for("the first trial pod", lambda: "limited-trial-0" in pods.seen, timeout=60)
    limits = client.V1LimitRange(
        metadata=client.V1ObjectMeta(name="small"),
        spec=client.V1LimitRangeSpec(limits=[client.V1LimitRangeItem(type="Container", max={"cpu": "100m"})]),
    )
    cluster.core().create_namespaced_limit_range(namespace, limits)

    body = wait_phase(cluster, namespace, "limited", ("Failed", "Succeeded"), timeout=90)
    spec_valid = condition(body, "SpecValid")
    assert spec_valid["status"] == "False" and spec_valid["reason"] == "InvalidSpec"
    assert spec_valid["message"].startswith("spec.template: the API server refused a trial pod: ")
    assert "cpu" in spec_valid["message"]
    wait_for(
        "an InvalidSpec Event naming spec.template",
        lambda: any(
            e.reason == "InvalidSpec" and "spec.template" in e.message
            for e in events(cluster, namespace, "limited")
        ),
        timeout=20,
    )
    states = [t.state for t in load_study(storage_url, body).get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]  # it waits

    # Fixing the template runs the waiting trial from its stored parameters.
    patch = {"spec": {"template": {**template, "resources": {"limits": {"cpu": "100m"}}}}}
    cluster.kubectl("patch", "hps", "limited", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    body = wait_phase(cluster, namespace, "limited", ("Succeeded",), timeout=90)
    assert condition(body, "SpecValid")["status"] == "True"
    trials = load_study(storage_url, body).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert "reconcile failed" not in operator.log
    assert_nothing_leaks(cluster, namespace, "limited", storage_url)


def test_a_full_resource_quota_is_waited_for_with_a_condition(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="one-pod"), spec=client.V1ResourceQuotaSpec(hard={"pods": "1"})
    )
    cluster.core().create_namespaced_resource_quota(namespace, quota)
    wait_for(
        "the quota's usage to be computed",
        lambda: cluster.core().read_namespaced_resource_quota("one-pod", namespace).status.hard or {},
        timeout=30,
    )
    slow = [{"name": "TRIAL_STEPS", "value": "10"}, {"name": "TRIAL_STEP_SECONDS", "value": "0.4"}]
    manifest = study_manifest(
        "squeezed",
        namespace,
        trials={"total": 2, "parallelism": 2},
        template={"command": ["python", str(TRIALS / "quadratic.py")], "env": slow},
    )
    apply(cluster, manifest)

    def held_back() -> dict[str, Any] | None:
        body = get_study(cluster, namespace, "squeezed")
        conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}
        admitted = conds.get("TrialPodsAdmitted")
        return admitted if admitted and admitted["status"] == "False" else None

    admitted = wait_for("TrialPodsAdmitted=False", held_back, timeout=60)
    assert admitted["reason"] == "QuotaExceeded"
    assert admitted["message"].startswith("waiting for room in a ResourceQuota: ")
    assert "one-pod" in admitted["message"]
    wait_for(
        "a QuotaExceeded Event",
        lambda: any(e.reason == "QuotaExceeded" for e in events(cluster, namespace, "squeezed")),
        timeout=20,
    )
    # Once the first pod is done, the second fits: the study finishes, both trials complete.
    body = wait_phase(cluster, namespace, "squeezed", ("Succeeded", "Failed"), timeout=120)
    assert body["status"]["phase"] == "Succeeded"
    assert condition(body, "TrialPodsAdmitted")["status"] == "True"
    assert condition(body, "SpecValid")["status"] == "True"
    trials = load_study(storage_url, body).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert pods.max_active == 1


def test_a_users_secret_with_the_storage_secret_name_is_left_alone(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    mine = client.V1Secret(metadata=client.V1ObjectMeta(name="clash-storage"), string_data={"url": "mine"})
    cluster.core().create_namespaced_secret(namespace, mine)
    apply(cluster, study_manifest("clash", namespace, trials={"total": 1, "parallelism": 1}))
    body = wait_phase(cluster, namespace, "clash", ("Failed", "Succeeded"), timeout=60)
    spec_valid = condition(body, "SpecValid")
    assert spec_valid["status"] == "False"
    assert spec_valid["message"].startswith(
        f"spec.storage: Secret {namespace}/clash-storage exists and is not"
    )
    wait_for(
        "an InvalidSpec Event naming spec.storage",
        lambda: any(
            e.reason == "InvalidSpec" and "spec.storage" in e.message
            for e in events(cluster, namespace, "clash")
        ),
        timeout=20,
    )
    secret = cluster.core().read_namespaced_secret("clash-storage", namespace)
    assert secret.data == {"url": "bWluZQ=="}  # untouched ("mine")
    assert not cluster.core().list_namespaced_pod(namespace).items

    # The user's Secret goes and the spec is touched: the study runs with its own Secret.
    cluster.core().delete_namespaced_secret("clash-storage", namespace)
    patch = '{"spec":{"trials":{"total":1,"parallelism":1,"maxFailed":2}}}'
    cluster.kubectl("patch", "hps", "clash", "-n", namespace, "--type=merge", "-p", patch)
    body = wait_phase(cluster, namespace, "clash", ("Succeeded",), timeout=90)
    owners = cluster.core().read_namespaced_secret("clash-storage", namespace).metadata.owner_references
    assert [o.uid for o in owners] == [body["metadata"]["uid"]]
    assert_nothing_leaks(cluster, namespace, "clash", storage_url)


def test_delete_study_on_delete_when_the_secret_went_first(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    core = cluster.core()

    def study_with_secret(name: str) -> str:
        secret = client.V1Secret(
            metadata=client.V1ObjectMeta(name=f"{name}-db"), string_data={"url": storage_url}
        )
        core.create_namespaced_secret(namespace, secret)
        storage = {"secretRef": {"name": f"{name}-db"}, "deleteStudyOnDelete": True}
        apply(
            cluster, study_manifest(name, namespace, trials={"total": 1, "parallelism": 1}, storage=storage)
        )
        body = wait_phase(cluster, namespace, name, ("Succeeded",), timeout=90)
        return str(body["status"]["studyName"])

    # The operator knows the URL from running the study: the Optuna study is deleted all the same.
    known = study_with_secret("known")
    core.delete_namespaced_secret("known-db", namespace)
    cluster.kubectl("delete", "hps", "known", "-n", namespace, "--wait=true", "--timeout=60s")
    assert known not in optuna.get_all_study_names(storage_url)

    # A fresh operator that never read the Secret: a Warning Event names it, and the deletion goes on.
    unknown = study_with_secret("unknown")
    operator.kill()
    core.delete_namespaced_secret("unknown-db", namespace)
    operator.start()
    started = time.monotonic()
    cluster.kubectl("delete", "hps", "unknown", "-n", namespace, "--wait=true", "--timeout=60s")
    assert time.monotonic() - started < 60
    (event,) = [e for e in events(cluster, namespace, "unknown") if e.reason == "StudyNotDeleted"]
    assert event.type == "Warning"
    assert f"Secret {namespace}/unknown-db does not exist" in event.message
    assert unknown in optuna.get_all_study_names(storage_url)  # left, as the Event says


def test_storages_share_an_engine_per_url_and_release_it_with_the_last_study(postgres_url: str) -> None:
    from hpo_operator.core.parse import parse_spec
    from hpo_operator.shell.storage import Storages, StudyStore

    storages = Storages()
    spec = parse_spec(
        {
            "objective": [{"metric": "score"}],
            "searchSpace": [
                {"name": "n", "type": "int", "low": 2, "high": 64, "log": True},
                {"name": "k", "type": "int", "low": 1, "high": 9, "step": 4},
                {"name": "lr", "type": "float", "low": 1e-5, "high": 1e-3, "log": True},
                {"name": "c", "type": "categorical", "choices": ["a", "b"]},
            ],
            "template": {"command": ["python", "objective.py"]},
        }
    )
    a = StudyStore(storages.open(postgres_url, "a"), "a")
    b = StudyStore(storages.open(postgres_url, "b"), "b")
    assert a.storage is not b.storage  # each study its own cache ...
    assert storages.urls() == [postgres_url]  # ... on one engine
    a.create(["maximize"], spec)
    # A trial whose ask was cut short gets the same distributions ask uses.
    study = optuna.load_study(study_name="a", storage=postgres_url)
    study.ask()
    a.finish_ask(spec, None, 0)
    (trial,) = optuna.load_study(study_name="a", storage=postgres_url).get_trials()
    from hpo_operator.core.search_space import distributions

    assert trial.distributions == distributions(spec)
    storages.release(postgres_url, "a")
    assert storages.urls() == [postgres_url]  # b still uses it
    storages.release(postgres_url, "b")
    assert storages.urls() == []
    storages.dispose()


def test_a_finished_study_keeps_its_result_when_the_operator_loses_its_default_image(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    # The study has no template.image: it ran with the operator's HPO_TRIAL_IMAGE.
    apply(cluster, study_manifest("kept", namespace, trials={"total": 1, "parallelism": 1}))
    done = wait_phase(cluster, namespace, "kept", ("Succeeded", "Failed"), timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]

    # An operator started without HPO_TRIAL_IMAGE does not re-judge the finished study.
    operator.stop()
    del operator.env["HPO_TRIAL_IMAGE"]
    operator.start()

    def looked_at() -> bool:
        log = operator.log.split(f"===== operator start {operator.starts} =====")[-1]
        resumed = "Resuming is processed" in log
        kept = "kept: Succeeded with this spec" in log
        return resumed and (kept or get_study(cluster, namespace, "kept")["status"]["phase"] != "Succeeded")

    wait_for("the restarted operator to resume and reconcile the finished study", looked_at)
    body = get_study(cluster, namespace, "kept")
    for key in ("phase", "observedGeneration", "bestTrial", "message", "trials"):
        assert body["status"][key] == done["status"][key], key
    assert condition(body, "SpecValid")["status"] == "True"
    assert not [e for e in events(cluster, namespace, "kept") if e.reason in ("InvalidSpec", "StudyFailed")]

    # Once its spec changes it has pods to launch again: then the missing image is reported, naming it.
    cluster.kubectl(
        "patch", "hps", "kept", "-n", namespace, "--type=merge", "-p", '{"spec":{"trials":{"total":2}}}'
    )
    body = wait_phase(cluster, namespace, "kept", ("Failed",), timeout=60)
    assert condition(body, "SpecValid")["message"].startswith("spec.template.image: required")
    assert len(load_study(storage_url, body).get_trials()) == 1  # nothing was asked


def test_a_search_space_edit_the_stored_study_cannot_take_is_refused_naming_the_field(
    cluster: Any, namespace: str, operator: Operator, storage_url: str
) -> None:
    space = [
        {"name": "x", "type": "float", "low": -5.0, "high": 5.0},
        {"name": "batch", "type": "categorical", "choices": [16, 32, 64]},
    ]
    apply(
        cluster, study_manifest("space", namespace, searchSpace=space, trials={"total": 2, "parallelism": 2})
    )
    done = wait_phase(cluster, namespace, "space", ("Succeeded", "Failed"), timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]

    # The reviewer's edit: more trials, fewer choices. Refused before anything is asked.
    edit = [
        {"op": "replace", "path": "/spec/trials/total", "value": 3},
        {"op": "replace", "path": "/spec/searchSpace/1/choices", "value": [16, 64]},
    ]
    cluster.kubectl("patch", "hps", "space", "-n", namespace, "--type=json", "-p", json.dumps(edit))

    def refused() -> dict[str, Any] | None:
        body = get_study(cluster, namespace, "space")
        status = body.get("status") or {}
        seen = status.get("observedGeneration") == body["metadata"]["generation"]
        return body if seen and status.get("phase") != "Succeeded" else None

    body = wait_for("the edit to be judged", refused, timeout=60)
    assert body["status"]["phase"] == "Failed", body["status"]
    message = condition(body, "SpecValid")["message"]
    assert message.startswith("spec.searchSpace[1].choices: parameter 'batch' of trial "), message
    assert "the spec asks for choices [16, 64]" in message and "create a new HPOStudy" in message
    assert condition(body, "Failed")["reason"] == "InvalidSpec"
    assert body["status"]["bestTrial"] == done["status"]["bestTrial"]
    trials = load_study(storage_url, body).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2  # nothing asked

    def study_failed() -> list[client.CoreV1Event]:
        return [e for e in events(cluster, namespace, "space") if e.reason == "StudyFailed"]

    (event,) = wait_for("a StudyFailed Event", study_failed, timeout=20)
    assert "(InvalidSpec): spec.searchSpace[1].choices: parameter 'batch'" in event.message

    # A restarted operator reconciles it again without announcing the same refusal again.
    operator.stop()
    operator.start()
    wait_for(
        "the restarted operator's first reconcile",
        lambda: 'hpo_studies{phase="Failed"} 1.0' in _metrics(operator),
        timeout=60,
    )
    assert sum(e.count or 1 for e in study_failed()) == 1

    # Restoring the choices resumes the study with the larger budget.
    cluster.kubectl(
        "patch",
        "hps",
        "space",
        "-n",
        namespace,
        "--type=json",
        "-p",
        json.dumps([{"op": "replace", "path": "/spec/searchSpace/1/choices", "value": [16, 32, 64]}]),
    )
    body = wait_phase(cluster, namespace, "space", ("Succeeded",), timeout=120)
    assert len(load_study(storage_url, body).get_trials()) == 3
    assert condition(body, "SpecValid")["status"] == "True"


def _metrics(operator: Operator) -> str:
    try:
        return operator.get(operator.metrics_port, "/metrics")[1]
    except OSError:
        return ""  # not serving yet


def test_suspend_and_resume_keep_the_trial_count_and_ask_nothing_while_suspended(
    cluster: Any, namespace: str, operator: Operator, pods: Pods, storage_url: str
) -> None:
    manifest = study_manifest(
        "pause",
        namespace,
        trials={"total": 5, "parallelism": 2, "maxFailed": 0, "retries": 0},
        template={
            "command": ["python", str(TRIALS / "quadratic.py")],
            "env": [{"name": "TRIAL_STEP_SECONDS", "value": "0.5"}],
        },
    )
    apply(cluster, manifest)
    wait_for(
        "two trials running",
        lambda: (
            ((get_study(cluster, namespace, "pause").get("status") or {}).get("trials") or {}).get("running")
            == 2
        ),
        timeout=60,
    )
    # Suspended with onSuspend Stop: the running trials' pods go, nothing new is asked or started.
    patch = '{"spec":{"suspend":true,"onSuspend":"Stop"}}'
    cluster.kubectl("patch", "hps", "pause", "-n", namespace, "--type=merge", "-p", patch)
    body = wait_phase(cluster, namespace, "pause", ("Suspended",), timeout=60)
    assert condition(body, "Suspended")["status"] == "True"
    wait_for(
        "the running trials' pods to go",
        lambda: not [p for p in pods.current() if p.status.phase in ("Pending", "Running")],
        timeout=60,
    )
    frozen = load_study(storage_url, body).get_trials()
    seen = set(pods.seen)
    time.sleep(6)  # several reconciles (every second)
    assert len(load_study(storage_url, body).get_trials()) == len(frozen) <= 3, "asked while suspended"
    assert set(pods.seen) == seen, "a pod was started while suspended"
    body = get_study(cluster, namespace, "pause")
    assert body["status"]["phase"] == "Suspended" and "suspended (spec.suspend)" in body["status"]["message"]
    stopped = [t.number for t in frozen if t.state == optuna.trial.TrialState.RUNNING]
    assert stopped, "no trial was running when the study was suspended"

    # Resumed: the same Optuna study goes on; the stopped trials run again (same attempt, no retry).
    cluster.kubectl(
        "patch", "hps", "pause", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    body = wait_phase(cluster, namespace, "pause", ("Succeeded", "Failed"), timeout=150)
    assert body["status"]["phase"] == "Succeeded", body["status"]
    trials = load_study(storage_url, body).get_trials()
    assert [t.number for t in trials] == list(range(5))  # the same count, no trial asked twice
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for number in stopped:
        assert trials[number].params == frozen[number].params
    assert body["status"]["trials"]["complete"] == 5
    assert condition(body, "Suspended")["status"] == "False"
    reasons = {e.reason for e in events(cluster, namespace, "pause")}
    assert {"StudySuspended", "StudyResumed"} <= reasons
    assert pods.max_active <= 2
    assert_nothing_leaks(cluster, namespace, "pause", storage_url)
