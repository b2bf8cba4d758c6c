"""The examples/ manifests: valid studies by the operator's own parser, and variants that stay variants."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import validate_name

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def studies(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "HPOStudy"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_study_parses(path: Path) -> None:
    found = studies(path)
    assert found, f"{path.name} holds no HPOStudy"
    for study in found:
        assert study["apiVersion"] == "hpo.dev/v1alpha1"
        validate_name(study["metadata"]["name"])
        parse_spec(study["spec"])  # raises SpecError naming the field; checks spec.trainer too


def test_parallel_pruned_variant_differs_from_the_seed_only_in_parallelism_and_pruning() -> None:
    (seed,) = studies(EXAMPLES / "seed-study.yaml")
    (variant,) = studies(EXAMPLES / "seed-study-parallel-pruned.yaml")
    assert variant["spec"]["trials"]["parallelism"] == 4
    assert variant["spec"]["pruner"]["type"] in ("Hyperband", "Median")
    assert variant["spec"]["trainer"]["evalEveryEpochs"] > 0
    # Hyperband's budget is in reporting steps: a hundredth of an epoch, so 100 per epoch.
    max_epochs = next(p["high"] for p in seed["spec"]["searchSpace"] if p["name"] == "num_train_epochs")
    assert variant["spec"]["pruner"]["maxResource"] == 100 * max_epochs

    def without_changes(study: dict[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(study["spec"])
        spec.pop("pruner")
        spec.pop("trials")
        spec["trainer"].pop("evalEveryEpochs", None)
        return spec

    assert without_changes(variant) == without_changes(seed)


def test_small_cpu_study_asks_for_no_gpu() -> None:
    (study,) = studies(EXAMPLES / "small-cpu-study.yaml")
    resources = study["spec"]["template"]["resources"]
    assert "nvidia.com/gpu" not in {**resources.get("requests", {}), **resources.get("limits", {})}
    assert study["spec"]["trainer"]["arguments"]["use_cpu"] is True


def test_custom_container_study_runs_its_script_from_the_config_map() -> None:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "custom-container-study.yaml").read_text()) if d]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (study,) = studies(EXAMPLES / "custom-container-study.yaml")
    template = study["spec"]["template"]
    assert "trainer" not in study["spec"]
    (volume,) = template["volumes"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (mount,) = template["volumeMounts"]
    script = template["command"][-1]
    assert script.startswith(mount["mountPath"] + "/")
    source = config_map["data"][script.rsplit("/", 1)[1]]
    compile(source, script, "exec")
    assert "reporting.current_trial()" in source
