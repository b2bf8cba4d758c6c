"""What a study's size costs the operator, and what a trial process costs: issue 12, item 3.

Four measurements, all against a real PostgreSQL (the test harness's, started here unless
``HPO_TEST_POSTGRES_URL`` names one), all printed with wall time and CPU time (CPU seconds are the
steadier figure on a shared machine):

1. **Reconcile cost against finished trials** (0, 1,000, 5,000, 20,000 by default): a study pre-filled
   with N finished trials is adopted by a fresh operator store (its first read is timed: "adopt"), then
   reconciled the way the driver does it (``shell.apply.step`` until a plan has no action, then
   ``core.verdict.reconciled`` builds the status) while ``--parallelism`` trials run: p50/p95 of wall
   and of the thread's CPU time.
2. **Operator CPU per trial**: ``--new-trials`` more trials are run to the end at each N (a trial is
   "run" by telling its value through a separate storage, as a trial process does, and its run ends);
   the operator's CPU time over all its reconciles per new trial, with the sampler's share (the time in
   ``ask``: TPE reads every trial) apart.
3. **Cheap trials**: one trial process of the public reporting API (``from hpo_trial import reporting``,
   ``current_trial()``, ``report``, ``should_prune``, ``complete``) timed alone (its import, start-up and
   CPU), side by side through the report endpoint (served in this process, as the operator serves it;
   its CPU per trial is measured too) and straight against the storage; then ``hpo run`` of
   ``--cheap-trials`` such trials at ``--cheap-parallelism`` (through ``hpo run``'s endpoint): trials
   per minute.
4. **Many studies at once**: ``--studies`` studies (each ``--studies-finished`` finished trials and two
   running) on one storage URL, reconciled concurrently on a pool of ``HPO_WORKER_THREADS`` (32) threads,
   as the operator's handlers do, for a few rounds: resident memory (RSS, peak), threads, reconcile
   p50/p95.

What is not here: the Kubernetes API. Runs are an in-memory stand-in for pods (measurements 1, 2, 4),
so these are the operator's own costs (storage, ``decide``, status), not the API server's or kopf's.

Usage::

    .venv/bin/python benchmarks/scale.py                       # about 5-10 minutes on 2 cores
    .venv/bin/python benchmarks/scale.py --sizes 0 1000 --new-trials 10 --studies 20 --cheap-trials 20
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# HPO_SCALE_SOURCE: another checkout's root whose operator and trial code to measure (a before/after
# comparison on the same machine); the benchmark itself and the harness come from this one.
SOURCE = Path(os.environ.get("HPO_SCALE_SOURCE") or ROOT)
for p in (ROOT, SOURCE / "operator", SOURCE / "trial_image", ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import optuna  # noqa: E402
import sqlalchemy  # noqa: E402
from hpo_operator.core import verdict  # noqa: E402
from hpo_operator.core.observe import RunView  # noqa: E402
from hpo_operator.core.parse import parse_spec  # noqa: E402
from hpo_operator.core.plan import PostEvent  # noqa: E402
from hpo_operator.core.spec import StudySpec  # noqa: E402
from hpo_operator.shell.apply import Step, Study, step  # noqa: E402
from hpo_operator.shell.metrics import Metrics  # noqa: E402
from hpo_operator.shell.storage import Storages, StudyStore  # noqa: E402
from hpo_trial.contract import engine_kwargs  # noqa: E402
from operator_turnaround import machine, postgres  # noqa: E402
from optuna.distributions import FloatDistribution, distribution_to_json  # noqa: E402
from optuna.storages._rdb import models  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
OWNER = "uid-bench"
X = FloatDistribution(-5.0, 5.0)
MAX_PASSES = 8  # as shell.driver


def spec(total: int, parallelism: int, sampler: str = "TPE") -> StudySpec:
    return parse_spec(
        {
            "objective": [{"metric": "score", "direction": "maximize"}],
            "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
            "trials": {"total": total, "parallelism": parallelism, "maxFailed": 0},
            "sampler": {"type": sampler, "seed": 0},
            "template": {"image": "bench", "command": ["true"]},
        }
    )


# --------------------------------------------------------------------------------- the stand-ins


@dataclass
class MemoryRuns:
    """Runs as plain records: created Running, ended by :meth:`finish` (a stand-in for pods)."""

    kind: str = "pod"
    runs: dict[str, RunView] = field(default_factory=dict)
    events: list[PostEvent] = field(default_factory=list)

    def views(self) -> tuple[RunView, ...]:
        return tuple(self.runs.values())

    def create(self, name: str, trial: int, attempt: int, params: Mapping[str, Any]) -> str:
        if name in self.runs:
            return "exists"
        self.runs[name] = RunView(name, trial, attempt, "Running", owner_uid=OWNER)
        return "created"

    def delete(self, name: str) -> None:
        self.runs.pop(name, None)

    def post_event(self, event: PostEvent) -> None:
        self.events.append(event)

    def running(self) -> list[RunView]:
        return [r for r in self.runs.values() if r.phase == "Running"]

    def finish(self, name: str) -> None:
        r = self.runs[name]
        self.runs[name] = RunView(r.name, r.trial, r.attempt, "Succeeded", owner_uid=OWNER, exit_code=0)


class TimedStore(StudyStore):
    """The operator's store, with the time spent asking (the sampler's share) summed."""

    ask_cpu = 0.0
    ask_wall = 0.0

    def ask(self, spec: StudySpec, generation: int | None) -> tuple[int, dict[str, Any]]:
        c, w = time.thread_time(), time.perf_counter()
        try:
            return super().ask(spec, generation)
        finally:
            self.ask_cpu += time.thread_time() - c
            self.ask_wall += time.perf_counter() - w


def reconcile(study: Study, runs: MemoryRuns, previous: dict[str, Any]) -> tuple[float, float, Step]:
    """One reconcile as the driver does it (steps until a plan has no action, then the status);
    its wall and CPU seconds."""
    c, w = time.thread_time(), time.perf_counter()
    phase = previous.get("phase")
    last: Step | None = None
    for _ in range(MAX_PASSES):
        last = step(study, runs, previous_phase=phase)
        if not last.plan.actions:
            break
        told = getattr(last.plan, "phase_told", None)  # absent before the Event-order fix
        phase = told(phase) if told is not None else last.plan.assessment.phase
    assert last is not None
    report = verdict.reconciled(
        study.spec, last.observed, last.plan, quota=None, generation=1, previous=previous, now=_now()
    )
    if report.status is not None:
        previous.update(report.status)
    return time.perf_counter() - w, time.thread_time() - c, last


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------------------------ pre-filling


def prefill(url: str, study_name: str, n: int, start: int = 0) -> None:
    """Add finished trials ``start``..``n-1`` (COMPLETE, values from a quadratic) in bulk, straight into
    Optuna's tables (one statement per table, not one transaction per trial: 20,000 trials in seconds)."""
    if n <= start:
        return
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    try:
        study_id = storage.get_study_id_from_name(study_name)
        now = dt.datetime.now()
        trials = models.TrialModel.__table__
        with storage.engine.begin() as conn:
            rows = [
                {
                    "number": i,
                    "study_id": study_id,
                    "state": TrialState.COMPLETE,
                    "datetime_start": now - dt.timedelta(seconds=2 * (n - i) + 1),
                    "datetime_complete": now - dt.timedelta(seconds=2 * (n - i)),
                }
                for i in range(start, n)
            ]
            ids = conn.execute(
                sqlalchemy.insert(trials).returning(trials.c.trial_id, sort_by_parameter_order=True), rows
            ).scalars()
            ids = list(ids)
            xs = [((i * 7919) % 1000) / 100.0 - 5.0 for i in range(start, n)]
            conn.execute(
                sqlalchemy.insert(models.TrialParamModel.__table__),
                [
                    {
                        "trial_id": t,
                        "param_name": "x",
                        "param_value": x,
                        "distribution_json": distribution_to_json(X),
                    }
                    for t, x in zip(ids, xs, strict=True)
                ],
            )
            conn.execute(
                sqlalchemy.insert(models.TrialValueModel.__table__),
                [
                    {"trial_id": t, "objective": 0, "value": -((x - 1.0) ** 2), "value_type": "FINITE"}
                    for t, x in zip(ids, xs, strict=True)
                ],
            )
        # Announced already (an adopted study's old trials were announced by the operator before).
        from hpo_operator.core.observe import ATTR_ANNOUNCED

        storage.set_study_system_attr(study_id, ATTR_ANNOUNCED, {"below": n, "extra": []})
    finally:
        storage.engine.dispose()


