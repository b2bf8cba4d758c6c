"""Leader election on a real API server's Lease (``shell/leader``): one holder at a time, a standby takes
over only once the Lease expired by its own clock, a deposed or cut-off leader is told it lost, and a
released Lease is taken at once."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from typing import Any

import pytest
from hpo_operator.config import LeaderElection
from hpo_operator.shell.leader import LeaderElector
from kubernetes import client
from kubernetes.config import kube_config

ELECTION = LeaderElection("", "lead", duration=3, renew_deadline=2.0, retry_period=0.5)


def elector(cluster: Any, namespace: str, identity: str, lost: list[str], api: Any = None) -> LeaderElector:
    election = LeaderElection(
        namespace, "lead", ELECTION.duration, ELECTION.renew_deadline, ELECTION.retry_period
    )
    return LeaderElector(
        api or client.CoordinationV1Api(cluster.api_client()), election, identity, on_lost=lost.append
    )


def holder(cluster: Any, namespace: str) -> str | None:
    lease = client.CoordinationV1Api(cluster.api_client()).read_namespaced_lease("lead", namespace)
    return lease.spec.holder_identity  # type: ignore[no-any-return]


def until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def test_one_holder_at_a_time_and_a_takeover_only_after_the_lease_expires(
    cluster: Any, namespace: str
) -> None:
    lost_a: list[str] = []
    lost_b: list[str] = []
    a = elector(cluster, namespace, "a", lost_a)
    b = elector(cluster, namespace, "b", lost_b)
    assert a.attempt() == "leading"  # no Lease yet: created, held by a
    assert holder(cluster, namespace) == "a"

    # a stops renewing (as if killed): b waits the lease duration from when it first saw a's record.
    seen = time.monotonic()
    assert b.attempt() == "held" and b.holder == "a"
    while (result := b.attempt()) == "held":
        time.sleep(0.1)
    took = time.monotonic() - seen
    assert result == "leading" and holder(cluster, namespace) == "b"
    assert ELECTION.duration <= took < ELECTION.duration + 1.5, took

    # a wakes up: its last renewal is older than the renew deadline, so it gives up without a write.
    a.keep()
    until(lambda: lost_a, timeout=ELECTION.retry_period * 4)
    assert lost_a[0].startswith(f"could not renew the Lease {namespace}/lead for ")
    assert holder(cluster, namespace) == "b"

    # b renews: a third candidate never gets it, however long it tries past the lease duration.
    b.keep()
    c = elector(cluster, namespace, "c", [])
    deadline = time.monotonic() + ELECTION.duration + 1.5
    while time.monotonic() < deadline:
        assert c.attempt() == "held"
        time.sleep(0.2)
    assert not lost_b

    # b releases it on a clean stop: c takes it at its next try, without waiting for expiry.
    b.release()
    assert c.attempt() == "leading" and holder(cluster, namespace) == "c"
    lease = client.CoordinationV1Api(cluster.api_client()).read_namespaced_lease("lead", namespace)
    assert lease.spec.lease_transitions == 2  # a -> b -> c
    assert not lost_b

    # c renews; someone else writes the Lease: at its next renewal c finds another holder and has lost.
    lost_c: list[str] = []
    c.on_lost = lost_c.append
    c.keep()
    lease.spec.holder_identity = "intruder"
    lease.spec.renew_time = dt.datetime.now(dt.UTC)
    client.CoordinationV1Api(cluster.api_client()).replace_namespaced_lease("lead", namespace, lease)
    until(lambda: lost_c, timeout=ELECTION.retry_period * 4)
    assert lost_c == [f"the Lease {namespace}/lead is held by intruder now"]
    assert holder(cluster, namespace) == "intruder"  # c did not write over it


def test_two_candidates_racing_for_a_free_lease_never_both_lead(cluster: Any, namespace: str) -> None:
    for round_ in range(5):
        if round_:
            client.CoordinationV1Api(cluster.api_client()).delete_namespaced_lease("lead", namespace)
        candidates = [elector(cluster, namespace, f"r{round_}-{i}", []) for i in range(3)]
        results: dict[str, str] = {}
        start = threading.Barrier(len(candidates))

        def run(
            e: LeaderElector, start: threading.Barrier = start, results: dict[str, str] = results
        ) -> None:
            start.wait()
            results[e.identity] = e.attempt()

        threads = [threading.Thread(target=run, args=(e,)) for e in candidates]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        (winner,) = [identity for identity, r in results.items() if r == "leading"]
        assert len(results) == len(candidates)
        assert holder(cluster, namespace) == winner


@pytest.mark.parametrize("cut_off", ["refused", "hung"])
def test_a_leader_cut_off_from_the_api_server_gives_up_at_the_renew_deadline(
    cluster: Any, namespace: str, cut_off: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost: list[str] = []
    # The operator's own client (shell.kube.connect, for the cluster KUBECONFIG names: the kubernetes
    # package reads that variable once, at import).
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig))
    election = LeaderElection(
        namespace, "lead", ELECTION.duration, ELECTION.renew_deadline, ELECTION.retry_period
    )
    a = LeaderElector.connect(election, "a", on_lost=lost.append)
    renewed = time.monotonic()
    assert a.attempt() == "leading"
    # From now on a reaches no API server: connections refused on a closed port, or accepted by a
    # listener that never answers (a hung connection: only the request timeouts end each try).
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        if cut_off == "hung":
            hole.listen(16)
        a.api.api_client.configuration.host = f"https://127.0.0.1:{hole.getsockname()[1]}"
        a.keep()
        until(lambda: lost, timeout=ELECTION.duration + 2)
    gave_up = time.monotonic() - renewed
    assert lost[0].startswith(f"could not renew the Lease {namespace}/lead for ")
    # It stops acting at the renew deadline, well before any other replica may take over.
    assert ELECTION.renew_deadline <= gave_up < ELECTION.renew_deadline + 0.5 < ELECTION.duration, gave_up
