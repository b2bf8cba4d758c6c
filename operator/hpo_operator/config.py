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
        url = text("HPO_DEFAULT_STORAGE_URL")
        if url is not None and "://" not in url:
            raise ConfigError("HPO_DEFAULT_STORAGE_URL must be a SQLAlchemy URL (dialect://...)")
        device_class = text("HPO_GPU_DEVICE_CLASS") or DEFAULT_GPU_DEVICE_CLASS
        if not _DNS_SUBDOMAIN.match(device_class) or len(device_class) > 253:
            raise ConfigError(f"HPO_GPU_DEVICE_CLASS must be a DeviceClass name, got {device_class!r}")
        return cls(
            default_storage_url=url,
            trial_image=text("HPO_TRIAL_IMAGE"),
            watch_namespaces=namespaces,
            metrics_port=port,
            reconcile_interval=interval,
            liveness_endpoint=liveness,
            worker_threads=workers,
            gpu_device_class=device_class,
        )


def _number(env: Mapping[str, str], name: str, default: str, kind: type) -> Any:
    raw = env.get(name, "").strip() or default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be a{'n integer' if kind is int else ' number'}, got {raw!r}"
        ) from None
