"""`helm install` against the real control plane (the harness's, or any cluster KUBECONFIG names).

Every install sets ``operator.replicas=0``. The chart's operator pod runs the operator image's
entrypoint, and the harness's node agent runs container commands as local processes without images,
so it would fail that pod over and over. The operator is instead run here as a local process
(test_operator_with_chart.py) with exactly the pod's identity
(a token of the chart's ServiceAccount) and environment (the Deployment's env, Secrets resolved).
For the same reason the bundled PostgreSQL's pod is kept off the node with a nodeSelector.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness.handle import ClusterHandle

from .release import CHART
from .test_chart import DEVICE_CLASS_NEEDS, KOPF_NAMESPACED_NEEDS, KOPF_NEEDS, OPERATOR_NEEDS

ROOT = Path(__file__).resolve().parents[2]
CRD = "hpostudies.hpo.dev"
NO_NODE = "postgresql.nodeSelector.hpo\\.dev/no-such-node=none"


@pytest.fixture
def other_namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A second namespace the operator is not given."""
    name = f"other-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def can_i(cluster: ClusterHandle, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    """`kubectl auth can-i` as ``user``; resource is `plural[.group][/subresource]`."""
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    if sub:
        args.append(f"--subresource={sub}")
    result = cluster.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}"
    return answer == "yes"


def answers(
    cluster: ClusterHandle, user: str, checks: list[tuple[str, str, str | None]]
) -> dict[tuple[str, str, str | None], bool]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(lambda c: can_i(cluster, user, *c), checks)
        return dict(zip(checks, results, strict=True))


def needed(
    namespace: str | None, rules: set[tuple[str, str, str]] = OPERATOR_NEEDS
) -> list[tuple[str, str, str | None]]:
    """``rules`` as can-i checks: (verb, resource[.group][/subresource], namespace)."""
    checks = []
    for group, resource, verb in sorted(rules):
        plural, _, sub = resource.partition("/")
        name = f"{plural}.{group}" if group else plural
        checks.append((verb, f"{name}/{sub}" if sub else name, namespace))
    return checks


def granted_rules(cluster: ClusterHandle, user: str, namespace: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs from `kubectl auth can-i --list` (resource rules only)."""
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace).stdout
    pairs = set()
    for line in out.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[[^\]]*\]\s+\[[^\]]*\]\s+\[([^\]]*)\]\s*$", line)
        if match:
            for verb in match.group(2).split():
                pairs.add((match.group(1), verb))
    return pairs


# What the operator must not be able to do, whatever the mode.
REFUSED = [
    ("delete", "nodes", None),
    ("list", "secrets", None),
    ("update", "secrets", "{ns}"),
    ("delete", "secrets", "{ns}"),
    ("list", "secrets", "{ns}"),
    ("watch", "secrets", "{ns}"),
    ("patch", "pods", "{ns}"),
    ("create", "pods/exec", "{ns}"),
    ("create", "hpostudies.hpo.dev", "{ns}"),
    ("delete", "hpostudies.hpo.dev", "{ns}"),
    ("update", "hpostudies.hpo.dev", "{ns}"),
    ("get", "configmaps", "{ns}"),
    ("create", "deployments.apps", "{ns}"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "{ns}"),
    ("create", "clusterroles.rbac.authorization.k8s.io", None),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("delete", "namespaces", None),
    ("delete", "events", "{ns}"),
]


def test_install_creates_crd_deployment_and_rbac(
    install, cluster: ClusterHandle, namespace: str, other_namespace: str
) -> None:
    release = install(namespace, "storage.mode=none")
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")

    apps = client.AppsV1Api(cluster.api_client())
    deployment = apps.read_namespaced_deployment(release.name, namespace)
    assert deployment.spec.replicas == 0
    assert deployment.spec.template.spec.service_account_name == release.service_account
    cluster.core().read_namespaced_service_account(release.service_account, namespace)
    rbac = client.RbacAuthorizationV1Api(cluster.api_client())
    for concern in ("studies", "trials", "storage", "events", "crds", "claims", "classes"):
        rbac.read_cluster_role(f"{release.name}-{concern}")
        binding = rbac.read_cluster_role_binding(f"{release.name}-{concern}")
        assert binding.subjects[0].name == release.service_account

    # NOTES.txt, as `helm install` prints it, says what to run next.
    assert f"kubectl -n {namespace} rollout status deployment/{release.name}" in release.output
    assert "kubectl explain hpostudy.spec.searchSpace" in release.output
    assert "NOTE: operator.replicas is 0" in release.output
    assert "every study must name a Secret with its storage URL" in release.output

    # Cluster-wide mode: everything the operator needs, in any namespace ...
    checks = needed(namespace) + needed(other_namespace) + needed(None) + needed(None, KOPF_NEEDS)
    refused = [(v, r, ns.format(ns=other_namespace) if ns else None) for v, r, ns in REFUSED]
    refused += needed(None, KOPF_NAMESPACED_NEEDS)  # cluster-wide, kopf needs no namespace list
    got = answers(cluster, release.user, checks + refused)
    assert [c for c in checks if not got[c]] == [], "the operator lacks permissions it needs"
    # ... and nothing it does not use.
    assert [c for c in refused if got[c]] == [], "the operator has permissions it does not need"

    # Exactly: beyond what every authenticated user may do, the grants are what the operator and kopf use.
    baseline = granted_rules(cluster, f"system:serviceaccount:{namespace}:nobody", namespace)
    extra = granted_rules(cluster, release.user, namespace) - baseline
    uses = OPERATOR_NEEDS | KOPF_NEEDS | DEVICE_CLASS_NEEDS
    assert extra == {(resource, verb) for verb, resource, _ in needed(namespace, uses)}


