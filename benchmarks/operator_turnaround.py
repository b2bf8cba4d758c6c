"""How well the operator keeps trial slots (GPUs) busy: the idle gap between one trial's process exiting
and the next one starting on the same slot, and the study's wall time against the ideal.

One invocation runs the same study (``--trials`` N, ``--parallelism`` P, each trial a custom container
that sleeps ``--trial-seconds`` D and reports an objective through ``hpo_trial.reporting``) two ways, next
to the ideal:

* **ideal**: ``ceil(N / P) * D``, every slot busy from the first second to the last;
* **hpo run (local)**: ``hpo run`` on this machine (trials as local processes, the same ``decide`` and
  ``apply_plan`` as the operator), storage in the same PostgreSQL server;
* **operator (cluster)**: an HPOStudy on the test harness cluster (``tests/harness``: a real
  kube-apiserver, controller-manager and scheduler, and a node with P ``nvidia.com/gpu``, so a slot is a
  GPU the scheduler accounts for), the CRD installed, the operator (``python -m hpo_operator``, its
  default reconcile interval unless ``--reconcile-interval``) running as a local process; the trial
  script reaches the pods through a ConfigMap volume.

**What the cluster numbers measure.** The harness node agent runs each pod's command as a local process:
no image pull, no container runtime, no kubelet, no CNI. The numbers are the operator + API server +
scheduler path (and the agent's status reports), not what a real node adds on top.

**Timestamps.** The container's command is ``sh -c`` around the trial: the shell prints its clock
(``date +%s.%N``) before it starts Python (``spawn``) and once Python has exited (``exit``); the Python
trial prints its own readings (``start`` at its first statement, ``work_start``/``work_end`` around the
sleep, ``end`` after its final tell). Same clock, both modes, sub-millisecond resolution. Pod status times
(``startedAt``/``finishedAt``) are whole seconds in the Kubernetes API, so they are shown only as a
cross-check; Optuna's ``datetime_start`` (the ask) and ``datetime_complete`` (the tell) place the
controller's decisions.

* **slot**: the N processes are laid on P slots in spawn order; a process takes a slot never used yet
  while there is one (an unused GPU was idle since the submission), else the slot free the longest.
  Spawning while all P slots are busy is an error (it cannot happen with parallelism P).
* **gap** (turnaround): ``spawn`` of a process minus ``exit`` of the previous process on its slot.
* **wall**: from just before the study is submitted (HPOStudy created / ``hpo run`` started) until it
  is seen done (``status.phase: Succeeded`` through a watch / ``hpo run`` exited). **utilization**:
  ideal / wall. **startup**: submission to the first spawn. **tail**: the last exit to done.
* **tell -> ask**: a slot's previous trial's ``datetime_complete`` to its next trial's ``datetime_start``
  (includes the previous trial's Python exit: the slot is busy until its process is gone).
* each gap is split into stages at the times a pod watch saw each change (operator) or at the ask
  (local): exit -> pod ``Succeeded`` seen (node agent) -> next trial asked (the operator woke, reconciled,
  asked) -> pod added (the operator created it) -> pod bound (scheduler) -> spawn (node agent).
* what a trial spends besides D: shell + Python start-up, imports and study load, the tell, Python's exit.

Usage::

    .venv/bin/python benchmarks/operator_turnaround.py                  # N=12, P=3, D=5 s: about 2 min
    .venv/bin/python benchmarks/operator_turnaround.py --trials 24 --parallelism 4 --trial-seconds 3 \\
        --repeats 2 --json /tmp/turnaround.json

Without ``KUBECONFIG`` it starts a harness cluster (P GPUs) and PostgreSQL of its own (and stops them);
with ``KUBECONFIG`` naming a cluster from ``python -m tests.harness up`` (and ``HPO_TEST_POSTGRES_URL``) it
uses those. Other clusters are refused: the trial pods must reach PostgreSQL on 127.0.0.1 and share this
machine's clock.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MARKER = "TURNAROUND "  # the Python record: {"trial", "start", "work_start", "work_end", "end"}
SPAWN_MARKER = "TURNAROUND_SPAWN "  # the wrapping shell, before it starts Python
EXIT_MARKER = "TURNAROUND_EXIT "  # the wrapping shell, once Python has exited
SLEEP_VAR = "TURNAROUND_TRIAL_SECONDS"
# The operator keeps the pods of the last 100 finished trials; their logs are read at the end.
MAX_TRIALS = 100
HEADER_NOTE = (
    "The harness node agent runs each pod's command as a local process (no image pull, container runtime "
    "or kubelet): the cluster numbers measure the operator + API server + scheduler path."
)

# The trial: its own clock at its first statement, the contract, D seconds of "work", the final tell.
TRIAL_SCRIPT = f'''\
import time

start = time.time()
import json
import os

from hpo_trial import reporting

trial = reporting.current_trial()
work_start = time.time()
time.sleep(float(os.environ["{SLEEP_VAR}"]))
work_end = time.time()
x = float(trial.params["x"])
trial.complete(-((x - 1.0) ** 2))
end = time.time()
record = {{"trial": trial.number, "start": start, "work_start": work_start, "work_end": work_end, "end": end}}
print("{MARKER}" + json.dumps(record), flush=True)
'''

# The container's command: a shell notes the time, runs the trial, notes the time it exited, exits with its
# status. `date +%s.%N` is GNU date (nanoseconds); the harness and `hpo run` run it on this machine.
WRAPPER = (
    f'echo "{SPAWN_MARKER}$(date +%s.%N)"; python "$1"; code=$?; '
    f'echo "{EXIT_MARKER}$(date +%s.%N)"; exit $code'
)


def trial_command(script: str) -> list[str]:
    """``sh -c WRAPPER sh SCRIPT``: the script path is a word of its own (the harness maps mount paths)."""
    return ["sh", "-c", WRAPPER, "sh", script]


# ------------------------------------------------------------------------------------ the arithmetic


@dataclass(frozen=True)
class Run:
    """One trial process: its number and its own clock readings (epoch seconds)."""

    trial: int
    start: float  # the container's process started (the wrapping shell's first command)
    end: float  # the container's process is about to exit (the trial's Python process has exited)


@dataclass(frozen=True)
class Gap:
    """The idle time of a slot between two trial processes."""

    slot: int
    prev: int  # trial number that ended
    next: int  # trial number that started next on that slot
    seconds: float


@dataclass(frozen=True)
class Schedule:
    slot_of: dict[int, int]  # trial number -> slot
    gaps: tuple[Gap, ...]  # in the order the next processes started


@dataclass(frozen=True)
class Stats:
    n: int
    median: float | None
    p90: float | None
    max: float | None
    mean: float | None


def ideal_seconds(trials: int, parallelism: int, trial_seconds: float) -> float:
    """``ceil(N / P) * D``: the wall time with every slot busy all the time."""
    if trials < 1 or parallelism < 1:
        raise ValueError(f"trials and parallelism must be at least 1, got {trials} and {parallelism}")
    if not trial_seconds > 0:
        raise ValueError(f"trial_seconds must be positive, got {trial_seconds}")
    return math.ceil(trials / parallelism) * trial_seconds


def utilization(ideal: float, wall: float) -> float:
    """Slot utilization: ideal / actual wall time."""
    if not wall > 0:
        raise ValueError(f"wall time must be positive, got {wall}")
    return ideal / wall


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear interpolation between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def stats(values: Sequence[float]) -> Stats:
    if not values:
        return Stats(0, None, None, None, None)
    return Stats(
        len(values),
        percentile(values, 50),
        percentile(values, 90),
        float(max(values)),
        float(sum(values) / len(values)),
    )


def assign_slots(runs: Sequence[Run], slots: int) -> Schedule:
    """Lay the processes on ``slots`` slots in start order and measure each slot's idle gaps.

    A starting process takes a never-used slot while one is left, else the slot free the longest
    (whose previous process ended first). Raises ``ValueError`` when a process starts while every slot
    is busy, ends before it starts, or a trial number repeats.
    """
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    seen: set[int] = set()
    for r in runs:
        if r.trial in seen:
            raise ValueError(f"trial {r.trial} appears twice")
        seen.add(r.trial)
        if r.end < r.start:
            raise ValueError(f"trial {r.trial} ends ({r.end}) before it starts ({r.start})")
    last: dict[int, Run] = {}  # slot -> its latest process
    slot_of: dict[int, int] = {}
    gaps: list[Gap] = []
    for r in sorted(runs, key=lambda r: (r.start, r.trial)):
        if len(last) < slots:
            slot = len(last)
        else:
            free = [(prev.end, s) for s, prev in last.items() if prev.end <= r.start]
            if not free:
                busy = ", ".join(f"trial {p.trial} until {p.end:.3f}" for p in last.values())
                raise ValueError(
                    f"trial {r.trial} started at {r.start:.3f} while all {slots} slots were busy ({busy})"
                )
            _, slot = min(free)
            prev = last[slot]
            gaps.append(Gap(slot, prev.trial, r.trial, r.start - prev.end))
        last[slot] = r
        slot_of[r.trial] = slot
    return Schedule(slot_of, tuple(gaps))


def stage_durations(
    gaps: Sequence[Gap], stages: Sequence[tuple[str, str, str]], times: Mapping[int, Mapping[str, float]]
) -> dict[str, list[float]]:
    """Split each gap into consecutive stages.

    ``stages`` lists ``(label, side, event)`` in time order, ``side`` being ``"prev"`` (the trial that
    ended) or ``"next"`` (the one that started); ``times[trial][event]`` is when that event happened.
    The duration of stage *i* (``i >= 1``) is its event's time minus stage *i - 1*'s, so the durations of
    a gap add up to the time between the first and the last event. A gap missing an event is skipped.
    """
    if len(stages) < 2:
        raise ValueError("at least two stages are needed")
    out: dict[str, list[float]] = {label: [] for label, _, _ in stages[1:]}
    for g in gaps:
        points = []
        for label, side, event in stages:
            if side not in ("prev", "next"):
                raise ValueError(f"stage {label!r}: side must be 'prev' or 'next', got {side!r}")
            trial = g.prev if side == "prev" else g.next
            t = times.get(trial, {}).get(event)
            if t is None:
                break
            points.append((label, t))
        else:
            for (_, before), (label, t) in itertools.pairwise(points):
                out[label].append(t - before)
    return out


@dataclass
class ModeResult:
    """One study run one way."""

    mode: str
    repeat: int
    submitted: float
    done: float
    runs: list[Run]
    times: dict[int, dict[str, float]]  # per trial: every event time known (epoch seconds)
    schedule: Schedule | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall(self) -> float:
        return self.done - self.submitted

    def tell_to_ask(self) -> list[float]:
        assert self.schedule is not None
        out = []
        for g in self.schedule.gaps:
            told = self.times.get(g.prev, {}).get("told")
            asked = self.times.get(g.next, {}).get("asked")
            if told is not None and asked is not None:
                out.append(asked - told)
        return out


# (label, side, event, what happens in it): the stages of a gap, in time order (see stage_durations).
Stage = tuple[str, str, str, str]
STAGES: dict[str, tuple[Stage, ...]] = {
    "operator": (
        ("trial process exited", "prev", "exit", ""),
        ("exited -> pod Succeeded seen", "prev", "pod_done", "node agent: exit noticed, status written"),
        ("pod Succeeded -> next trial asked", "next", "asked", "operator: woken, reconciled, asked Optuna"),
        ("asked -> pod added", "next", "pod_added", "operator: records the launch, creates the pod"),
        ("pod added -> pod bound", "next", "pod_bound", "kube-scheduler"),
        ("pod bound -> process spawned", "next", "spawn", "node agent: sees the binding, starts the process"),
    ),
    "local": (
        ("trial process exited", "prev", "exit", ""),
        ("exited -> next trial asked", "next", "asked", "hpo run: woken by the exit, decides, asks Optuna"),
        ("asked -> process spawned", "next", "spawn", "hpo run: records the launch, starts the process"),
    ),
}
# What a trial process does besides its D seconds: (label, from event, to event).
TRIAL_PARTS: tuple[tuple[str, str, str], ...] = (
    ("shell + Python start-up", "spawn", "start"),
    ("imports, trial contract, study load", "start", "work_start"),
    ("final tell", "work_end", "end"),
    ("Python exit", "end", "exit"),
)


def startup_stages(results: Sequence[ModeResult]) -> dict[str, list[float]]:
    """Submission to the first trial process, split at that trial's ask (Optuna ``datetime_start``)."""
    out: dict[str, list[float]] = {"submitted -> first trial asked": [], "asked -> its process spawned": []}
    for r in results:
        first = min(r.runs, key=lambda run: run.start)
        asked = r.times.get(first.trial, {}).get("asked")
        if asked is not None:
            out["submitted -> first trial asked"].append(asked - r.submitted)
            out["asked -> its process spawned"].append(first.start - asked)
    return out


