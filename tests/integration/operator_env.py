"""What the operator's integration tests share: the operator subprocess, a namespace's pod watch, the
HPOStudy manifest of the quadratic trial and the helpers that apply, read and wait on studies.

The fixtures built on these (``crd``, ``storage_url``, ``operator``, ``pods``) are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml
from hpo_operator.core import names
from kubernetes import client, watch

ROOT = Path(__file__).resolve().parents[2]
TRIALS = Path(__file__).resolve().parent / "trials"
PASSWORD = "Pw-4-redaction-check"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """``python -m hpo_operator`` as a subprocess; ``kill()`` is a SIGKILL, ``start()`` a fresh process.

    Its trials report through its report endpoint on loopback (the stand-in node runs them as this
    machine's processes). Replicas given the same ``report_port`` share it, as a Service in front of
    them would: the kernel spreads the connections over every process listening on it (SO_REUSEPORT).
    """

    def __init__(
        self, cluster: Any, namespace: str, storage_url: str, log_path: Path, report_port: int | None = None
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_path = log_path
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.report_port = report_port or free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HPO_")},
            "KUBECONFIG": str(cluster.kubeconfig),
            "HPO_DEFAULT_STORAGE_URL": storage_url,
            "HPO_TRIAL_IMAGE": "hpo-trial:test",
            "HPO_WATCH_NAMESPACES": namespace,
            "HPO_METRICS_PORT": str(self.metrics_port),
            "HPO_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.liveness_port}/healthz",
            "HPO_RECONCILE_INTERVAL": "1",
            "HPO_REPORT_PORT": str(self.report_port),
            "HPO_REPORT_HOST": "127.0.0.1",
            "HPO_REPORT_URL": f"http://127.0.0.1:{self.report_port}",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== operator start {self.starts} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hpo_operator", "--verbose"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, port: int, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()


class PodWatch:
    """Watches a namespace's pods on a thread from the start of a test, handing each event to
    :meth:`on_event`. A subclass sets its own attributes before calling ``__init__`` (which starts the
    thread)."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.core: client.CoreV1Api = cluster.core()
        self.namespace = namespace
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def on_event(self, kind: str, pod: client.V1Pod) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            try:
                for event in self._watch.stream(
                    self.core.list_namespaced_pod, self.namespace, timeout_seconds=600
                ):
                    self.on_event(event["type"], event["object"])
                return
            except Exception:  # the watch ended (test over) or broke: retry unless stopped
                if getattr(self._watch, "_stop", False):
                    return
                time.sleep(0.2)

    def stop(self) -> None:
        self._watch.stop()


class Pods(PodWatch):
    """Watches a namespace's pods from the start of a test: the most active at once, every pod seen."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.phases: dict[str, str] = {}
        self.seen: dict[str, dict[str, Any]] = {}
        self.max_active = 0
        super().__init__(cluster, namespace)

    def on_event(self, kind: str, pod: client.V1Pod) -> None:
        name = pod.metadata.name
        if kind == "DELETED":
            self.phases.pop(name, None)
        else:
            self.phases[name] = pod.status.phase or "Pending"
            self.seen[name] = self.core.api_client.sanitize_for_serialization(pod)
        active = sum(1 for p in self.phases.values() if p in ("Pending", "Running"))
        self.max_active = max(self.max_active, active)

    def current(self) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(self.namespace).items)


# -------------------------------------------------------------------------------------- helpers


def study_manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "objective": [{"metric": "score", "direction": "maximize"}],
        "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
        "trials": {"total": 4, "parallelism": 2, "maxFailed": 1, "retries": 0},
        "sampler": {"type": "TPE", "seed": 7},
        "template": {"command": ["python", str(TRIALS / "quadratic.py")]},
    }
    base.update(spec)
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


def apply(cluster: Any, manifest: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)


def get_study(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    with cluster.api_client() as api:
        return dict(
            client.CustomObjectsApi(api).get_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.PLURAL, name
            )
        )


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = 120.0, interval: float = 0.3, diagnose: Any = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = diagnose() if diagnose else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{extra}")
        time.sleep(interval)


def wait_phase(
    cluster: Any, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 120.0
) -> dict:
    def check() -> dict[str, Any] | None:
        body = get_study(cluster, namespace, name)
        return body if (body.get("status") or {}).get("phase") in phases else None

    return wait_for(
        f"{name} to reach {phases}",
        check,
        timeout,
        diagnose=lambda: json.dumps(get_study(cluster, namespace, name).get("status"), indent=1)[-3000:],
    )  # type: ignore[no-any-return]


def events(cluster: Any, namespace: str, name: str) -> list[client.CoreV1Event]:
    items = cluster.core().list_namespaced_event(namespace).items
    return [e for e in items if e.involved_object.kind == names.KIND and e.involved_object.name == name]


def condition(body: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in body["status"]["conditions"] if c["type"] == kind)


def load_study(storage_url: str, body: dict[str, Any]) -> optuna.Study:
    return optuna.load_study(study_name=body["status"]["studyName"], storage=storage_url)


def assert_no_secret(text: str, storage_url: str, where: str) -> None:
    assert PASSWORD not in text, f"the storage password appears in {where}"
    assert storage_url not in text, f"the storage URL appears in {where}"


def assert_nothing_leaks(cluster: Any, namespace: str, name: str, storage_url: str) -> None:
    body = get_study(cluster, namespace, name)
    assert_no_secret(json.dumps(body), storage_url, "the HPOStudy")
    for e in cluster.core().list_namespaced_event(namespace).items:
        assert_no_secret(f"{e.reason} {e.message}", storage_url, f"Event {e.reason}")


def study_on_a_storage_that_fails(cluster: Any, namespace: str, name: str, url: str) -> dict[str, Any]:
    """A one-trial study whose storage is ``url`` (in the Secret ``db``), once it shows StorageReady=False."""
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="db"), string_data={"url": url})
    cluster.core().create_namespaced_secret(namespace, secret)
    manifest = study_manifest(
        name, namespace, trials={"total": 1, "parallelism": 1}, storage={"secretRef": {"name": "db"}}
    )
    apply(cluster, manifest)

    def storage_failed() -> dict[str, Any] | None:
        body = get_study(cluster, namespace, name)
        conds = {c["type"]: c for c in (body.get("status") or {}).get("conditions", [])}
        ready = conds.get("StorageReady")
        return body if ready and ready["status"] == "False" else None

    return wait_for("StorageReady=False", storage_failed, timeout=60)
