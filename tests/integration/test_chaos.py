"""Fault injection: every component killed while a study runs; nothing lost, nothing wasted.

A study of cheap trials (``trials/quadratic.py``: a few short steps through the public reporting API,
retries allowed) runs on a control plane, node agent and PostgreSQL of this test's own, while faults
are injected one at a time, in a random order drawn from a seed:

- ``operator``: the operator SIGKILLed, started again;
- ``kube-apiserver``: killed, started again with the same flags;
- ``etcd``: killed, started again on its data;
- ``node-agent``: killed (its pods' processes run on under their shims), started again;
- ``postgres``: stopped (``pg_ctl stop -m fast``: every connection cut), started again a few seconds later;
- ``trial``: one trial process SIGKILLed while its trial still has steps to report.

Each kind happens at least once, then more are drawn while the study runs (at most ``MAX_FAULTS``). The
seed is printed; ``HPO_CHAOS_SEED=<seed>`` replays the same schedule (the timing of a 2-core machine
still varies). Afterwards: exactly the budget's trials, numbered 0..N-1, no parameter set twice, every
trial final (COMPLETE), no pod or process left running, the status equal to the storage, only the
attempts the faults killed counted as failed (one extra attempt per killed trial process, a TrialRetried
Event only for those trials, no FAIL), and no traceback or crashed reconcile in the operator's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpo_operator.core import names
from hpo_trial.contract import ATTR_ATTEMPTS
from kubernetes import client

from tests.harness.cluster import Cluster, pid_alive
from tests.harness.handle import ClusterHandle
from tests.harness.postgres import PostgresServer
from tests.integration.operator_env import (
    ROOT,
    TRIALS,
    Operator,
    apply,
    get_study,
    study_manifest,
)

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(600)]

SEED_ENV = "HPO_CHAOS_SEED"
KINDS = ("operator", "kube-apiserver", "etcd", "node-agent", "postgres", "trial")
TOTAL = 30
PARALLELISM = 3
STEPS = 8
STEP_SECONDS = 0.4
RETRIES = 3  # a trial process is killed at most this often per trial
MAX_FAULTS = 12
STUDY_TIMEOUT_S = 330.0  # the study, faults included, must succeed within this
NAME = "chaos"


@dataclass
class Faults:
    """What was injected, for the assertions and for the log printed on a failure."""

    seed: int
    done: list[str] = field(default_factory=list)
    killed: dict[int, list[int]] = field(default_factory=dict)  # trial number -> attempts killed
    lines: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.lines.append(f"{stamp} {line}")
        print(f"{stamp} chaos: {line}", flush=True)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, ClusterHandle]]:
    """A control plane and node agent of this test's own: its components are killed."""
    if os.environ.get("KUBECONFIG"):
        pytest.skip("kills and restarts the control plane's components: needs the harness's own cluster")
    harness = Cluster(tmp_path / "k8s", node_name="chaos-node", gpus=PARALLELISM + 1)
    harness.start()
    try:
        yield harness, ClusterHandle.for_harness(harness)
    finally:
        harness.stop()


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[PostgresServer]:
    if os.environ.get("HPO_TEST_POSTGRES_URL"):
        pytest.skip("stops and starts PostgreSQL: needs a server the harness started")
    with PostgresServer(tmp_path / "pg") as server:
        yield server


def _namespace(handle: ClusterHandle) -> str:
    core = handle.core()
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAME)))
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", NAME)
            return NAME
        except client.exceptions.ApiException:
            assert time.monotonic() < deadline, "no default ServiceAccount"
            time.sleep(0.2)


def _status(handle: ClusterHandle) -> dict[str, Any]:
    """The HPOStudy's status, or {} while the API server does not answer."""
    try:
        return dict(get_study(handle, NAME, NAME).get("status") or {})
    except Exception:
        return {}


