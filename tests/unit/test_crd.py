"""The HPOStudy CRD: a structural schema that documents every field, accepts the seed example, and
agrees with the operator's spec parser (checked offline, then against the real API server)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hpo_operator.core import names
from hpo_operator.core.spec import SpecError, parse_spec
from kubernetes import client
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "hpo.dev_hpostudies.yaml"
CRD = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SEED = yaml.safe_load((ROOT / "examples" / "seed-study.yaml").read_text())
VALUE_VALIDATIONS = ("allOf", "anyOf", "oneOf", "not")
# Not allowed inside allOf/anyOf/oneOf/not of a structural schema.
FORBIDDEN_IN_VALUE_VALIDATIONS = ("type", "description", "default", "additionalProperties", "nullable")


# ------------------------------------------------------------------------------------- offline


def test_names_and_printer_columns() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "hpostudies.hpo.dev"
    assert (spec["group"], spec["scope"]) == (names.GROUP, "Namespaced")
    assert spec["names"]["kind"] == names.KIND and spec["names"]["plural"] == names.PLURAL
    assert spec["names"]["shortNames"] == ["hps"]
    assert "hpo" in spec["names"]["categories"]
    assert VERSION["name"] == names.VERSION and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert columns["Phase"]["jsonPath"] == ".status.phase"
    assert columns["Trials"]["jsonPath"] == ".status.progress"
    assert columns["Best"]["jsonPath"] == ".status.bestValue" and columns["Best"]["type"] == "number"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def value_validation_nodes(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for key in ("properties",):
            for child in (node.get(key) or {}).values():
                yield from value_validation_nodes(child)
        for key in VALUE_VALIDATIONS:
            sub = node.get(key)
            for child in sub if isinstance(sub, list) else [sub] if sub else []:
                yield from value_validation_nodes(child)


def test_the_schema_is_structural() -> None:
    for path, node in walk(SCHEMA):
        untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert node.get("type") or untyped_ok, f"{path or '<root>'} has no type"
        for key in VALUE_VALIDATIONS:
            sub = node.get(key)
            for branch in sub if isinstance(sub, list) else [sub] if sub else []:
                for inner in value_validation_nodes(branch):
                    bad = [k for k in FORBIDDEN_IN_VALUE_VALIDATIONS if k in inner]
                    # int-or-string quantities may name their types in anyOf (as Kubernetes' own do)
                    if node.get("x-kubernetes-int-or-string"):
                        bad = [k for k in bad if k != "type"]
                    assert not bad, f"{path}.{key} sets {bad}"
                    for name in inner.get("properties") or {}:
                        assert name in (node.get("properties") or {}), (
                            f"{path}.{key} names unknown field {name}"
                        )
    assert SCHEMA["x-kubernetes-validations"][0]["rule"] == "self.metadata.name.size() <= 40"


def test_every_field_is_described() -> None:
    undocumented = [
        path
        for path, node in walk(SCHEMA)
        if path
        and not path.endswith(("[]", "{}"))
        and path not in (".metadata",)
        and not node.get("description")
    ]
    assert undocumented == []


def test_search_space_and_objectives_are_maps_keyed_by_name() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["searchSpace"]["x-kubernetes-list-type"] == "map"
    assert spec["searchSpace"]["x-kubernetes-list-map-keys"] == ["name"]
    assert spec["objective"]["x-kubernetes-list-map-keys"] == ["metric"]
    assert spec["trainer"]["x-kubernetes-preserve-unknown-fields"] is True


def test_defaults_in_the_schema_are_the_parser_defaults() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    parsed = parse_spec(
        {
            "objective": [{"metric": "m"}],
            "searchSpace": [{"name": "x", "type": "float", "low": 0.0, "high": 1.0}],
            "template": {"command": ["python", "o.py"]},
        }
    )
    trials = spec["trials"]["properties"]
    assert trials["total"]["default"] == parsed.trials.total
    assert trials["parallelism"]["default"] == parsed.trials.parallelism
    assert trials["maxFailed"]["default"] == parsed.trials.max_failed
    assert trials["retries"]["default"] == parsed.trials.retries
    assert spec["sampler"]["properties"]["type"]["default"] == parsed.sampler.type
    assert spec["pruner"]["properties"]["type"]["default"] == parsed.pruner.type
    assert spec["objective"]["items"]["properties"]["direction"]["default"] == parsed.objective[0].direction
    assert (
        spec["storage"]["properties"]["secretRef"]["properties"]["key"]["default"] == names.DEFAULT_SECRET_KEY
    )
    enums = {
        "sampler": spec["sampler"]["properties"]["type"]["enum"],
        "pruner": spec["pruner"]["properties"]["type"]["enum"],
        "param": spec["searchSpace"]["items"]["properties"]["type"]["enum"],
    }
    from hpo_operator.core.spec import PARAM_TYPES, PRUNER_TYPES, SAMPLER_TYPES

    assert enums == {"sampler": list(SAMPLER_TYPES), "pruner": list(PRUNER_TYPES), "param": list(PARAM_TYPES)}


def test_the_seed_example_validates_against_the_openapi_schema() -> None:
    jsonschema.Draft4Validator(SCHEMA).validate(SEED)
    bad = copy.deepcopy(SEED)
    bad["spec"]["trials"]["parallelism"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA).validate(bad)


# ------------------------------------------------------------------------- on the API server


@pytest.fixture(scope="module")
def api(cluster: Any) -> Iterator[client.CustomObjectsApi]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD['metadata']['name']}", "--timeout=60s")
    with cluster.api_client() as api_client:
        yield client.CustomObjectsApi(api_client)


def server_check(api: client.CustomObjectsApi, spec: dict[str, Any], name: str = "check") -> dict[str, Any]:
    """Create (dry run) an HPOStudy; the API server's defaulted object, or ApiException."""
    body = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": name}, "spec": spec}
    return api.create_namespaced_custom_object(  # type: ignore[no-any-return]
        names.GROUP, names.VERSION, "default", names.PLURAL, body, dry_run="All"
    )


