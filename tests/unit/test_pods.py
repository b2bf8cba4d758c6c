"""Trial pod rendering: names, labels, ownership, resources, and the trial contract in the environment."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hpo_operator.core import names, tokens
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.pods import (
    DEFAULT_COMMAND,
    Owner,
    SecretKey,
    render_pod,
    render_storage_secret,
    report_env,
    storage_secret,
)
from hpo_trial import contract

ROOT = Path(__file__).resolve().parents[2]
SEED = yaml.safe_load((ROOT / "examples" / "seed-study.yaml").read_text())
OWNER = Owner(name="nli-distilbert", namespace="team-a", uid="0c2f6f7e-1111-2222-3333-444455556666")
OPTUNA_STUDY = names.optuna_study_name(OWNER.namespace, OWNER.name, OWNER.uid)
PARAMS = {"learning_rate": 2.686331417509812e-06, "num_train_epochs": 1}


def seed_spec(**template: Any) -> Any:
    raw = copy.deepcopy(SEED["spec"])
    raw["template"].update(template)
    return parse_spec(raw)


def pod_for(
    spec: Any,
    trial: int = 13,
    attempt: int = 0,
    default_image: str | None = None,
    report: dict[str, str] | None = None,
) -> dict[str, Any]:
    return render_pod(
        spec,
        owner=OWNER,
        optuna_study=OPTUNA_STUDY,
        trial=trial,
        attempt=attempt,
        params=PARAMS,
        secret=storage_secret(spec, OWNER.name),
        default_image=default_image,
        report=report,
    )


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["spec"]["containers"][0]["env"]}


def test_names_are_deterministic() -> None:
    assert names.pod_name("nli", 13) == "nli-trial-13"
    assert names.pod_name("nli", 13, 0) == "nli-trial-13"
    assert names.pod_name("nli", 13, 2) == "nli-trial-13-r2"
    assert names.optuna_study_name("ns", "nli", "u-1") == "ns.nli.u-1"
    # The longest study name with a large trial number and a retry still fits a pod name.
    assert len(names.pod_name("a" * 40, 9_999_999, 99)) <= 63
    spec = seed_spec()
    assert pod_for(spec) == pod_for(spec)


def test_the_pod_is_named_labelled_and_owned() -> None:
    pod = pod_for(seed_spec(), trial=13, attempt=1)
    meta = pod["metadata"]
    assert meta["name"] == "nli-distilbert-trial-13-r1"
    assert meta["namespace"] == "team-a"
    assert meta["labels"] == {
        "hpo.dev/study": "nli-distilbert",
        "hpo.dev/trial": "13",
        "hpo.dev/attempt": "1",
        "app.kubernetes.io/managed-by": "hpo-operator",
    }
    assert meta["annotations"]["hpo.dev/optuna-study"] == OPTUNA_STUDY
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "hpo.dev/v1alpha1",
            "kind": "HPOStudy",
            "name": "nli-distilbert",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_the_pod_runs_once_on_one_gpu_by_default() -> None:
    raw = copy.deepcopy(SEED["spec"])
    del raw["template"]["resources"]
    pod = pod_for(parse_spec(raw))
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert container["command"] == list(DEFAULT_COMMAND) == ["python", "-m", "hpo_trial"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["image"] == "ghcr.io/hpo-dev/hpo-trial:0.1.0"
    assert spec["automountServiceAccountToken"] is False  # training code gets no API token
    assert "serviceAccountName" not in spec


def test_the_trial_contract_is_in_the_environment_and_round_trips() -> None:
    spec = seed_spec()
    pod = pod_for(spec, trial=13, attempt=1)
    env = env_of(pod)
    assert env["HPO_STORAGE_URL"] == {"secretKeyRef": {"name": "nli-distilbert-storage", "key": "url"}}
    assert env["HPO_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["HPO_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["HPO_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # What the node resolves (the Secret's URL) plus the literal values make a valid contract.
    resolved = {k: v for k, v in env.items() if isinstance(v, str)}
    resolved["HPO_STORAGE_URL"] = "postgresql://u:p@db/hpo"
    c = contract.TrialContract.from_env(resolved)
    assert c.study_name == OPTUNA_STUDY
    assert (c.trial_number, c.attempt) == (13, 1)
    assert c.params == PARAMS
    assert [(o.metric, o.direction) for o in c.objectives] == [("eval_sts-dev_spearman_cosine", "maximize")]
    assert c.pruner == {"type": "None"}
    assert c.trainer == SEED["spec"]["trainer"]
    assert (
        json.loads(env["HPO_TRIAL_PARAMS"])["learning_rate"] == PARAMS["learning_rate"]
    )  # exact, not rounded


def test_the_storage_url_never_appears_in_the_pod() -> None:
    spec = seed_spec()
    secret = render_storage_secret(OWNER, "postgresql://user:s3cret@db:5432/hpo")
    pod = pod_for(spec)
    assert "s3cret" not in json.dumps(pod)
    assert base64.b64decode(secret["data"]["url"]).decode() == "postgresql://user:s3cret@db:5432/hpo"
    assert secret["metadata"]["name"] == "nli-distilbert-storage"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid


def test_a_secret_ref_in_the_spec_is_used() -> None:
    raw = copy.deepcopy(SEED["spec"])
    raw["storage"] = {"secretRef": {"name": "optuna-db", "key": "dsn"}}
    spec = parse_spec(raw)
    assert storage_secret(spec, OWNER.name) == SecretKey("optuna-db", "dsn")
    assert env_of(pod_for(spec))["HPO_STORAGE_URL"] == {"secretKeyRef": {"name": "optuna-db", "key": "dsn"}}


def test_the_template_shapes_the_pod() -> None:
    spec = seed_spec(
        imagePullPolicy="IfNotPresent",
        command=["python", "train.py"],
        args=["--fast"],
        env=[{"name": "HF_HUB_OFFLINE", "value": "1"}],
        resources={"limits": {"nvidia.com/gpu": 2, "memory": "16Gi"}, "requests": {"cpu": "4"}},
        nodeSelector={"gpu": "h100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {}},
        volumes=[{"name": "cache", "emptyDir": {}}],
        volumeMounts=[{"name": "cache", "mountPath": "/cache"}],
        serviceAccountName="trainer",
        priorityClassName="batch-low",
        outputDir="/out",
    )
    pod = pod_for(spec, trial=4)
    s = pod["spec"]
    c = s["containers"][0]
    assert c["command"] == ["python", "train.py"] and c["args"] == ["--fast"]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "2", "memory": "16Gi"}, "requests": {"cpu": "4"}}
    assert c["volumeMounts"] == [{"name": "cache", "mountPath": "/cache"}]
    assert s["nodeSelector"] == {"gpu": "h100"}
    assert s["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert s["affinity"] == {"nodeAffinity": {}}
    assert s["volumes"] == [{"name": "cache", "emptyDir": {}}]
    assert s["serviceAccountName"] == "trainer" and s["priorityClassName"] == "batch-low"
    assert "automountServiceAccountToken" not in s  # a named account keeps its token
    env = env_of(pod)
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["HPO_OUTPUT_DIR"] == "/out/nli-distilbert/trial-4"
    # The template is not shared with (or changed by) the rendered pod.
    c["resources"]["limits"]["memory"] = "1Gi"
    assert spec.template.resources == {
        "limits": {"nvidia.com/gpu": 2, "memory": "16Gi"},
        "requests": {"cpu": "4"},
    }


def test_the_operator_default_image_fills_in() -> None:
    raw = copy.deepcopy(SEED["spec"])
    del raw["template"]["image"]
    spec = parse_spec(raw)
    assert (
        pod_for(spec, default_image="registry/trial:2")["spec"]["containers"][0]["image"]
        == "registry/trial:2"
    )
    with pytest.raises(ValueError, match=r"spec\.template\.image"):
        pod_for(spec, default_image=None)


def test_the_pruner_travels_with_the_spec_names() -> None:
    raw = copy.deepcopy(SEED["spec"])
    raw["pruner"] = {"type": "Hyperband", "minResource": 10, "maxResource": 300, "reductionFactor": 3}
    env = env_of(pod_for(parse_spec(raw)))
    assert json.loads(env["HPO_PRUNER"]) == {
        "type": "Hyperband",
        "minResource": 10,
        "maxResource": 300,
        "reductionFactor": 3,
    }


@pytest.mark.parametrize("attempt", [0, 3])
def test_rendered_objects_are_valid_kubernetes_objects(attempt: int) -> None:
    spec = seed_spec(
        env=[{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        volumes=[{"name": "cache", "emptyDir": {}}],
        volumeMounts=[{"name": "cache", "mountPath": "/cache"}],
    )
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(pod_for(spec, attempt=attempt), version, strict=True)
    kubernetes_validate.validate(render_storage_secret(OWNER, "postgresql://x"), version, strict=True)


def test_an_attempt_gets_the_report_endpoint_and_its_own_token() -> None:
    spec = seed_spec()
    key = tokens.new_key()
    envs = []
    for trial, attempt in ((13, 0), (13, 1), (14, 0)):
        report = report_env("http://op.hpo-system.svc:8090", key, OPTUNA_STUDY, trial, attempt)
        envs.append(env_of(pod_for(spec, trial, attempt, report=report)))
    for (trial, attempt), env in zip(((13, 0), (13, 1), (14, 0)), envs, strict=True):
        assert env["HPO_REPORT_URL"] == "http://op.hpo-system.svc:8090"
        assert tokens.token_matches(key, OPTUNA_STUDY, trial, attempt, env["HPO_REPORT_TOKEN"])
        assert key not in json.dumps(env)  # the pod gets its token, never the study's key
    assert len({e["HPO_REPORT_TOKEN"] for e in envs}) == 3
    # The contract a trial reads from them needs no storage URL.
    resolved = {k: v for k, v in envs[0].items() if isinstance(v, str)}
    c = contract.TrialContract.from_env(resolved)
    assert (c.report_url, c.storage_url) == ("http://op.hpo-system.svc:8090", "")
    # Without an endpoint, none of it.
    assert "HPO_REPORT_URL" not in env_of(pod_for(spec))
