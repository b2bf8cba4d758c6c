"""The operator's Events read in the order they happened, in ``kubectl describe`` as a user reads them, even
when several come within one second (a trial's end, then the new best trial): kubectl orders Events by
their whole-second ``lastTimestamp`` and keeps the listed order among equal ones, so the operator names
them to list chronologically. Fifteen Events, more than Go's sort handles by insertion alone."""

from __future__ import annotations

import re
from typing import Any

import yaml
from hpo_operator.core import names
from hpo_operator.shell.kube import Kube

from tests.integration.operator_env import ROOT


def test_events_posted_within_one_second_are_described_in_order(
    cluster: Any, namespace: str, crd: None
) -> None:
    docs = yaml.safe_load_all((ROOT / "examples" / "custom-container-study.yaml").read_text())
    body = next(d for d in docs if d["kind"] == names.KIND)
    # No operator runs here: the HPOStudy only owns the Events.
    body["metadata"] = {"name": "ordered", "namespace": namespace}
    kube = Kube(cluster.api_client())
    created = kube.custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.PLURAL, body
    )
    owner = {"namespace": namespace, "name": "ordered", "uid": created["metadata"]["uid"]}
    reasons = [f"Step{i:02d}" for i in range(15)]
    for reason in reasons:
        kube.post_event(owner, "Normal", reason, f"step {reason}")

    described = cluster.kubectl("describe", "hpostudy", "ordered", "-n", namespace).stdout
    shown = re.findall(r"^\s*Normal\s+(Step\d\d)\s", described.split("Events:", 1)[1], re.M)
    assert shown == reasons, described

    listed = cluster.core().list_namespaced_event(namespace).items
    mine = [e for e in listed if e.involved_object.uid == owner["uid"]]
    assert len(mine) == len(reasons)
    # Named to list in the order posted: by name, they are the steps in order.
    assert [e.reason for e in sorted(mine, key=lambda e: e.metadata.name)] == reasons
    assert all(e.reporting_component == "hpo-operator" and e.last_timestamp is not None for e in mine)
