"""The operator's configuration: read once from the environment at start-up, then passed around.

=============================  ====================================================================
``HPO_DEFAULT_STORAGE_URL``    storage for studies without ``spec.storage`` (never logged)
``HPO_TRIAL_IMAGE``            image for trials without ``template.image``
``HPO_WATCH_NAMESPACES``       comma-separated namespaces to watch; empty: the whole cluster
``HPO_METRICS_PORT``           Prometheus metrics port (default 8000; 0 disables)
``HPO_RECONCILE_INTERVAL``     seconds between reconciles of a running study (default 5)
``HPO_LIVENESS_ENDPOINT``      kopf liveness endpoint (default ``http://0.0.0.0:8080/healthz``; empty: off)
``HPO_GPU_DEVICE_CLASS``       the DeviceClass of the ResourceClaims of studies whose trials share GPUs
                               (``spec.trials.perGPU`` > 1) without ``spec.gpu.deviceClassName``
                               (default ``gpu.nvidia.com``, the NVIDIA DRA driver's)
``HPO_WORKER_THREADS``         threads for blocking work (API and database calls; default 32): the
                               most studies reconciled at once, whatever the pod's CPU count
``HPO_LEADER_ELECTION``        ``true``: of several replicas only the holder of a Lease acts (default
                               ``false``: this process acts alone, no Lease)
``HPO_LEADER_ELECTION_LEASE``  ``namespace/name`` of that coordination.k8s.io Lease (required with it)
``HPO_LEASE_DURATION``         seconds a Lease not renewed stays its holder's (integer, default 15)
``HPO_LEASE_RENEW_DEADLINE``   seconds the leader keeps trying to renew before it stops (default 10)
``HPO_LEASE_RETRY_PERIOD``     seconds between two tries to acquire or renew (default 2)
``HPO_IDENTITY``               this replica's name in the Lease (default the host name; the pod name
                               in the chart); a random suffix makes each process a candidate of its own
``HPO_REPORT_PORT``            the report endpoint's port (default 0: none; trials then open the
                               storage themselves); every replica serves it, standbys included
``HPO_REPORT_URL``             the URL trial pods reach that port at (required with a port; the chart's
                               Service: ``http://<release>-hpo-operator-report.<namespace>.svc:<port>``)
``HPO_REPORT_HOST``            the address the endpoint listens on (default: every address, IPv6 and
                               IPv4)
=============================  ====================================================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LIVENESS_ENDPOINT = "http://0.0.0.0:8080/healthz"
DEFAULT_WORKER_THREADS = 32
DEFAULT_GPU_DEVICE_CLASS = "gpu.nvidia.com"
MAX_WORKER_THREADS = 512
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LEASE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class ConfigError(ValueError):
    """The operator's environment is invalid; the message names the variable."""