# ------------------------------------------------------------------------------ 1 and 2: one study


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_trials(
    study: Study, runs: MemoryRuns, teller: optuna.Study, previous: dict[str, Any], count: int
) -> tuple[float, float, int]:
    """Reconcile until ``count`` more trials finished; between two reconciles one running trial is told
    a value (through its own storage, as a trial process) and its run ends. The operator's CPU and wall
    seconds, and the reconciles it took."""
    cpu = wall = 0.0
    reconciles = 0
    done = 0
    while True:
        if reconciles > 10 * count + 20:
            raise RuntimeError(
                f"{count} trials did not finish in {reconciles} reconciles: {previous.get('message')}"
            )
        w, c, last = reconcile(study, runs, previous)
        cpu += c
        wall += w
        reconciles += 1
        if done >= count:
            return cpu, wall, reconciles
        # One trial ends between two reconciles, as each pod's exit wakes the operator's daemon.
        for r in runs.running()[:1]:
            t = next(t for t in last.observed.trials if t.number == r.trial)
            if t.state == "RUNNING" and done < count:
                teller.tell(r.trial, -((float(t.params.get("x", 0.0)) - 1.0) ** 2))
                done += 1
            runs.finish(r.name)


def one_study(url: str, sizes: Sequence[int], parallelism: int, new_trials: int, samples: int) -> list[dict]:
    results = []
    for n in sizes:
        # A study of its own per size, pre-filled with n finished trials (announced, as an adopted study's).
        name = f"bench.scale.n{n}"
        created = optuna.create_study(study_name=name, storage=url, direction="maximize")
        created._storage.set_study_system_attr(created._study_id, "study:metric_names", ["score"])
        prefill(url, name, n)
        filled = n
        teller = optuna.load_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler())
        storages = Storages()
        store = TimedStore(storages.open(url, name), name)
        c, w = time.thread_time(), time.perf_counter()
        store.trials()
        adopt_wall, adopt_cpu = time.perf_counter() - w, time.thread_time() - c
        total = filled + new_trials + parallelism
        study = Study("scale", spec(total, parallelism), 1, store, Metrics(), OWNER)
        runs = MemoryRuns()
        previous: dict[str, Any] = {"phase": "Running"}
        # Fill the slots (the first asks), then steady reconciles while `parallelism` trials run.
        reconcile(study, runs, previous)
        walls, cpus = [], []
        for _ in range(samples):
            w, c, _ = reconcile(study, runs, previous)
            walls.append(w)
            cpus.append(c)
        store.ask_cpu = store.ask_wall = 0.0
        op_cpu, op_wall, reconciles = run_trials(study, runs, teller, previous, new_trials)
        status_bytes = len(json.dumps(previous))
        results.append(
            {
                "finished": filled,
                "adopt_wall_s": adopt_wall,
                "adopt_cpu_s": adopt_cpu,
                "reconcile_wall_p50_ms": 1000 * statistics.median(walls),
                "reconcile_wall_p95_ms": 1000 * percentile(walls, 0.95),
                "reconcile_cpu_p50_ms": 1000 * statistics.median(cpus),
                "reconcile_cpu_p95_ms": 1000 * percentile(cpus, 0.95),
                "new_trials": new_trials,
                "reconciles": reconciles,
                "operator_cpu_per_trial_s": op_cpu / new_trials,
                "operator_wall_per_trial_s": op_wall / new_trials,
                "sampler_cpu_per_trial_s": store.ask_cpu / new_trials,
                "rest_cpu_per_trial_s": (op_cpu - store.ask_cpu) / new_trials,
                "status_bytes": status_bytes,
            }
        )
        print_one(results[-1])
        storages.dispose()
    return results