def test_the_seed_example_is_accepted_and_its_defaults_parse_the_same(
    api: client.CustomObjectsApi, cluster: Any
) -> None:
    out = cluster.kubectl(
        "apply", "--dry-run=server", "-f", str(ROOT / "examples" / "seed-study.yaml"), "-o", "json"
    )
    stored = json.loads(out.stdout)
    assert parse_spec(stored["spec"]) == parse_spec(SEED["spec"])
    minimal = {
        "objective": [{"metric": "m"}],
        "searchSpace": [{"name": "x", "type": "float", "low": 0, "high": 1}],
        "template": {"command": ["python", "o.py"]},
    }
    defaulted = server_check(api, minimal)["spec"]
    assert defaulted["trials"] == {"total": 10, "parallelism": 1, "maxFailed": 3, "retries": 0}
    assert defaulted["sampler"] == {"type": "TPE"} and defaulted["pruner"] == {"type": "None"}
    assert parse_spec(defaulted) == parse_spec(minimal)


def test_kubectl_explain_reads_well(cluster: Any) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    spec = cluster.kubectl("explain", "hpostudy.spec").stdout
    for field in ("objective", "searchSpace", "trials", "sampler", "pruner", "enqueue", "storage", "trainer"):
        assert f"  {field}\t" in spec
    space = cluster.kubectl("explain", "hpostudy.spec.searchSpace").stdout
    assert "loss.<argument>" in space and "enum: int, float, categorical" in space


def refused_fields(error: ApiException) -> list[str]:
    """The fields an API server's 422 names: its causes' fields, and paths quoted in their messages."""
    status = json.loads(error.body)
    fields = []
    for cause in status.get("details", {}).get("causes", []):
        if cause.get("field") and cause["field"] != "<nil>":
            fields.append(cause["field"])
        fields += re.findall(r'"(spec[^"]*)"', cause.get("message", ""))
    return fields


def seed_with(mutate: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SEED["spec"])
    mutate(spec)
    return spec