def summarize(results: Sequence[ModeResult], parallelism: int, ideal: float) -> dict[str, Any]:
    """Pool the repeats of one mode: walls, utilization, gaps, their stages, the trials' own overhead."""
    mode = results[0].mode
    gaps = [g.seconds for r in results for g in (r.schedule.gaps if r.schedule else ())]
    walls = [r.wall for r in results]
    startup = [min(run.start for run in r.runs) - r.submitted for r in results]
    tail = [r.done - max(run.end for run in r.runs) for r in results]
    durations = [run.end - run.start for r in results for run in r.runs]
    idle = [parallelism * r.wall - sum(run.end - run.start for run in r.runs) for r in results]
    wall = percentile(walls, 50)
    stages = [(label, side, event) for label, side, event, _ in STAGES[mode]]
    pooled: dict[str, list[float]] = {label: [] for label, _, _ in stages[1:]}
    for r in results:
        for label, values in stage_durations(r.schedule.gaps if r.schedule else (), stages, r.times).items():
            pooled[label] += values
    parts = {
        label: asdict(stats([t[b] - t[a] for r in results for t in r.times.values() if a in t and b in t]))
        for label, a, b in TRIAL_PARTS
    }
    out: dict[str, Any] = {
        "mode": mode,
        "repeats": len(results),
        "wall_s": walls,
        "wall_median_s": wall,
        "utilization": utilization(ideal, wall),
        "startup_median_s": percentile(startup, 50),
        "tail_median_s": percentile(tail, 50),
        "trial_process_median_s": percentile(durations, 50),
        "idle_slot_seconds_median": percentile(idle, 50),
        "gap_s": asdict(stats(gaps)),
        "tell_to_ask_s": asdict(stats([x for r in results for x in r.tell_to_ask()])),
        "gap_stages_s": {label: asdict(stats(v)) for label, v in pooled.items()},
        "trial_parts_s": parts,
        "startup_stages_s": {
            label: asdict(stats(values)) for label, values in startup_stages(results).items()
        },
    }
    if mode == "operator":
        coarse = [
            r.times[g.next]["status_started"] - r.times[g.prev]["status_finished"]
            for r in results
            for g in (r.schedule.gaps if r.schedule else ())
            if "status_finished" in r.times[g.prev] and "status_started" in r.times[g.next]
        ]
        out["gap_from_pod_status_s"] = asdict(stats(coarse))
    return out


