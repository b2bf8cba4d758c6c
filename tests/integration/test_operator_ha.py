"""Two operator replicas with leader election (``HPO_LEADER_ELECTION``) on a real control plane: one acts,
the other waits on standby running no handler; SIGKILL the active one mid-study and the standby takes the
Lease once it expires and finishes the study, with exactly the budget's trials, no trial asked twice and
the two replicas never acting at the same time. A clean stop (SIGTERM) hands over without the wait.

Uses the fixtures of ``conftest.py`` and the helpers of ``operator_env.py``.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from kubernetes import client, watch

from tests.integration.operator_env import (
    TRIALS,
    Operator,
    Pods,
    apply,
    assert_no_secret,
    free_port,
    get_study,
    load_study,
    study_manifest,
    wait_for,
    wait_phase,
)
from tests.integration.test_operator_metrics import of_study, scrape

LEASE = "hpo-operator-leader"
DURATION, RENEW, RETRY = 6, 4.0, 1.0
# A log line: its time and logger (the standby logs only hpo_operator.leader lines until it leads).
LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] (\S+)")


class LeaseWatch:
    """Watches the Lease from the start of a test: every change of holder (every update of it is an event
    of the watch, a release to no holder included), with when it arrived."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.api = client.CoordinationV1Api(cluster.api_client())
        self.namespace = namespace
        self.changes: list[tuple[float, str | None]] = []
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version = None
        while not self._stopped:
            try:
                for event in self._watch.stream(
                    self.api.list_namespaced_lease,
                    self.namespace,
                    field_selector=f"metadata.name={LEASE}",
                    resource_version=version,
                    timeout_seconds=300,
                ):
                    lease = event["object"]
                    version = lease.metadata.resource_version
                    holder = lease.spec.holder_identity if event["type"] != "DELETED" else None
                    if not self.changes or self.changes[-1][1] != holder:
                        self.changes.append((time.monotonic(), holder))
            except Exception:  # the watch ended or broke: resume from the last version seen
                time.sleep(0.1)

    @property
    def holder(self) -> str | None:
        return self.changes[-1][1] if self.changes else None

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


REPORT_PORTS: dict[str, int] = {}  # the replicas of a namespace share their report port (as a Service)


def replica(cluster: Any, namespace: str, storage_url: str, tmp_path: Path, n: int) -> Operator:
    port = REPORT_PORTS.setdefault(namespace, free_port())
    op = Operator(cluster, namespace, storage_url, tmp_path / f"replica-{n}.log", report_port=port)
    op.env.update(
        {
            "HPO_LEADER_ELECTION": "true",
            "HPO_LEADER_ELECTION_LEASE": f"{namespace}/{LEASE}",
            "HPO_LEASE_DURATION": str(DURATION),
            "HPO_LEASE_RENEW_DEADLINE": str(RENEW),
            "HPO_LEASE_RETRY_PERIOD": str(RETRY),
            "HPO_IDENTITY": f"replica-{n}",
        }
    )
    return op


def answers(op: Operator) -> bool:
    """Whether its health endpoint answers (a standby's, or kopf's)."""
    try:
        return op.get(op.liveness_port, "/healthz")[0] == 200
    except OSError:
        return False


def leader_gauge(op: Operator) -> float | None:
    return scrape(op).get(("hpo_operator_leader", ()))


def acting_lines(log: str) -> list[str]:
    """The log lines of kopf and of the operator's handlers and driver (not the Lease's own lines, nor
    the report endpoint's, which every replica serves, standbys included)."""
    return [
        line
        for line in log.splitlines()
        if (m := LINE.match(line))
        and m.group(2).startswith(("kopf", "hpo_operator"))
        and not m.group(2).startswith(("hpo_operator.leader", "hpo_operator.reports"))
    ]


def log_time(line: str) -> dt.datetime:
    m = LINE.match(line)
    assert m, line
    return dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")