# (mutation, the path the parser names, whether the API server refuses it too)
AGREEMENT = [
    (lambda s: s["searchSpace"][2].update(low=0.5, high=0.3), "spec.searchSpace[2].low", True),
    (lambda s: s["searchSpace"][3].update(low=0.0), "spec.searchSpace[3].low", True),
    (lambda s: s["searchSpace"][3].update(step=1e-6), "spec.searchSpace[3].step", True),
    (lambda s: s["searchSpace"][2].update(step=0), "spec.searchSpace[2].step", True),
    (lambda s: s["searchSpace"][2].pop("high"), "spec.searchSpace[2].high", True),
    (lambda s: s["searchSpace"][2].update(type="categorical"), "spec.searchSpace[2].low", True),
    (
        lambda s: s["searchSpace"].append({"name": "seed", "type": "categorical"}),
        "spec.searchSpace[4].choices",
        True,
    ),
    (lambda s: s["searchSpace"][0].update(choices=[1, 2]), "spec.searchSpace[0].choices", True),
    (lambda s: s["searchSpace"][0].update(type="integer"), "spec.searchSpace[0].type", True),
    (lambda s: s["searchSpace"][0].update(name="num train epochs"), "spec.searchSpace[0].name", True),
    (lambda s: s["searchSpace"].append(dict(s["searchSpace"][0])), "spec.searchSpace[4].name", True),
    (lambda s: s.update(searchSpace=[]), "spec.searchSpace", True),
    (lambda s: s["objective"][0].update(direction="max"), "spec.objective[0].direction", True),
    (lambda s: s["objective"].append(dict(s["objective"][0])), "spec.objective[1].metric", True),
    (lambda s: s.update(objective=[]), "spec.objective", True),
    (lambda s: s["trials"].update(total=0), "spec.trials.total", True),
    (lambda s: s["trials"].update(parallelism=0), "spec.trials.parallelism", True),
    (lambda s: s["trials"].update(maxFailed=-1), "spec.trials.maxFailed", True),
    (lambda s: s["trials"].update(retries=-1), "spec.trials.retries", True),
    (lambda s: s["sampler"].update(type="Bayes"), "spec.sampler.type", True),
    (lambda s: s["sampler"].update(type="Grid"), "spec.searchSpace[2]", True),
    (
        lambda s: s.update(objective=[{"metric": "a"}, {"metric": "b"}], sampler={"type": "CMAES"}),
        "spec.sampler.type",
        True,
    ),
    (
        lambda s: s.update(objective=[{"metric": "a"}, {"metric": "b"}], pruner={"type": "Median"}),
        "spec.pruner.type",
        True,
    ),
    (lambda s: s.update(pruner={"type": "Hyperband"}), "spec.pruner.maxResource", True),
    (
        lambda s: s.update(pruner={"type": "Hyperband", "maxResource": 10, "nWarmupSteps": 3}),
        "spec.pruner.nWarmupSteps",
        True,
    ),
    (lambda s: s.update(pruner={"type": "Median", "percentile": 30}), "spec.pruner.percentile", True),
    (lambda s: s.update(pruner={"type": "Percentile", "percentile": 130}), "spec.pruner.percentile", True),
    (
        lambda s: s.update(pruner={"type": "Hyperband", "minResource": 20, "maxResource": 10}),
        "spec.pruner.minResource",
        True,
    ),
    (lambda s: s.update(enqueue=[{"num_train_epochs": 1}] * 21), "spec.enqueue", True),
    (lambda s: s.update(storage={"secretRef": {"key": "url"}}), "spec.storage.secretRef.name", True),
    (
        lambda s: s["template"].update(env=[{"name": "HPO_TRIAL_NUMBER", "value": "1"}]),
        "spec.template.env[0].name",
        True,
    ),
    (lambda s: s["template"].update(imagePullPolicy="Sometimes"), "spec.template.imagePullPolicy", True),
    (lambda s: s["template"].update(command=[]), "spec.template.command", True),
    (lambda s: s.pop("trainer"), "spec.trainer", True),
    # What only the operator can check (it needs Optuna, the search space or the recipe):
    (lambda s: s.update(enqueue=[{"learning_rate": 0.5}]), "spec.enqueue[0].learning_rate", False),
    (lambda s: s.update(enqueue=[{"dropout": 0.5}]), "spec.enqueue[0].dropout", False),
    (
        lambda s: s["sampler"].update(options={"population_size": 10}),
        "spec.sampler.options.population_size",
        False,
    ),
    (lambda s: s["searchSpace"][0].update(low=1.5), "spec.searchSpace[0].low", False),
    (lambda s: s["trainer"]["loss"].update(name="NoSuchLoss"), "spec.trainer.loss.name", False),
]