def _storage(url: str) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _killable_trial(harness: Cluster, storage: optuna.storages.BaseStorage, faults: Faults) -> Any:
    """A trial process to kill: its trial RUNNING on that very attempt, with steps left to report (so the
    kill certainly fails the attempt), not killed ``RETRIES`` times already. (trial, attempt, pid) or None."""
    try:
        study_id = next(s._study_id for s in storage.get_all_studies() if s.study_name.startswith(f"{NAME}."))
        trials = {t.number: t for t in storage.get_all_trials(study_id, deepcopy=False)}
    except Exception:  # PostgreSQL is down: nothing is known
        return None
    candidates = []
    for pid_file in (harness.pods_dir / NAME).glob(f"{NAME}-trial-*/pid"):
        match = re.fullmatch(rf"{NAME}-trial-(\d+)(?:-r(\d+))?", pid_file.parent.name)
        if match is None:
            continue
        number, attempt = int(match[1]), int(match[2] or 0)
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(pid_file.read_text())["pid"])
            trial = trials.get(number)
            if trial is None or trial.state != optuna.trial.TrialState.RUNNING or not pid_alive(pid):
                continue
            if trial.user_attrs.get(ATTR_ATTEMPTS, 1) - 1 != attempt:
                continue
            if len(trial.intermediate_values) > STEPS - 3 or len(faults.killed.get(number, [])) >= RETRIES:
                continue
            candidates.append((number, attempt, pid))
    return min(candidates) if candidates else None


def _inject(
    kind: str,
    rng: random.Random,
    harness: Cluster,
    pg: PostgresServer,
    operator: Operator,
    storage: optuna.storages.BaseStorage,
    faults: Faults,
) -> bool:
    """One fault; False when it could not be injected now (no trial process to kill)."""
    if kind == "operator":
        operator.kill()
        time.sleep(rng.uniform(0.5, 2.0))
        operator.start()
        faults.note("operator SIGKILLed and started again")
    elif kind in ("kube-apiserver", "etcd", "node-agent"):
        harness.kill(kind)
        down = rng.uniform(0.5, 3.0)
        time.sleep(down)
        took = harness.restart(kind)
        faults.note(f"{kind} SIGKILLed, down {down:.1f} s, serving again {took:.1f} s after its restart")
    elif kind == "postgres":
        pg.pause()
        down = rng.uniform(3.0, 8.0)
        time.sleep(down)
        pg.resume()
        faults.note(f"PostgreSQL stopped for {down:.1f} s, started again")
    else:
        victim = None
        deadline = time.monotonic() + 15
        while victim is None and time.monotonic() < deadline:
            victim = _killable_trial(harness, storage, faults)
            if victim is None:
                time.sleep(0.2)
        if victim is None:
            return False
        number, attempt, pid = victim
        os.kill(pid, signal.SIGKILL)
        faults.killed.setdefault(number, []).append(attempt)
        faults.note(f"trial {number} attempt {attempt} (pid {pid}) SIGKILLed")
    faults.done.append(kind)
    return True


def test_every_component_killed_nothing_lost_nothing_wasted(
    own_cluster: tuple[Cluster, ClusterHandle], own_pg: PostgresServer, tmp_path: Path
) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1, 2**31))
    faults = Faults(seed)
    faults.note(f"seed {seed} (replay: {SEED_ENV}={seed})")
    rng = random.Random(seed)
    harness, handle = own_cluster
    handle.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    handle.kubectl("wait", "--for=condition=Established", "crd/hpostudies.hpo.dev", "--timeout=60s")
    namespace = _namespace(handle)
    url = own_pg.create_database("chaos")
    storage = _storage(url)
    operator = Operator(handle, namespace, url, tmp_path / "operator.log")
    operator.start()
    try:
        manifest = study_manifest(
            NAME,
            namespace,
            searchSpace=[
                {"name": "x", "type": "float", "low": -5.0, "high": 5.0},
                {"name": "depth", "type": "int", "low": 0, "high": 1000},
            ],
            trials={"total": TOTAL, "parallelism": PARALLELISM, "maxFailed": 0, "retries": RETRIES},
            sampler={"type": "TPE", "seed": seed % 10_000},
            template={
                "command": ["python", str(TRIALS / "quadratic.py")],
                "env": [
                    {"name": "TRIAL_STEPS", "value": str(STEPS)},
                    {"name": "TRIAL_STEP_SECONDS", "value": str(STEP_SECONDS)},
                ],
            },
        )
        applied = apply(handle, manifest, check=False)
        assert applied.returncode == 0, applied.stderr
        schedule = list(KINDS)
        rng.shuffle(schedule)
        deadline = time.monotonic() + STUDY_TIMEOUT_S
        while time.monotonic() < deadline:
            status = _status(handle)
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            started = (status.get("trials") or {}).get("started", 0)
            if len(faults.done) < MAX_FAULTS and started >= 2 and started < TOTAL - PARALLELISM:
                kind = schedule.pop(0) if schedule else rng.choice(KINDS)
                if not _inject(kind, rng, harness, own_pg, operator, storage, faults) and kind in KINDS:
                    schedule.insert(0, kind)  # no trial process to kill now: later
                time.sleep(rng.uniform(2.0, 5.0))  # let the system recover and make progress
            else:
                time.sleep(0.5)
        body = get_study(handle, namespace, NAME)
        status = body.get("status") or {}
        context = f"seed {seed}; faults:\n" + "\n".join(faults.lines)
        assert status.get("phase") == "Succeeded", f"{context}\nstatus: {json.dumps(status)[-3000:]}"
        assert set(faults.done) == set(KINDS), f"not every kind of fault happened: {context}"
        _assert_nothing_lost(handle, harness, storage, body, faults, context)
    finally:
        operator.stop()
        storage.engine.dispose()
        print("\n".join(faults.lines))
        print(operator.log[-4000:])
    log = operator.log
    assert "Traceback" not in log, f"a traceback in the operator's log (seed {seed})"
    assert "reconcile failed" not in log, f"a reconcile crashed (seed {seed})"
    errors = [line for line in log.splitlines() if "[ERROR" in line]
    assert errors == [], f"errors in the operator's log for transient outages (seed {seed}): {errors[:5]}"


