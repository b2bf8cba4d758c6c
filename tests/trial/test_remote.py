"""The light reporting path: a trial process reports through the report endpoint (hpo_trial.remote) served
by the operator's side (hpo_operator.shell.reports), on a real Optuna storage (SQLite here; the operator's
integration tests run it against PostgreSQL through the operator)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpo_operator.core import tokens
from hpo_operator.core.spec import parse_fields
from hpo_operator.shell.reports import Refused, ReportServer, ReportService, target_of
from hpo_operator.shell.storage import Storages, StudyStore
from hpo_trial import policy, reporting
from hpo_trial.contract import ATTR_ATTEMPTS, ATTR_FAIL_REASON, ATTR_MISSING_METRIC, Objective, TrialContract
from hpo_trial.remote import RemoteTrial, ReportRefused
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[2]
STUDY = "ns.light.uid-1"
SPEC = {
    "objective": [{"metric": "score", "direction": "maximize"}],
    "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
    "pruner": {"type": "Median", "nStartupTrials": 2, "nWarmupSteps": 0},
    "template": {"image": "t", "command": ["python", "t.py"]},
}


class Endpoint:
    """A study on SQLite and the report endpoint serving it, as the operator serves its studies."""

    def __init__(self, tmp: Path, port: int = 0) -> None:
        self.url = f"sqlite:///{tmp / 'study.db'}"
        self.study = optuna.create_study(study_name=STUDY, storage=self.url, direction="maximize")
        self.storages = Storages()
        self.key = StudyStore(self.storages.open(self.url, STUDY), STUDY).report_key()
        self.spec = parse_fields(SPEC)
        self.resolved = 0
        self.port = port
        self.server: ReportServer | None = None

    def resolve(self, study: str) -> Any:
        self.resolved += 1
        if study != STUDY:
            raise Refused(404, f"not served: {study}")
        return target_of(self.spec, self.storages.shared(self.url, "report"), study)

    def start(self) -> Endpoint:
        self.server = ReportServer(ReportService(self.resolve), "127.0.0.1", self.port).start()
        self.port = self.server.port
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def contract(self, number: int, attempt: int = 0, token: str | None = None) -> TrialContract:
        return TrialContract(
            storage_url="",
            study_name=STUDY,
            trial_number=number,
            params=self.study.trials[number].params if number < len(self.study.trials) else {},
            objectives=(Objective("score", "maximize"),),
            pruner=self.spec.pruner.config(),
            attempt=attempt,
            report_url=f"http://127.0.0.1:{self.port}",
            report_token=token or tokens.trial_token(self.key, STUDY, number, attempt),
        )

    def trial(self, number: int, attempt: int = 0, **kw: Any) -> RemoteTrial:
        return RemoteTrial(self.contract(number, attempt, kw.pop("token", None)), **kw)

    def stored(self, number: int) -> optuna.trial.FrozenTrial:
        return optuna.load_study(study_name=STUDY, storage=self.url).trials[number]


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    e = Endpoint(tmp_path).start()
    try:
        yield e
    finally:
        e.stop()
        e.storages.dispose()


def finished_trials(e: Endpoint, values: list[float]) -> None:
    """Trials that reported ``value`` at steps 0..2 and completed with it (the pruner's history)."""
    for v in values:
        t = e.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
        for step in range(3):
            t.report(v, step)
        e.study.tell(t, v)


def test_a_trial_reports_prunes_and_completes_through_the_endpoint(endpoint: Endpoint) -> None:
    finished_trials(endpoint, [0.8, 0.9])
    good = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    bad = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})

    trial = endpoint.trial(good.number)
    assert trial.params == {"x": good.params["x"]}
    assert trial.report(0.95, 0) is True
    assert trial.should_prune() is False
    trial.complete(0.97)
    stored = endpoint.stored(good.number)
    assert stored.state == TrialState.COMPLETE and stored.value == 0.97
    assert stored.intermediate_values == {0: 0.95}

    # The study's Median pruner (the attempt's HPO_PRUNER, as on the direct path) stops the bad one.
    trial = endpoint.trial(bad.number)
    assert trial.report(0.1, 0) is True
    assert trial.should_prune() is True
    trial.prune()
    stored = endpoint.stored(bad.number)
    assert stored.state == TrialState.PRUNED and stored.value == 0.1


def test_fail_and_attributes(endpoint: Endpoint) -> None:
    t = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    trial = endpoint.trial(t.number)
    trial.set_attr("note", {"epochs": 3})
    with pytest.raises(ValueError, match="'hpo:attempts' is the operator's"):
        trial.set_attr(ATTR_ATTEMPTS, 99)  # the attempt fencing reads it: not a trial's to write
    with pytest.raises(reporting.MetricNotFound, match="the metrics that exist are: loss"):
        trial.complete_from_metrics({"loss": 1.0})
    assert trial.fail("objective metric 'score' was not produced") is True
    stored = endpoint.stored(t.number)
    assert stored.state == TrialState.FAIL
    assert stored.user_attrs["note"] == {"epochs": 3}
    assert stored.user_attrs[ATTR_MISSING_METRIC] == "score"
    assert stored.user_attrs[ATTR_FAIL_REASON].startswith("objective metric 'score'")
    assert ATTR_ATTEMPTS not in stored.user_attrs
    assert trial.fail("again") is False  # told once


