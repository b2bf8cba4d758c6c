"""The harness node agent: a stand-in kubelet that runs pods as local processes.

It registers a Node (allocatable cpu, memory, pods and ``nvidia.com/gpu``), renews the node's Lease in
``kube-node-lease`` and keeps its Ready condition fresh, watches the pods the real scheduler binds to it
and runs the first container's ``command`` + ``args`` as a local process (images are not run, so a
container without ``command`` fails with a message saying so). Each pod gets a directory
``<state dir>/pods/<namespace>/<name>/`` holding ``log`` (stdout and stderr), ``pid`` (while it runs)
and ``work`` (the process's working directory). Status goes through the ``pods/status`` subresource:
Pending (ContainerCreating) -> Running -> Succeeded / Failed with the real exit code. On deletion it
sends SIGTERM to the process group, waits the grace period, sends SIGKILL and finishes the deletion.

Environment of the process: the agent's own environment (PATH with the project's venv first, HOME,
HF_HUB_OFFLINE, ...), then ``HOSTNAME`` = pod name, then the container's ``envFrom`` and ``env`` (literal
values with ``$(VAR)`` expansion, ``secretKeyRef``, ``configMapKeyRef``, downward-API ``fieldRef``).

Volumes: ``emptyDir``, ``configMap`` and ``secret`` volumes become per-pod directories under
``volumes/<name>`` (configMap/secret keys written as files), ``hostPath`` is the host path itself; a
``volumeMount``'s ``mountPath`` is not created, instead every env value, command and arg word and
``workingDir`` equal to or below a mountPath is rewritten to the volume's directory.

Not emulated (documented in tests/harness/README.md): container images, other containers than the
first, init containers, other volume types, restarts (every pod behaves as ``restartPolicy: Never``),
probes, resource limits (nothing is enforced), ``resourceFieldRef``, the File termination-message policy,
networking (``podIP`` is 127.0.0.1), ``kubectl exec``/``attach``/``port-forward``. ``kubectl logs`` works:
the agent serves the kubelet's ``/containerLogs`` endpoint to the API server (``--kubelet-port``).

DRA: the node's GPUs are published as a ResourceSlice of the driver ``gpu.harness.hpo.dev`` (devices
``gpu-0`` ...); for a pod with ResourceClaims the agent reads each claim's allocation and passes the
devices as a DRA driver would through CDI: ``CUDA_VISIBLE_DEVICES``/``NVIDIA_VISIBLE_DEVICES`` (indexes),
``HARNESS_DRA_DEVICES`` (names) and a ``devices`` file in the pod directory.

It talks to the API server with the node's own client certificate (``system:node:<name>``), so the Node
authorizer and the NodeRestriction admission plugin apply to it as they do to a kubelet.

Run: ``python node_agent.py --kubeconfig node.yaml --node-name N --gpus 2 --state-dir DIR``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

# This file runs as a script (``python tests/harness/node_agent.py``): its own folder is first on sys.path.
from pod_shim import start_time  # the clock the shim writes to a pod's pid file
from processes import pid_alive

log = logging.getLogger("node-agent")

KUBE_VERSION = "v1.37.2"
LEASE_DURATION_S = 40
LEASE_RENEW_S = 10.0
STATUS_REFRESH_S = 30.0
WATCH_TIMEOUT_S = 240
TERMINATION_LOG_LINES = 80  # kubelet: MaxContainerTerminationMessageLogLines
TERMINATION_LOG_BYTES = 2048  # kubelet: MaxContainerTerminationMessageLogLength
DRA_DRIVER = "gpu.harness.hpo.dev"  # the driver name of the devices this agent publishes
DEVICE_PREFIX = "gpu-"  # device names: gpu-0, gpu-1, ... (the index is CUDA_VISIBLE_DEVICES')
DEVICES_ENV = "HARNESS_DRA_DEVICES"  # the device names a pod's claims got, comma-separated
FORCE_DELETE_GRACE_S = 2.0  # kubelet's minimum grace for a pod that is already gone from the API
HOST_IP = "127.0.0.1"
POD_SHIM = Path(__file__).resolve().parent / "pod_shim.py"
SHIM_START_S = 30.0  # how long a shim may take to start its command and write its pid file
STATUS_PATCH_S = 300.0  # how long a pod's status patch is retried while the API server does not answer
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
NO_COMMAND = (
    "the harness node agent runs container commands as local processes and does not run images; "
    "container {name!r} has no `command`, so there is nothing to run (set spec.containers[0].command)"
)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EnvError(Exception):
    """The pod's environment cannot be built yet (a missing Secret/ConfigMap, kubelet's
    CreateContainerConfigError); retried until the pod is deleted."""


class Unsupported(Exception):
    """The pod asks for something the agent cannot emulate; the pod fails with this message."""


# ---------------------------------------------------------------------------------------------
# A thin JSON layer over the official client's ApiClient (raw dicts, no model round trips).
# ---------------------------------------------------------------------------------------------
class Api:
    def __init__(self, kubeconfig: str) -> None:
        self.client: ApiClient = kube_config.new_client_from_config(config_file=kubeconfig)

    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Any = 30,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.client.call_api(*params, _request_timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        resp = self._call(method, path, **kwargs)
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(
                http_resp=resp, body=resp.data.decode(errors="replace"), data=None
            )
        return json.loads(resp.data) if resp.data else {}

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self.request("GET", path, query=query)

    def watch(self, path: str, **query: Any) -> Iterator[dict[str, Any]]:
        query = {**query, "watch": "true"}
        timeout = (10, int(query.get("timeoutSeconds", WATCH_TIMEOUT_S)) + 30)
        resp = self._call("GET", path, query=query, timeout=timeout)
        raw = resp.response
        try:
            if not 200 <= resp.status <= 299:
                resp.read()
                raise ApiException.from_response(
                    http_resp=resp, body=resp.data.decode(errors="replace"), data=None
                )
            for line in iter_resp_lines(raw):
                if line:
                    yield json.loads(line)
        finally:
            raw.release_conn()


def _status_code(exc: BaseException) -> int:
    return int(getattr(exc, "status", 0) or 0)


# ---------------------------------------------------------------------------------------------
# Environment, volumes, $(VAR) expansion
# ---------------------------------------------------------------------------------------------
def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` escapes a ``$``,
    undefined references are left as they are (k8s.io/kubernetes/third_party/forked/golang/expansion)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref(pod: dict[str, Any], path: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": HOST_IP,
        "status.podIPs": HOST_IP,
        "status.hostIP": HOST_IP,
        "status.hostIPs": HOST_IP,
    }
    if path in simple:
        return str(simple[path])
    m = _FIELD_LABEL.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise Unsupported(f"env fieldRef.fieldPath {path!r} is not supported by the harness node agent")


class PodEnv:
    """Builds a container's environment and volume directories from the API."""

    def __init__(self, api: Api, pod: dict[str, Any]) -> None:
        self.api = api
        self.pod = pod
        self.namespace = pod["metadata"]["namespace"]
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def _object_data(self, kind: str, name: str) -> dict[str, str] | None:
        """Decoded data of a Secret/ConfigMap, None if it does not exist."""
        key = (kind, name)
        if key not in self._cache:
            try:
                obj = self.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
            except ApiException as exc:
                if _status_code(exc) == 404:
                    self._cache[key] = None
                    return None
                # 403 right after binding: the Node authorizer's graph has not seen the pod yet.
                raise EnvError(f"cannot read {kind[:-1]} {name!r}: HTTP {_status_code(exc)}") from exc
            data: dict[str, str] = {}
            if kind == "secrets":
                for k, v in (obj.get("data") or {}).items():
                    data[k] = base64.b64decode(v).decode("utf-8", errors="replace")
            else:
                data.update(obj.get("data") or {})
                for k, v in (obj.get("binaryData") or {}).items():
                    data[k] = base64.b64decode(v).decode("utf-8", errors="replace")
            self._cache[key] = data
        return self._cache[key]

    def devices(self, driver: str) -> list[str]:
        """The devices of ``driver`` allocated to the pod's ResourceClaims (``gpu-0``, ...), read from
        each claim's ``status.allocation`` as a DRA driver's kubelet plugin reads it; a claim not
        allocated (or not readable) yet is retried."""
        if not driver:
            return []
        statuses = {
            s.get("name"): s.get("resourceClaimName")
            for s in (self.pod.get("status") or {}).get("resourceClaimStatuses") or ()
        }
        found: list[str] = []
        for ref in self.pod["spec"].get("resourceClaims") or ():
            name = ref.get("resourceClaimName") or statuses.get(ref.get("name"))
            if not name:
                raise EnvError(f"the ResourceClaim of pod claim {ref.get('name')!r} is not known yet")
            try:
                claim = self.api.get(
                    f"/apis/resource.k8s.io/v1/namespaces/{self.namespace}/resourceclaims/{name}"
                )
            except ApiException as exc:
                raise EnvError(f"cannot read ResourceClaim {name!r}: HTTP {_status_code(exc)}") from exc
            allocation = (claim.get("status") or {}).get("allocation")
            if not allocation:
                raise EnvError(f"ResourceClaim {name!r} is not allocated")
            for result in (allocation.get("devices") or {}).get("results") or ():
                if result.get("driver") == driver and result.get("device") not in found:
                    found.append(str(result.get("device")))
        return found

    def _key_ref(self, kind: str, ref: dict[str, Any], var: str) -> str | None:
        label = "secret" if kind == "secrets" else "configmap"
        data = self._object_data(kind, ref.get("name", ""))
        optional = bool(ref.get("optional"))
        if data is None:
            if optional:
                return None
            raise EnvError(f'{label} "{ref.get("name")}" not found (env {var})')
        if ref.get("key") not in data:
            if optional:
                return None
            raise EnvError(
                f"couldn't find key {ref.get('key')} in {label} {self.namespace}/{ref.get('name')}"
            )
        return data[ref["key"]]

    def build(self, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, field in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
                ref = source.get(field)
                if ref is None:
                    continue
                data = self._object_data(kind, ref.get("name", ""))
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise EnvError(f'{kind[:-1]} "{ref.get("name")}" not found (envFrom)')
                env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            if "valueFrom" not in item:
                env[name] = expand(item.get("value", ""), env)
                continue
            source = item["valueFrom"]
            value: str | None
            if "secretKeyRef" in source:
                value = self._key_ref("secrets", source["secretKeyRef"], name)
            elif "configMapKeyRef" in source:
                value = self._key_ref("configmaps", source["configMapKeyRef"], name)
            elif "fieldRef" in source:
                value = field_ref(self.pod, source["fieldRef"]["fieldPath"])
            else:
                raise Unsupported(
                    f"env {name}: valueFrom {sorted(source)} is not emulated by the harness node agent "
                    "(supported: secretKeyRef, configMapKeyRef, fieldRef)"
                )
            if value is not None:
                env[name] = value
        return env

    def volumes(self, pod_dir: Path, container: dict[str, Any]) -> dict[str, str]:
        """Create the pod's volume directories; returns mountPath -> local directory."""
        local: dict[str, Path] = {}
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            target = pod_dir / "volumes" / name
            if "emptyDir" in vol:
                target.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in vol:
                target = Path(vol["hostPath"]["path"])
            elif "configMap" in vol or "secret" in vol:
                kind, spec = (
                    ("configmaps", vol["configMap"]) if "configMap" in vol else ("secrets", vol["secret"])
                )
                obj_name = spec.get("name") or spec.get("secretName", "")
                data = self._object_data(kind, obj_name)
                if data is None:
                    if spec.get("optional"):
                        data = {}
                    else:
                        raise EnvError(f'{kind[:-1]} "{obj_name}" not found (volume {name})')
                target.mkdir(parents=True, exist_ok=True)
                items = spec.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] in data:
                        path = target / item["path"]
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text(data[item["key"]])
            else:
                continue  # not emulated (projected service-account token, PVC, ...): no mapping
            local[name] = target
        mounts: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            if mount["name"] in local:
                directory = local[mount["name"]]
                if mount.get("subPath"):
                    directory = directory / mount["subPath"]
                    directory.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"].rstrip("/") or "/"] = str(directory)
        return mounts


