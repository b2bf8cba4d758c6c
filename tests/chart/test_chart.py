"""The Helm chart without a cluster: lint, schemas, rendered manifests and their Kubernetes validity.

`helm template` output is validated with kubernetes-validate against the JSON schemas of Kubernetes
1.37.0 (the harness's control plane runs 1.37.2; kubernetes-validate 1.37.0 ships schemas up to
1.37.0, the closest), in strict mode, so an unknown or misspelt field fails as the API server would.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.harness.helm import KUBE_VERSION, Helm, HelmError

ROOT = Path(__file__).resolve().parents[2]
KUBE_SCHEMA_VERSION = f"{KUBE_VERSION}.0"

# Value sets (`--set` arguments) that cover every template branch.
SETS: dict[str, list[str]] = {
    "defaults": [],
    "namespaced-dashboard-servicemonitor": [
        "operator.watchNamespaces={team-a,team-b}",
        "dashboard.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
        "postgresql.persistence.enabled=false",
    ],
    "external-storage": [
        "storage.mode=external",
        "storage.external.existingSecret=my-db",
        "storage.external.key=dsn",
        "dashboard.enabled=true",
        "image.digest=sha256:" + "a" * 64,
    ],
    "ha-two-replicas": [
        "operator.replicas=2",
        "operator.watchNamespaces={team-a}",
        "operator.leaderElection.leaseDuration=20",
    ],
    "no-default-storage-no-metrics": [
        "storage.mode=none",
        "metrics.enabled=false",
        "operator.replicas=0",
        "serviceAccount.create=false",
        "serviceAccount.name=existing",
    ],
}


def set_args(sets: tuple[str, ...] | list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def render(helm: Helm, chart: Path, *sets: str, namespace: str = "hpo-system") -> list[dict[str, Any]]:
    """The manifests `helm template` renders (CRDs included) with ``key=value`` settings."""
    out = helm("template", "rel", str(chart), "--namespace", namespace, "--include-crds", *set_args(sets))
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def schema_error(helm: Helm, chart: Path, *sets: str) -> str:
    """The error `helm template` fails with for these settings."""
    with pytest.raises(HelmError) as err:
        helm("template", "rel", str(chart), *set_args(sets))
    return str(err.value)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def rules_of(docs: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) granted by the objects of ``kind``."""
    granted = set()
    for role in by_kind(docs, kind):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        granted.add((group, resource, verb))
    return granted


# What the operator does with the Kubernetes API (docs/architecture.md; operator/hpo_operator/shell):
# studies and their status, trial pods, the storage Secret, Events.
OPERATOR_NEEDS = {
    ("hpo.dev", "hpostudies", "get"),
    ("hpo.dev", "hpostudies", "list"),
    ("hpo.dev", "hpostudies", "watch"),
    ("hpo.dev", "hpostudies", "patch"),
    ("hpo.dev", "hpostudies/status", "get"),
    ("hpo.dev", "hpostudies/status", "patch"),
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods", "create"),
    ("", "pods", "delete"),
    ("", "secrets", "get"),
    ("", "secrets", "create"),
    ("", "secrets", "patch"),
    ("", "events", "create"),
    ("resource.k8s.io", "resourceclaims", "list"),
    ("resource.k8s.io", "resourceclaims", "create"),
    ("resource.k8s.io", "resourceclaims", "delete"),
}
# What kopf itself reads to find its resources (templates/rbac-framework.yaml): CRDs in both modes,
# Namespaces only when it watches a list of namespaces. Cluster-scoped objects, so ClusterRoles.
KOPF_NEEDS = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
KOPF_NAMESPACED_NEEDS = {("", "namespaces", "list"), ("", "namespaces", "watch")}
# DeviceClasses are cluster-scoped: read (the one a study's GPU claims name) whatever watchNamespaces says.
DEVICE_CLASS_NEEDS = {("resource.k8s.io", "deviceclasses", "get")}


