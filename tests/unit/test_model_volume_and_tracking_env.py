"""A trial pod for tracking (its run name, a tracker's credentials from a Secret) and, on a cluster,
``trainer.saveModel`` on a volume the template mounts."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError, check_model_volume, check_runtime

from tests.unit.test_pods import SEED, env_of, pod_for

MOUNTED = {
    "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "hpo-models"}}],
    "volumeMounts": [{"name": "models", "mountPath": "/models"}],
}


def spec_with(save_model: Any, **template: Any) -> Any:
    raw = copy.deepcopy(SEED["spec"])
    raw["trainer"]["saveModel"] = save_model
    raw["template"].update(template)
    return parse_spec(raw)


def test_the_pod_names_the_trials_run_and_takes_tracker_credentials_from_a_secret() -> None:
    secret = {"secretKeyRef": {"name": "mlflow-credentials", "key": "password"}}
    raw = copy.deepcopy(SEED["spec"])
    raw["trainer"].setdefault("arguments", {})["report_to"] = "mlflow"
    raw["template"]["env"] = [
        {"name": "MLFLOW_TRACKING_URI", "value": "https://mlflow.example"},
        {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": secret},
    ]
    env = env_of(pod_for(parse_spec(raw), trial=4, attempt=1))
    assert env["HPO_RUN_NAME"] == "nli-distilbert-trial-4"  # the attempt is not in the run's name
    assert env["MLFLOW_TRACKING_PASSWORD"] == secret  # the password stays in the Secret


def test_the_run_name_variable_is_the_operators() -> None:
    raw = copy.deepcopy(SEED["spec"])
    raw["template"]["env"] = [{"name": "HPO_RUN_NAME", "value": "mine"}]
    with pytest.raises(SpecError) as e:
        parse_spec(raw)
    assert "spec.template.env[0]" in str(e.value)


@pytest.mark.parametrize(
    ("save_model", "template"),
    [
        ({"path": "/models/nli", "mode": "best"}, MOUNTED),
        ("/models", MOUNTED),
        ({"path": "keep", "mode": "all"}, {**MOUNTED, "outputDir": "/models/out"}),
        ({"path": "/tmp/anywhere", "mode": "none"}, {}),  # saves nothing
    ],
)
def test_a_model_saved_on_a_mounted_volume_is_accepted(save_model: Any, template: dict[str, Any]) -> None:
    spec = spec_with(save_model, **template)
    check_model_volume(spec)
    check_runtime(spec, default_image="img", default_storage=True)


@pytest.mark.parametrize(
    ("save_model", "template", "field", "words"),
    [
        (
            {"path": "/scratch/models", "mode": "best"},
            MOUNTED,
            "spec.trainer.saveModel.path",
            "'/scratch/models' is not on a volume the template mounts (spec.template.volumeMounts: /models)",
        ),
        ("/models", {}, "spec.trainer.saveModel", "volumeMounts: none"),
        ({"path": "rel"}, MOUNTED, "spec.trainer.saveModel.path", "spec.template.outputDir is not set"),
        (
            {"path": "rel"},
            {"outputDir": "/out"},
            "spec.trainer.saveModel.path",
            "'/out/rel' is not on a volume",
        ),
        ({"path": "/modelsx"}, MOUNTED, "spec.trainer.saveModel.path", "'/modelsx' is not on a volume"),
        (
            {"path": "/scratch/m"},
            {
                "volumes": [{"name": "scratch", "emptyDir": {}}],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            },
            "spec.trainer.saveModel.path",
            "'/scratch/m' is on the emptyDir volume 'scratch', which is deleted with the trial's pod",
        ),
    ],
)
def test_a_model_the_pod_would_take_with_it_is_refused_on_a_cluster(
    save_model: Any, template: dict[str, Any], field: str, words: str
) -> None:
    spec = spec_with(save_model, **template)  # valid as a manifest: hpo run saves to a local directory
    with pytest.raises(SpecError) as e:
        check_runtime(spec, default_image="img", default_storage=True)
    assert str(e.value).startswith(f"{field}: "), str(e.value)
    assert words in str(e.value)


def test_an_unknown_save_model_mode_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError) as e:
        spec_with({"path": "/models", "mode": "latest"}, **MOUNTED)
    assert "spec.trainer.saveModel.mode: must be one of all, best, none; got 'latest'" in str(e.value)