def rewrite_paths(value: str, mounts: dict[str, str]) -> str:
    """Map a path at or below a volumeMount's mountPath to the volume's local directory."""
    for mount_path in sorted(mounts, key=len, reverse=True):
        if value == mount_path:
            return mounts[mount_path]
        if value.startswith(mount_path + "/"):
            return mounts[mount_path] + value[len(mount_path) :]
    return value


def log_tail(path: Path) -> str:
    """The last 80 lines / 2 KiB of a log, as kubelet's FallbackToLogsOnError takes them."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()[-TERMINATION_LOG_LINES:]
    text = "\n".join(lines)
    encoded = text.encode()
    if len(encoded) > TERMINATION_LOG_BYTES:
        text = encoded[-TERMINATION_LOG_BYTES:].decode("utf-8", errors="ignore")
    return text


# ---------------------------------------------------------------------------------------------
# One pod
# ---------------------------------------------------------------------------------------------
class PodWorker(threading.Thread):
    def __init__(self, agent: Agent, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.agent = agent
        self.api = agent.api
        self.pod = pod
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.dir = agent.state_dir / "pods" / self.namespace / self.pod_name
        self.lock = threading.Lock()
        self.finished = False
        self.delete_requested = threading.Event()
        self.gone = threading.Event()  # removed from the API (force deletion)
        self.proc: subprocess.Popen[bytes] | None = None  # the shim, when this agent started it
        self.pid: int | None = None  # the pod's process (its own process group)
        self.pid_start = -1  # its start time, which tells it apart from a later process with its pid
        self.shim_pid: int | None = None
        self.started_at = ""
        self.container_id = ""

    @property
    def container(self) -> dict[str, Any]:
        return self.pod["spec"]["containers"][0]

    def update(self, pod: dict[str, Any] | None) -> bool:
        """New state from the API (None: deleted). False if the worker already finished."""
        with self.lock:
            if self.finished:
                return False
            if pod is None:
                self.gone.set()
                self.delete_requested.set()
            else:
                self.pod = pod
                if pod["metadata"].get("deletionTimestamp"):
                    self.delete_requested.set()
            return True

    # -- status -----------------------------------------------------------------------------
    def _patch_status(self, status: dict[str, Any]) -> None:
        if self.gone.is_set():
            return
        body = {"metadata": {"uid": self.uid}, "status": status}
        # Retried through an API-server or etcd restart (a kubelet never gives up on a pod's status: a
        # lost terminal status would leave the pod Running for ever).
        deadline = time.monotonic() + STATUS_PATCH_S
        attempt = 0
        while True:
            attempt += 1
            try:
                self.api.request(
                    "PATCH",
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status",
                    body=body,
                    content_type=SMP,
                )
                return
            except ApiException as exc:
                code = _status_code(exc)
                if code == 404:  # the pod is gone
                    return
                if code in (400, 403, 422):  # rejected: retrying cannot help
                    log.error("%s: status patch rejected: %s", self.name, exc)
                    return
                log.warning("%s: status patch failed (%s), retrying", self.name, exc)
            except Exception as exc:  # connection blip
                log.warning("%s: status patch failed (%s), retrying", self.name, exc)
            if time.monotonic() > deadline or self.agent.stopping.is_set():
                log.error("%s: status patch given up after %d tries", self.name, attempt)
                return
            time.sleep(min(0.25 * 2 ** (attempt - 1), 4))

    def _container_status(self, state: dict[str, Any], *, ready: bool, started: bool) -> dict[str, Any]:
        status = {
            "name": self.container["name"],
            "image": self.container.get("image") or "harness/local-process",
            "imageID": "",
            "ready": ready,
            "started": started,
            "restartCount": 0,
            "state": state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status

    def _conditions(self, ready: bool, reason: str | None = None) -> list[dict[str, Any]]:
        t = now()
        conds = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
        ]
        for kind in ("ContainersReady", "Ready"):
            cond: dict[str, Any] = {
                "type": kind,
                "status": "True" if ready else "False",
                "lastTransitionTime": t,
            }
            if reason:
                cond["reason"] = reason
            conds.append(cond)
        return conds

    def _base_status(self, phase: str) -> dict[str, Any]:
        return {
            "phase": phase,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": HOST_IP,
            "podIPs": [{"ip": HOST_IP}],
            "startTime": self.pod.get("status", {}).get("startTime") or now(),
        }

    def _report_waiting(self, reason: str, message: str = "") -> None:
        waiting: dict[str, Any] = {"reason": reason}
        if message:
            waiting["message"] = message
        status = self._base_status("Pending")
        status["conditions"] = self._conditions(False, "ContainersNotReady")
        status["containerStatuses"] = [
            self._container_status({"waiting": waiting}, ready=False, started=False)
        ]
        self._patch_status(status)

    def _report_terminated(self, exit_code: int, reason: str, message: str = "") -> None:
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": self.started_at or now(),
            "finishedAt": now(),
        }
        if message:
            terminated["message"] = message
        if self.container_id:
            terminated["containerID"] = self.container_id
        status = self._base_status("Succeeded" if exit_code == 0 else "Failed")
        status["conditions"] = self._conditions(False, "PodCompleted")
        status["containerStatuses"] = [
            self._container_status({"terminated": terminated}, ready=False, started=False)
        ]
        self._patch_status(status)

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self.adopt():
                self._adopted()
            elif (self.pod.get("status") or {}).get("phase") == "Running":
                # Running before this agent started, and no record of its process: nothing to follow.
                msg = "the harness node agent restarted while this pod ran and found no record of its process"
                self._report_terminated(137, "Error", msg)
            else:
                self._run()
        except Exception:
            log.exception("%s: worker crashed", self.name)
            self._kill(FORCE_DELETE_GRACE_S)
        finally:
            with self.lock:
                self.finished = True
                delete = self.delete_requested.is_set() and not self.gone.is_set()
            if delete and not self.agent.stopping.is_set():
                self.agent.finish_deletion(self.namespace, self.pod_name, self.uid)

    def _prepare_dir(self) -> None:
        uid_file = self.dir / "uid"
        if self.dir.exists() and (not uid_file.exists() or uid_file.read_text().strip() != self.uid):
            shutil.rmtree(self.dir, ignore_errors=True)  # an earlier pod with the same name
        (self.dir / "work").mkdir(parents=True, exist_ok=True)
        uid_file.write_text(self.uid)

    def _run(self) -> None:
        self._prepare_dir()
        command = self.container.get("command")
        if not command:
            msg = NO_COMMAND.format(name=self.container.get("name"))
            (self.dir / "log").write_text(msg + "\n")
            self._report_terminated(128, "StartError", msg)
            return
        self._report_waiting("ContainerCreating")
        env_builder = None
        while True:
            if self.delete_requested.is_set() or self.agent.stopping.is_set():
                return
            try:
                env_builder = PodEnv(self.api, self.pod)
                pod_env = env_builder.build(self.container)
                mounts = env_builder.volumes(self.dir, self.container)
                devices = env_builder.devices(self.agent.dra_driver)
                break
            except Unsupported as exc:
                (self.dir / "log").write_text(f"{exc}\n")
                self._report_terminated(128, "StartError", str(exc))
                return
            except (EnvError, OSError) as exc:
                log.info("%s: %s; retrying", self.name, exc)
                self._report_waiting("CreateContainerConfigError", str(exc))
                self.delete_requested.wait(2.0)
        env = dict(self.agent.base_env)
        env["HOSTNAME"] = self.pod_name
        env.update({k: rewrite_paths(v, mounts) for k, v in pod_env.items()})
        if devices:
            # What a GPU's DRA driver passes through CDI: the devices the claims got, by index.
            indexes = ",".join(d.removeprefix(DEVICE_PREFIX) for d in devices)
            env.update({DEVICES_ENV: ",".join(devices), "CUDA_VISIBLE_DEVICES": indexes})
            env["NVIDIA_VISIBLE_DEVICES"] = indexes
            (self.dir / "devices").write_text(json.dumps(devices))
        argv = [
            rewrite_paths(expand(word, pod_env), mounts)
            for word in [*command, *(self.container.get("args") or [])]
        ]
        cwd = self.dir / "work"
        if self.container.get("workingDir"):
            mapped = rewrite_paths(self.container["workingDir"], mounts)
            if mapped != self.container["workingDir"]:
                cwd = Path(mapped)
        log_path = self.dir / "log"
        for stale in ("pid", "exit"):
            (self.dir / stale).unlink(missing_ok=True)
        with open(log_path, "wb") as out:
            # The shim is the process's parent (as containerd-shim is a container's): it outlives this
            # agent, so a restarted agent finds the process and, once it ended, its exit code.
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(POD_SHIM), str(self.dir), self.uid, "--", *argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.shim_pid = self.proc.pid
        deadline = time.monotonic() + SHIM_START_S
        while not self._read_pid() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.pid is None:
            self._kill(FORCE_DELETE_GRACE_S)
            finished = self._read_exit() or {}
            msg = str(finished.get("message") or f"failed to start {argv[0]!r}")
            self._report_terminated(128, "StartError", msg)
            return
        self.started_at = now()
        log.info("%s: started pid %d: %s", self.name, self.pid, argv)
        self._report_running()
        self._follow(log_path)

    def adopt(self) -> bool:
        """Take over the process a previous agent started for this pod (its shim outlived the agent),
        or the exit it recorded; False if there is none."""
        uid_file = self.dir / "uid"
        if not uid_file.exists() or uid_file.read_text().strip() != self.uid:
            return False
        if not self._read_pid() and self._read_exit() is None:
            return False
        status = (self.pod.get("status") or {}).get("containerStatuses") or [{}]
        running = (status[0].get("state") or {}).get("running") or {}
        self.started_at = running.get("startedAt") or now()
        return True

    def _adopted(self) -> None:
        log.info("%s: re-adopted pid %s (started by an earlier agent)", self.name, self.pid)
        if self.pid is not None and self._alive():
            self._report_running()
        self._follow(self.dir / "log")

    def _report_running(self) -> None:
        self.container_id = f"harness://{self.pid}"
        status = self._base_status("Running")
        status["conditions"] = self._conditions(True)
        status["containerStatuses"] = [
            self._container_status({"running": {"startedAt": self.started_at}}, ready=True, started=True)
        ]
        self._patch_status(status)

    def _read_pid(self) -> bool:
        try:
            data = json.loads((self.dir / "pid").read_text())
        except (OSError, ValueError):
            return False
        if data.get("uid") != self.uid:
            return False
        self.pid, self.pid_start = int(data["pid"]), int(data.get("start", -1))
        self.shim_pid = int(data["shim"]) if data.get("shim") else self.shim_pid
        self.container_id = f"harness://{self.pid}"
        return True

    def _read_exit(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.dir / "exit").read_text()))
        except (OSError, ValueError):
            return None

    def _alive(self) -> bool:
        """Whether the pod's process (this very one, not a later process with its pid) still runs."""
        if self.pid is None or not pid_alive(self.pid):
            return False
        return self.pid_start < 0 or start_time(self.pid) == self.pid_start

    def _shim_alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.shim_pid is not None and pid_alive(self.shim_pid)

    def _wait_ended(self, timeout: float) -> bool:
        """Wait until the process and its shim have ended (the shim writes the exit code last)."""
        deadline = time.monotonic() + timeout
        while self._alive() or self._shim_alive():
            if time.monotonic() >= deadline:
                return False
            if self.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            else:
                time.sleep(0.2)
        return True

    def _follow(self, log_path: Path) -> None:
        """Until the process ends (or the pod is deleted, or the agent stops); then report its exit."""
        while not self._wait_ended(0.5):
            if self.agent.stopping.is_set():
                self._kill(FORCE_DELETE_GRACE_S)
                return
            if self.delete_requested.is_set():
                grace = FORCE_DELETE_GRACE_S if self.gone.is_set() else self._grace_seconds()
                self._kill(grace)
                break
        finished = self._read_exit()
        if finished is not None:
            exit_code = int(finished["exitCode"])
        elif self.proc is not None and self.proc.returncode is not None:
            code = self.proc.returncode
            exit_code = code if code >= 0 else 128 - code
        else:  # the shim was killed too: nothing recorded how the process ended
            exit_code = 137
        with contextlib.suppress(OSError):
            (self.dir / "pid").unlink()
        log.info("%s: pid %s exited with %d", self.name, self.pid, exit_code)
        message = ""
        if exit_code != 0 and self.container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = log_tail(log_path)
        self._report_terminated(exit_code, "Completed" if exit_code == 0 else "Error", message)

    def _grace_seconds(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return max(float(grace), FORCE_DELETE_GRACE_S if self.gone.is_set() else 0.0)

    def _kill(self, grace: float) -> None:
        """SIGTERM the pod's process group, wait ``grace`` seconds, SIGKILL it; wait for its shim."""
        if self.pid is not None and self._alive():
            log.info("%s: SIGTERM to process group %d (grace %.0fs)", self.name, self.pid, grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            if not self._wait_ended(grace):
                log.info("%s: SIGKILL to process group %d", self.name, self.pid)
        # Whatever is left of the group (children of the main process, or the process itself) is killed.
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if not self._wait_ended(10.0) and self.shim_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.shim_pid, signal.SIGKILL)
            self._wait_ended(5.0)
        with contextlib.suppress(OSError):
            (self.dir / "pid").unlink()


# ---------------------------------------------------------------------------------------------
# The kubelet's pod-log endpoint, so `kubectl logs` and read_namespaced_pod_log work
# ---------------------------------------------------------------------------------------------
class LogHandler(BaseHTTPRequestHandler):
    """``GET /containerLogs/<namespace>/<pod>/<container>`` with ``follow``, ``tailLines``, ``limitBytes``
    (``timestamps``, ``sinceSeconds`` and ``sinceTime`` are ignored); callers need a client certificate
    signed by the cluster CA (the API server's ``--kubelet-client-certificate``)."""

    server: LogServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("log endpoint: " + format, *args)

    def _fail(self, code: int, message: str) -> None:
        body = message.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._fail(200, "ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._fail(404, f"the harness node agent serves only /containerLogs, not {url.path}")
            return
        _, namespace, pod, container = parts
        query = urllib.parse.parse_qs(url.query)

        def number(name: str) -> int | None:
            values = query.get(name)
            return int(values[0]) if values else None

        if query.get("previous") == ["true"]:
            self._fail(400, f'previous terminated container "{container}" in pod "{pod}" not found')
            return
        agent = self.server.agent
        path = agent.state_dir / "pods" / namespace / pod / "log"
        if not path.exists():
            self._fail(404, f'container "{container}" in pod "{pod}" is waiting to start')
            return
        try:
            tail, limit = number("tailLines"), number("limitBytes")
        except ValueError:
            self._fail(400, "tailLines and limitBytes must be integers")
            return
        follow = query.get("follow") == ["true"]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        with open(path, "rb") as f:
            data = f.read()
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail > 0 else b""
            sent = 0
            try:
                while True:
                    if limit is not None:
                        data = data[: max(0, limit - sent)]
                    if data:
                        self.wfile.write(data)
                        self.wfile.flush()
                        sent += len(data)
                    if not follow or (limit is not None and sent >= limit):
                        return
                    running = agent.is_running(namespace, pod)
                    data = f.read()
                    if not data:
                        if not running:
                            return
                        time.sleep(0.2)
                        data = f.read()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                return


class LogServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, agent: Agent, port: int, cert: str, key: str, client_ca: str) -> None:
        super().__init__(("127.0.0.1", port), LogHandler)
        self.agent = agent
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
        self.socket = ctx.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------
class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.api = Api(args.kubeconfig)
        self.node_name: str = args.node_name
        self.state_dir = Path(args.state_dir).resolve()
        self.resources = {
            "cpu": args.cpu,
            "memory": args.memory,
            "pods": str(args.max_pods),
            "ephemeral-storage": "100Gi",
            "nvidia.com/gpu": str(args.gpus),
        }
        self.gpus: int = args.gpus
        self.dra_driver: str = args.dra_driver
        self.base_env = dict(os.environ)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.deleting: set[str] = set()
        self.lock = threading.Lock()
        self.node_uid = ""
        self.kubelet_port: int = args.kubelet_port
        self.log_server: LogServer | None = None
        if args.kubelet_port:
            self.log_server = LogServer(
                self, args.kubelet_port, args.serving_cert, args.serving_key, args.client_ca
            )

    # -- node, lease --------------------------------------------------------------------------
    def _conditions(self) -> list[dict[str, Any]]:
        t = now()
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": "harness node agent",
                "lastHeartbeatTime": t,
                "lastTransitionTime": t,
            }
            for kind, status, reason in conds
        ]

    def _node_status(self) -> dict[str, Any]:
        return {
            "capacity": self.resources,
            "allocatable": self.resources,
            "conditions": self._conditions(),
            "addresses": [
                {"type": "InternalIP", "address": HOST_IP},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "hpo-operator harness node agent (local processes)",
                "containerRuntimeVersion": "harness://local-process",
                "kubeletVersion": KUBE_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
        }

    def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "hpo.dev/harness-node": "true",
                },
            },
            "spec": {},
            "status": self._node_status(),
        }
        for attempt in range(60):
            try:
                created = self.api.request("POST", "/api/v1/nodes", body=node)
                self.node_uid = created["metadata"]["uid"]
                break
            except ApiException as exc:
                if _status_code(exc) == 409:
                    patched = self.api.request(
                        "PATCH",
                        f"/api/v1/nodes/{self.node_name}/status",
                        body={"status": self._node_status()},
                        content_type=SMP,
                    )
                    self.node_uid = patched["metadata"]["uid"]
                    break
                log.warning("registering node failed: %s", exc)
            except Exception as exc:
                log.warning("registering node failed: %s", exc)
            time.sleep(min(0.5 * (attempt + 1), 5))
        else:
            raise SystemExit(f"could not register node {self.node_name}")
        log.info("registered node %s with %s", self.node_name, self.resources)

    def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": now_micro(),
        }
        try:
            self.api.request("PATCH", path, body={"spec": spec}, content_type=MERGE)
        except ApiException as exc:
            if _status_code(exc) != 404:
                raise
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node_name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": self.node_uid}
                    ],
                },
                "spec": spec,
            }
            self.api.request(
                "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body=lease
            )

    def resource_slice(self) -> dict[str, Any]:
        """The node's GPUs as DRA devices of the agent's driver: one pool, one slice."""
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"{self.node_name}-{self.dra_driver}"},
            "spec": {
                "driver": self.dra_driver,
                "nodeName": self.node_name,
                "pool": {"name": self.node_name, "generation": 1, "resourceSliceCount": 1},
                "devices": [
                    {
                        "name": f"{DEVICE_PREFIX}{i}",
                        "attributes": {
                            "index": {"int": i},
                            "uuid": {"string": f"GPU-harness-{self.node_name}-{i}"},
                            "productName": {"string": "harness stand-in GPU"},
                        },
                    }
                    for i in range(self.gpus)
                ],
            },
        }

    def publish_devices(self) -> None:
        """Create (or bring up to date) the node's ResourceSlice, as a DRA driver's kubelet plugin does
        with the node's own credentials; a cluster without ``resource.k8s.io/v1`` gets none."""
        if not self.dra_driver or self.gpus == 0:
            return
        body = self.resource_slice()
        path = "/apis/resource.k8s.io/v1/resourceslices"
        try:
            self.api.request("POST", path, body=body)
        except ApiException as exc:
            code = _status_code(exc)
            if code == 404:
                log.warning("the API server does not serve resource.k8s.io/v1: no ResourceSlice published")
                return
            if code != 409:
                raise
            name = body["metadata"]["name"]
            self.api.request("PATCH", f"{path}/{name}", body={"spec": body["spec"]}, content_type=MERGE)
        log.info(
            "published ResourceSlice %s-%s with %d device(s)", self.node_name, self.dra_driver, self.gpus
        )

    def heartbeat_loop(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(LEASE_RENEW_S):
            try:
                self.renew_lease()
                if time.monotonic() - last_status >= STATUS_REFRESH_S:
                    self.api.request(
                        "PATCH",
                        f"/api/v1/nodes/{self.node_name}/status",
                        body={"status": {"conditions": self._conditions()}},
                        content_type=SMP,
                    )
                    last_status = time.monotonic()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    # -- pods ---------------------------------------------------------------------------------
    def is_running(self, namespace: str, name: str) -> bool:
        """Whether a process of this pod may still write to its log."""
        with self.lock:
            workers = list(self.workers.values())
        return any(
            w.namespace == namespace and w.pod_name == name and w.is_alive() and not w.finished
            for w in workers
        )

    def finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        """Delete a pod whose process has ended, as the kubelet does (grace 0, uid precondition)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        for attempt in range(8):
            try:
                self.api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)
                log.info("pod %s/%s: deletion finished", namespace, name)
                return
            except ApiException as exc:
                if _status_code(exc) in (404, 409):
                    return
                log.warning("pod %s/%s: delete failed: %s", namespace, name, exc)
            except Exception as exc:
                log.warning("pod %s/%s: delete failed: %s", namespace, name, exc)
            time.sleep(min(0.25 * 2**attempt, 4))

    def on_pod(self, pod: dict[str, Any], deleted: bool = False) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is not None:
                if worker.update(None if deleted else pod):
                    return
                # finished already: only a deletion is left to finish
                if deleted or not meta.get("deletionTimestamp") or uid in self.deleting:
                    return
                self.deleting.add(uid)
                self._spawn_delete(meta)
                return
            if deleted:
                return
            phase = pod.get("status", {}).get("phase", "Pending")
            if meta.get("deletionTimestamp") and (
                phase in ("Succeeded", "Failed") or uid not in self.workers
            ):
                if uid not in self.deleting:
                    self.deleting.add(uid)
                    self._spawn_delete(meta)
                return
            if phase in ("Succeeded", "Failed"):
                return
            # A pod Running (or Pending) before this agent started is re-adopted by its worker: its
            # process, started by an earlier agent, is followed to its end, as a kubelet does.
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()

    def _spawn_delete(self, meta: dict[str, Any]) -> None:
        threading.Thread(
            target=self.finish_deletion, args=(meta["namespace"], meta["name"], meta["uid"]), daemon=True
        ).start()

    def sync(self, pods: list[dict[str, Any]]) -> None:
        """A full list: start what is new, and treat tracked pods missing from it as deleted."""
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self.on_pod(pod)
        with self.lock:
            missing = [w for uid, w in self.workers.items() if uid not in seen]
        for worker in missing:
            worker.update(None)

    def watch_loop(self) -> None:
        path = "/api/v1/pods"
        selector = f"spec.nodeName={self.node_name}"
        resource_version = ""
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                if not resource_version:
                    listing = self.api.get(path, fieldSelector=selector)
                    resource_version = listing["metadata"]["resourceVersion"]
                    self.sync(listing.get("items") or [])
                for event in self.api.watch(
                    path,
                    fieldSelector=selector,
                    resourceVersion=resource_version,
                    allowWatchBookmarks="true",
                    timeoutSeconds=WATCH_TIMEOUT_S,
                ):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        code = obj.get("code")
                        log.info("watch error %s: %s", code, obj.get("message"))
                        if code == 410:
                            resource_version = ""  # expired: list again
                        break
                    resource_version = obj.get("metadata", {}).get("resourceVersion") or resource_version
                    if kind in ("ADDED", "MODIFIED"):
                        self.on_pod(obj)
                    elif kind == "DELETED":
                        self.on_pod(obj, deleted=True)
                    if self.stopping.is_set():
                        return
                backoff = 0.5
            except ApiException as exc:
                if _status_code(exc) == 410:
                    resource_version = ""
                    continue
                log.warning("pod watch failed: %s", exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5)
            except Exception as exc:  # connection reset, timeout, API server restart
                log.warning("pod watch interrupted: %s", exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5)

    def run(self) -> None:
        if self.log_server is not None:
            threading.Thread(target=self.log_server.serve_forever, name="log-endpoint", daemon=True).start()
        self.register()
        self.renew_lease()
        try:
            self.publish_devices()
        except Exception as exc:  # the node still runs pods without DRA devices
            log.warning("publishing the ResourceSlice failed: %s", exc)
        threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.watch_loop, name="pod-watch", daemon=True).start()
        while not self.stopping.wait(1.0):
            pass
        log.info("stopping: ending pod processes")
        with self.lock:
            workers = list(self.workers.values())
        deadline = time.monotonic() + 10
        for worker in workers:
            if worker.is_alive():
                worker.join(timeout=max(0.1, deadline - time.monotonic()))
        for worker in workers:  # the stubborn rest
            if worker.pid is not None and worker._alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.pid, signal.SIGKILL)
        if self.log_server is not None:
            self.log_server.shutdown()
            self.log_server.server_close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Harness node agent: runs bound pods as local processes.")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--gpus", type=int, default=2, help="allocatable nvidia.com/gpu (default 2)")
    parser.add_argument(
        "--dra-driver",
        default=DRA_DRIVER,
        help=f"DRA driver name of the GPUs published in a ResourceSlice (default {DRA_DRIVER}; empty: none)",
    )
    parser.add_argument("--cpu", default="16", help="allocatable cpu (default 16)")
    parser.add_argument("--memory", default="64Gi", help="allocatable memory (default 64Gi)")
    parser.add_argument("--max-pods", type=int, default=110)
    parser.add_argument("--kubelet-port", type=int, default=0, help="pod-log endpoint port (0: none)")
    parser.add_argument("--serving-cert", help="TLS certificate of the pod-log endpoint")
    parser.add_argument("--serving-key", help="TLS key of the pod-log endpoint")
    parser.add_argument("--client-ca", help="CA that signs the API server's client certificate")
    args = parser.parse_args(argv)
    if args.gpus < 0:
        parser.error(f"--gpus must be >= 0, got {args.gpus}")
    if args.kubelet_port and not (args.serving_cert and args.serving_key and args.client_ca):
        parser.error("--kubelet-port needs --serving-cert, --serving-key and --client-ca")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    agent = Agent(args)

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d received", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
