"""A trial's pod, rendered as the plain dict the API server takes.

One pod per attempt of a trial, named ``<name>-trial-<number>`` (``-r<attempt>`` for retries), labelled
with the study, trial and attempt, owned by the HPOStudy (so deleting the study deletes its pods), with
``restartPolicy: Never`` (the operator, not the kubelet, decides about retries) and
``terminationMessagePolicy: FallbackToLogsOnError`` (a crash's last log lines become the failure reason).

The trial contract (:mod:`hpo_trial.contract`) travels in the environment; the storage URL comes from
a Secret through ``secretKeyRef``, so it is in no pod spec, status or Event. The Downward API adds the
pod's own name and namespace and the node's name.

The template's cluster policy travels as given: pod labels and annotations (the operator's own keys
are not the template's to set), image pull Secrets, scheduler, runtime class, security context,
resource claims and scheduling gates. ``spec.queueName`` becomes Kueue's queue label
(``kueue.x-k8s.io/queue-name``), which its plain-Pod integration admits against the LocalQueue.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpo_trial import contract

from hpo_operator.core import names, tokens
from hpo_operator.core.spec import KUEUE_QUEUE_LABEL, StudySpec

DEFAULT_COMMAND = ("python", "-m", "hpo_trial")
DEFAULT_RESOURCES: dict[str, Any] = {"limits": {"nvidia.com/gpu": "1"}}
DOWNWARD_ENV = {
    "HPO_POD_NAME": "metadata.name",
    "HPO_POD_NAMESPACE": "metadata.namespace",
    "HPO_NODE_NAME": "spec.nodeName",
}


@dataclass(frozen=True)
class Owner:
    """The HPOStudy that owns the pods."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class SecretKey:
    """Where trial pods read the storage URL: a key of a Secret in the study's namespace."""

    name: str
    key: str


def storage_secret(spec: StudySpec, study: str) -> SecretKey:
    """``spec.storage.secretRef``, or the operator-managed ``<name>-storage`` Secret."""
    if spec.storage is not None and spec.storage.secret_ref is not None:
        return SecretKey(spec.storage.secret_ref.name, spec.storage.secret_ref.key)
    return SecretKey(names.default_secret_name(study), names.DEFAULT_SECRET_KEY)


def render_storage_secret(owner: Owner, url: str) -> dict[str, Any]:
    """The operator-managed Secret holding the default storage URL, owned by the HPOStudy.

    The returned dict carries the URL (base64): hand it to the API server only, never to a log.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": names.default_secret_name(owner.name),
            "namespace": owner.namespace,
            "labels": {names.LABEL_STUDY: owner.name, names.LABEL_MANAGED_BY: names.MANAGER},
            "ownerReferences": [owner.reference()],
        },
        "type": "Opaque",
        "data": {names.DEFAULT_SECRET_KEY: base64.b64encode(url.encode()).decode()},
    }


def trial_env(
    spec: StudySpec, *, optuna_study: str, trial: int, attempt: int, params: Mapping[str, Any], study: str
) -> dict[str, str]:
    """The contract's variables for one attempt of a trial, the storage URL left out."""
    objectives = tuple(contract.Objective(o.metric, o.direction) for o in spec.objective)
    output_dir = (
        f"{spec.template.output_dir.rstrip('/')}/{study}/trial-{trial}" if spec.template.output_dir else None
    )
    env = contract.TrialContract(
        storage_url="",
        study_name=optuna_study,
        trial_number=trial,
        params=dict(params),
        objectives=objectives,
        pruner=spec.pruner.config(),
        trainer=dict(spec.trainer or {}),
        attempt=attempt,
        output_dir=output_dir,
        run_name=names.pod_name(study, trial),
    ).to_env()
    env.pop(contract.STORAGE_URL)
    return env


def report_env(url: str, key: str, optuna_study: str, trial: int, attempt: int) -> dict[str, str]:
    """The variables that send one attempt's reports through the report endpoint, with its own token."""
    return {
        contract.REPORT_URL: url,
        contract.REPORT_TOKEN: tokens.trial_token(key, optuna_study, trial, attempt),
    }


