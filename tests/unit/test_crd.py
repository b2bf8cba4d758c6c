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
from hpo_operator.core.parse import parse_spec
from hpo_operator.core.spec import SpecError
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


# The CRD's bounds, each with its twin in the parser: a spec just past the bound is refused naming the
# field, one at the bound is accepted. A bound added to the CRD without a twin fails here.
BOUNDS = ("maxItems", "minItems", "maxLength", "minLength", "maximum", "minimum", "pattern")
# A valid spec holding every bounded field (each list item with the fields its bounds are on).
FULL: dict[str, Any] = {
    "objective": [{"metric": "m", "direction": "maximize"}],
    "searchSpace": [
        {"name": "x", "type": "float", "low": 0.0, "high": 1.0},
        {"name": "s", "type": "float", "low": 0.0, "high": 1.0, "step": 0.5},
        {"name": "c", "type": "categorical", "choices": ["a", "b"]},
    ],
    "trials": {"total": 2000, "parallelism": 1, "maxFailed": 3, "retries": 0},
    "sampler": {"type": "TPE"},
    "enqueue": [{}],
    "storage": {"secretRef": {"name": "db", "key": "url"}},
    "gpu": {"deviceClassName": "gpu.nvidia.com", "driverConfig": {"driver": "gpu.nvidia.com"}},
    "template": {
        "image": "img",
        "command": ["python", "o.py"],
        "env": [{"name": "A", "value": "1"}],
        "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "500m"}},
        "volumes": [{"name": "v", "emptyDir": {}}],
        "volumeMounts": [{"name": "v", "mountPath": "/v"}],
        "metadata": {"labels": {"team": "nlp"}, "annotations": {"owner": "a"}},
        "imagePullSecrets": [{"name": "regcred"}],
        "schedulerName": "default-scheduler",
        "runtimeClassName": "nvidia",
        "resourceClaims": [
            {"name": "shared", "resourceClaimName": "c"},
            {"name": "own", "resourceClaimTemplateName": "t"},
        ],
        "schedulingGates": [{"name": "example.com/gate"}],
    },
    "queueName": "team-a",
}
# The pruner each pruner field belongs to (the CRD's CEL rules refuse it under another type).
PRUNER_OF = {
    "nStartupTrials": {"type": "Percentile"},
    "nWarmupSteps": {"type": "Percentile"},
    "intervalSteps": {"type": "Percentile"},
    "nMinTrials": {"type": "Percentile"},
    "percentile": {"type": "Percentile"},
    "minResource": {"type": "Hyperband", "maxResource": 1000},
    "maxResource": {"type": "Hyperband"},
    "reductionFactor": {"type": "Hyperband", "maxResource": 1000},
    "minEarlyStoppingRate": {"type": "SuccessiveHalving"},
    "pThreshold": {"type": "Wilcoxon"},
    "nStartupSteps": {"type": "Wilcoxon"},
    "patience": {"type": "Patient"},
    "minDelta": {"type": "Patient", "patience": 1},
}
# Items of the bounded lists (the i-th one), distinct so that only the bound can be at fault.
ITEM_OF = {
    "objective": lambda i: {"metric": f"m{i}"},
    "searchSpace": lambda i: {"name": f"p{i}", "type": "int", "low": 0, "high": 1},
    "searchSpace[].choices": lambda i: i,
    "enqueue": lambda i: {},
    "template.command": lambda i: "python",
    "template.env": lambda i: {"name": f"E{i}", "value": "v"},
}


