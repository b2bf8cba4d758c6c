"""The pod through which ``hpo export`` copies a saved model out of a study's volume (pure).

A trial saved its model under ``trainer.saveModel.path`` on a volume the study's template mounts; the
status names the directory (``status.bestTrial.modelPath``). When the machine running ``hpo export``
does not see that volume, the command starts this pod: the same volume mounted read-only at the same
path, the study's trial image (it ran there, so the node can pull it, and it has ``tar``), the
template's pod-level policy (pull Secrets, security context, node placement), owned by the HPOStudy so
that it is garbage-collected with it should the command be killed before it deletes the pod itself.
It carries none of the operator's trial labels: the operator never takes it for a trial.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from hpo_operator.core import names

EXPORT_LABEL = "hpo.dev/export"  # the study the export pod copies from (not hpo.dev/study: not a trial)
EXPORT_SECONDS = 3600  # the pod's own end: it sleeps this long at most, then exits


class NoVolume(ValueError):
    """The path is on no volume the template mounts (or on one that went with the trial's pod)."""


def model_volume(template: Mapping[str, Any], path: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The template's volume mount holding ``path`` (the deepest one) and its volume."""
    mounts = [
        m
        for m in template.get("volumeMounts") or ()
        if (mp := str(m.get("mountPath", "")).rstrip("/")) and (path == mp or path.startswith(mp + "/"))
    ]
    if not mounts:
        raise NoVolume(f"{path} is on no volume the study's template mounts")
    mount = max(mounts, key=lambda m: len(str(m.get("mountPath", ""))))
    volume = next((v for v in template.get("volumes") or () if v.get("name") == mount.get("name")), None)
    if volume is None:
        raise NoVolume(f"the template mounts {mount.get('name')!r} but has no volume of that name")
    return mount, volume


def export_pod(study: Mapping[str, Any], path: str, image: str) -> dict[str, Any]:
    """The pod that mounts the volume holding ``path`` read-only, for ``study`` (an HPOStudy object)."""
    meta = study["metadata"]
    spec = study.get("spec") or {}
    template = spec.get("template") or {}
    mount, volume = model_volume(template, path)
    name = f"{str(meta['name'])[:48].rstrip('-.')}-export-{secrets.token_hex(3)}"  # at most 63
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": "export",
                "image": image,
                "command": ["sleep", str(EXPORT_SECONDS)],
                "volumeMounts": [
                    {
                        "name": str(volume["name"]),
                        "mountPath": str(mount["mountPath"]),
                        **({"subPath": mount["subPath"]} if mount.get("subPath") else {}),
                        "readOnly": True,
                    }
                ],
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            }
        ],
        "volumes": [dict(volume)],
    }
    for key in ("imagePullSecrets", "securityContext", "nodeSelector", "tolerations", "runtimeClassName"):
        if template.get(key):
            pod_spec[key] = template[key]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {EXPORT_LABEL: meta["name"], names.LABEL_MANAGED_BY: names.MANAGER},
            "ownerReferences": [
                {
                    "apiVersion": study.get("apiVersion", names.API_VERSION),
                    "kind": study.get("kind", names.KIND),
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": False,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": pod_spec,
    }