def render_pod(
    spec: StudySpec,
    *,
    owner: Owner,
    optuna_study: str,
    trial: int,
    attempt: int,
    params: Mapping[str, Any],
    secret: SecretKey,
    default_image: str | None,
    report: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The pod that runs ``attempt`` (0-based) of ``trial`` with ``params``; ``report``: the variables
    of :func:`report_env` (none: the trial opens the storage itself)."""
    t = spec.template
    image = t.image or default_image
    if not image:
        raise ValueError("spec.template.image: required (the operator has no default trial image)")
    env: list[dict[str, Any]] = [
        {
            "name": contract.STORAGE_URL,
            "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}},
        }
    ]
    contract_env = trial_env(
        spec, optuna_study=optuna_study, trial=trial, attempt=attempt, params=params, study=owner.name
    )
    env += [{"name": k, "value": v} for k, v in {**contract_env, **(report or {})}.items()]
    env += [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": p}}} for k, p in DOWNWARD_ENV.items()]
    env += [dict(e) for e in t.env]

    container: dict[str, Any] = {
        "name": names.CONTAINER_NAME,
        "image": image,
        "command": list(t.command) if t.command is not None else list(DEFAULT_COMMAND),
        "env": env,
        "resources": _resources(t.resources if t.resources is not None else DEFAULT_RESOURCES),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if t.args is not None:
        container["args"] = list(t.args)
    if t.image_pull_policy:
        container["imagePullPolicy"] = t.image_pull_policy
    if t.volume_mounts:
        container["volumeMounts"] = [_copy(v) for v in t.volume_mounts]

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "containers": [container],
    }
    if t.node_selector:
        pod_spec["nodeSelector"] = dict(t.node_selector)
    if t.tolerations:
        pod_spec["tolerations"] = [_copy(x) for x in t.tolerations]
    if t.affinity:
        pod_spec["affinity"] = _copy(t.affinity)
    if t.volumes:
        pod_spec["volumes"] = [_copy(v) for v in t.volumes]
    if t.service_account_name:
        pod_spec["serviceAccountName"] = t.service_account_name
    else:
        # A trial talks to its storage, not to the API server: no token of the namespace's default
        # service account in a container that runs training code. A named account keeps its token.
        pod_spec["automountServiceAccountToken"] = False
    if t.priority_class_name:
        pod_spec["priorityClassName"] = t.priority_class_name
    _cluster_policy(spec, pod_spec)

    # The template's labels and annotations first: the operator's own keys (refused in the template by
    # core.spec) always win, so a pod is always found, counted and owned by its study.
    labels = {**t.metadata.labels, **names.pod_labels(owner.name, trial, attempt)}
    if spec.queue_name:
        labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    annotations = {**t.metadata.annotations, names.ANNOTATION_OPTUNA_STUDY: optuna_study}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.pod_name(owner.name, trial, attempt),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner.reference()],
        },
        "spec": pod_spec,
    }


def _cluster_policy(spec: StudySpec, pod_spec: dict[str, Any]) -> None:
    """The template's cluster-policy fields, as the pod spec names them: image pull Secrets, the
    scheduler, the runtime class, the pod's security context, its resource claims, scheduling gates."""
    t = spec.template
    if t.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s.name} for s in t.image_pull_secrets]
    if t.scheduler_name:
        pod_spec["schedulerName"] = t.scheduler_name
    if t.runtime_class_name:
        pod_spec["runtimeClassName"] = t.runtime_class_name
    if t.security_context:
        pod_spec["securityContext"] = _copy(t.security_context)
    if t.resource_claims:
        pod_spec["resourceClaims"] = [
            c.model_dump(by_alias=True, exclude_none=True) for c in t.resource_claims
        ]
    if t.scheduling_gates:
        pod_spec["schedulingGates"] = [{"name": g.name} for g in t.scheduling_gates]


def _resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """Resource requirements with every quantity a string (``1`` → ``"1"``), as the API types them."""
    out = _copy(resources)
    for section in ("limits", "requests"):
        if isinstance(out.get(section), dict):
            out[section] = {k: str(v) for k, v in out[section].items()}
    return dict(out)


def _copy(value: Any) -> Any:
    """A deep copy of plain JSON data (spec sub-objects are shared by every rendered pod)."""
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value