def print_one(r: Mapping[str, Any]) -> None:
    print(
        f"  N={r['finished']:>6}: adopt {r['adopt_wall_s']:.2f} s wall / {r['adopt_cpu_s']:.2f} s CPU; "
        f"reconcile p50 {r['reconcile_wall_p50_ms']:.1f} ms / p95 {r['reconcile_wall_p95_ms']:.1f} ms wall, "
        f"p50 {r['reconcile_cpu_p50_ms']:.1f} ms / p95 {r['reconcile_cpu_p95_ms']:.1f} ms CPU; "
        f"per new trial {r['operator_cpu_per_trial_s']:.3f} CPU-s "
        f"(sampler {r['sampler_cpu_per_trial_s']:.3f}, rest {r['rest_cpu_per_trial_s']:.3f}); "
        f"status {r['status_bytes']} B",
        flush=True,
    )


# ------------------------------------------------------------------------------ 3: cheap trials

TRIAL = """
import time
t0 = time.perf_counter()
from hpo_trial import reporting
t1 = time.perf_counter()
trial = reporting.current_trial()
t2 = time.perf_counter()
x = float(trial.params["x"])
trial.report(-((x - 1.0) ** 2), 1)
trial.should_prune()
trial.complete(-((x - 1.0) ** 2))
t3 = time.perf_counter()
print(f"BENCH import={t1 - t0:.4f} start={t2 - t1:.4f} tell={t3 - t2:.4f}", flush=True)
"""


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def endpoint(url: str, name: str) -> Iterator[tuple[str, str]]:
    """The report endpoint serving study ``name`` in this process: its URL and the study's key."""
    from hpo_operator.core.spec import parse_fields
    from hpo_operator.shell.reports import ReportServer, ReportService, target_of
    from hpo_operator.shell.storage import Storages, StudyStore

    spec = parse_fields(
        {
            "objective": [{"metric": "score", "direction": "maximize"}],
            "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
            "pruner": {"type": "Median"},
            "template": {"image": "bench", "command": ["python", "cheap_trial.py"]},
        }
    )
    storages = Storages()
    key = StudyStore(storages.open(url, name), name).report_key()
    service = ReportService(lambda study: target_of(spec, storages.shared(url, "report"), study))
    server = ReportServer(service, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{server.port}", key
    finally:
        server.stop()
        storages.dispose()


def trial_process(url: str, work: Path, repeats: int, *, through_endpoint: bool) -> dict[str, Any]:
    """One cheap trial process at a time: wall, CPU, and its own import/start/tell readings; through the
    report endpoint, also the endpoint's own CPU per trial (this process's, the trials apart)."""
    from hpo_operator.core import tokens

    name = f"bench.scale.trial.{'endpoint' if through_endpoint else 'direct'}"
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    script = work / "cheap_trial.py"
    script.write_text(TRIAL)
    with contextlib.ExitStack() as stack:
        report = stack.enter_context(endpoint(url, name)) if through_endpoint else None
        rows = _trial_rows(study, url, name, script, repeats, report, tokens.trial_token)
    keys = rows[0].keys()
    return {k: statistics.median(r[k] for r in rows) for k in keys} | {"repeats": repeats}


def _trial_rows(
    study: optuna.Study,
    url: str,
    name: str,
    script: Path,
    repeats: int,
    report: tuple[str, str] | None,
    token: Callable[[str, str, int, int], str],
) -> list[dict[str, float]]:
    rows = []
    for _ in range(repeats):
        t = study.ask({"x": X})
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        env.update(
            PYTHONPATH=os.pathsep.join([str(SOURCE / "trial_image")]),
            HPO_STORAGE_URL=url,
            HPO_STUDY_NAME=name,
            HPO_TRIAL_NUMBER=str(t.number),
            HPO_TRIAL_PARAMS=json.dumps(t.params),
            HPO_OBJECTIVE=json.dumps([{"metric": "score", "direction": "maximize"}]),
            HPO_PRUNER=json.dumps({"type": "Median"}),
            HPO_TRAINER="{}",
        )
        if report is not None:
            env.update(HPO_REPORT_URL=report[0], HPO_REPORT_TOKEN=token(report[1], name, t.number, 0))
        c, w, own_cpu = child_cpu(), time.perf_counter(), time.process_time()
        out = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
        )
        wall, cpu, endpoint_cpu = time.perf_counter() - w, child_cpu() - c, time.process_time() - own_cpu
        line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH "))
        own = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
        state = study._storage.get_trial(t._trial_id).state
        if state != optuna.trial.TrialState.COMPLETE:
            raise RuntimeError(f"the cheap trial ended {state.name}: {out.stderr[-2000:]}")
        row = {"wall_s": wall, "cpu_s": cpu, **{f"{k}_s": v for k, v in own.items()}}
        if report is not None:
            row["endpoint_cpu_s"] = endpoint_cpu
        rows.append(row)
    return rows


