"""The Kubernetes API, as the operator and ``hpo`` use it: a study's pods, its storage Secret, Events, status.

Plain dicts in and out (the API server's camelCase JSON), so the core reads pods without the client's
model classes. "Already exists" on create and "not found" on delete are success: every action may be
repeated after a crash.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import functools
import json
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, Literal, ParamSpec, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from hpo_operator.core import names
from hpo_operator.shell import redact

P = ParamSpec("P")
R = TypeVar("R")

COMPONENT = "hpo-operator"
CreateResult = Literal["created", "exists", "foreign"]


class KubeUnavailable(RuntimeError):
    """The API server did not answer (or refused for a reason not the spec's); message redacted."""


class SecretProblem(RuntimeError):
    """A study's storage Secret is missing or lacks its key; the message says which."""


class SecretMissing(SecretProblem):
    """The Secret (``key`` is ``None``) or its key is not there."""

    def __init__(self, namespace: str, name: str, key: str | None = None) -> None:
        self.namespace, self.name, self.key = namespace, name, key
        what = f"Secret {namespace}/{name}"
        super().__init__(f"{what} has no key {key!r}" if key is not None else f"{what} does not exist")


class SecretConflict(SecretProblem):
    """The operator's Secret name (``<name>-storage``) is taken by a Secret this HPOStudy does not own."""


class PodRejected(ValueError):
    """The API server refused a rendered trial pod (the template is invalid); the message says why."""


class PodQuotaExceeded(RuntimeError):
    """A ResourceQuota has no room for a trial pod now; it may have later. The message says which."""


def connect(pool_size: int = 32, *, retries: bool = True) -> client.ApiClient:
    """A client for the cluster the operator runs in, or the one ``KUBECONFIG`` names; its connection
    pool holds ``pool_size`` connections (one per worker thread). ``retries=False``: a failed request is
    not tried again by urllib3 (whose retries would multiply a request's timeout)."""
    try:
        config.load_incluster_config()
        configuration = client.Configuration.get_default_copy()
    except ConfigException:
        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size  # handlers and daemons share it from many threads
    if not retries:
        configuration.retries = False
    return client.ApiClient(configuration)


def connect_kubeconfig() -> tuple[client.ApiClient, str]:
    """A client for the current context of the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``, as
    ``kubectl`` uses it) and that context's namespace; :class:`KubeUnavailable` says why not."""
    configuration = client.Configuration()
    try:
        config.load_kube_config(client_configuration=configuration)
        _, context = config.list_kube_config_contexts()
    except (ConfigException, FileNotFoundError, TypeError) as e:
        raise KubeUnavailable(f"cannot use the kubeconfig (KUBECONFIG or ~/.kube/config): {e}") from None
    namespace = ((context or {}).get("context") or {}).get("namespace") or "default"
    return client.ApiClient(configuration), namespace


def api_message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body or "{}").get("message") or e.reason)
    except (ValueError, AttributeError):
        return str(e.reason)


def api_error(e: ApiException, doing: str) -> KubeUnavailable:
    return KubeUnavailable(redact.redact(f"{doing}: {e.status} {api_message(e)}"))


# What urllib3 puts before the cause: the connection (``<...HTTPSConnection object at 0x..>: `` or
# ``HTTPSConnection(host='...', port=...): ``) and ``Failed to establish a new connection: ``.
_CONNECTION = re.compile(r"(<[^<>]* object at 0x[0-9a-f]+>|\w*Connection\(host=[^)]*\)): ")


def unreachable(e: HTTPError) -> KubeUnavailable:
    """The API server did not answer (refused, reset, timed out: an API-server restart), in one line:
    urllib3's cause without its pool, URL and object reprs."""
    cause: BaseException = getattr(e, "reason", None) or e  # MaxRetryError: the last try's error
    text = _CONNECTION.sub("", str(cause)).strip().splitlines()
    detail = (text[0] if text else "") or type(cause).__name__
    detail = detail.split("Failed to establish a new connection: ")[-1]
    return KubeUnavailable(redact.redact(f"cannot reach the API server ({detail})"))


