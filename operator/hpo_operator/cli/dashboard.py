"""``hpo dashboard``: optuna-dashboard on one study, read-only unless asked, quiet in the terminal.

optuna-dashboard serves every study of a storage (on a cluster's shared PostgreSQL, every team's), lets
the page rename and delete studies, tell trials and edit notes, and its server logs each request (the
page polls every few seconds). So ``hpo dashboard``:

* shows only the study it was given (:class:`OneStudy`), and ``/`` opens that study's page;
* answers only GET and HEAD unless ``--writable`` (:func:`read_only`): a POST, PUT or DELETE gets
  ``403`` with a reason the page shows;
* labels the values with the spec's metric names when the study has none recorded (studies made before
  ``hpo`` recorded them);
* logs nothing per request; a server error still prints its traceback.
"""

from __future__ import annotations

import copy
import json
import socketserver
from collections.abc import Callable, Container, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.study._frozen import FrozenStudy

METRIC_NAMES_ATTR = "study:metric_names"  # where Optuna keeps Study.metric_names
READ_METHODS = ("GET", "HEAD")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class OneStudy(BaseStorage):
    """A storage that shows one study of another: the rest is hidden, the metric names filled in.

    Every call goes to ``inner``; a study other than the shown one is not listed and not found by name.
    """

    def __init__(self, inner: BaseStorage, study_name: str, metrics: Sequence[str] | None) -> None:
        self.inner = inner
        self.study_name = study_name
        self.study_id = inner.get_study_id_from_name(study_name)
        self.metrics = list(metrics) if metrics else None

    def _with_names(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.metrics and METRIC_NAMES_ATTR not in attrs:
            return {**attrs, METRIC_NAMES_ATTR: self.metrics}
        return attrs

    # ---------------------------------------------------------------- what is shown, what is changed

    def get_all_studies(self) -> list[FrozenStudy]:
        shown = []
        for s in self.inner.get_all_studies():
            if s._study_id == self.study_id:
                s = copy.copy(s)
                s.system_attrs = self._with_names(dict(s.system_attrs))
                shown.append(s)
        return shown

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        attrs = self.inner.get_study_system_attrs(study_id)
        return self._with_names(dict(attrs)) if study_id == self.study_id else attrs

    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name != self.study_name:
            raise KeyError(f"no study {study_name!r} here")
        return self.study_id

    # ------------------------------------------------------------------------------- passed through

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self.inner.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self.inner.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.inner.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.inner.set_study_system_attr(study_id, key, value)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.inner.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.inner.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.inner.get_study_user_attrs(study_id)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self.inner.create_new_trial(study_id, template_trial)

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self.inner.set_trial_param(trial_id, param_name, param_value_internal, distribution)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        return self.inner.set_trial_state_values(trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.inner.set_trial_intermediate_value(trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.inner.set_trial_user_attr(trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.inner.set_trial_system_attr(trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.inner.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self.inner.get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self.inner.get_best_trial(study_id)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def remove_session(self) -> None:
        self.inner.remove_session()


def read_only(app: WSGIApp) -> WSGIApp:
    """The WSGI app answering only GET and HEAD; anything else is refused with a reason the page shows."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        body = json.dumps(
            {"reason": "hpo dashboard is read-only; start it with --writable to change the study"}
        ).encode()
        start_response(
            "403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return guarded


def opening_on(app: WSGIApp, path: str) -> WSGIApp:
    """The WSGI app with ``/`` and ``/dashboard`` (the study list) sent to ``path`` (the study's page)."""

    def redirecting(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/").rstrip("/") in ("", "/dashboard"):
            start_response("302 Found", [("Location", path), ("Content-Length", "0")])
            return [b""]
        return app(environ, start_response)

    return redirecting


class _QuietHandler(WSGIRequestHandler):
    """No line per request (the page polls every few seconds)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def study_path(study_id: int) -> str:
    return f"/dashboard/studies/{study_id}"


def build_server(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    metrics: Sequence[str] | None,
    host: str,
    port: int,
    *,
    writable: bool,
) -> tuple[WSGIServer, str]:
    """The server (not yet serving) and the study page's path; ``OSError`` if it cannot listen."""
    import optuna_dashboard

    shown = OneStudy(storage, study_name, metrics)
    app: WSGIApp = optuna_dashboard.wsgi(shown)
    if not writable:
        app = read_only(app)
    path = study_path(shown.study_id)
    server = make_server(host, port, opening_on(app, path), _ThreadingServer, _QuietHandler)
    return server, path


__all__ = ["OneStudy", "build_server", "opening_on", "read_only", "study_path"]