def cheap_run(url: str, work: Path, trials: int, parallelism: int) -> dict[str, Any]:
    """``hpo run`` of ``trials`` cheap trials at ``parallelism``: trials per minute, CPU per trial."""
    import yaml

    d = work / "cheap"
    d.mkdir()
    (d / "trial.py").write_text(TRIAL)
    manifest = {
        "apiVersion": "hpo.dev/v1alpha1",
        "kind": "HPOStudy",
        "metadata": {"name": "cheap"},
        "spec": {
            "objective": [{"metric": "score", "direction": "maximize"}],
            "searchSpace": [{"name": "x", "type": "float", "low": -5.0, "high": 5.0}],
            "trials": {"total": trials, "parallelism": parallelism, "maxFailed": 0},
            "sampler": {"type": "Random", "seed": 0},
            "template": {"command": ["python", "trial.py"]},
        },
    }
    (d / "study.yaml").write_text(yaml.safe_dump(manifest))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCE / "operator"), str(SOURCE / "trial_image")])
    argv = [sys.executable, "-m", "hpo_operator.cli.main", "run", "study.yaml", "--storage", url]
    c, w = child_cpu(), time.perf_counter()
    with open(d / "hpo-run.log", "wb") as out:
        code = subprocess.run(
            argv, cwd=d, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800
        ).returncode
    wall, cpu = time.perf_counter() - w, child_cpu() - c
    if code != 0:
        raise RuntimeError(f"hpo run exited {code}: {(d / 'hpo-run.log').read_text()[-2000:]}")
    return {
        "trials": trials,
        "parallelism": parallelism,
        "wall_s": wall,
        "trials_per_minute": trials / wall * 60,
        "cpu_s_total": cpu,
        "cpu_s_per_trial": cpu / trials,
    }


