"""Leader election on a ``coordination.k8s.io/v1`` Lease: of several operator replicas, only the holder acts.

The rules are client-go's (``k8s.io/client-go/tools/leaderelection``), so ``kubectl get lease`` reads as
it does for the control plane's own components:

* a candidate takes the Lease when nobody holds it, or when its record (``resourceVersion``) has not
  changed for ``leaseDurationSeconds`` *as timed by the candidate's own clock* since it first saw that
  record (no comparison of clocks across machines); the write carries the ``resourceVersion`` it read,
  so of two candidates at most one succeeds;
* the holder renews every ``retry_period``; when it could not renew for ``renew_deadline`` (shorter
  than the lease duration), or finds another holder, it has lost: ``on_lost`` is called, and the
  operator exits at once, before any other replica may take the Lease;
* :meth:`LeaderElector.release` on a clean stop lets a standby take over without waiting.

Every request has a timeout, so a hung connection cannot keep a deposed leader acting, and the elector
has its own API client, so a connection pool busy with reconciles cannot delay a renewal.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlparse

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from hpo_operator.config import LeaderElection
from hpo_operator.shell.kube import connect

log = logging.getLogger("hpo_operator.leader")
Attempt = Literal["leading", "held", "error"]


def candidate_identity(name: str | None) -> str:
    """This process's name in the Lease: the pod (or host) name and a random suffix, so that a
    restarted process, or two on one host, are different candidates."""
    return f"{name or socket.gethostname()}_{secrets.token_hex(4)}"


class LeaderElector:
    def __init__(
        self,
        api: client.CoordinationV1Api,
        election: LeaderElection,
        identity: str,
        *,
        on_lost: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.election = election
        self.identity = identity
        self.on_lost = on_lost
        self.clock = clock
        self.timeout = max(0.5, min(5.0, election.renew_deadline / 3))  # per request
        self.holder: str | None = None  # the holder as last read
        self._observed: str | None = None  # resourceVersion of the record as last read
        self._observed_at = 0.0  # when (our clock) that record was first seen
        self._renewed_at = 0.0  # when (our clock) the last successful renewal was sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def connect(
        cls, election: LeaderElection, identity: str, *, on_lost: Callable[[str], None]
    ) -> LeaderElector:
        """An elector with an API client of its own (two connections): a renewal never waits for a
        connection behind the reconciles; and without urllib3's retries, so a request's timeout is
        the most it takes."""
        api = connect(pool_size=2, retries=False)
        return cls(client.CoordinationV1Api(api), election, identity, on_lost=on_lost)

    @property
    def where(self) -> str:
        return f"Lease {self.election.namespace}/{self.election.name}"

    # ------------------------------------------------------------------------------------ acquiring

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this process holds the Lease (``True``) or ``stop`` is set (``False``)."""
        announced: str | None = None
        while not stop.is_set():
            if self.attempt() == "leading":
                log.info("leading: acquired the %s as %s", self.where, self.identity)
                return True
            if self.holder != announced and self.holder is not None:
                announced = self.holder
                log.info("standby: the %s is held by %s; waiting for it to expire", self.where, self.holder)
            stop.wait(self.election.retry_period)
        return False

    def attempt(self, budget: float | None = None) -> Attempt:
        """One try to take or renew the Lease: ``leading`` (this process holds it now), ``held``
        (another holder's Lease has not expired) or ``error`` (the API server did not answer, or not
        within ``budget`` seconds: its requests time out by then)."""
        sent = self.clock()
        name, namespace = self.election.name, self.election.namespace

        def timeout() -> float:
            left = self.timeout if budget is None else budget - (self.clock() - sent)
            return min(self.timeout, left)

        if timeout() <= 0:
            return "error"
        try:
            lease = self.api.read_namespaced_lease(name, namespace, _request_timeout=timeout())
        except ApiException as e:
            if e.status != 404:
                log.warning("cannot read the %s: %s %s", self.where, e.status, e.reason)
                return "error"
            return self._create(sent, timeout())
        except (HTTPError, OSError) as e:
            log.warning("cannot read the %s: %s", self.where, e)
            return "error"
        spec = lease.spec or client.V1LeaseSpec()
        if lease.metadata.resource_version != self._observed:
            self._observed = lease.metadata.resource_version
            self._observed_at = self.clock()  # once read: a slow request never shortens the wait
        self.holder = spec.holder_identity or None
        if self.holder is not None and self.holder != self.identity:
            ttl = spec.lease_duration_seconds or self.election.duration
            if self.clock() < self._observed_at + ttl:
                return "held"
        if timeout() <= 0:
            return "error"
        now = dt.datetime.now(dt.UTC)
        if self.holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1  # released ones count too
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.election.duration
        spec.renew_time = now
        lease.spec = spec
        try:  # the resourceVersion read above makes this conditional: a concurrent writer gets 409
            written = self.api.replace_namespaced_lease(name, namespace, lease, _request_timeout=timeout())
        except ApiException as e:
            if e.status != 409:
                log.warning("cannot update the %s: %s %s", self.where, e.status, e.reason)
            return "error"
        except (HTTPError, OSError) as e:
            log.warning("cannot update the %s: %s", self.where, e)
            return "error"
        return self._held(written, sent)

    def _create(self, sent: float, timeout: float) -> Attempt:
        if timeout <= 0:
            return "error"
        now = dt.datetime.now(dt.UTC)
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.election.name, namespace=self.election.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.election.duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            written = self.api.create_namespaced_lease(
                self.election.namespace, body, _request_timeout=timeout
            )
        except ApiException as e:
            if e.status != 409:  # 409: another candidate created it first
                log.warning("cannot create the %s: %s %s", self.where, e.status, e.reason)
            return "error"
        except (HTTPError, OSError) as e:
            log.warning("cannot create the %s: %s", self.where, e)
            return "error"
        return self._held(written, sent)

    def _held(self, written: Any, sent: float) -> Attempt:
        self._observed = written.metadata.resource_version
        self._observed_at = sent
        self._renewed_at = sent
        self.holder = self.identity
        return "leading"

    # ------------------------------------------------------------------------------------- leading

    def keep(self) -> None:
        """Renew the Lease in a thread of its own until :meth:`release` (or until it is lost)."""
        self._thread = threading.Thread(target=self._renew, name="hpo-leader", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        """Every retry period, renew; give up the moment the renew deadline (from the last renewal that
        succeeded) has passed, never later: each try's requests time out by then."""

        def left() -> float:
            return self.election.renew_deadline - (self.clock() - self._renewed_at)

        while not self._stop.wait(max(0.0, min(self.election.retry_period, left()))):
            if left() <= 0:
                self.on_lost(
                    f"could not renew the {self.where} for {self.clock() - self._renewed_at:.1f}s "
                    f"(HPO_LEASE_RENEW_DEADLINE {self.election.renew_deadline:g}s)"
                )
                return
            result = self.attempt(budget=left())
            if self._stop.is_set():
                return
            if result == "held":
                self.on_lost(f"the {self.where} is held by {self.holder} now")
                return

    def release(self) -> None:
        """Stop renewing and, if this process still holds the Lease, give it up (a standby takes over
        at its next try instead of waiting for the Lease to expire)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout * 2 + 1)
        try:
            lease = self.api.read_namespaced_lease(
                self.election.name, self.election.namespace, _request_timeout=self.timeout
            )
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = dt.datetime.now(dt.UTC)
            self.api.replace_namespaced_lease(
                self.election.name, self.election.namespace, lease, _request_timeout=self.timeout
            )
            log.info("released the %s", self.where)
        except (ApiException, HTTPError, OSError) as e:
            log.warning("could not release the %s (it expires by itself): %s", self.where, e)


class StandbyHealth:
    """Answers ``/healthz`` on the liveness endpoint while this replica waits for the Lease (kopf serves
    it once the replica leads), so the kubelet neither restarts a standby nor counts it unready."""

    def __init__(self, endpoint: str | None) -> None:
        self.server: ThreadingHTTPServer | None = None
        if not endpoint:
            return
        url = urlparse(endpoint)
        path = url.path or "/"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path.split("?")[0] == path
                body = b"standby: waiting for the leader Lease\n" if ok else b"not found\n"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Handler)
        threading.Thread(target=self.server.serve_forever, name="hpo-standby-health", daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
