"""The chart with several operator replicas: leader election on a Lease, the RBAC it needs, the rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.chart.test_chart import by_kind, operator_deployment, operator_env, render, rules_of, schema_error
from tests.harness.helm import Helm

LEADER_ENV = {
    "HPO_LEADER_ELECTION",
    "HPO_LEADER_ELECTION_LEASE",
    "HPO_LEASE_DURATION",
    "HPO_LEASE_RENEW_DEADLINE",
    "HPO_LEASE_RETRY_PERIOD",
    "HPO_IDENTITY",
}


def leader_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in by_kind(docs, "Role") if d["metadata"]["name"].endswith("-leader")]


def test_one_replica_by_default_needs_no_lease(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart)
    deployment = operator_deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not set(operator_env(docs)) & LEADER_ENV
    assert not leader_roles(docs)
    assert ("coordination.k8s.io", "leases", "create") not in rules_of(docs, "ClusterRole")


def test_two_replicas_elect_a_leader_on_a_lease_in_the_release_namespace(helm: Helm, chart: Path) -> None:
    docs = render(helm, chart, "operator.replicas=2")
    deployment = operator_deployment(docs)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate"}  # a new pod starts on standby
    env = operator_env(docs)
    assert env["HPO_LEADER_ELECTION"] == {"value": "true"}
    assert env["HPO_LEADER_ELECTION_LEASE"] == {"value": "hpo-system/rel-hpo-operator-leader"}
    assert env["HPO_LEASE_DURATION"] == {"value": "15"}
    assert env["HPO_LEASE_RENEW_DEADLINE"] == {"value": "10"}
    assert env["HPO_LEASE_RETRY_PERIOD"] == {"value": "2"}
    assert env["HPO_IDENTITY"] == {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}

    (role,) = leader_roles(docs)
    assert role["metadata"]["namespace"] == "hpo-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["rel-hpo-operator-leader"],
            "verbs": ["get", "update"],
        },
    ]
    (binding,) = [
        b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"] == "rel-hpo-operator-leader"
    ]
    assert binding["roleRef"]["name"] == "rel-hpo-operator-leader"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-hpo-operator", "namespace": "hpo-system"}
    ]
    # No CRD beyond the HPOStudy: a Lease is a built-in kind (no kopf peering objects).
    assert {d["metadata"]["name"] for d in by_kind(docs, "CustomResourceDefinition")} == {
        "hpostudies.hpo.dev"
    }


def test_leader_election_with_one_replica_and_custom_timings(helm: Helm, chart: Path) -> None:
    docs = render(
        helm,
        chart,
        "operator.leaderElection.enabled=true",
        "operator.leaderElection.leaseDuration=30",
        "operator.leaderElection.renewDeadline=20",
        "operator.leaderElection.retryPeriod=5",
    )
    env = operator_env(docs)
    assert operator_deployment(docs)["spec"]["replicas"] == 1
    assert (env["HPO_LEASE_DURATION"], env["HPO_LEASE_RENEW_DEADLINE"], env["HPO_LEASE_RETRY_PERIOD"]) == (
        {"value": "30"},
        {"value": "20"},
        {"value": "5"},
    )
    assert leader_roles(docs)
    assert not leader_roles(render(helm, chart, "operator.replicas=2", "rbac.create=false"))


def test_lease_timings_that_would_let_two_replicas_act_are_refused(helm: Helm, chart: Path) -> None:
    message = schema_error(helm, chart, "operator.replicas=2", "operator.leaderElection.renewDeadline=15")
    assert (
        "operator.leaderElection.leaseDuration must be longer than operator.leaderElection.renewDeadline"
        in message
    )
    message = schema_error(helm, chart, "operator.replicas=2", "operator.leaderElection.retryPeriod=10")
    assert (
        "operator.leaderElection.renewDeadline must be longer than operator.leaderElection.retryPeriod"
        in message
    )
    assert "/operator/leaderElection/leaseDuration" in schema_error(
        helm, chart, "operator.leaderElection.leaseDuration=1.5"
    )
