"""Leader election on a real API server's Lease (``shell/leader``): one holder at a time, a standby takes
over only once the Lease expired by its own clock, a deposed or cut-off leader is told it lost, and a
released Lease is taken at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from hpo_operator.config import LeaderElection
from hpo_operator.shell.leader import LeaderElector
from kubernetes import client

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

    # a wakes up and tries to renew: the Lease is b's, so a has lost.
    a.keep()
    until(lambda: lost_a, timeout=ELECTION.retry_period * 4)
    assert lost_a == [f"the Lease {namespace}/lead is held by b now"]

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


def test_a_leader_cut_off_from_the_api_server_gives_up_before_the_lease_expires(
    cluster: Any, namespace: str
) -> None:
    lost: list[str] = []
    a = elector(cluster, namespace, "a", lost)
    assert a.attempt() == "leading"
    renewed = time.monotonic()
    # From now on a reaches no API server (connections refused on a closed port).
    unreachable = client.Configuration()
    unreachable.host = "https://127.0.0.1:9"
    a.api = client.CoordinationV1Api(client.ApiClient(unreachable))
    a.keep()
    until(lambda: lost, timeout=ELECTION.duration + 2)
    gave_up = time.monotonic() - renewed
    assert lost[0].startswith(f"could not renew the Lease {namespace}/lead for ")
    # It stops acting after the renew deadline, before any other replica may take over.
    assert ELECTION.renew_deadline <= gave_up < ELECTION.duration, gave_up