# ----------------------------------------------------------------------------------------- the runs


def spec(trials: int, parallelism: int, trial_seconds: float, command: list[str]) -> dict[str, Any]:
    return {
        "objective": [{"metric": "score", "direction": "maximize"}],
        "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
        "trials": {"total": trials, "parallelism": parallelism, "maxFailed": 0, "retries": 0},
        "sampler": {"type": "TPE", "seed": 0},
        "template": {"command": command, "env": [{"name": SLEEP_VAR, "value": f"{trial_seconds:g}"}]},
    }


def parse_output(text: str, trial: int, where: str) -> dict[str, float]:
    """The times a trial's output holds: the shell's spawn and exit, the Python record's readings."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(MARKER):
            record = json.loads(line[len(MARKER) :])
            if int(record.pop("trial")) != trial:
                raise RuntimeError(f"{where}: the output is trial {record} 's, expected trial {trial}")
            found.update({k: float(v) for k, v in record.items()})
        elif line.startswith(SPAWN_MARKER):
            found["spawn"] = float(line[len(SPAWN_MARKER) :])
        elif line.startswith(EXIT_MARKER):
            found["exit"] = float(line[len(EXIT_MARKER) :])
    missing = [k for k in ("spawn", "start", "work_start", "work_end", "end", "exit") if k not in found]
    if missing:
        tail = "\n".join(text.splitlines()[-20:])
        raise RuntimeError(f"{where}: the trial's output lacks {', '.join(missing)}; its last lines:\n{tail}")
    return found


def optuna_times(storage_url: str, study_name: str, trials: int) -> dict[int, dict[str, float]]:
    """Each trial's ``datetime_start`` (asked) and ``datetime_complete`` (told), as epoch seconds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    out: dict[int, dict[str, float]] = {}
    states = {t.number: t.state.name for t in study.trials}
    bad = {n: s for n, s in states.items() if s != "COMPLETE"}
    if len(states) != trials or bad:
        raise RuntimeError(f"study {study_name}: expected {trials} COMPLETE trials, got {states}")
    for t in study.trials:
        # Optuna stores naive local times (datetime.now()); the operator, hpo and trials share this clock.
        assert t.datetime_start is not None and t.datetime_complete is not None
        out[t.number] = {"asked": t.datetime_start.timestamp(), "told": t.datetime_complete.timestamp()}
    return out


