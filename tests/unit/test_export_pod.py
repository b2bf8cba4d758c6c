"""The pod ``hpo export`` copies a model through: the study's volume read-only at the same path, the
trial image, the template's pod policy, owned by the study, and not labelled as a trial."""

from __future__ import annotations

from typing import Any

import pytest
from hpo_operator.core import names
from hpo_operator.core.export import EXPORT_LABEL, NoVolume, export_pod, model_volume


def study(**template: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": "nli", "namespace": "ml", "uid": "u-1"},
        "spec": {"template": template},
    }


MODELS = {"name": "models", "persistentVolumeClaim": {"claimName": "team-models"}}


def test_the_pod_mounts_the_models_volume_read_only_where_the_trials_did() -> None:
    s = study(
        volumes=[{"name": "cache", "emptyDir": {}}, MODELS],
        volumeMounts=[{"name": "cache", "mountPath": "/cache"}, {"name": "models", "mountPath": "/models"}],
        imagePullSecrets=[{"name": "regcred"}],
        securityContext={"runAsUser": 1000, "fsGroup": 1000},
        nodeSelector={"pool": "gpu"},
    )
    pod = export_pod(s, "/models/nli/trial-3", "reg/hpo-trial:1")
    spec = pod["spec"]
    assert spec["volumes"] == [MODELS]
    (container,) = spec["containers"]
    assert container["image"] == "reg/hpo-trial:1"
    assert container["volumeMounts"] == [{"name": "models", "mountPath": "/models", "readOnly": True}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["securityContext"] == {"runAsUser": 1000, "fsGroup": 1000}
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    meta = pod["metadata"]
    assert meta["namespace"] == "ml" and meta["name"].startswith("nli-export-") and len(meta["name"]) <= 63
    assert meta["labels"][EXPORT_LABEL] == "nli"
    assert names.LABEL_STUDY not in meta["labels"]  # the operator's pod watch never sees it as a trial
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (names.KIND, "nli", "u-1")


def test_the_deepest_mount_holding_the_path_wins_and_a_sub_path_is_kept() -> None:
    nested = {"name": "nested", "persistentVolumeClaim": {"claimName": "other"}}
    s = study(
        volumes=[MODELS, nested],
        volumeMounts=[
            {"name": "models", "mountPath": "/models"},
            {"name": "nested", "mountPath": "/models/best/", "subPath": "team-a"},
        ],
    )
    mount, volume = model_volume(s["spec"]["template"], "/models/best/trial-1")
    assert mount["mountPath"] == "/models/best/"
    assert volume == nested
    pod = export_pod(s, "/models/best/trial-1", "img")
    assert pod["spec"]["containers"][0]["volumeMounts"][0]["subPath"] == "team-a"
    # A sibling whose name only starts like the mount is not under it.
    assert model_volume(s["spec"]["template"], "/models/bestest/x")[1] == MODELS


def test_two_exports_of_one_study_get_different_pods() -> None:
    s = study(volumes=[MODELS], volumeMounts=[{"name": "models", "mountPath": "/models"}])
    assert (
        export_pod(s, "/models/a", "img")["metadata"]["name"]
        != export_pod(s, "/models/a", "img")["metadata"]["name"]
    )


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ({}, "on no volume"),
        ({"volumeMounts": [{"name": "models", "mountPath": "/data"}], "volumes": [MODELS]}, "on no volume"),
        ({"volumeMounts": [{"name": "models", "mountPath": "/models"}]}, "no volume of that name"),
    ],
)
def test_a_path_on_no_mounted_volume_is_said(template: dict[str, Any], words: str) -> None:
    with pytest.raises(NoVolume, match=words):
        export_pod(study(**template), "/models/a", "img")