@pytest.mark.parametrize("variant", sorted(SETS))
def test_helm_lint_passes(helm: Helm, chart: Path, variant: str) -> None:
    result = helm("lint", str(chart), "--strict", *set_args(SETS[variant]))
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("variant", sorted(SETS))
def test_rendered_manifests_validate_against_kubernetes_schemas(
    helm: Helm, chart: Path, variant: str
) -> None:
    docs = render(helm, chart, *SETS[variant])
    assert docs
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            validated = kubernetes_validate.validate(doc, KUBE_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Only the Prometheus Operator's ServiceMonitor has no schema among the built-in kinds.
            assert doc["apiVersion"] == "monitoring.coreos.com/v1", f"no Kubernetes schema for {name}"
            continue
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name} is not valid Kubernetes {KUBE_SCHEMA_VERSION}: {path}: {e.message}")
        assert validated == KUBE_VERSION


def test_schema_rejects_a_wrong_value_type_with_a_clear_message(helm: Helm, chart: Path) -> None:
    message = schema_error(helm, chart, "operator.replicas=abc")
    assert "at '/operator/replicas': got string, want integer" in message


def test_schema_rejects_an_unknown_value(helm: Helm, chart: Path) -> None:
    message = schema_error(helm, chart, "operator.replica=1")
    assert "at '/operator': additional properties 'replica' not allowed" in message