def test_watch_namespaces_mode_grants_only_the_listed_namespaces(
    install, cluster: ClusterHandle, namespace: str, other_namespace: str
) -> None:
    watched = f"watched-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", watched)
    try:
        release = install(namespace, "storage.mode=none", f"operator.watchNamespaces={{{watched}}}")
        rbac = client.RbacAuthorizationV1Api(cluster.api_client())
        cluster_roles = rbac.list_cluster_role(label_selector=f"app.kubernetes.io/instance={release.name}")
        assert {r.metadata.name for r in cluster_roles.items} == {
            f"{release.name}-crds",
            f"{release.name}-namespaces",
            f"{release.name}-classes",  # DeviceClasses are cluster-scoped: read wherever the studies are
        }
        roles = rbac.list_namespaced_role(
            watched, label_selector=f"app.kubernetes.io/instance={release.name}"
        )
        assert len(roles.items) == 5  # studies, trials, storage, events, claims

        checks = needed(watched) + needed(None, KOPF_NEEDS | KOPF_NAMESPACED_NEEDS)
        elsewhere = needed(other_namespace) + needed(namespace) + needed(None)
        refused = [(v, r, ns.format(ns=watched) if ns else None) for v, r, ns in REFUSED]
        got = answers(cluster, release.user, checks + elsewhere + refused)
        assert [c for c in checks if not got[c]] == []
        assert [c for c in elsewhere if got[c]] == [], "the operator reaches beyond its namespaces"
        assert [c for c in refused if got[c]] == []
        assert not got[("get", "secrets", other_namespace)]
        assert "It handles HPOStudies in: " + watched in release.output
    finally:
        cluster.kubectl("delete", "namespace", watched, "--wait=false", check=False)


def test_bundled_database_password_is_kept_across_upgrades(
    install, cluster: ClusterHandle, namespace: str
) -> None:
    release = install(namespace, NO_NODE)
    secret_name = f"{release.name}-postgresql"

    def secret() -> dict[str, str]:
        data = cluster.core().read_namespaced_secret(secret_name, namespace).data
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    first = secret()
    assert re.fullmatch(r"[A-Za-z0-9]{32}", first["password"])
    assert first["url"].startswith(
        f"postgresql+psycopg2://hpo:{first['password']}@{secret_name}.{namespace}.svc:"
    )
    release.helm(
        "upgrade",
        release.name,
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "dashboard.enabled=true",
    )
    assert secret() == first
    apps = client.AppsV1Api(cluster.api_client())
    statefulset = apps.read_namespaced_stateful_set(secret_name, namespace)
    assert statefulset.spec.template.spec.node_selector == {"hpo.dev/no-such-node": "none"}
    dashboard = apps.read_namespaced_deployment(f"{release.name}-dashboard", namespace)
    env = dashboard.spec.template.spec.containers[0].env
    assert env[0].value_from.secret_key_ref.name == secret_name
    # Uninstall keeps the Secret (helm.sh/resource-policy: keep), like the volume it unlocks.
    release.uninstall()
    assert secret() == first


def test_kubectl_explain_describes_the_search_space(install, cluster: ClusterHandle, namespace: str) -> None:
    install(namespace, "storage.mode=none")
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
    out = cluster.kubectl("explain", "hpostudy.spec.searchSpace").stdout
    assert "KIND:       HPOStudy" in out
    assert "FIELD: searchSpace" in out
    assert "DESCRIPTION:" in out


def test_examples_are_accepted_by_the_api_server(install, cluster: ClusterHandle, namespace: str) -> None:
    install(namespace, "storage.mode=none")
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD}", "--timeout=60s")
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        out = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example)).stdout
        assert "hpostudy.hpo.dev/" in out, f"{example.name}: {out}"