def test_killing_the_active_replica_hands_the_study_to_the_standby_without_a_duplicate_trial(
    cluster: Any, namespace: str, storage_url: str, crd: None, pods: Pods, tmp_path: Path
) -> None:
    lease = LeaseWatch(cluster, namespace)
    first, second = (replica(cluster, namespace, storage_url, tmp_path, n) for n in (0, 1))
    try:
        first.start()
        wait_for("replica-0 to lead", lambda: (lease.holder or "").startswith("replica-0_"), timeout=60)
        second.start()
        # A candidate exports 0 from its first scrape; on standby once its health endpoint answers too.
        wait_for("replica-1 on standby", lambda: leader_gauge(second) == 0 and answers(second), timeout=60)
        assert leader_gauge(first) == 1
        assert second.get(second.liveness_port, "/healthz")[0] == 200  # a standby is alive and ready

        manifest = study_manifest(
            "ha",
            namespace,
            trials={"total": 8, "parallelism": 2, "maxFailed": 0},
            template={
                "command": ["python", str(TRIALS / "quadratic.py")],
                "env": [{"name": "TRIAL_STEP_SECONDS", "value": "0.5"}],
            },
        )
        apply(cluster, manifest)
        wait_for(
            "three trials started",
            lambda: (
                ((get_study(cluster, namespace, "ha").get("status") or {}).get("trials") or {}).get(
                    "started", 0
                )
                >= 3
            ),
            timeout=120,
        )
        # The standby has done nothing: no kopf line, no handler line, no study series.
        assert not acting_lines(second.log), acting_lines(second.log)[:5]
        assert not of_study(scrape(second), namespace, "ha")
        assert of_study(scrape(first), namespace, "ha")

        killed = time.monotonic()
        killed_wall = dt.datetime.now()
        first.kill()  # SIGKILL: no release, the Lease must expire
        took = wait_for(
            "replica-1 to take the Lease",
            lambda: (lease.holder or "").startswith("replica-1_") and time.monotonic() - killed,
            timeout=DURATION + 30,
        )
        # Within the lease duration (counted from replica-1's last sight of a renewal), plus its retry.
        assert took <= DURATION + 2 * RETRY + 1.5, f"took {took:.1f}s to take over"
        print(f"replica-1 took the Lease {took:.1f}s after replica-0 was killed (lease {DURATION}s)")
        wait_for("replica-1 to report leading", lambda: leader_gauge(second) == 1, timeout=30)

        body = wait_phase(cluster, namespace, "ha", ("Succeeded", "Failed"), timeout=180)
        assert body["status"]["phase"] == "Succeeded", body["status"]
        trials = load_study(storage_url, body).get_trials()
        assert [t.number for t in trials] == list(range(8))  # the budget exactly, no number twice
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        xs = [t.params["x"] for t in trials]
        assert len(set(xs)) == 8, xs  # no trial asked twice
        wait_for("the pod watch", lambda: len(pods.seen) >= 8, timeout=10)
        assert sorted(pods.seen) == sorted(f"ha-trial-{i}" for i in range(8))  # one pod per trial
        assert pods.max_active <= 2  # never two replicas' worth of pods
        assert body["status"]["trials"]["complete"] == 8

        # One holder at a time: replica-0, then replica-1, nobody in between or after.
        holders = [h for _, h in lease.changes]
        assert [h.split("_")[0] for h in holders if h] == ["replica-0", "replica-1"], holders
        # replica-1 acted only once it held the Lease, after replica-0 was killed.
        acted = acting_lines(second.log)
        assert acted and log_time(acted[0]) >= killed_wall - dt.timedelta(seconds=1), acted[0]
        # Its metrics now carry the study, as the new leader finished it.
        done = of_study(scrape(second), namespace, "ha")
        assert done[("hpo_study_trials", (("state", "complete"),))] == 8

        # A clean stop hands over at once: replica-0 comes back as a standby; SIGTERM to replica-1
        # releases the Lease, and replica-0 takes it well before it would have expired.
        first.start()
        wait_for("replica-0 on standby", lambda: leader_gauge(first) == 0, timeout=60)
        second.stop()
        wait_for(
            "replica-0 to take the released Lease",
            lambda: (lease.holder or "").startswith("replica-0_"),
            timeout=60,
        )
        assert second.proc is not None and second.proc.returncode == 0
        assert "released the Lease" in second.log
        # Released (no holder) once replica-1's work was done, then taken at replica-0's next try, not
        # after the lease duration.
        (released, _), (taken, _) = lease.changes[-2:]
        assert lease.changes[-2][1] is None, lease.changes
        took = taken - released
        assert took <= RETRY + 1.0 < DURATION, f"took {took:.1f}s after the release"
        print(f"replica-0 took the released Lease {took:.1f}s after replica-1 released it")
        wait_for("replica-0 to report leading", lambda: leader_gauge(first) == 1, timeout=30)
    finally:
        lease.stop()
        for op in (first, second):
            op.stop()
            print(op.log[-4000:])
            assert_no_secret(op.log, storage_url, "an operator's log")
            assert "reconcile failed" not in op.log
