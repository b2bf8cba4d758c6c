"""The report endpoint: trial processes report through it instead of opening the storage themselves.

A trial given ``HPO_REPORT_URL`` and its token (:mod:`hpo_operator.core.tokens`) reports with
:class:`hpo_trial.remote.RemoteTrial`: the standard library's HTTP client, no database driver, no Optuna.
Here, on the operator's side (or ``hpo run``'s), each request runs what the direct path runs in the
trial process, :class:`hpo_trial.direct.TrialHandle`, for the attempt the token names, on the study's
storage; the trial process keeps the outage policy and retries.

* :class:`ReportService` answers one request (blocking: storage calls): it finds the study
  (a ``resolve`` function: the cluster's HPOStudies for the operator, the one study for ``hpo run``),
  checks the token against the study's key, and keeps one handle per attempt (an LRU; one it had not seen,
  after a restart or on another replica, is adopted: the trial sends what the handle kept).
* :class:`ReportServer` serves it over HTTP with aiohttp, on a thread and loop of its own, so neither
  kopf's loop nor ``hpo run``'s loop waits on it, and a standby replica serves as well as the leader.
* :class:`ClusterStudies` resolves a study from its HPOStudy, as the operator's driver does.

Answers: 200; 400 a malformed request; 403 a token that is not this attempt's; 404 a study this
endpoint does not serve; 409 the attempt no longer owns its trial (``superseded``); 503 the storage (or
the API server) does not answer, which the trial treats as an outage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import optuna
from aiohttp import web
from hpo_trial import contract
from hpo_trial.direct import STORAGE_ERRORS, TrialHandle
from hpo_trial.policy import AttemptSuperseded, first_line
from hpo_trial.remote import API
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from hpo_operator.core import names, tokens
from hpo_operator.core.spec import SpecError, StudySpec, parse_fields
from hpo_operator.shell import redact
from hpo_operator.shell.kube import Kube, KubeUnavailable, SecretProblem
from hpo_operator.shell.storage import Storages, StorageUnavailable, storage_errors, study_storage_url

log = logging.getLogger("hpo_operator.reports")

SESSIONS = 1024  # running attempts whose handles are kept (an evicted one is adopted again)
RESOLVED_S = 30.0  # how long a resolved study is trusted before its HPOStudy is read again
FRESH_S = 5.0  # a study is read again (a token that does not match, a study not served) at most this often
TOKEN = re.compile(r"[0-9a-f]{64}")
# The calls after which the attempt has nothing more to write.
ENDINGS = frozenset({"prune", "complete", "fail"})
MAX_BODY = 1 << 20
# Threads for the endpoint's storage calls: fewer than its engine's pool holds (5, and 10 more at need).
WORKERS = 8
# The user attributes a trial may set through the endpoint: its own, and the model it saved; the other
# ``hpo:`` attributes are the operator's (the attempt fencing reads ``hpo:attempts``).
TRIAL_SETTABLE_HPO_ATTRS = (contract.ATTR_MODEL_PATH,)


class Refused(Exception):
    """A request answered with an error status; the message is the answer's ``error``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ReportTarget:
    """What the endpoint needs of a study: its storage (uncached: the endpoint keeps one cache per
    study), its key, and what a trial's handle is built with (the pruner: unless the trial names its own)."""

    storage: optuna.storages.BaseStorage
    key: str
    objectives: tuple[contract.Objective, ...]
    pruner: dict[str, Any]


def target_of(spec: StudySpec, storage: optuna.storages.BaseStorage, study: str) -> ReportTarget:
    """The :class:`ReportTarget` of ``study`` (stored on ``storage``) run with ``spec``; 404 when the
    study is not stored or has no key yet (no attempt of it was given a token)."""
    with storage_errors("cannot read the study"):
        try:
            study_id = storage.get_study_id_from_name(study)
        except KeyError:
            raise Refused(404, f"study {study} is not in its storage") from None
        key = storage.get_study_system_attrs(study_id).get(tokens.ATTR_REPORT_KEY)
    if not isinstance(key, str):
        raise Refused(404, f"study {study} has given no trial a report token")
    objectives = tuple(contract.Objective(o.metric, o.direction) for o in spec.objective)
    return ReportTarget(storage, key, objectives, spec.pruner.config())


