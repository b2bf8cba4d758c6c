"""``hpo run``: an HPOStudy manifest run on this machine, with the operator's own decisions.

The loop is the operator's reconcile loop with processes for pods: observe (runs first, then the
study in storage), :func:`hpo_operator.core.reconcile.decide`, carry out the plan. Budget,
parallelism, retries, ``maxFailed``, enqueued baselines, finishing, the best trial and every line
printed about a trial come from the core, so a study behaves the same here and on a cluster.

What is local:

* the storage defaults to a SQLite file next to the manifest (``<stem>.hpo.db``), the study is named
  ``local.<metadata.name>``, and a second ``hpo run`` resumes it;
* a run is ``python -m hpo_trial`` (or ``template.command`` + ``args``) with the trial contract in its
  environment, started in the manifest's directory, its output in ``.hpo/<study>/trial-<n>.log``;
* Ctrl-C (or SIGTERM, SIGHUP) stops cleanly: trial processes get SIGTERM, then SIGKILL after ``--grace``
  seconds; the trials they ran stay RUNNING in the storage and are released (their launch record is
  withdrawn), so the next ``hpo run`` gives each its run back from the stored parameters, with the same
  trial number, as ``decide`` does for a trial whose pod was never created. A second Ctrl-C kills at once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from hpo_trial import contract
from rich.console import Console

from hpo_operator.cli.display import RunProgress, trial_view_table
from hpo_operator.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, CLIError
from hpo_operator.cli.gpus import visible_gpus
from hpo_operator.cli.manifest import Manifest, ManifestError, load_manifest, note_lines
from hpo_operator.cli.processes import RUN_KIND, ProcessRuns
from hpo_operator.cli.storage import redact
from hpo_operator.cli.volumes import LocalVolumes, VolumeError, strings
from hpo_operator.cli.volumes import prepare as prepare_volumes
from hpo_operator.core import claims, reconcile
from hpo_operator.core.best import pareto_front
from hpo_operator.core.events import fmt_params, fmt_value
from hpo_operator.core.observe import Observed, RunView
from hpo_operator.core.plan import (
    AskTrials,
    Assessment,
    CreateStudy,
    DeleteRun,
    Enqueue,
    FailTrial,
    FinishAsk,
    LaunchRun,
    MarkLaunched,
    Plan,
    PostEvent,
)
from hpo_operator.core.pods import DEFAULT_COMMAND, report_env, trial_env
from hpo_operator.shell.apply import Study, observe, step
from hpo_operator.shell.kube import CreateResult
from hpo_operator.shell.metrics import Metrics
from hpo_operator.shell.reports import Refused, ReportServer, ReportService, ReportTarget, target_of
from hpo_operator.shell.storage import Storages, StorageUnavailable, StudyStore

POLL_SECONDS = 0.5  # the longest sleep between looks; a trial process exiting ends it at once
OWNER = "local"  # the owner uid of local runs: every run of this session is the study's own


_CHANGES = (
    CreateStudy,
    Enqueue,
    FinishAsk,
    AskTrials,
    LaunchRun,
    MarkLaunched,
    FailTrial,
    DeleteRun,
)


def _settled(plan: Plan) -> bool:
    """Nothing left to change: the next plan would only repeat this one (its announcements are made)."""
    return not any(isinstance(a, _CHANGES) for a in plan.actions)


def run_command(args: argparse.Namespace, console: Console) -> int:
    overrides: dict[str, int] = {}
    if args.trials is not None:
        overrides["total"] = args.trials
    if args.parallelism is not None:
        overrides["parallelism"] = args.parallelism
    if args.grace < 0:
        raise CLIError(f"--grace: must be at least 0, got {args.grace}", EXIT_INVALID)
    try:
        manifest = load_manifest(args.manifest, trials=overrides)
    except ManifestError as e:
        raise CLIError(str(e), EXIT_INVALID) from None
    return LocalStudy(manifest, args.storage or manifest.default_storage_url, console, grace=args.grace).run()


class LocalStudy:
    """One ``hpo run`` session of one manifest."""

    def __init__(self, manifest: Manifest, storage_url: str, console: Console, *, grace: float) -> None:
        self.m = manifest
        self.spec = manifest.spec
        self.url = storage_url
        self.console = console
        self.study_name = manifest.local_study_name
        self.runs = ProcessRuns(manifest.work_dir, grace)
        self.storages = Storages()
        self.metrics = Metrics()  # what the operator would export; nothing serves it here
        self.store: StudyStore  # opened by run()
        self.reports: ReportServer | None = None  # the report endpoint, started by run()
        self.exists = False  # whether the study was in the storage when this session started
        self.previous_phase: str | None = None
        self.stop_requests = 0
        self.progress: RunProgress | None = None
        self._warned_env: set[int] = set()
        self.final_event: PostEvent | None = None  # StudySucceeded/StudyFailed, shown last
        self.volumes = LocalVolumes((), {})  # the pod's volumes as local directories (see run())
        # The GPUs trial processes are pinned to, up to spec.trials.perGPU on each (none: not pinned).
        self.gpus = visible_gpus()
        self.device_of: dict[str, str] = {}  # run name → its CUDA_VISIBLE_DEVICES entry
        self.gpu_note = self._fit_to_gpus()

    # ------------------------------------------------------------------------------------ session

    def run(self) -> int:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.m.work_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(), self._signals():
            try:
                self._prepare_volumes()
                self.store = StudyStore(self.storages.open(self.url, self.study_name), self.study_name)
                self.exists = self.store.view() is not None
                # Trial processes report through this process (on loopback, with their own tokens).
                self.reports = ReportServer(ReportService(self._report_target), "127.0.0.1", 0).start()
                orphans = self.runs.stop_orphans()
                if orphans:
                    self._release(orphans)
                self._announce_start(orphans)
                outcome = self._loop()
                return self._finish(outcome)
            except BaseException as e:
                # Whatever went wrong, no trial process is left behind, and each trial it ran is
                # released for the next run if the storage still answers.
                stopped = self.runs.stop_all()
                with contextlib.suppress(Exception):
                    self._release([(r.trial, r.attempt) for r in stopped])
                if isinstance(e, StorageUnavailable):
                    raise CLIError(f"the storage failed: {e}") from None
                raise
            finally:
                if self.reports is not None:
                    self.reports.stop()
                self.storages.dispose()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        path = self.m.work_dir / "lock"
        with path.open("w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CLIError(
                    f"another `hpo run` is running the study {self.study_name} of {self.m.path.name} "
                    f"(lock {path})"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop_requests += 1
            if self.stop_requests > 1:
                self.runs.kill_now()

        # SIGHUP too: trial processes run in their own sessions, so a closed terminal reaches only us.
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, handler) for s in stops}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _fit_to_gpus(self) -> str | None:
        """Up to ``perGPU`` trial processes per visible GPU: the parallelism is capped to what the GPUs
        hold; what is said about it (a note shown at the start), if anything."""
        t = self.spec.trials
        where = (
            "spec.gpu applies to a cluster only (DRA ResourceClaims); " if self.spec.gpu is not None else ""
        )
        if not self.gpus:
            if t.per_gpu > 1 or self.spec.gpu is not None:
                return (
                    f"{where}spec.trials.perGPU ({t.per_gpu}) has no effect: no GPU is visible "
                    f"(CUDA_VISIBLE_DEVICES, nvidia-smi), so trials run as {t.parallelism} "
                    "process(es) at once without one"
                )
            return None
        at_once = claims.local_parallelism(t.parallelism, len(self.gpus), t.per_gpu)
        pinned = (
            f"trial processes pinned to {len(self.gpus)} GPU(s) ({','.join(self.gpus)}), "
            f"up to {t.per_gpu} on each (spec.trials.perGPU)"
        )
        if at_once < t.parallelism:
            self.spec = self.spec.model_copy(update={"trials": t.model_copy(update={"parallelism": at_once})})
            return f"{where}{pinned}: {at_once} at once, not spec.trials.parallelism ({t.parallelism})"
        return f"{where}{pinned}" if t.per_gpu > 1 or where else None

    def _announce_start(self, orphans: list[tuple[int, int]]) -> None:
        where = redact(self.url)
        t = self.spec.trials
        if self.gpu_note is not None:
            self.console.print(f"Note: {self.gpu_note}.", markup=False, soft_wrap=True, style="yellow")
        for line in note_lines(self.spec):  # the operator's SamplerFitsSpace, ... conditions, here
            self.console.print(line, markup=False, soft_wrap=True, style="yellow")
        if not self.exists:
            self.console.print(
                f"Starting study {self.study_name}: {t.total} trials, parallelism {t.parallelism}; "
                f"storage {where}; trial logs in {self._rel(self.m.work_dir)}",
                markup=False,
                soft_wrap=True,
            )
            return
        observed = observe(self._study(), LocalRuns(self), previous_phase=None)
        # No run of this session yet: what decide makes of each RUNNING trial.
        finished = sum(1 for v in observed.trials if v.finished)
        again, lost = _restarts(reconcile.decide(self.spec, observed, dt.datetime.now(dt.UTC)), observed)
        restart = ""
        if again:
            restart += f"; trial(s) {', '.join(map(str, again))} will run again from their stored parameters"
        if lost:
            restart += (
                f"; trial(s) {', '.join(map(str, lost))} lost their process (an earlier `hpo run` was "
                "killed), which counts as a failed attempt"
            )
        progress = (
            f"{finished} of {t.total} trials finished"
            if finished <= t.total
            else f"{finished} trials finished, more than the budget of {t.total}: no new trial is asked"
        )
        self.console.print(
            f"Resuming study {self.study_name}: {progress}{restart}; storage {where}",
            markup=False,
            soft_wrap=True,
        )
        if orphans:
            self.console.print(
                f"Stopped {len(orphans)} trial process(es) left running by an earlier `hpo run`.",
                markup=False,
            )

    # --------------------------------------------------------------------------------------- loop

    def _loop(self) -> Assessment | None:
        """Observe, decide, act until the study is over (its assessment) or a stop is asked (None)."""
        with RunProgress(self.console, self.study_name, self.spec.trials.total) as progress:
            self.progress = progress
            try:
                while True:
                    if self.stop_requests:
                        return None
                    done = step(self._study(), LocalRuns(self), previous_phase=self.previous_phase)
                    plan = done.plan
                    self.previous_phase = plan.phase_told(self.previous_phase)
                    self._update_progress(plan.assessment, done.observed)
                    over = plan.assessment.terminal or plan.assessment.phase == "Suspended"
                    if over and not self.runs.active() and _settled(plan):
                        return plan.assessment
                    self.runs.enforce_deadlines()
                    self.runs.wait_for_exit(POLL_SECONDS)
            finally:
                self.progress = None

    def _study(self) -> Study:
        """The study as carrying out a plan needs it (no spec generation: a manifest has none)."""
        return Study(self.m.name, self.spec, None, self.store, self.metrics, OWNER)

    def _start(self, name: str, number: int, attempt: int, params: Mapping[str, Any]) -> CreateResult:
        """Start the process of an attempt (one still alive under that name is kept)."""
        argv = self._command()
        env = self._env(number, attempt, params)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self._device_for(name)
        try:
            run = self.runs.launch(name, number, attempt, argv, env, cwd=self.m.dir)
        except OSError as e:
            field = "spec.template.command" if self.spec.template.command is not None else "python"
            raise CLIError(f"{field}: cannot start {argv[0]!r}: {e.strerror}") from None
        return "created" if run.started_now else "exists"

    def _device_for(self, name: str) -> str:
        """The GPU a new run is pinned to: the least used one with a free slot (see
        :func:`~hpo_operator.core.claims.assign_device`); a run still alive under that name keeps its own."""
        alive = {r.name for r in self.runs.active()}
        if name in alive and name in self.device_of:
            return self.device_of[name]
        in_use = [self.device_of[n] for n in alive if n in self.device_of]
        device = claims.assign_device(self.gpus, in_use, self.spec.trials.per_gpu)
        if device is None:  # decide keeps active runs within the capped parallelism: not expected
            device = min(self.gpus, key=in_use.count)
        self.device_of[name] = device
        return device

    def _prepare_volumes(self) -> None:
        """The pod's volumes as local directories (:mod:`hpo_operator.cli.volumes`); a command, argument
        or variable that needs a volume this machine cannot have is refused before any trial starts."""
        t = self.spec.template
        try:
            self.volumes = prepare_volumes(t, self.m.config_maps, self.m.work_dir / "volumes")
        except VolumeError as e:
            raise CLIError(f"{self._rel(self.m.path)}: {e}", EXIT_INVALID) from None
        values = strings(dict(self.spec.trainer or {}), "spec.trainer")  # a recipe's data files
        values |= {f"spec.template.command[{i}]": str(a) for i, a in enumerate(t.command or ())}
        values |= {f"spec.template.args[{i}]": str(a) for i, a in enumerate(t.args or ())}
        values |= {
            f"spec.template.env[{i}].value": str(e["value"]) for i, e in enumerate(t.env) if "value" in e
        }
        try:
            self.volumes.check(values)
        except VolumeError as e:
            raise CLIError(f"{self._rel(self.m.path)}: {e}", EXIT_INVALID) from None
        for mount_path, why in self.volumes.missing.items():
            self._print(
                f"{why}: not available to local processes (nothing here is mounted at {mount_path})", "yellow"
            )

    def _command(self) -> list[str]:
        """The trial's command line; ``python`` means the interpreter ``hpo`` runs on (it has hpo_trial).
        Paths on the pod's volumes point at their local copies."""
        t = self.spec.template
        argv = list(t.command) if t.command is not None else list(DEFAULT_COMMAND)
        argv += list(t.args or ())
        argv = [self.volumes.rewrite(str(a)) for a in argv]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    def _env(self, number: int, attempt: int, params: Mapping[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        # The container's variables from the template (values only: a Secret or a field of a pod means
        # nothing here); then the contract, which the template cannot override (the spec forbids it).
        for i, item in enumerate(self.spec.template.env):
            if "value" in item:
                env[str(item["name"])] = self.volumes.rewrite(str(item["value"]))
            elif i not in self._warned_env:
                self._warned_env.add(i)
                self._print(
                    f"spec.template.env[{i}] ({item.get('name')}): valueFrom is not available to local "
                    "processes; the variable is not set",
                    "yellow",
                )
        env.update(
            trial_env(
                self.spec,
                optuna_study=self.study_name,
                trial=number,
                attempt=attempt,
                params=params,
                study=self.m.name,
            )
        )
        env[contract.STORAGE_URL] = self.url
        if self.reports is not None:
            url = f"http://127.0.0.1:{self.reports.port}"
            env.update(report_env(url, self.store.report_key(), self.study_name, number, attempt))
        if self.spec.trainer and self.volumes.mounts:  # a recipe's files on a mounted volume
            env[contract.TRAINER] = json.dumps(
                self.volumes.rewrite_all(dict(self.spec.trainer)), sort_keys=True
            )
        if self.spec.template.output_dir:
            env[contract.OUTPUT_DIR] = str(self.m.work_dir / "output" / f"trial-{number}")
        else:
            env.pop(contract.OUTPUT_DIR, None)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Trials share this machine's cores: without a limit, each would start a thread per core.
        threads = max(1, (os.cpu_count() or 1) // self.spec.trials.parallelism)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(threads))
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env

    def _report_target(self, study: str) -> ReportTarget:
        if study != self.study_name:
            raise Refused(404, f"this `hpo run` serves the study {self.study_name} only")
        return target_of(self.spec, self.storages.shared(self.url, "report"), study)

    # --------------------------------------------------------------------------------- interrupts

    def _release(self, stopped: list[tuple[int, int]]) -> list[int]:
        """Withdraw the launch record of stopped runs whose trial is still RUNNING (see module docs)."""
        released = []
        for number, attempt in stopped:
            try:
                # "attempt - 1 was the last launched": decide gives the RUNNING trial its run back.
                if self.store.mark_launched(number, attempt - 1):
                    released.append(number)
            except KeyError:  # the trial (or the study) does not exist
                continue
        return sorted(set(released))

    # ------------------------------------------------------------------------------------- output

    def _print(self, message: str, style: str | None = None) -> None:
        if self.progress is not None:
            self.progress.print(message, style)
        else:
            self.console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)

    def _print_event(self, event: PostEvent) -> None:
        style = {
            "TrialFailed": "red",
            "TrialRetried": "yellow",
            "StudyFailed": "bold red",
            "StudySucceeded": "bold green",
            "TrialPruned": "yellow",
        }.get(event.reason)
        if event.reason in ("StudySucceeded", "StudyFailed"):
            self.final_event = event  # shown below the bar, with the best trial
            return
        self._print(event.message, style)
        if event.reason in ("TrialFailed", "TrialRetried") and event.trial is not None:
            log = self.runs.log_path(event.trial, event.attempt or 0)  # that attempt's log
            if log.exists():
                self._print(f"  log: {self._rel(log)}", "dim")

    def _update_progress(self, a: Assessment, observed: Observed) -> None:
        if self.progress is None:
            return
        running = len(self.runs.active())
        if self.spec.multi_objective:
            # The ledger's front (kept as trials finish), not a sweep over every trial each step.
            s = observed.summary
            front = list(s.front) if s is not None else pareto_front(self.spec.directions, observed.trials)
            best = f"Pareto front: {len(front)} trial(s)" if front else ""
        else:
            best = f"best {fmt_value(a.best[1])} (trial {a.best[0]})" if a.best else ""
        self.progress.update(a.counts, running, best)

    def _rel(self, path: Path) -> str:
        try:
            return os.path.relpath(path)
        except ValueError:
            return str(path)

    # ------------------------------------------------------------------------------------- finish

    def _finish(self, outcome: Assessment | None) -> int:
        if outcome is None:
            return self._interrupted()
        views = self.store.trials()
        if outcome.phase == "Suspended":
            # spec.suspend: nothing was asked or started; running trials finished or were stopped.
            self.console.print(
                "Set spec.suspend to false (or remove it) and run again to resume this study.",
                markup=False,
                soft_wrap=True,
                style="bold yellow",
            )
            return EXIT_OK
        if self.final_event is not None:
            style = "bold green" if self.final_event.reason == "StudySucceeded" else "bold red"
            self.console.print(self.final_event.message, style=style, markup=False, soft_wrap=True)
        if self.spec.multi_objective:
            front = pareto_front(self.spec.directions, views)
            if front:
                self.console.print(
                    trial_view_table(f"Pareto front ({len(front)} trials)", front, self.spec.metrics)
                )
        else:
            best = next((v for v in views if outcome.best and v.number == outcome.best[0]), None)
            if best is not None and best.values:
                self.console.print(
                    f"Best trial {best.number}: {self.spec.metrics[0]} = {fmt_value(best.values[0])}, "
                    f"parameters {fmt_params(best.params)}",
                    markup=False,
                    soft_wrap=True,
                    style="bold",
                )
        if any(v.state == "COMPLETE" for v in views):
            arg = self._rel(self.m.path)
            self.console.print(
                f"See the plots with `hpo report {arg}` or `hpo dashboard {arg}`.",
                markup=False,
                soft_wrap=True,
            )
        # A failed study's reason was printed as its StudyFailed line; how to go on is not obvious.
        if outcome.phase == "Failed" and outcome.reason != "InvalidSpec":
            where = (
                f"delete {self._rel(Path(self.url.removeprefix('sqlite:///')))}"
                if self.url == self.m.default_storage_url
                else f"delete the Optuna study {self.study_name} from the storage"
            )
            self.console.print(
                f"A new `hpo run` resumes this study as it is: to start over, fix the cause and {where}; "
                "to let it go on, raise spec.trials.maxFailed.",
                markup=False,
                soft_wrap=True,
            )
        return EXIT_FAILED if outcome.phase == "Failed" else EXIT_OK

    def _interrupted(self) -> int:
        active = self.runs.active()
        if active:
            self.console.print(
                f"Stopping {len(active)} trial process(es) (SIGTERM, SIGKILL after {self.runs.grace:g}s)...",
                markup=False,
            )
        grace = 0.0 if self.stop_requests > 1 else None
        stopped = self.runs.stop_all(grace=grace)
        released = self._release([(r.trial, r.attempt) for r in stopped])
        again = f"`hpo run {self._rel(self.m.path)}`"
        detail = (
            f"; trial(s) {', '.join(map(str, released))} will run again from their stored parameters"
            if released
            else ""
        )
        self.console.print(
            f"Interrupted. Run {again} again to resume study {self.study_name}{detail}.",
            markup=False,
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED


def _restarts(plan: Plan, observed: Observed) -> tuple[list[int], list[int]]:
    """The RUNNING trials decide gives their run back as it was (released by a clean stop: ``again``)
    and those it counts a failed attempt (launched, and their process is gone: ``lost``)."""
    attempts = {t.number: t.attempt for t in observed.trials if t.state == "RUNNING"}
    again: set[int] = set()
    for a in plan.actions:
        if (isinstance(a, LaunchRun) and attempts.get(a.trial) == a.attempt) or (
            isinstance(a, FinishAsk) and a.trial in attempts
        ):
            again.add(a.trial)
    lost = sorted(n for n in attempts if n not in again)
    return sorted(again), lost


class LocalRuns:
    """The runs of an ``hpo run`` session as :class:`hpo_operator.shell.apply.Runs`: trial processes, and
    the terminal for Events. Every run of the session is the study's own (never ``foreign``)."""

    kind = RUN_KIND

    def __init__(self, study: LocalStudy) -> None:
        self.study = study

    def views(self) -> tuple[RunView, ...]:
        return self.study.runs.views()

    def create(self, name: str, trial: int, attempt: int, params: Mapping[str, Any]) -> CreateResult:
        return self.study._start(name, trial, attempt, params)

    def delete(self, name: str) -> None:
        self.study.runs.delete(name)

    def post_event(self, event: PostEvent) -> None:
        self.study._print_event(event)