def test_a_token_is_good_for_its_own_attempt_only(endpoint: Endpoint) -> None:
    a = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    b = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    others = {
        "another trial's": tokens.trial_token(endpoint.key, STUDY, b.number, 0),
        "another attempt's": tokens.trial_token(endpoint.key, STUDY, a.number, 1),
        "another key's": tokens.trial_token(tokens.new_key(), STUDY, a.number, 0),
        "a made-up": "0" * 64,
    }
    for what, token in others.items():
        with pytest.raises(ReportRefused, match=f"the token is not that of trial {a.number}, attempt 0"):
            endpoint.trial(a.number, token=token)
        assert what  # every kind of wrong token is refused at once: nothing retried
    assert endpoint.stored(a.number).state == TrialState.RUNNING
    # A study the endpoint does not serve is refused too, naming it.
    contract = endpoint.contract(a.number)
    stranger = TrialContract(**{**contract.__dict__, "study_name": "ns.other.uid"})
    with pytest.raises(ReportRefused, match=r"not served: ns\.other\.uid"):
        RemoteTrial(stranger)


def test_an_attempt_that_no_longer_owns_its_trial_exits_cleanly(endpoint: Endpoint) -> None:
    t = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    endpoint.study._storage.set_trial_user_attr(t._trial_id, ATTR_ATTEMPTS, 1)
    first = endpoint.trial(t.number, attempt=0)
    # The operator starts attempt 1 (attempts so far: 2) while attempt 0 still runs.
    endpoint.study._storage.set_trial_user_attr(t._trial_id, ATTR_ATTEMPTS, 2)
    with pytest.raises(reporting.AttemptSuperseded, match="attempt 1 runs it now") as caught:
        first.report(0.5, 0)
    assert caught.value.code == 0  # a SystemExit(0): the process ends cleanly, no failure counted
    with pytest.raises(reporting.AttemptSuperseded):
        first.complete(0.5)  # and it writes nothing more
    second = endpoint.trial(t.number, attempt=1)
    second.complete(0.7)
    assert endpoint.stored(t.number).value == 0.7
    with pytest.raises(reporting.AttemptSuperseded, match="already finished"):
        endpoint.trial(t.number, attempt=1)  # a retry that finds its trial finished


def test_a_retry_decides_on_its_own_reports_after_the_endpoint_restarted(endpoint: Endpoint) -> None:
    finished_trials(endpoint, [0.8, 0.9])
    t = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    endpoint.study._storage.set_trial_user_attr(t._trial_id, ATTR_ATTEMPTS, 2)
    for step in range(3):  # the failed attempt 0 got far, with good values
        endpoint.study._storage.set_trial_intermediate_value(t._trial_id, step, 0.99)
    retry = endpoint.trial(t.number, attempt=1)
    assert retry.report(0.05, 0) is True
    # A fresh endpoint (an operator restart, another replica) adopts the attempt: the pruner sees this
    # attempt's own report only (the trial sends what it reported), and stops it.
    endpoint.stop()
    endpoint.start()
    retry.url = f"http://127.0.0.1:{endpoint.port}"
    assert retry.should_prune() is True
    retry.prune()
    stored = endpoint.stored(t.number)
    assert stored.state == TrialState.PRUNED and stored.value == 0.05  # its own last report


def test_an_endpoint_outage_is_an_outage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "RETRY_FIRST_DELAY", 0.2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = Endpoint(tmp_path, port=port)
    t = e.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    try:
        # Nothing listens: opening is retried for the retry time, then said in one line.
        with pytest.raises(reporting.StorageUnavailable, match=r"opening study .* did not answer for 1 s"):
            e.trial(t.number, retry_seconds=1)
        # It comes up while a trial waits to open: the trial goes on.
        threading.Timer(1.0, e.start).start()
        trial = e.trial(t.number, retry_seconds=30)
        assert trial.report(0.5, 0) is True
        e.stop()  # an operator restart: a report is skipped, the final tell waits for it
        assert trial.report(0.6, 1) is False
        assert trial.should_prune() is False
        threading.Timer(1.5, e.start).start()
        started = time.monotonic()
        trial.complete(0.6)
        assert time.monotonic() - started >= 1.0
        stored = e.stored(t.number)
        assert stored.state == TrialState.COMPLETE and stored.intermediate_values == {0: 0.5}
    finally:
        e.stop()
        e.storages.dispose()