def bounds(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path such as ``searchSpace[].name``, keyword, value) for every bound under ``node``."""
    for key in BOUNDS:
        if key in node:
            yield path, key, node[key]
    for name, child in (node.get("properties") or {}).items():
        yield from bounds(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from bounds(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from bounds(node["additionalProperties"], f"{path}{{}}")


SPEC_BOUNDS = list(bounds(SCHEMA["properties"]["spec"]))


def spec_with(path: str, value: Any) -> tuple[dict[str, Any], str]:
    """FULL with ``value`` at ``path`` (in the first list item that has that field), and the path the
    parser names for it."""
    spec = copy.deepcopy(FULL)
    if path.startswith("pruner.wrappedPruner."):
        wrapped = dict(PRUNER_OF[path.split(".")[2]])
        spec["pruner"] = {"type": "Patient", "patience": 1, "wrappedPruner": wrapped}
    elif path.startswith("pruner."):
        spec["pruner"] = dict(PRUNER_OF[path.split(".")[1]])
    node: Any = spec
    where = "spec"
    parts = re.findall(r"[^.\[\]{}]+|\[\]|\{\}", path)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "[]":
            index = next(j for j, item in enumerate(node) if parts[i + 1] in item)
            node, where = node[index], f"{where}[{index}]"
        elif part == "{}":
            key = next(iter(node))
            node[key] = value
            return spec, f"{where}.{key}"
        elif last:
            node[part] = value
        else:
            node = node[part]
        if part not in ("[]", "{}"):
            where = f"{where}.{part}"
    return spec, where


def past_and_at(path: str, keyword: str, bound: Any, node_type: str | None) -> tuple[Any, Any]:
    """A value just past the bound, and one at it (``None``: none to try)."""
    item = ITEM_OF.get(path)
    if keyword == "maxItems":
        assert item is not None, f"no items known for {path}: add them to ITEM_OF"
        return [item(i) for i in range(bound + 1)], [item(i) for i in range(bound)]
    if keyword == "minItems":
        assert item is not None, f"no items known for {path}: add them to ITEM_OF"
        return [item(i) for i in range(bound - 1)], [item(i) for i in range(bound)]
    if keyword == "maxLength":
        return "a" * (bound + 1), "a" * bound
    if keyword == "minLength":
        return "a" * (bound - 1), "a" * bound
    if keyword == "pattern":
        return "9 x", None
    step = 1 if node_type == "integer" else 0.5
    if keyword == "maximum":
        return bound + step, bound
    return bound - step, bound


def node_at(path: str) -> dict[str, Any]:
    return next(node for p, node in walk(SCHEMA["properties"]["spec"]) if p == f".{path}".replace(".[", "["))


def test_every_bound_of_the_crd_is_found() -> None:
    found = {(p, k) for p, k, _ in SPEC_BOUNDS}
    assert ("objective", "maxItems") in found and ("trials.retries", "maximum") in found
    assert ("template.resources.limits{}", "pattern") in found and len(found) > 30


@pytest.mark.parametrize(
    ("path", "keyword", "bound"), SPEC_BOUNDS, ids=[f"{p}:{k}" for p, k, _ in SPEC_BOUNDS]
)
def test_the_parser_enforces_each_bound_of_the_crd(path: str, keyword: str, bound: Any) -> None:
    node = node_at(path)
    if keyword == "minimum" and node.get("exclusiveMinimum"):
        past, at = bound, None
    else:
        past, at = past_and_at(path, keyword, bound, node.get("type"))
    spec, where = spec_with(path, past)
    jsonschema.Draft4Validator(SCHEMA["properties"]["spec"]).validate(FULL)  # the base itself is valid
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA["properties"]["spec"]).validate(spec)  # what the CRD says
    with pytest.raises(SpecError) as refused:
        parse_spec(spec)
    assert refused.value.field == where, str(refused.value)
    if at is not None:
        parse_spec(spec_with(path, at)[0])


def required_fields(node: dict[str, Any], path: str = "") -> Iterator[str]:
    for name in node.get("required") or ():
        yield f"{path}.{name}" if path else name
    for name, child in (node.get("properties") or {}).items():
        yield from required_fields(child, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from required_fields(node["items"], f"{path}[]")


SPEC_REQUIRED = list(required_fields(SCHEMA["properties"]["spec"]))


@pytest.mark.parametrize("path", SPEC_REQUIRED)
def test_the_parser_requires_what_the_crd_requires(path: str) -> None:
    spec, where = spec_with(path, None)
    parent, _, key = path.rpartition(".")
    holder: Any = spec
    for part in re.findall(r"[^.\[\]]+|\[\]", parent):
        holder = holder[0] if part == "[]" else holder[part]  # spec_with picked the first item holding it
    holder.pop(key)
    with pytest.raises(SpecError) as refused:
        parse_spec(spec)
    assert refused.value.field == where, str(refused.value)


def test_resource_quantities_are_checked_as_the_crd_checks_them() -> None:
    from hpo_operator.core.spec import QUANTITY

    pattern = node_at("template.resources.limits{}")["pattern"]
    assert QUANTITY.pattern == pattern == node_at("template.resources.requests{}")["pattern"]
    for good in (2, "2", "500m", "16Gi", "1e3", "0.5"):
        parse_spec(spec_with("template.resources.limits{}", good)[0])
    for bad in (1.5, True, "1 core", "16GB", ""):
        spec, where = spec_with("template.resources.limits{}", bad)
        with pytest.raises(SpecError) as refused:
            parse_spec(spec)
        assert refused.value.field == where == "spec.template.resources.limits.cpu"
        assert "quantity" in str(refused.value)
    # Negative quantities: the CRD's rule refuses them (tests/integration/test_bad_manifests.py shows the
    # API server's words), the parser too, echoing the value.
    rules = node_at("template.resources.limits{}")["x-kubernetes-validations"]
    assert rules == node_at("template.resources.requests{}")["x-kubernetes-validations"]
    assert "self >= 0" in rules[0]["rule"] and "startsWith('-')" in rules[0]["rule"]
    for bad, echoed in (("-1", "'-1'"), (-2, "-2"), ("-500m", "'-500m'")):
        with pytest.raises(SpecError) as refused:
            parse_spec(spec_with("template.resources.limits{}", bad)[0])
        assert str(refused.value) == (
            f"spec.template.resources.limits.cpu: {echoed} is negative; a resource quantity must be 0 or more"
        )
    parse_spec(spec_with("template.resources.limits{}", "0")[0])
    many = copy.deepcopy(FULL)
    many["template"]["resources"]["requests"] = {f"example.com/r{i}": "1" for i in range(17)}
    with pytest.raises(SpecError, match=r"^spec.template.resources.requests: at most 16 resources, got 17$"):
        parse_spec(many)
    assert node_at("template.resources.requests")["maxProperties"] == 16


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
    assert defaulted["trials"] == {"total": 10, "parallelism": 1, "maxFailed": 3, "retries": 0, "perGPU": 1}
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


# Two metrics the seed's evaluator logs, for multi-objective variants of the seed (the parser refuses an
# objective metric the recipe's evaluator cannot log).
TWO_SEED_METRICS = [{"metric": "eval_sts-dev_spearman_cosine"}, {"metric": "eval_sts-dev_pearson_cosine"}]

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
        lambda s: s.update(objective=TWO_SEED_METRICS, sampler={"type": "CMAES"}),
        "spec.sampler.type",
        True,
    ),
    (
        lambda s: s.update(objective=TWO_SEED_METRICS, pruner={"type": "Median"}),
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
    (lambda s: s.update(pruner={"type": "Threshold"}), "spec.pruner.lower", True),
    (lambda s: s.update(pruner={"type": "Threshold", "lower": 2, "upper": 1}), "spec.pruner.lower", True),
    (lambda s: s.update(pruner={"type": "Wilcoxon", "patience": 2}), "spec.pruner.patience", True),
    (lambda s: s.update(pruner={"type": "Wilcoxon", "pThreshold": 2}), "spec.pruner.pThreshold", True),
    (lambda s: s.update(pruner={"type": "Patient"}), "spec.pruner.patience", True),
    (
        lambda s: s.update(pruner={"type": "Patient", "patience": 1, "minDelta": -1}),
        "spec.pruner.minDelta",
        True,
    ),
    (
        lambda s: s.update(
            pruner={"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Median", "percentile": 3}}
        ),
        "spec.pruner.wrappedPruner.percentile",
        True,
    ),
    (
        lambda s: s.update(pruner={"type": "Patient", "patience": 1, "wrappedPruner": {"type": "Patient"}}),
        "spec.pruner.wrappedPruner.type",
        True,
    ),
    (lambda s: s["sampler"].update(type="BruteForce"), "spec.searchSpace[2]", False),
    (lambda s: s.update(enqueue=[{"num_train_epochs": 1}] * 21), "spec.enqueue", True),
    (lambda s: s.update(storage={"secretRef": {"key": "url"}}), "spec.storage.secretRef.name", True),
    (
        lambda s: s["template"].update(env=[{"name": "HPO_TRIAL_NUMBER", "value": "1"}]),
        "spec.template.env[0].name",
        True,
    ),
    (lambda s: s["template"].update(imagePullPolicy="Sometimes"), "spec.template.imagePullPolicy", True),
    (lambda s: s["template"].update(command=[]), "spec.template.command", True),
    (lambda s: s["trials"].update(retries=101), "spec.trials.retries", True),
    (lambda s: s["objective"][0].update(metric="m" * 257), "spec.objective[0].metric", True),
    (lambda s: s["searchSpace"][0].update(name="n" * 129), "spec.searchSpace[0].name", True),
    (lambda s: s["template"].update(image=""), "spec.template.image", True),
    (
        lambda s: s["template"].update(resources={"limits": {"memory": "16 GB"}}),
        "spec.template.resources.limits.memory",
        True,
    ),
    (lambda s: s["template"].update(volumes=[{"emptyDir": {}}]), "spec.template.volumes[0].name", True),
    (lambda s: s.pop("trainer"), "spec.trainer", True),
    (lambda s: s["searchSpace"][0].update(low=1.5), "spec.searchSpace[0].low", True),
    (lambda s: s["trainer"].update(modelDtype="fp16"), "spec.trainer.modelDtype", True),
    (lambda s: s["trainer"].update(kind="ColBERT"), "spec.trainer.kind", True),
    # What only the operator can check (it needs Optuna, the search space or the recipe):
    (lambda s: s.update(enqueue=[{"learning_rate": 0.5}]), "spec.enqueue[0].learning_rate", False),
    (lambda s: s.update(enqueue=[{"dropout": 0.5}]), "spec.enqueue[0].dropout", False),
    (
        lambda s: s["sampler"].update(options={"population_size": 10}),
        "spec.sampler.options.population_size",
        False,
    ),
    (lambda s: s["trainer"]["loss"].update(name="NoSuchLoss"), "spec.trainer.loss.name", False),
    (
        lambda s: s["objective"][0].update(metric="eval_sts-dev_spearman_cosin"),
        "spec.objective[0].metric",
        False,
    ),
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
            searchSpace=[{"name": "num_train_epochs", "type": "int", "low": 1, "high": 3}],
            trials={"total": 3},
        ),
        lambda s: s.update(
            objective=[TWO_SEED_METRICS[0], {**TWO_SEED_METRICS[1], "direction": "minimize"}],
            sampler={"type": "NSGAII", "options": {"population_size": 10}},
        ),
        lambda s: s.update(
            pruner={"type": "Hyperband", "minResource": 10, "maxResource": 300, "reductionFactor": 3}
        ),
        lambda s: s.update(
            pruner={"type": "Percentile", "percentile": 40, "nStartupTrials": 2, "nWarmupSteps": 50}
        ),
        lambda s: s.update(pruner={"type": "SuccessiveHalving", "minResource": 5, "minEarlyStoppingRate": 1}),
        lambda s: s.update(pruner={"type": "Wilcoxon", "pThreshold": 0.05, "nStartupSteps": 3}),
        lambda s: s.update(pruner={"type": "Threshold", "lower": 0.1, "upper": 0.9, "nWarmupSteps": 50}),
        lambda s: s.update(
            pruner={
                "type": "Patient",
                "patience": 2,
                "minDelta": 0.001,
                "wrappedPruner": {"type": "Median", "nStartupTrials": 2, "nWarmupSteps": 50},
            }
        ),
        lambda s: s.update(sampler={"type": "NSGAIII", "seed": 1, "options": {"population_size": 10}}),
        lambda s: s.update(sampler={"type": "GP", "options": {"n_startup_trials": 4}}),
        lambda s: s.update(enqueue=[{"learning_rate": 3e-5, "num_train_epochs": 1}]),
        lambda s: s["searchSpace"].append(
            {"name": "loss.scale", "type": "categorical", "choices": [10, 20.5]}
        ),
        lambda s: s["trainer"].update(modelDtype="bfloat16"),
        # Choices of mixed scalar types, for a custom container (the recipe checks loss.scale's type).
        lambda s: (
            s["template"].update(command=["python", "train.py"])
            or s.pop("trainer")
            or s["searchSpace"].append({"name": "mixed", "type": "categorical", "choices": [10, 20.5, "x"]})
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