def answering(method: Callable[P, R]) -> Callable[P, R]:
    """A call of the API: the API server not answering at all is :class:`KubeUnavailable` (an outage,
    waited for with the usual back-off), like its own errors, never an unexpected exception."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except HTTPError as e:
            raise unreachable(e) from None

    return call


def _one_line(text: str, limit: int = 300) -> str:
    """What an error said, on one line: without the response body a websocket handshake error appends
    (after `` -+-+- ``) and without the tags of an HTML error page a node may answer with."""
    text = re.sub(r"<[^>]*>", " ", text.split(" -+-+- ")[0])
    return " ".join(text.split())[:limit]


def _exec_outcome(status: bytes | None) -> tuple[int | None, str]:
    """An exec's closing Status (its error channel) as (exit code, message): 0 on ``Success``, the
    ``ExitCode`` cause's value on a non-zero exit, None with the Status's message when it names no exit
    code (the command could not start), None with "" when the node sent no Status at all."""
    if not status:
        return None, ""
    try:
        obj = json.loads(status)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return None, _one_line(status.decode(errors="replace"))
    if obj.get("status") == "Success":
        return 0, ""
    for cause in (obj.get("details") or {}).get("causes") or ():
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message")), ""
            except (TypeError, ValueError):
                break
    return None, _one_line(str(obj.get("message") or obj.get("reason") or status.decode(errors="replace")))


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    # ----------------------------------------------------------------------------------- discovery

    @answering
    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether the API server's discovery lists ``plural`` in ``group/version`` (its CRD installed,
        established, and known to the discovery of this API server instance)."""
        try:
            found = self.custom.get_api_resources(group, version)
        except ApiException as e:
            if e.status == 404:
                return False
            raise api_error(e, f"cannot read the API server's discovery of {group}/{version}") from None
        return any(r.name == plural for r in (found.resources or []))

    # ---------------------------------------------------------------------------------------- pods

    @answering
    def list_pods(self, namespace: str, study: str) -> list[dict[str, Any]]:
        """Every pod of the HPOStudy ``study`` (by label), as the API server's JSON."""
        try:
            resp = self.core.list_namespaced_pod(
                namespace, label_selector=names.study_selector(study), _preload_content=False
            )
        except ApiException as e:
            raise api_error(e, f"cannot list the pods of {study}") from None
        return list(json.loads(resp.data).get("items") or [])

    @answering
    def create_pod(self, pod: Mapping[str, Any], owner_uid: str, *, dry_run: bool = False) -> CreateResult:
        """Create a trial pod: ``created``; ``exists`` (ours, a 409); ``foreign`` (the name is taken by
        a pod of an older HPOStudy of the same name). Raises :class:`PodRejected` when the API server
        refuses the pod itself (400, 422, or an admission 403: LimitRange, a quota's required limits),
        :class:`PodQuotaExceeded` when a ResourceQuota is full."""
        meta = pod["metadata"]
        name = meta.get("name") or meta.get("generateName", "")
        try:
            self.core.create_namespaced_pod(meta["namespace"], pod, dry_run="All" if dry_run else None)
            return "created"
        except ApiException as e:
            if e.status == 409 and not dry_run:
                existing = self.read_pod(meta["namespace"], meta["name"])
                if existing is None:
                    return "exists"  # deleted meanwhile: the next reconcile sees it gone
                owners = (existing.get("metadata") or {}).get("ownerReferences") or []
                return "exists" if any(o.get("uid") == owner_uid for o in owners) else "foreign"
            if e.status in (400, 403, 422):
                message = api_message(e)
                if e.status == 403 and ("exceeded quota" in message or "status unknown for quota" in message):
                    raise PodQuotaExceeded(redact.redact(message)) from None
                # A 403 is an admission refusal (LimitRange, a quota's required limits) unless it is
                # RBAC's: the operator may not create pods at all, which no spec change fixes.
                if e.status != 403 or " cannot create resource " not in message:
                    raise PodRejected(redact.redact(message)) from None
            raise api_error(e, f"cannot create pod {name}") from None

    @answering
    def read_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise api_error(e, f"cannot read pod {name}") from None
        return dict(json.loads(resp.data))

    @answering
    def delete_pod(self, namespace: str, name: str) -> None:
        try:
            self.core.delete_namespaced_pod(name, namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise api_error(e, f"cannot delete pod {name}") from None

    @answering
    def start_pod(self, pod: Mapping[str, Any]) -> None:
        """Create a pod the operator does not track as a trial (``hpo export``'s)."""
        meta = pod["metadata"]
        try:
            self.core.create_namespaced_pod(meta["namespace"], pod)
        except ApiException as e:
            raise api_error(e, f"cannot create pod {meta['name']}") from None

    def exec_out(
        self, namespace: str, pod: str, command: list[str], sink: BinaryIO, idle_timeout: float = 120.0
    ) -> None:
        """Run ``command`` in the pod's first container and write its standard output, as bytes, to
        ``sink``; raises :class:`KubeUnavailable` naming its exit code and standard error if it fails.

        The frames are read here, blocking on the websocket itself, until the server closes it: the
        client's ``WSClient.update`` polls the raw socket, which does not see frames already decrypted
        into the TLS socket's buffer, and so loses or delays the stream's last frames
        (kubernetes-client/python#2414). ``idle_timeout`` bounds a silence, not the whole copy."""
        from kubernetes.stream import stream
        from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL
        from websocket import ABNF, WebSocketException, WebSocketTimeoutException

        try:
            ws = stream(
                self.core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=command,
                stdout=True,
                stderr=True,
                stdin=False,
                tty=False,
                binary=True,
                _preload_content=False,
            )
        except Exception as e:  # ApiException, or the websocket's handshake refused by the node
            raise KubeUnavailable(
                f"cannot run {command[0]} in pod {pod} through the exec API: "
                f"{_one_line(str(e)) or type(e).__name__}"
            ) from None
        err = b""
        status: bytes | None = None
        try:
            ws.sock.settimeout(idle_timeout)
            while True:
                try:
                    opcode, frame = ws.sock.recv_data_frame(True)
                except WebSocketTimeoutException:
                    raise KubeUnavailable(
                        f"{command[0]} in pod {pod} sent nothing for {idle_timeout:.0f} s; gave up"
                    ) from None
                except (WebSocketException, OSError) as e:
                    if status is not None:  # the connection ended without a close frame after the Status
                        break
                    raise KubeUnavailable(
                        f"the exec stream of {command[0]} in pod {pod} broke off: "
                        f"{_one_line(str(e)) or type(e).__name__}"
                    ) from None
                if opcode == ABNF.OPCODE_CLOSE:
                    break
                if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or len(frame.data) < 2:
                    continue
                channel, data = frame.data[0], frame.data[1:]
                if channel == STDOUT_CHANNEL:
                    sink.write(data)
                elif channel == STDERR_CHANNEL:
                    err += data
                elif channel == ERROR_CHANNEL:
                    status = (status or b"") + data
        finally:
            with contextlib.suppress(WebSocketException, OSError):
                ws.close()
            with contextlib.suppress(WebSocketException, OSError):
                ws.sock.shutdown()  # close() leaves the socket open once the server has closed
        said = _one_line(err.decode(errors="replace")) or "no message"
        code, failure = _exec_outcome(status)
        if code is None:
            raise KubeUnavailable(
                f"cannot run {command[0]} in pod {pod} through the exec API: "
                + (failure or f"the node sent no exit status ({said})")
            )
        if code != 0:
            raise KubeUnavailable(f"{' '.join(command)} in pod {pod} exited {code}: {said}")

    # -------------------------------------------------------------------------------------- secrets

    @answering
    def read_secret_value(self, namespace: str, name: str, key: str) -> str:
        """The text under ``key`` of a Secret (registered for redaction); :class:`SecretMissing` when
        the Secret or its key is not there."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                raise SecretMissing(namespace, name) from None
            raise api_error(e, f"cannot read Secret {name}") from None
        data = secret.data or {}
        if key not in data:
            raise SecretMissing(namespace, name, key)
        try:
            value = base64.b64decode(data[key]).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise SecretProblem(f"Secret {namespace}/{name}: key {key!r} does not hold a URL") from None
        redact.register(value)
        return value

    @answering
    def ensure_secret(self, secret: Mapping[str, Any], owner_uid: str) -> None:
        """Create the operator-managed Secret, or bring its data up to date (the URL is never logged).

        A Secret of that name that is not owned by ``owner_uid`` (a user's own) is left alone:
        :class:`SecretConflict`.
        """
        meta = secret["metadata"]
        try:
            self.core.create_namespaced_secret(meta["namespace"], secret)
            return
        except ApiException as e:
            if e.status != 409:
                raise api_error(e, f"cannot create Secret {meta['name']}") from None
        try:
            current = self.core.read_namespaced_secret(meta["name"], meta["namespace"])
        except ApiException as e:
            if e.status == 404:  # deleted meanwhile: the next reconcile creates it
                raise KubeUnavailable(f"Secret {meta['name']} was deleted while being updated") from None
            raise api_error(e, f"cannot read Secret {meta['name']}") from None
        owners = current.metadata.owner_references or []
        if not any(o.uid == owner_uid for o in owners):
            raise SecretConflict(
                f"Secret {meta['namespace']}/{meta['name']} exists and is not this HPOStudy's (the operator "
                "keeps the default storage URL in a Secret of that name): rename or delete that Secret, "
                "or set spec.storage.secretRef"
            )
        try:
            if (current.data or {}) != secret["data"]:
                self.core.patch_namespaced_secret(meta["name"], meta["namespace"], {"data": secret["data"]})
        except ApiException as e:
            raise api_error(e, f"cannot update Secret {meta['name']}") from None

    # ------------------------------------------------------------------------------ events, status

    @answering
    def post_event(
        self, owner: Mapping[str, str], type_: str, reason: str, message: str, now: dt.datetime | None = None
    ) -> None:
        """An Event on the HPOStudy (``owner``: namespace, name, uid); the message is redacted.

        Named ``<study>.<nanoseconds, hex>`` as client-go's recorder names Events, so that they list in
        the order they were posted: ``kubectl describe`` orders Events by ``lastTimestamp``, which holds
        whole seconds, and keeps the listed order among Events of one second (a trial's end, then the new
        best trial). No ``eventTime``: with one, the API server validates the Event as a new-style one
        (a message of at most 1,024 bytes, an ``action``). A name taken already gets a generated one."""
        stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{owner['name']}.{time.time_ns():x}", "namespace": owner["namespace"]},
            "involvedObject": {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": owner["name"],
                "namespace": owner["namespace"],
                "uid": owner["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": redact.redact(message),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance[:128],
            "firstTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            try:
                self.core.create_namespaced_event(owner["namespace"], body)
            except ApiException as e:
                if e.status != 409:
                    raise
                body["metadata"] = {"generateName": f"{owner['name']}.", "namespace": owner["namespace"]}
                self.core.create_namespaced_event(owner["namespace"], body)
        except ApiException as e:
            if e.status == 404:  # the namespace is being deleted
                return
            raise api_error(e, "cannot post an Event") from None

    @answering
    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch the HPOStudy's status (redacted); ``False`` if the HPOStudy is gone."""
        try:
            self.custom.patch_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
                {"status": redact.redact(dict(status))},
                _content_type="application/merge-patch+json",
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise api_error(e, f"cannot update the status of {name}") from None
        return True

    @answering
    def read_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The HPOStudy as the API server's JSON; ``None`` if there is none of that name."""
        try:
            return dict(
                self.custom.get_namespaced_custom_object(
                    names.GROUP, names.VERSION, namespace, names.PLURAL, name
                )
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise api_error(e, f"cannot read {names.KIND} {namespace}/{name}") from None