def test_schema_refuses_a_negative_replica_count(helm: Helm, chart: Path) -> None:
    # More than one is allowed: the replicas then elect a leader (tests/chart/test_ha.py).
    message = schema_error(helm, chart, "operator.replicas=-1")
    assert "/operator/replicas" in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("storage.mode=sqlite", "/storage/mode"),
        ("operator.watchNamespaces={Team_A}", "/operator/watchNamespaces/0"),
        ("metrics.port=70000", "/metrics/port"),
        ("postgresql.username=Robert'); DROP", "/postgresql/username"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("operator.reconcileInterval=0", "/operator/reconcileInterval"),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(
    helm: Helm, chart: Path, setting: str, expected: str
) -> None:
    assert f"at '{expected}'" in schema_error(helm, chart, setting)


def test_external_storage_needs_a_secret_name(helm: Helm, chart: Path) -> None:
    message = schema_error(helm, chart, "storage.mode=external")
    assert "storage.external.existingSecret is required when storage.mode is external" in message


def test_dashboard_needs_a_default_storage(helm: Helm, chart: Path) -> None:
    message = schema_error(helm, chart, "storage.mode=none", "dashboard.enabled=true")
    assert "dashboard.enabled needs a default storage" in message


def _value_keys(values_text: str) -> Iterator[tuple[tuple[str, ...], bool]]:
    """(key path, has a comment line right above) for every mapping key in values.yaml."""
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in values_text.splitlines():
        match = re.match(r"^( *)([A-Za-z][\w.-]*):(\s.*)?$", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            yield tuple(k for _, k in stack), previous.lstrip().startswith("#")
        if line.strip():
            previous = line


def _schema_node(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for key in path:
        if node is None or node.get("additionalProperties") is not False or "$comment" in node:
            # Inside a Kubernetes object passed through as is (securityContext), or one the schema
            # closes but Kubernetes documents (resources, marked with "$comment").
            return None
        node = node["properties"].get(key)
    return None if node is None or "$comment" in node else node


def test_every_chart_value_is_documented_and_in_the_schema(chart: Path) -> None:
    schema = json.loads((chart / "values.schema.json").read_text())
    seen: set[tuple[str, ...]] = set()
    for path, commented in _value_keys((chart / "values.yaml").read_text()):
        parent = _schema_node(schema, path[:-1])
        if parent is None or parent.get("additionalProperties") is not False:
            continue  # a key of a Kubernetes object (resources.requests.cpu), not a chart value
        assert path[-1] in parent["properties"], f"{'.'.join(path)} is in values.yaml but not in the schema"
        assert commented, f"{'.'.join(path)} has no comment above it in values.yaml"
        assert parent["properties"][path[-1]].get("description"), f"{'.'.join(path)} has no description"
        seen.add(path)

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for key, child in node.get("properties", {}).items():
            yield (*path, key)
            if child.get("additionalProperties") is False and "$comment" not in child:
                yield from walk(child, (*path, key))

    missing = [".".join(p) for p in walk(schema, ()) if p not in seen and p != ("global",)]
    assert not missing, f"in the schema but without a default in values.yaml: {missing}"


def test_every_schema_object_refuses_unknown_keys(chart: Path) -> None:
    schema = json.loads((chart / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((chart / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        # A chart-level mapping (not a free-form Kubernetes object) must close its key set.
        if isinstance(value, dict) and node.get("properties"):
            assert node.get("additionalProperties") is False, f"{path or '<root>'} accepts unknown keys"
            for key, child in value.items():
                walk(node["properties"][key], child, f"{path}.{key}".lstrip("."))

    walk(schema, values, "")


def test_cluster_wide_rbac_grants_exactly_what_the_operator_uses(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart)
    assert rules_of(docs, "ClusterRole") == OPERATOR_NEEDS | KOPF_NEEDS | DEVICE_CLASS_NEEDS
    assert not by_kind(docs, "Role")
    bindings = by_kind(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["name"] for r in by_kind(docs, "ClusterRole")}
    assert {b["roleRef"]["name"] for b in bindings} == roles
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "rel-hpo-operator", "namespace": "hpo-system"}
        ]
    for role in by_kind(docs, "ClusterRole"):
        # Each concern's role says why it exists, right above it in the manifest.
        assert role["metadata"]["name"].rsplit("-", 1)[1] in {
            "studies",
            "trials",
            "storage",
            "events",
            "crds",
            "claims",
            "classes",
        }


def test_watch_namespaces_mode_uses_roles_in_those_namespaces_only(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "operator.watchNamespaces={team-a,team-b}")
    # Cluster-wide, only kopf's reading of CRDs and namespace names; studies, pods, Secrets and Events
    # are reachable in the listed namespaces only.
    assert rules_of(docs, "ClusterRole") == KOPF_NEEDS | KOPF_NAMESPACED_NEEDS | DEVICE_CLASS_NEEDS
    assert len(by_kind(docs, "ClusterRoleBinding")) == 3
    roles = by_kind(docs, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    for ns in ("team-a", "team-b"):
        in_ns = [r for r in roles if r["metadata"]["namespace"] == ns]
        assert rules_of(in_ns, "Role") == OPERATOR_NEEDS
    for binding in by_kind(docs, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == "hpo-system"
    env = operator_env(docs)
    assert env["HPO_WATCH_NAMESPACES"] == {"value": "team-a,team-b"}


def test_no_rbac_objects_when_rbac_create_is_false(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "rbac.create=false")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "rel-hpo-operator")


def operator_env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    container = operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: {k: v for k, v in e.items() if k != "name"} for e in container["env"]}


def test_operator_pod_is_single_replica_probed_and_locked_down(helm: Helm, chart: Path) -> None:
    deployment = operator_deployment(render(helm, chart))
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "rel-hpo-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8000, "report": 8090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = operator_env([deployment])
    assert env["HPO_LIVENESS_ENDPOINT"] == {"value": "http://0.0.0.0:8080/healthz"}
    assert env["HPO_METRICS_PORT"] == {"value": "8000"}
    assert env["HPO_TRIAL_IMAGE"] == {"value": "ghcr.io/hpo-dev/hpo-trial:0.1.0"}
    assert container["image"] == "ghcr.io/hpo-dev/hpo-operator:0.1.0"


def test_operator_environment_is_the_documented_configuration(helm: Helm, chart: Path) -> None:
    documented = set(re.findall(r"^\| `(HPO_[A-Z_]+)` \|", (ROOT / "docs/architecture.md").read_text(), re.M))
    assert len(documented) >= 6
    for variant in SETS.values():
        names = set(operator_env(render(helm, chart, *variant)))
        assert names <= documented, f"the chart sets undocumented variables {names - documented}"
    every = set().union(*(operator_env(render(helm, chart, *variant)) for variant in SETS.values()))
    assert every == documented  # each documented variable is set by some variant (the Lease's: with HA)


def test_bundled_storage_url_is_shared_by_operator_and_dashboard(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "dashboard.enabled=true")
    secret = one(docs, "Secret", "rel-hpo-operator-postgresql")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert re.fullmatch(r"[A-Za-z0-9]{32}", data["password"])
    assert data["url"] == (
        f"postgresql+psycopg2://hpo:{data['password']}@rel-hpo-operator-postgresql.hpo-system.svc:5432/hpo"
    )
    ref = {"secretKeyRef": {"name": "rel-hpo-operator-postgresql", "key": "url"}}
    assert operator_env(docs)["HPO_DEFAULT_STORAGE_URL"] == {"valueFrom": ref}
    dashboard = one(docs, "Deployment", "rel-hpo-operator-dashboard")["spec"]["template"]["spec"]
    (container,) = dashboard["containers"]
    assert {"name": "HPO_STORAGE_URL", "valueFrom": ref} in container["env"]
    assert container["args"] == ["$(HPO_STORAGE_URL)"]
    statefulset = one(docs, "StatefulSet", "rel-hpo-operator-postgresql")
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    one(docs, "Service", "rel-hpo-operator-postgresql")
    one(docs, "Service", "rel-hpo-operator-dashboard")


def test_external_storage_reads_the_named_secret(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, *SETS["external-storage"])
    assert operator_env(docs)["HPO_DEFAULT_STORAGE_URL"] == {
        "valueFrom": {"secretKeyRef": {"name": "my-db", "key": "dsn"}}
    }
    assert not by_kind(docs, "StatefulSet")
    assert "rel-hpo-operator-postgresql" not in {d["metadata"]["name"] for d in docs}


def test_no_default_storage_and_no_metrics(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, *SETS["no-default-storage-no-metrics"])
    env = operator_env(docs)
    assert "HPO_DEFAULT_STORAGE_URL" not in env
    assert env["HPO_METRICS_PORT"] == {"value": "0"}
    assert not [d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-metrics")]
    assert not by_kind(docs, "ServiceAccount")
    assert operator_deployment(docs)["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


def test_metrics_service_and_service_monitor_select_the_operator(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "metrics.serviceMonitor.enabled=true", "metrics.port=9100")
    service = one(docs, "Service", "rel-hpo-operator-metrics")
    pod_labels = operator_deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(docs, "ServiceMonitor", "rel-hpo-operator")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert operator_env(docs)["HPO_METRICS_PORT"] == {"value": "9100"}


def test_long_release_names_keep_object_names_within_63_characters(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "dashboard.enabled=true", "fullnameOverride=" + "x" * 80)
    for doc in docs:
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]


def test_chart_crds_are_byte_identical_copies_of_crds(chart: Path) -> None:
    # crds/ is the one source of truth; scripts/sync-crd copies it into the chart.
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in (chart / "crds").glob("*.yaml")}
    assert source, "crds/ holds no CRD"
    assert sorted(copies) == sorted(source), "charts/hpo-operator/crds/ and crds/ list different files"
    for name, text in source.items():
        assert copies[name] == text, (
            f"charts/hpo-operator/crds/{name} differs from crds/{name}: run scripts/sync-crd"
        )


def test_the_default_device_class_of_gpu_claims_is_a_chart_value(helm: Helm, chart: Path) -> None:
    assert operator_env(render(helm, chart))["HPO_GPU_DEVICE_CLASS"] == {"value": "gpu.nvidia.com"}
    docs = render(helm, chart, "gpu.deviceClassName=mig-1g.10gb.nvidia.com")
    assert operator_env(docs)["HPO_GPU_DEVICE_CLASS"] == {"value": "mig-1g.10gb.nvidia.com"}
    assert "at '/gpu/deviceClassName'" in schema_error(helm, chart, "gpu.deviceClassName=Not A Name")


def test_trial_pods_reach_the_report_endpoint_through_a_service(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "operator.replicas=2")
    service = one(docs, "Service", "rel-hpo-operator-report")
    deployment = one(docs, "Deployment", "rel-hpo-operator")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    # Every replica (standbys too) is behind it.
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "report", "port": 8090, "targetPort": "report", "protocol": "TCP"}
    ]
    env = operator_env(docs)
    assert env["HPO_REPORT_PORT"] == {"value": "8090"}
    assert env["HPO_REPORT_URL"] == {"value": "http://rel-hpo-operator-report.hpo-system.svc:8090"}
    off = render(helm, chart, "reports.enabled=false")
    assert not [d for d in off if d["kind"] == "Service" and d["metadata"]["name"].endswith("-report")]
    assert "HPO_REPORT_PORT" not in operator_env(off) and "HPO_REPORT_URL" not in operator_env(off)