def init_storage(url: str) -> str:
    """Create Optuna's tables in a new database, as a deployed operator's database has them: the first
    study on an empty database would otherwise pay for the schema in its start-up."""
    import optuna
    from hpo_trial.contract import engine_kwargs

    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    storage.engine.dispose()
    return url


def run_local(
    work: Path, repeat: int, storage_url: str, args: argparse.Namespace, timeout: float
) -> ModeResult:
    """One ``hpo run`` of the study, trials as local processes."""
    import yaml

    d = work / f"local-{repeat}"
    d.mkdir(parents=True)
    script = d / "trial.py"
    script.write_text(TRIAL_SCRIPT)
    name = f"turnaround-local-{repeat}"
    manifest = {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "HPOStudy",
        "metadata": {"name": name},
        "spec": spec(args.trials, args.parallelism, args.trial_seconds, trial_command(str(script))),
    }
    path = d / "study.yaml"
    path.write_text(yaml.safe_dump(manifest))
    argv = [sys.executable, "-m", "hpo_operator.cli.main", "run", str(path), "--storage", storage_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    # `python` in the wrapper is this interpreter's, as on the harness node (its PATH starts with the venv).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    with open(d / "hpo-run.log", "wb") as out:
        submitted = time.time()
        proc = subprocess.Popen(argv, cwd=d, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=30)
            raise RuntimeError(f"hpo run did not finish in {timeout:.0f}s; see {d / 'hpo-run.log'}") from None
        done = time.time()
    if code != 0:
        log = (d / "hpo-run.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"hpo run exited {code}:\n{log}")
    study_name = f"local.{name}"
    times = optuna_times(storage_url, study_name, args.trials)
    logs = d / ".hpo" / study_name
    for n in times:
        log_path = logs / f"trial-{n}.log"
        times[n].update(parse_output(log_path.read_text(errors="replace"), n, str(log_path)))
    return _result("local", repeat, submitted, done, times, args.parallelism)


def _result(
    mode: str, repeat: int, submitted: float, done: float, times: dict[int, dict[str, float]], slots: int
) -> ModeResult:
    runs = [Run(n, t["spawn"], t["exit"]) for n, t in sorted(times.items())]
    result = ModeResult(mode, repeat, submitted, done, runs, times)
    result.schedule = assign_slots(runs, slots)
    return result


class PodWatch:
    """Watches a study's pods from a resourceVersion on and notes when each change was first seen."""

    def __init__(self, core: Any, namespace: str, selector: str, resource_version: str) -> None:
        from kubernetes import watch

        self.core = core
        self.namespace = namespace
        self.selector = selector
        self.rv = resource_version
        self.seen: dict[str, dict[str, float]] = {}
        self.pods: dict[str, Any] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self._thread.start()

    def _note(self, name: str, event: str, t: float) -> None:
        self.seen.setdefault(name, {}).setdefault(event, t)

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                for ev in self._watch.stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    label_selector=self.selector,
                    resource_version=self.rv,
                    timeout_seconds=5,
                    allow_watch_bookmarks=False,
                ):
                    t = time.time()
                    pod = ev["object"]
                    self.rv = pod.metadata.resource_version
                    name = pod.metadata.name
                    if ev["type"] == "DELETED":
                        continue
                    self.pods[name] = pod
                    self._note(name, "pod_added", t)
                    if pod.spec.node_name:
                        self._note(name, "pod_bound", t)
                    phase = pod.status.phase if pod.status else None
                    if phase == "Running":
                        self._note(name, "pod_running", t)
                    if phase in ("Succeeded", "Failed"):
                        self._note(name, "pod_done", t)
                    if self._stop.is_set():
                        break
            except ApiException as e:
                if e.status == 410:  # the resourceVersion is too old: cannot happen in a 1-minute study
                    self.error = e
                    return
                time.sleep(0.2)
            except Exception as e:
                if self._stop.is_set():
                    return
                self.error = e
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._watch.stop()
        self._thread.join(timeout=10)


def wait_for_phase(custom: Any, namespace: str, name: str, rv: str, timeout: float) -> tuple[str, float]:
    """Watch one HPOStudy until its ``status.phase`` is terminal; (phase, when it was seen)."""
    from hpo_operator.core import names
    from kubernetes import watch

    deadline = time.monotonic() + timeout
    w = watch.Watch()
    last: Any = None
    while time.monotonic() < deadline:
        left = max(1, int(deadline - time.monotonic()))
        for ev in w.stream(
            custom.list_namespaced_custom_object,
            names.GROUP,
            names.VERSION,
            namespace,
            names.PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=rv,
            timeout_seconds=min(left, 30),
        ):
            t = time.time()
            obj = ev["object"]
            rv = obj["metadata"]["resourceVersion"]
            last = obj.get("status")
            phase = (last or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                w.stop()
                return phase, t
    raise RuntimeError(f"HPOStudy {namespace}/{name} not done in {timeout:.0f}s; last status: {last}")


class Operator:
    """``python -m hpo_operator`` as a local process, watching one namespace."""

    def __init__(
        self, kubeconfig: str, namespace: str, storage_url: str, log_path: Path, interval: float | None
    ):
        from tests.harness.cluster import free_port

        self.log_path = log_path
        self.liveness = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HPO_")},
            "KUBECONFIG": kubeconfig,
            "HPO_DEFAULT_STORAGE_URL": storage_url,
            "HPO_TRIAL_IMAGE": "hpo-trial:turnaround",  # the harness runs commands, not images
            "HPO_WATCH_NAMESPACES": namespace,
            "HPO_METRICS_PORT": "0",
            "HPO_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.liveness}/healthz",
        }
        if interval is not None:
            self.env["HPO_RECONCILE_INTERVAL"] = f"{interval:g}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hpo_operator", "--verbose"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited {self.proc.returncode}; see {self.log_path}")
            url = f"http://127.0.0.1:{self.liveness}/healthz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the operator was not live in {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def install_crd(kubeconfig: str) -> None:
    """Apply ``crds/`` (server-side, so a re-run updates it) and wait until it is Established."""
    import yaml
    from kubernetes import client
    from kubernetes import config as kube_config

    with kube_config.new_client_from_config(config_file=kubeconfig) as api:
        ext = client.ApiextensionsV1Api(api)
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    ext.patch_custom_resource_definition(
                        doc["metadata"]["name"],
                        doc,
                        field_manager="operator-turnaround",
                        force=True,
                        _content_type="application/apply-patch+yaml",
                    )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            crd = ext.read_custom_resource_definition("hpostudies.hpo.dev")
            conds = crd.status.conditions or [] if crd.status else []
            if any(c.type == "Established" and c.status == "True" for c in conds):
                return
            time.sleep(0.2)
    raise RuntimeError("the HPOStudy CRD was not Established in 60s")


def wait_for_study_api(core: Any, namespace: str, timeout: float = 30) -> None:
    """Wait until HPOStudies can be listed: for a second or so after a CRD is Established the API server
    answers 429 "storage is (re)initializing", which kopf retries after a pause that would count as the
    operator's start-up."""
    from hpo_operator.core import names
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(core.api_client)
    deadline = time.monotonic() + timeout
    while True:
        try:
            custom.list_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL)
            return
        except ApiException as e:
            if e.status not in (404, 429) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def create_namespace(core: Any, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while True:  # pods cannot be created before the `default` ServiceAccount exists
        try:
            core.read_namespaced_service_account("default", name)
            return
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_operator(
    handle: Any,
    namespace: str,
    repeat: int,
    storage_url: str,
    args: argparse.Namespace,
    timeout: float,
    created_names: list[str],
) -> ModeResult:
    """One HPOStudy through the operator; trial pods run the script from a ConfigMap."""
    from hpo_operator.core import names
    from kubernetes import client

    core = handle.core()
    custom = client.CustomObjectsApi(core.api_client)
    name = f"turnaround-{repeat}"
    body = spec(args.trials, args.parallelism, args.trial_seconds, trial_command("/turnaround/trial.py"))
    body["template"]["volumes"] = [{"name": "code", "configMap": {"name": "turnaround-trial"}}]
    body["template"]["volumeMounts"] = [{"name": "code", "mountPath": "/turnaround", "readOnly": True}]
    manifest = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }
    rv = core.list_namespaced_pod(
        namespace, label_selector=names.study_selector(name)
    ).metadata.resource_version
    pods = PodWatch(core, namespace, names.study_selector(name), rv)
    try:
        created_names.append(name)
        submitted = time.time()
        created = custom.create_namespaced_custom_object(
            names.GROUP, names.VERSION, namespace, names.PLURAL, manifest
        )
        phase, done = wait_for_phase(custom, namespace, name, created["metadata"]["resourceVersion"], timeout)
        time.sleep(0.5)  # the last pod's Succeeded was written before the status: let the watch catch it
    finally:
        pods.stop()
    if pods.error is not None:
        raise RuntimeError(f"the pod watch failed: {pods.error}")
    study = custom.get_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL, name)
    if phase != "Succeeded":
        raise RuntimeError(f"HPOStudy {name} ended {phase}: {study.get('status', {}).get('message')}")
    times = optuna_times(storage_url, study["status"]["studyName"], args.trials)
    for pod_name, pod in pods.pods.items():
        labels = pod.metadata.labels or {}
        n = int(labels[names.LABEL_TRIAL])
        if labels.get(names.LABEL_ATTEMPT) != "0":
            raise RuntimeError(f"pod {pod_name} is a retry: a trial failed (see its log)")
        times[n].update(pods.seen[pod_name])
        log = core.read_namespaced_pod_log(pod_name, namespace)
        times[n].update(parse_output(log, n, f"pod {namespace}/{pod_name}"))
        st = (pod.status.container_statuses or [None])[0] if pod.status else None
        term = st.state.terminated if st is not None and st.state is not None else None
        if term is not None and term.started_at and term.finished_at:
            times[n]["status_started"] = term.started_at.timestamp()
            times[n]["status_finished"] = term.finished_at.timestamp()
    missing = sorted(
        set(times) - {int((p.metadata.labels or {})[names.LABEL_TRIAL]) for p in pods.pods.values()}
    )
    if missing:
        raise RuntimeError(f"no pod seen for trial(s) {missing}")
    result = _result("operator", repeat, submitted, done, times, args.parallelism)
    result.extra["study"] = name
    return result