@dataclass
class _Session:
    handle: TrialHandle
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReportService:
    """Answers the report endpoint's requests; thread-safe (the server calls it from a thread pool).

    Each study gets one Optuna cache in front of its storage, shared by the handles of its attempts
    (a pruner reads the study's finished trials: once per study, not once per attempt). A handle is kept
    while its attempt runs and dropped once it ended the trial or was superseded.
    """

    def __init__(self, resolve: Callable[[str], ReportTarget], *, sessions: int = SESSIONS) -> None:
        self.resolve = resolve
        self.max_sessions = sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple[str, int, int], _Session] = OrderedDict()
        self._targets: dict[str, tuple[float, ReportTarget | Refused]] = {}
        self._caches: dict[str, tuple[optuna.storages.BaseStorage, optuna.storages.BaseStorage]] = {}

    def handle(self, op: str, token: str, body: Any) -> tuple[int, dict[str, Any]]:
        """``(status, answer)`` for one request."""
        try:
            return 200, self._answer(op, token, body)
        except AttemptSuperseded as e:
            return 409, {"superseded": e.reason}
        except UpdateFinishedTrialError:  # told between this attempt's check and its write
            return 409, {"superseded": "the trial finished meanwhile; this attempt writes nothing more"}
        except Refused as e:
            return e.status, {"error": str(e)}
        except (StorageUnavailable, KubeUnavailable) as e:
            return 503, {"error": redact.redact(str(e))}
        except STORAGE_ERRORS as e:
            return 503, {"error": redact.redact(first_line(e))}

    def _answer(self, op: str, token: str, body: Any) -> dict[str, Any]:
        act = OPS.get(op)
        if act is None:
            raise Refused(404, f"no such call: {op!r} (the calls: {', '.join(OPS)})")
        if not isinstance(body, Mapping):
            raise Refused(400, "the request must be a JSON object")
        study, trial, attempt = body.get("study"), body.get("trial"), body.get("attempt")
        if not isinstance(study, str) or not _whole(trial) or not _whole(attempt):
            raise Refused(400, "the request must name the study (a string), the trial and the attempt")
        if not TOKEN.fullmatch(token):  # checked before anything is read for the request
            raise Refused(403, "the request carries no trial token (HPO_REPORT_TOKEN)")
        target = self._target(study)
        if not tokens.token_matches(target.key, study, trial, attempt, token):
            target = self._target(study, fresh=True)  # the study may have been replaced since
            if not tokens.token_matches(target.key, study, trial, attempt, token):
                raise Refused(403, f"the token is not that of trial {trial}, attempt {attempt} of {study}")
        key = (study, trial, attempt)
        try:
            session = self._session(key, target, body.get("pruner"))
            with session.lock:
                answer = act(session.handle, body)
        except (AttemptSuperseded, UpdateFinishedTrialError):
            self._drop(key)
            raise
        except (TypeError, ValueError, KeyError, NotImplementedError) as e:
            raise Refused(400, f"{op}: {e}") from None
        if op in ENDINGS:
            self._drop(key)
        return answer

    def _target(self, study: str, *, fresh: bool = False) -> ReportTarget:
        """The study as resolved within :data:`RESOLVED_S` (a refusal: :data:`FRESH_S`); ``fresh``: read
        again unless it was read within :data:`FRESH_S` (wrong tokens cannot make it read at will)."""
        now = time.monotonic()
        with self._lock:
            known = self._targets.get(study)
        if known is not None:
            at, target = known
            if now - at < (FRESH_S if fresh or isinstance(target, Refused) else RESOLVED_S):
                if isinstance(target, Refused):
                    raise target
                return target
        try:
            target = self.resolve(study)
        except Refused as e:
            with self._lock:
                self._targets[study] = (now, e)
            raise
        with self._lock:
            self._targets[study] = (now, target)
        return target

    def _cache(self, study: str, storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
        """The study's one Optuna cache in front of ``storage`` (a new one if its storage changed)."""
        with self._lock:
            known = self._caches.get(study)
            if known is None or known[0] is not storage:
                known = (storage, optuna.storages.get_storage(storage))
                self._caches[study] = known
            return known[1]

    def _session(self, key: tuple[str, int, int], target: ReportTarget, pruner: Any) -> _Session:
        study, trial, attempt = key
        storage = self._cache(study, target.storage)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.handle.storage is storage:
                self._sessions.move_to_end(key)
                return session
        c = contract.TrialContract(
            storage_url="",
            study_name=study,
            trial_number=trial,
            params={},
            objectives=target.objectives,
            # The pruner the attempt was started with (its HPO_PRUNER, as on the direct path): a spec
            # edited since does not change a running attempt's decisions. It decides for this trial only.
            pruner=pruner if isinstance(pruner, dict) else target.pruner,
            attempt=attempt,
        )
        # One try at each storage call: the trial process retries. Adopted: whether the attempt still
        # owns its trial is checked by the call (``open`` checks it at once).
        try:
            handle = TrialHandle(c, storage=storage, retry_seconds=0, adopt=True)
        except KeyError:
            raise Refused(404, f"study {study} has no trial {trial}") from None
        handle.says_outcome = False
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session.handle.storage is not storage:  # not made meanwhile
                session = self._sessions[key] = _Session(handle)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def _drop(self, key: tuple[str, int, int]) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def forget(self, study: str) -> None:
        """Drop what is kept of ``study`` (it was deleted)."""
        with self._lock:
            self._targets.pop(study, None)
            self._caches.pop(study, None)
            for key in [k for k in self._sessions if k[0] == study]:
                del self._sessions[key]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _own(handle: TrialHandle, body: Mapping[str, Any]) -> None:
    """What the trial process kept of its attempt: its own reports and the rungs earlier attempts left."""
    reported = body.get("reported") or {}
    handle.reported = {int(k): float(v) for k, v in dict(reported).items()}
    handle._earlier_rungs = dict(body.get("earlierRungs") or {})


def _open(h: TrialHandle, body: Mapping[str, Any]) -> dict[str, Any]:
    h._current()
    # A retry's pruner does not see the rungs earlier attempts completed: those the handle found (as
    # the direct path does when it opens), which the trial sends back with each pruning question.
    return {"earlierRungs": h._earlier_rungs}


def _single(h: TrialHandle) -> None:
    if len(h.contract.objectives) > 1:
        raise ValueError(
            "a multi-objective study takes no intermediate values (Optuna prunes single-objective ones)"
        )


def _report(h: TrialHandle, body: Mapping[str, Any]) -> dict[str, Any]:
    _single(h)
    h.refresh()  # as stored now: another replica may have taken this attempt's earlier reports
    h.report_once(float(body["value"]), int(body["step"]))
    return {}


def _should_prune(h: TrialHandle, body: Mapping[str, Any]) -> dict[str, Any]:
    _single(h)
    _own(h, body)
    h.refresh()
    return {"prune": bool(h._should_prune())}


def _prune(h: TrialHandle, body: Mapping[str, Any]) -> dict[str, Any]:
    _own(h, body)
    h._finish(state=TrialState.PRUNED)
    return {}


def _complete(h: TrialHandle, body: Mapping[str, Any]) -> dict[str, Any]:
    values = [float(v) for v in body["values"]]
    if len(values) != len(h.contract.objectives) or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{len(h.contract.objectives)} finite value(s) expected, got {values}")
    h._finish(values=values)
    return {}


def _fail(h: TrialHandle, body: Mapping[str, Any]) -> dict[str, Any]:
    missing = body.get("missingMetric")
    h.missing_metric = str(missing) if missing is not None else None
    reason = str(body["reason"])[:1000]
    told = h.fail(reason)
    if not told:  # a retry of a request whose answer was lost: this attempt's own FAIL is told already
        t = h.storage.get_trial(h.trial_id)
        told = t.state == TrialState.FAIL and t.user_attrs.get(contract.ATTR_FAIL_REASON) == reason
    return {"told": told}


def _set_attr(h: TrialHandle, body: Mapping[str, Any]) -> dict[str, Any]:
    key = str(body["key"])
    if key.startswith("hpo:") and key not in TRIAL_SETTABLE_HPO_ATTRS:
        raise ValueError(f"the user attribute {key!r} is the operator's; a trial sets its own names")
    h.set_attr(key, body.get("value"))
    return {}


OPS: dict[str, Callable[[TrialHandle, Mapping[str, Any]], dict[str, Any]]] = {
    "open": _open,
    "report": _report,
    "should_prune": _should_prune,
    "prune": _prune,
    "complete": _complete,
    "fail": _fail,
    "set_attr": _set_attr,
}


class ReportServer:
    """:class:`ReportService` over HTTP (aiohttp) on a thread and event loop of its own."""

    def __init__(self, service: ReportService, host: str, port: int, *, workers: int = WORKERS) -> None:
        self.service = service
        self._sock = listen(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hpo-report")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="hpo-report-server", daemon=True)
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None

    def start(self) -> ReportServer:
        self._thread.start()
        if not self._started.wait(30):  # pragma: no cover - a loop that cannot start a server
            raise RuntimeError("the report endpoint did not start")
        log.info("serving trial reports on port %d", self.port)
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(API + "/{op}", self._request)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        self._started.set()
        self._loop.run_forever()

    async def _request(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the request must be a JSON object"}, status=400)
        loop = asyncio.get_running_loop()
        call = self.service.handle
        status, answer = await loop.run_in_executor(
            self._executor, call, request.match_info["op"], token, body
        )
        return web.json_response(answer, status=status)

    def stop(self) -> None:
        if self._thread.is_alive():
            runner = self._runner

            async def close() -> None:
                if runner is not None:
                    await runner.cleanup()
                self._loop.stop()

            asyncio.run_coroutine_threadsafe(close(), self._loop)
            self._thread.join(10)
        self._sock.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


def listen(host: str, port: int) -> socket.socket:
    """The endpoint's socket: on ``host``, or (``""``) every address, IPv6 and IPv4 where the host has
    both. SO_REUSEPORT: processes of one user on one host (the test harness's replicas) may share a port,
    as a Service spreads connections over a cluster's replicas; only the same user can join it."""
    if not host and socket.has_dualstack_ipv6():
        try:
            return socket.create_server(
                ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=True
            )
        except OSError:  # IPv6 switched off where it runs: IPv4 alone
            pass
    return socket.create_server((host or "0.0.0.0", port), reuse_port=True)


class ClusterStudies:
    """Resolves an Optuna study the operator named to its HPOStudy's :class:`ReportTarget`: the study's
    spec and storage as the driver finds them (the storage Secret, or the operator's default)."""

    def __init__(self, kube: Kube, storages: Storages, default_url: str | None) -> None:
        self.kube = kube
        self.storages = storages
        self.default_url = default_url

    def __call__(self, study: str) -> ReportTarget:
        try:
            namespace, name, uid = names.parse_optuna_study_name(study)
        except ValueError as e:
            raise Refused(404, str(e)) from None
        body = self.kube.read_study(namespace, name)
        if body is None or (body.get("metadata") or {}).get("uid") != uid:
            raise Refused(404, f"no {names.KIND} {namespace}/{name} with uid {uid}")
        try:
            spec = parse_fields(body.get("spec"))
            url = study_storage_url(self.kube, spec, namespace, self.default_url)
        except SpecError:  # the operator says what is wrong, in the study's status
            raise Refused(404, f"{names.KIND} {namespace}/{name} has an invalid spec") from None
        except SecretProblem:  # the study waits for its Secret; so do its trials
            raise Refused(
                503, f"the storage Secret of {names.KIND} {namespace}/{name} is not readable"
            ) from None
        return target_of(spec, self.storages.shared(url, "report"), study)