# ------------------------------------------------------------------------- 4: many studies at once


def rss_mib() -> tuple[float, float, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return (
        int(fields["VmRSS"].split()[0]) / 1024,
        int(fields["VmHWM"].split()[0]) / 1024,
        int(fields["Threads"]),
    )


def many_studies(url: str, studies: int, finished: int, rounds: int, workers: int) -> dict[str, Any]:
    before = rss_mib()
    storages = Storages()
    setups = []
    for i in range(studies):
        name = f"bench.many.{i}"
        optuna.create_study(study_name=name, storage=url, direction="maximize")
        prefill(url, name, finished)
        store = StudyStore(storages.open(url, name), name)
        study = Study(f"many-{i}", spec(finished + 1000, 2, sampler="Random"), 1, store, Metrics(), OWNER)
        setups.append((study, MemoryRuns(), {"phase": "Running"}))
    walls: list[float] = []
    lock = threading.Lock()
    peak_threads = 0

    def one(setup: tuple[Study, MemoryRuns, dict[str, Any]]) -> None:
        nonlocal peak_threads
        w, _, _ = reconcile(*setup)
        with lock:
            walls.append(w)
            peak_threads = max(peak_threads, threading.active_count())

    c, w = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hpo-work") as pool:
        for _ in range(rounds):
            list(pool.map(one, setups))
            # Each study's running trials finish between rounds, so the next round asks again.
            for _study, runs, _ in setups:
                for r in runs.running():
                    runs.finish(r.name)
        after = rss_mib()
    cpu, wall = time.process_time() - c, time.perf_counter() - w
    out = {
        "studies": studies,
        "finished_each": finished,
        "rounds": rounds,
        "workers": workers,
        "rss_before_mib": before[0],
        "rss_mib": after[0],
        "rss_peak_mib": after[1],
        "threads_peak": max(peak_threads, after[2]),
        "reconcile_wall_p50_ms": 1000 * statistics.median(walls),
        "reconcile_wall_p95_ms": 1000 * percentile(walls, 0.95),
        "wall_s": wall,
        "cpu_s": cpu,
        "pool_connections": [rdb.engine.pool.status() for rdb in storages._by_url.values()],
    }
    storages.dispose()
    return out


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[0, 1000, 5000, 20000])
    p.add_argument("--parallelism", type=int, default=4)
    p.add_argument("--new-trials", type=int, default=20)
    p.add_argument("--samples", type=int, default=40, help="steady reconciles timed per size")
    p.add_argument("--trial-repeats", type=int, default=5)
    p.add_argument("--cheap-trials", type=int, default=60)
    p.add_argument("--cheap-parallelism", type=int, default=8)
    p.add_argument("--studies", type=int, default=100)
    p.add_argument("--studies-finished", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=32, help="as HPO_WORKER_THREADS")
    p.add_argument("--skip", nargs="*", default=[], choices=["one", "trial", "cheap", "many"])
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