# ------------------------------------------------------------------------------------------ machine


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    versions = {}
    for pkg in ("optuna", "kopf", "kubernetes", "sqlalchemy"):
        with contextlib.suppress(PackageNotFoundError):
            versions[pkg] = version(pkg)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor() or "unknown",
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


# ------------------------------------------------------------------------------------------- output


def fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


LABELS = {"operator": "operator (cluster)", "local": "hpo run (local)"}


def report(results: dict[str, Any]) -> str:
    cfg, m = results["config"], results["machine"]
    lines = [
        f"operator_turnaround: {cfg['trials']} trials, parallelism {cfg['parallelism']}, "
        f"{cfg['trial_seconds']:g} s of work each; ideal ceil({cfg['trials']}/{cfg['parallelism']}) x "
        f"{cfg['trial_seconds']:g} = {results['ideal_s']:.2f} s; {cfg['repeats']} repeat(s) of each mode; "
        f"{results['date']}",
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB; {m['platform']}; "
        f"Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"load average (1, 5, 15 min): {', '.join(map(str, m['load_average']))} before, "
        f"{', '.join(map(str, results['load_average_after']))} after",
    ]
    if "cluster" in results:
        c = results["cluster"]
        lines.append(
            f"cluster: Kubernetes {c['server_version']} (test harness, {c['gpus']} nvidia.com/gpu on the "
            f"node); operator reconcile interval {c['reconcile_interval']}"
        )
    lines += [
        f"note: {HEADER_NOTE}",
        "gap = a slot's idle time: a trial's process exiting to the next trial's process starting on that "
        "slot (times the trial's wrapping shell took)",
        "",
        f"{'mode':<20}{'wall s':>8}{'ideal/wall':>11}{'startup s':>10}{'tail s':>8}{'trial s':>8}"
        f"{'gaps':>6}{'gap med':>9}{'gap p90':>9}{'gap max':>9}{'tell->ask med':>15}{'p90':>7}",
        f"{'ideal':<20}{results['ideal_s']:>8.2f}{1.0:>11.3f}",
    ]
    for mode, s in results["modes"].items():
        g, ta = s["gap_s"], s["tell_to_ask_s"]
        lines.append(
            f"{LABELS[mode]:<20}{s['wall_median_s']:>8.2f}{s['utilization']:>11.3f}"
            f"{s['startup_median_s']:>10.2f}{s['tail_median_s']:>8.2f}{s['trial_process_median_s']:>8.2f}"
            f"{g['n']:>6}{fmt(g['median']):>9}{fmt(g['p90']):>9}{fmt(g['max']):>9}"
            f"{fmt(ta['median']):>15}{fmt(ta['p90']):>7}"
        )
    lines.append(
        "(wall, startup, tail: medians over repeats; trial s: median process lifetime: D + the parts below)"
    )
    for mode, s in results["modes"].items():
        lines += ["", f"{LABELS[mode]}: gap by stage, over {s['gap_s']['n']} gaps"]
        lines.append(f"  {'stage':<36}{'median s':>9}{'p90 s':>8}{'max s':>8}  what")
        for label, _, _, what in STAGES[mode][1:]:
            st = s["gap_stages_s"][label]
            cells = f"{fmt(st['median'], 3):>9}{fmt(st['p90'], 3):>8}{fmt(st['max'], 3):>8}"
            lines.append(f"  {label:<36}{cells}  {what}")
        for label, st in s["startup_stages_s"].items():
            cells = f"{fmt(st['median'], 3):>9}{fmt(st['p90'], 3):>8}{fmt(st['max'], 3):>8}"
            lines.append(f"  {label:<36}{cells}  start-up: the first trial to start")
        if "gap_from_pod_status_s" in s:
            ps = s["gap_from_pod_status_s"]
            lines.append(
                f"  (the gap from pod status finishedAt -> startedAt, in whole seconds: median "
                f"{fmt(ps['median'], 1)}, max {fmt(ps['max'], 1)})"
            )
    lines += ["", "a trial process besides its D seconds (median s, all modes' trials):"]
    for label, a, b in TRIAL_PARTS:
        values = [t[b] - t[a] for run in results["runs"] for t in run["times"].values() if a in t and b in t]
        lines.append(f"  {label:<36}{fmt(percentile(values, 50) if values else None, 3):>9}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="operator_turnaround.py",
        description="Slot idle time between trials and wall time against the ideal: the operator on the test "
        "harness cluster, `hpo run` local mode, and ceil(N/P)*D.",
    )
    p.add_argument("--trials", type=int, default=12, metavar="N", help="trials per study (default 12)")
    p.add_argument(
        "--parallelism", type=int, default=3, metavar="P", help="trials at once = GPUs (default 3)"
    )
    p.add_argument(
        "--trial-seconds", type=float, default=5.0, metavar="D", help="each trial's work (default 5)"
    )
    p.add_argument("--repeats", type=int, default=1, metavar="R", help="studies per mode (default 1)")
    p.add_argument(
        "--modes",
        default="local,operator",
        help="comma-separated: local, operator (default both, in that order)",
    )
    p.add_argument(
        "--reconcile-interval",
        type=float,
        default=None,
        metavar="S",
        help="the operator's HPO_RECONCILE_INTERVAL (default: unset, the operator's default of 5 s)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results (and every timestamp) here")
    p.add_argument(
        "--workdir", type=Path, help="keep logs and state here (default: a temporary directory, removed)"
    )
    args = p.parse_args(argv)
    if args.trials < 1:
        p.error(f"--trials: must be at least 1, got {args.trials}")
    if args.trials > MAX_TRIALS:
        p.error(
            f"--trials: at most {MAX_TRIALS} (the operator keeps the pods of the last {MAX_TRIALS} trials), "
            f"got {args.trials}"
        )
    if args.parallelism < 1:
        p.error(f"--parallelism: must be at least 1, got {args.parallelism}")
    if not (args.trial_seconds > 0 and math.isfinite(args.trial_seconds)):
        p.error(f"--trial-seconds: must be a positive number, got {args.trial_seconds}")
    if args.repeats < 1:
        p.error(f"--repeats: must be at least 1, got {args.repeats}")
    if args.reconcile_interval is not None and not args.reconcile_interval > 0:
        p.error(f"--reconcile-interval: must be positive, got {args.reconcile_interval}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ("local", "operator")]
    if unknown or not modes:
        p.error(f"--modes: expected a comma-separated list of local and operator, got {args.modes!r}")
    args.modes = list(dict.fromkeys(modes))
    return args


@contextlib.contextmanager
def workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    tmp = Path(tempfile.mkdtemp(prefix="hpo-turnaround-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def postgres(work: Path) -> Iterator[Any]:
    from tests.harness.postgres import PostgresServer

    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if url:
        yield PostgresServer.from_url(url)
        return
    server = PostgresServer(work / "postgres")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def harness_cluster(work: Path, gpus: int) -> Iterator[Any]:
    from tests.harness.cluster import Cluster
    from tests.harness.handle import ClusterHandle

    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig:
        handle = ClusterHandle.from_kubeconfig(kubeconfig)
        if handle.external:
            raise SystemExit(
                f"KUBECONFIG={kubeconfig} is not a test harness cluster (`python -m tests.harness up`): "
                "its pods could not reach PostgreSQL on 127.0.0.1 nor share this machine's clock; unset "
                "KUBECONFIG to let the benchmark start a harness cluster"
            )
        if handle.gpus < gpus:
            raise SystemExit(
                f"--parallelism {gpus}: the harness node in KUBECONFIG has {handle.gpus} nvidia.com/gpu; "
                f"start one with `python -m tests.harness up --gpus {gpus}` or lower --parallelism"
            )
        print(f"using the harness cluster of KUBECONFIG={kubeconfig} ...", flush=True)
        yield handle
        return
    print(f"starting a harness cluster with {gpus} nvidia.com/gpu ...", flush=True)
    cluster = Cluster(work / "cluster", gpus=gpus)
    cluster.start()
    try:
        yield ClusterHandle.for_harness(cluster)
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # tests.harness
    ideal = ideal_seconds(args.trials, args.parallelism, args.trial_seconds)
    timeout = 3 * ideal + 60 * args.trials / args.parallelism + 120
    out: dict[str, Any] = {
        "config": {
            "trials": args.trials,
            "parallelism": args.parallelism,
            "trial_seconds": args.trial_seconds,
            "repeats": args.repeats,
            "modes": args.modes,
        },
        "machine": machine(),
        "ideal_s": ideal,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "modes": {},
        "runs": [],
    }
    print(f"note: {HEADER_NOTE}", flush=True)
    with workdir(args.workdir) as work, postgres(work) as pg:
        results: dict[str, list[ModeResult]] = {}
        dbs: list[str] = []
        try:
            for mode in args.modes:
                if mode == "local":
                    for i in range(args.repeats):
                        db = f"turnaround_local_{uuid.uuid4().hex[:8]}"
                        dbs.append(db)
                        url = init_storage(pg.create_database(db))
                        print(f"hpo run (local), repeat {i + 1}/{args.repeats} ...", flush=True)
                        results.setdefault(mode, []).append(run_local(work, i, url, args, timeout))
                else:
                    db = f"turnaround_operator_{uuid.uuid4().hex[:8]}"
                    dbs.append(db)
                    url = init_storage(pg.create_database(db))
                    results[mode] = run_cluster_mode(work, url, args, timeout, out)
        finally:
            if pg.external:
                for db in dbs:
                    with contextlib.suppress(Exception):
                        pg.drop_database(db)
        for mode, rs in results.items():
            out["modes"][mode] = summarize(rs, args.parallelism, ideal)
            for r in rs:
                slots = r.schedule or Schedule({}, ())
                out["runs"].append(
                    {
                        "mode": r.mode,
                        "repeat": r.repeat,
                        "submitted": r.submitted,
                        "done": r.done,
                        "wall_s": r.wall,
                        "times": {str(k): v for k, v in sorted(r.times.items())},
                        "slots": {str(k): v for k, v in sorted(slots.slot_of.items())},
                        "gaps": [asdict(g) for g in slots.gaps],
                        **r.extra,
                    }
                )
        if args.workdir is not None:
            out["workdir"] = str(work)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(report(out))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def list_studies(custom: Any, namespace: str) -> list[Any]:
    from hpo_operator.core import names

    return list(
        custom.list_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL)["items"]
    )


def run_cluster_mode(
    work: Path, storage_url: str, args: argparse.Namespace, timeout: float, out: dict[str, Any]
) -> list[ModeResult]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with harness_cluster(work, args.parallelism) as handle:
        install_crd(handle.kubeconfig)
        core = handle.core()
        namespace = f"turnaround-{uuid.uuid4().hex[:6]}"
        create_namespace(core, namespace)
        wait_for_study_api(core, namespace)
        core.create_namespaced_config_map(
            namespace,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="turnaround-trial"), data={"trial.py": TRIAL_SCRIPT}
            ),
        )
        out["cluster"] = {
            "server_version": handle.server_version,
            "gpus": handle.gpus,
            "reconcile_interval": (
                f"{args.reconcile_interval:g} s" if args.reconcile_interval is not None else "5 s (default)"
            ),
        }
        operator = Operator(
            str(handle.kubeconfig), namespace, storage_url, work / "operator.log", args.reconcile_interval
        )
        operator.start()
        results = []
        created: list[str] = []
        try:
            for i in range(args.repeats):
                print(f"operator (cluster), repeat {i + 1}/{args.repeats} ...", flush=True)
                results.append(run_operator(handle, namespace, i, storage_url, args, timeout, created))
        finally:
            custom = client.CustomObjectsApi(core.api_client)
            from hpo_operator.core import names

            # The studies go while the operator runs (its finalizer), then the namespace.
            for study in created:
                with contextlib.suppress(ApiException):
                    custom.delete_namespaced_custom_object(
                        names.GROUP, names.VERSION, namespace, names.PLURAL, study
                    )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and list_studies(custom, namespace):
                time.sleep(0.2)
            operator.stop()
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