def _assert_nothing_lost(
    handle: ClusterHandle,
    harness: Cluster,
    storage: optuna.storages.BaseStorage,
    body: dict[str, Any],
    faults: Faults,
    context: str,
) -> None:
    status = body["status"]
    study = optuna.load_study(study_name=status["studyName"], storage=storage)
    trials = study.get_trials()
    # Exactly the budget, numbered 0..N-1, every one final, no parameter set twice.
    assert [t.number for t in trials] == list(range(TOTAL)), context
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}, context
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == TOTAL, f"a parameter set ran twice: {context}"
    # The status equals the storage.
    assert status["trials"] == {
        "total": TOTAL,
        "started": TOTAL,
        "running": 0,
        "complete": TOTAL,
        "pruned": 0,
        "failed": 0,
        "waiting": 0,
    }, context
    assert status["bestTrial"]["number"] == study.best_trial.number, context
    assert status["bestTrial"]["value"] == study.best_value, context
    by_number = {t.number: t for t in trials}
    for row in status["recentTrials"]:  # the last trials, as stored: state, value, params, attempts
        t = by_number[row["number"]]
        assert (row["state"], row["value"], row["params"]) == ("COMPLETE", t.value, t.params), (row, context)
        assert row.get("attempts", 1) == t.user_attrs.get(ATTR_ATTEMPTS, 1), (row, context)
    # Only the attempts the faults killed were failed: one more attempt for each killed trial process.
    attempts = {t.number: t.user_attrs.get(ATTR_ATTEMPTS, 1) for t in trials}
    expected = {n: 1 + len(faults.killed.get(n, [])) for n in range(TOTAL)}
    assert attempts == expected, f"attempts {attempts} != {expected}: {context}"
    events = handle.core().list_namespaced_event(NAME).items
    retried = {
        int(m[1])
        for e in events
        if e.involved_object.kind == names.KIND and e.reason == "TrialRetried"
        for m in [re.match(r"Trial (\d+) ", e.message or "")]
        if m
    }
    assert retried <= set(faults.killed), f"TrialRetried for trials no fault killed: {retried}: {context}"
    pods = handle.core().list_namespaced_pod(NAME).items
    failed = sorted(p.metadata.name for p in pods if p.status.phase == "Failed")
    killed_pods = sorted(names.pod_name(NAME, n, a) for n, tries in faults.killed.items() for a in tries)
    assert failed == killed_pods, f"Failed pods {failed} != killed {killed_pods}: {context}"
    # No pod or process left running.
    assert [p.metadata.name for p in pods if p.status.phase in ("Pending", "Running")] == [], context
    assert harness.leftover_pod_pids() == [], context