@dataclass(frozen=True)
class OperatorConfig:
    default_storage_url: str | None = field(default=None, repr=False)
    trial_image: str | None = None
    watch_namespaces: tuple[str, ...] = ()
    metrics_port: int = 8000
    reconcile_interval: float = 5.0
    liveness_endpoint: str | None = DEFAULT_LIVENESS_ENDPOINT
    worker_threads: int = DEFAULT_WORKER_THREADS
    gpu_device_class: str = DEFAULT_GPU_DEVICE_CLASS
    leader_election: LeaderElection | None = None  # None: act alone (one replica)
    identity: str | None = None
    report_port: int = 0  # 0: no report endpoint
    report_url: str | None = None
    report_host: str = ""  # every address

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        namespaces = tuple(n.strip() for n in env.get("HPO_WATCH_NAMESPACES", "").split(",") if n.strip())
        for n in namespaces:
            if not _NAMESPACE.match(n):
                raise ConfigError(f"HPO_WATCH_NAMESPACES: {n!r} is not a namespace name")
        port = _number(env, "HPO_METRICS_PORT", "8000", int)
        if not 0 <= port <= 65535:
            raise ConfigError(f"HPO_METRICS_PORT must be a port number (0 disables metrics), got {port}")
        interval = _number(env, "HPO_RECONCILE_INTERVAL", "5", float)
        if not interval > 0:
            raise ConfigError(
                f"HPO_RECONCILE_INTERVAL must be a positive number of seconds, got {interval:g}"
            )
        liveness = env.get("HPO_LIVENESS_ENDPOINT", DEFAULT_LIVENESS_ENDPOINT).strip() or None
        if liveness is not None and not liveness.startswith(("http://", "https://")):
            raise ConfigError(f"HPO_LIVENESS_ENDPOINT must be an http:// URL, got {liveness!r}")
        workers = _number(env, "HPO_WORKER_THREADS", str(DEFAULT_WORKER_THREADS), int)
        if not 1 <= workers <= MAX_WORKER_THREADS:
            raise ConfigError(f"HPO_WORKER_THREADS must be between 1 and {MAX_WORKER_THREADS}, got {workers}")
        identity = text("HPO_IDENTITY")
        election = _leader_election(env)
        url = text("HPO_DEFAULT_STORAGE_URL")
        if url is not None and "://" not in url:
            raise ConfigError("HPO_DEFAULT_STORAGE_URL must be a SQLAlchemy URL (dialect://...)")
        device_class = text("HPO_GPU_DEVICE_CLASS") or DEFAULT_GPU_DEVICE_CLASS
        if not _DNS_SUBDOMAIN.match(device_class) or len(device_class) > 253:
            raise ConfigError(f"HPO_GPU_DEVICE_CLASS must be a DeviceClass name, got {device_class!r}")
        report_port = _number(env, "HPO_REPORT_PORT", "0", int)
        if not 0 <= report_port <= 65535:
            raise ConfigError(
                f"HPO_REPORT_PORT must be a port number (0: no report endpoint), got {report_port}"
            )
        report_url = text("HPO_REPORT_URL")
        if report_port and report_url is None:
            raise ConfigError(
                "HPO_REPORT_URL is required with HPO_REPORT_PORT: the URL trial pods reach it at"
            )
        if report_url is not None and not report_port:
            raise ConfigError("HPO_REPORT_URL needs HPO_REPORT_PORT, the port the endpoint listens on")
        if report_url is not None and not report_url.startswith(("http://", "https://")):
            raise ConfigError(f"HPO_REPORT_URL must be an http:// URL, got {report_url!r}")
        return cls(
            report_port=report_port,
            report_url=report_url,
            report_host=text("HPO_REPORT_HOST") or "",
            default_storage_url=url,
            trial_image=text("HPO_TRIAL_IMAGE"),
            watch_namespaces=namespaces,
            metrics_port=port,
            reconcile_interval=interval,
            liveness_endpoint=liveness,
            worker_threads=workers,
            gpu_device_class=device_class,
            leader_election=election,
            identity=identity,
        )


@dataclass(frozen=True)
class LeaderElection:
    """The Lease the replicas compete for, and its timings (as client-go's leader election has them)."""

    namespace: str
    name: str
    duration: int = 15  # seconds a Lease not renewed stays its holder's
    renew_deadline: float = 10.0  # the leader stops acting when it could not renew for this long
    retry_period: float = 2.0  # between two tries to acquire or renew


def _leader_election(env: Mapping[str, str]) -> LeaderElection | None:
    flag = env.get("HPO_LEADER_ELECTION", "").strip().lower() or "false"
    if flag not in ("true", "false"):
        raise ConfigError(f"HPO_LEADER_ELECTION must be true or false, got {flag!r}")
    if flag == "false":
        return None
    lease = env.get("HPO_LEADER_ELECTION_LEASE", "").strip()
    namespace, _, name = lease.partition("/")
    if not lease:
        raise ConfigError(
            "HPO_LEADER_ELECTION_LEASE is required with HPO_LEADER_ELECTION=true (namespace/name)"
        )
    if not _NAMESPACE.match(namespace) or not _LEASE_NAME.match(name):
        raise ConfigError(f"HPO_LEADER_ELECTION_LEASE must be namespace/name of a Lease, got {lease!r}")
    duration = _number(env, "HPO_LEASE_DURATION", "15", int)
    renew = _number(env, "HPO_LEASE_RENEW_DEADLINE", "10", float)
    retry = _number(env, "HPO_LEASE_RETRY_PERIOD", "2", float)
    if not retry > 0:
        raise ConfigError(f"HPO_LEASE_RETRY_PERIOD must be a positive number of seconds, got {retry:g}")
    if not renew > retry:
        raise ConfigError(
            f"HPO_LEASE_RENEW_DEADLINE ({renew:g}) must be longer than HPO_LEASE_RETRY_PERIOD ({retry:g})"
        )
    if not duration > renew:
        raise ConfigError(
            f"HPO_LEASE_DURATION ({duration}) must be longer than HPO_LEASE_RENEW_DEADLINE ({renew:g}): "
            "a leader that cannot renew must stop before another replica may take over"
        )
    return LeaderElection(namespace, name, duration, renew, retry)


def _number(env: Mapping[str, str], name: str, default: str, kind: type) -> Any:
    raw = env.get(name, "").strip() or default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be a{'n integer' if kind is int else ' number'}, got {raw!r}"
        ) from None