@contextlib.contextmanager
def database(work: Path) -> Iterator[Callable[[], str]]:
    with postgres(work) as server:
        yield server.create_database


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    print(f"source: {SOURCE}")
    print(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB; {info['platform']}")
    print(f"python {info['python']}; {info['packages']}; load average at start {info['load_average']}")
    results: dict[str, Any] = {"machine": info}
    with tempfile.TemporaryDirectory(prefix="hpo-scale-") as tmp, database(Path(tmp)) as new_db:
        work = Path(tmp)
        if "one" not in args.skip:
            print(
                f"1-2. one study per size, {args.parallelism} trials running, TPE; "
                f"{args.new_trials} new trials per size:"
            )
            results["one_study"] = one_study(
                new_db(), args.sizes, args.parallelism, args.new_trials, args.samples
            )
        if "trial" not in args.skip:
            db = new_db()
            for how, through in (("through the report endpoint", True), ("straight to the storage", False)):
                r = trial_process(db, work, args.trial_repeats, through_endpoint=through)
                results[f"trial_process_{'endpoint' if through else 'direct'}"] = r
                served = f"; the endpoint's CPU {r['endpoint_cpu_s']:.3f} s" if through else ""
                print(
                    f"3a. one cheap trial process {how} (median of {r['repeats']}): {r['wall_s']:.2f} s "
                    f"wall, {r['cpu_s']:.2f} CPU-s; inside it: import of the reporting API "
                    f"{r['import_s']:.3f} s, current_trial() {r['start_s']:.3f} s, "
                    f"report+should_prune+complete {r['tell_s']:.3f} s{served}",
                    flush=True,
                )
            e, d = results["trial_process_endpoint"], results["trial_process_direct"]
            print(
                f"3a. ratio, direct / endpoint: {d['cpu_s'] / e['cpu_s']:.1f}x the trial process's CPU, "
                f"{d['wall_s'] / e['wall_s']:.1f}x its wall time",
                flush=True,
            )
        if "cheap" not in args.skip:
            r = cheap_run(new_db(), work, args.cheap_trials, args.cheap_parallelism)
            results["cheap_run"] = r
            print(
                f"3b. hpo run, {r['trials']} cheap trials at parallelism {r['parallelism']}: "
                f"{r['wall_s']:.1f} s, "
                f"{r['trials_per_minute']:.0f} trials/min; {r['cpu_s_per_trial']:.2f} CPU-s per trial "
                "(hpo run and the trial processes together)",
                flush=True,
            )
        if "many" not in args.skip:
            r = many_studies(new_db(), args.studies, args.studies_finished, args.rounds, args.workers)
            results["many_studies"] = r
            print(
                f"4. {r['studies']} studies ({r['finished_each']} finished trials each), {r['rounds']} "
                f"rounds on {r['workers']} worker threads: RSS {r['rss_mib']:.0f} MiB (peak "
                f"{r['rss_peak_mib']:.0f}, {r['rss_before_mib']:.0f} before the studies), threads at most "
                f"{r['threads_peak']}; reconcile "
                f"p50 {r['reconcile_wall_p50_ms']:.1f} ms, p95 {r['reconcile_wall_p95_ms']:.1f} ms wall; "
                f"{r['cpu_s']:.1f} CPU-s in {r['wall_s']:.1f} s; pool: {r['pool_connections']}",
                flush=True,
            )
    end = [round(x, 2) for x in os.getloadavg()]
    results["load_average_end"] = end
    print(f"load average at end {end}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