def test_a_custom_container_loads_no_database_client(endpoint: Endpoint, tmp_path: Path) -> None:
    """The public API's import, and a whole trial through the endpoint, in a fresh process."""
    t = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    program = (
        "import sys\n"
        "from hpo_trial import reporting\n"
        "trial = reporting.current_trial()\n"
        "trial.report(1.0, 0)\n"
        "trial.should_prune()\n"
        "trial.complete(trial.params['x'])\n"
        "print(type(trial).__name__, sorted(m for m in ('optuna', 'sqlalchemy', 'psycopg2', 'numpy') "
        "if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(endpoint.contract(t.number).to_env())
    env["PYTHONPATH"] = str(REPO / "trial_image")
    out = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split("\n")[0] == "RemoteTrial []", out.stdout + out.stderr
    assert endpoint.stored(t.number).value == t.params["x"]
    # Without an endpoint, the same program opens the storage itself.
    env.pop("HPO_REPORT_URL")
    env.pop("HPO_REPORT_TOKEN")
    env["HPO_STORAGE_URL"] = endpoint.url
    u = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    env.update(HPO_TRIAL_NUMBER=str(u.number), HPO_TRIAL_PARAMS=json.dumps(u.params))
    out = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("TrialHandle ['numpy', 'optuna', 'sqlalchemy'"), out.stdout + out.stderr


def test_replicas_answering_in_turn_decide_on_every_report(endpoint: Endpoint, tmp_path: Path) -> None:
    """Two replicas on one storage, the trial's requests alternating between them (as a Service spreads
    its connections): each reads the attempt's reports as stored, not as it last saw them."""
    for _ in range(2):  # finished trials that start low and end high: medians 0.1, then 0.9
        f = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
        for step, v in enumerate((0.1, 0.9, 0.9)):
            f.report(v, step)
        endpoint.study.tell(f, 0.9)
    t = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    other = ReportServer(ReportService(endpoint.resolve), "127.0.0.1", 0).start()
    try:
        urls = [f"http://127.0.0.1:{endpoint.port}", f"http://127.0.0.1:{other.port}"]
        trial = endpoint.trial(t.number)  # opened on the first
        assert trial.report(0.5, 0) and not trial.should_prune()  # above step 0's median
        trial.url = urls[1]
        assert trial.report(0.6, 1)  # the second replica takes step 1, below its median...
        trial.url = urls[0]
        assert trial.report(0.7, 0)  # ...the first, a repeated step 0 (the first value stays)...
        assert trial.should_prune() is True  # ...and decides at step 1, which it did not take
        trial.prune()
        stored = endpoint.stored(t.number)
        assert stored.intermediate_values == {0: 0.5, 1: 0.6}
        assert stored.state == TrialState.PRUNED and stored.value == 0.6
    finally:
        other.stop()


def test_what_the_endpoint_keeps_and_refuses(endpoint: Endpoint) -> None:
    service = ReportService(endpoint.resolve)
    a, b = (endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)}) for _ in range(2))

    def call(op: str, number: int, token: str | None = None, **body: Any) -> tuple[int, dict[str, Any]]:
        token = token if token is not None else tokens.trial_token(endpoint.key, STUDY, number, 0)
        return service.handle(op, token, {"study": STUDY, "trial": number, "attempt": 0, **body})

    # A token that is no token is refused before anything is read, never an error of the endpoint's.
    resolved = endpoint.resolved
    for token in ("é", "", "x" * 64, "A" * 64):
        status, answer = call("open", a.number, token=token)
        assert (status, answer) == (403, {"error": "the request carries no trial token (HPO_REPORT_TOKEN)"})
    assert endpoint.resolved == resolved
    # Wrong tokens do not make it read the study at will.
    for _ in range(5):
        assert call("open", a.number, token="0" * 64)[0] == 403
    assert endpoint.resolved == resolved + 1
    # Attempts of one study share one cache of it; an attempt's handle goes once it ended its trial.
    assert call("open", a.number) == (200, {"earlierRungs": {}})
    assert call("open", b.number)[0] == 200
    handles = [s.handle for s in service._sessions.values()]
    assert len(handles) == 2 and handles[0].storage is handles[1].storage
    assert call("complete", a.number, values=[0.5]) == (200, {})
    assert [k[1] for k in service._sessions] == [b.number]
    # A FAIL told again (its answer lost) is still this attempt's own.
    assert call("fail", b.number, reason="diverged") == (200, {"told": True})
    assert call("fail", b.number, reason="diverged") == (200, {"told": True})
    assert call("fail", a.number, reason="late") == (200, {"told": False})  # finished as COMPLETE: kept
    assert endpoint.stored(a.number).state == TrialState.COMPLETE
    assert not service._sessions
    # Malformed requests are the caller's (400), named.
    c = endpoint.study.ask({"x": optuna.distributions.FloatDistribution(-5, 5)})
    status, answer = call("complete", c.number, values=[float("nan")])
    assert status == 400 and "finite value" in answer["error"]
    status, answer = call("report", c.number, value="high", step=0)
    assert status == 400 and answer["error"].startswith("report:")
    assert call("nothing", c.number)[0] == 404