@pytest.mark.parametrize(("mutate", "path", "server_refuses"), AGREEMENT)
def test_the_parser_and_the_api_server_agree(
    api: client.CustomObjectsApi, mutate: Any, path: str, server_refuses: bool
) -> None:
    spec = seed_with(mutate)
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert info.value.field == path, str(info.value)
    if server_refuses:
        with pytest.raises(ApiException) as refused:
            server_check(api, spec)
        assert refused.value.status == 422
        # The API server names the same field or one holding it (its CEL rules sit on objects).
        fields = refused_fields(refused.value)
        assert any(path == f or path.startswith((f"{f}.", f"{f}[")) for f in fields), (path, fields)
    else:
        server_check(api, spec)


def test_the_name_limit_is_enforced_by_the_api_server(api: client.CustomObjectsApi) -> None:
    server_check(api, copy.deepcopy(SEED["spec"]), name="a" * 40)
    with pytest.raises(ApiException) as refused:
        server_check(api, copy.deepcopy(SEED["spec"]), name="a" * 41)
    assert "at most 40 characters" in refused.value.body


def test_valid_variants_are_accepted_by_both(api: client.CustomObjectsApi) -> None:
    variants = [
        lambda s: s.update(
            sampler={"type": "Grid"},
            searchSpace=[{"name": "x", "type": "int", "low": 1, "high": 3}],
            trials={"total": 3},
        ),
        lambda s: s.update(
            objective=[{"metric": "a"}, {"metric": "b", "direction": "minimize"}],
            sampler={"type": "NSGAII", "options": {"population_size": 10}},
        ),
        lambda s: s.update(
            pruner={"type": "Hyperband", "minResource": 10, "maxResource": 300, "reductionFactor": 3}
        ),
        lambda s: s.update(
            pruner={"type": "Percentile", "percentile": 40, "nStartupTrials": 2, "nWarmupSteps": 50}
        ),
        lambda s: s.update(pruner={"type": "SuccessiveHalving", "minResource": 5, "minEarlyStoppingRate": 1}),
        lambda s: s.update(enqueue=[{"learning_rate": 3e-5, "num_train_epochs": 1}]),
        lambda s: s["searchSpace"].append(
            {"name": "loss.scale", "type": "categorical", "choices": [10, 20.5, "x"]}
        ),
        lambda s: s.update(storage={"secretRef": {"name": "db"}, "deleteStudyOnDelete": True}),
        lambda s: s["template"].update(
            env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            resources={"limits": {"nvidia.com/gpu": 2, "memory": "16Gi"}, "requests": {"cpu": "500m"}},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
            volumes=[{"name": "c", "emptyDir": {}}],
            volumeMounts=[{"name": "c", "mountPath": "/c"}],
            nodeSelector={"gpu": "h100"},
            outputDir="/out",
        ),
        lambda s: s["template"].update(command=["python", "train.py"], args=["--x"]) or s.pop("trainer"),
    ]
    for mutate in variants:
        spec = seed_with(mutate)
        parsed = parse_spec(spec)
        stored = server_check(api, spec)["spec"]
        assert parse_spec(stored) == parsed


def test_crds_directory_applies_with_kubectl(cluster: Any) -> None:
    done = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    assert "hpostudies.hpo.dev" in done.stdout
    with pytest.raises(subprocess.CalledProcessError):
        cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump({**SEED, "spec": {}}))
