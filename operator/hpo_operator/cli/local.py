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
* Ctrl-C (or SIGTERM) stops cleanly: trial processes get SIGTERM, then SIGKILL after ``--grace``
  seconds; the trials they ran stay RUNNING in the storage and are released (their launch record is
  withdrawn), so the next ``hpo run`` gives each its run back from the stored parameters, with the same
  trial number, as ``decide`` does for a trial whose pod was never created. A second Ctrl-C kills at once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from hpo_trial import contract
from rich.console import Console

from hpo_operator.cli.display import RunProgress, trial_view_table
from hpo_operator.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, CLIError
from hpo_operator.cli.manifest import Manifest, ManifestError, load_manifest
from hpo_operator.cli.processes import ProcessRuns
from hpo_operator.cli.storage import open_storage, redact
from hpo_operator.core import names, reconcile
from hpo_operator.core.events import fmt_params, fmt_value
from hpo_operator.core.observe import (
    ATTR_ANNOUNCED,
    ATTR_ENQUEUED,
    ATTR_LAUNCHED,
    Observed,
    StudyView,
    TrialView,
    study_view,
    trial_view,
)
from hpo_operator.core.pods import DEFAULT_COMMAND, trial_env
from hpo_operator.core.search_space import build_sampler, distributions
from hpo_operator.core.status import pareto_front

POLL_SECONDS = 0.5
OWNER = "local"  # the owner uid of local runs: every run of this session is the study's own
_TRIAL_LINE = re.compile(r"^Trial (\d+)(?: attempt (?P<attempt>\d+) of)?\b")


_CHANGES = (
    reconcile.CreateStudy,
    reconcile.Enqueue,
    reconcile.FinishAsk,
    reconcile.AskTrials,
    reconcile.LaunchRun,
    reconcile.MarkLaunched,
    reconcile.FailTrial,
    reconcile.DeleteRun,
)


def _settled(plan: reconcile.Plan) -> bool:
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
        self.storage: optuna.storages.RDBStorage | None = None
        self.study: optuna.Study | None = None
        self.study_id: int | None = None
        self.previous_phase: str | None = None
        self.stop_requests = 0
        self.progress: RunProgress | None = None
        self._warned_env: set[int] = set()
        self.final_event: reconcile.PostEvent | None = None  # StudySucceeded/StudyFailed, shown last

    # ------------------------------------------------------------------------------------ session

    def run(self) -> int:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.m.work_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(), self._signals():
            self.storage = open_storage(self.url)
            self._load_existing()
            orphans = self.runs.stop_orphans()
            if orphans:
                self._release(orphans)
            self._announce_start(orphans)
            outcome = self._loop()
        return self._finish(outcome)

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

    def _load_existing(self) -> None:
        assert self.storage is not None
        try:
            self.study_id = self.storage.get_study_id_from_name(self.study_name)
        except KeyError:
            self.study_id = None
            return
        self.study = self._load_study()

    def _load_study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=self._sampler())

    def _sampler(self) -> optuna.samplers.BaseSampler:
        """The spec's sampler. A seeded sampler resuming a study is seeded past the trials it has, or its
        fresh random state would propose the first trials' parameters again."""
        spec = self.spec
        seed = spec.sampler.seed
        n = (
            len(self.storage.get_all_trials(self.study_id, deepcopy=False))
            if self.study_id is not None
            else 0
        )
        if seed is not None and n:
            sampler = spec.sampler.model_copy(update={"seed": seed + n})
            spec = spec.model_copy(update={"sampler": sampler})
        return build_sampler(spec)

    def _announce_start(self, orphans: list[tuple[int, int]]) -> None:
        where = redact(self.url)
        t = self.spec.trials
        if self.study_id is None:
            self.console.print(
                f"Starting study {self.study_name}: {t.total} trials, parallelism {t.parallelism}; "
                f"storage {where}; trial logs in {self._rel(self.m.work_dir)}",
                markup=False,
                soft_wrap=True,
            )
            return
        views = self._trials()
        finished = sum(1 for v in views if v.finished)
        # Released by a clean stop: they run again as they were. Launched and gone: a failed attempt.
        again = [v.number for v in views if v.state == "RUNNING" and v.launched < v.attempt]
        lost = [v.number for v in views if v.state == "RUNNING" and v.launched >= v.attempt]
        restart = ""
        if again:
            restart += f"; trial(s) {', '.join(map(str, again))} will run again from their stored parameters"
        if lost:
            restart += (
                f"; trial(s) {', '.join(map(str, lost))} lost their process (an earlier `hpo run` was "
                "killed), which counts as a failed attempt"
            )
        self.console.print(
            f"Resuming study {self.study_name}: {finished} of {t.total} trials finished{restart}; "
            f"storage {where}",
            markup=False,
            soft_wrap=True,
        )
        if orphans:
            self.console.print(
                f"Stopped {len(orphans)} trial process(es) left running by an earlier `hpo run`.",
                markup=False,
            )

    # --------------------------------------------------------------------------------------- loop

    def _loop(self) -> reconcile.Assessment | None:
        """Observe, decide, act until the study is over (its assessment) or a stop is asked (None)."""
        with RunProgress(self.console, self.study_name, self.spec.trials.total) as progress:
            self.progress = progress
            try:
                while True:
                    if self.stop_requests:
                        return None
                    observed = self._observe()
                    plan = reconcile.decide(self.spec, observed, dt.datetime.now(dt.UTC))
                    self._carry_out(plan)
                    self.previous_phase = plan.assessment.phase
                    self._update_progress(plan.assessment, observed)
                    if plan.assessment.terminal and not self.runs.active() and _settled(plan):
                        return plan.assessment
                    self.runs.enforce_deadlines()
                    time.sleep(POLL_SECONDS)
            finally:
                self.progress = None

    def _observe(self) -> Observed:
        runs = self.runs.views()  # runs before trials: a run seen finished had told before the read
        study: StudyView | None = None
        trials: tuple[TrialView, ...] = ()
        if self.study_id is not None:
            assert self.storage is not None
            stored = self.storage.get_study_directions(self.study_id)
            study = study_view(self.study_name, stored, self.storage.get_study_system_attrs(self.study_id))
            trials = self._trials()
        return Observed(
            name=self.m.name,
            study_name=self.study_name,
            owner_uid=OWNER,
            study=study,
            trials=trials,
            runs=runs,
            previous_phase=self.previous_phase,
        )

    def _trials(self) -> tuple[TrialView, ...]:
        assert self.storage is not None and self.study_id is not None
        return tuple(trial_view(t) for t in self.storage.get_all_trials(self.study_id, deepcopy=False))

    # ------------------------------------------------------------------------------------ actions

    def _carry_out(self, plan: reconcile.Plan) -> None:
        for action in plan.actions:
            if isinstance(action, reconcile.CreateStudy):
                self._create_study(action)
            elif isinstance(action, reconcile.Enqueue):
                self._enqueue(action)
            elif isinstance(action, reconcile.FinishAsk):
                self._finish_ask(action.trial)
            elif isinstance(action, reconcile.AskTrials):
                for _ in range(action.count):
                    trial = self._study().ask(fixed_distributions=distributions(self.spec))
                    self._launch(trial.number, 0, trial.params)
            elif isinstance(action, reconcile.LaunchRun):
                self._launch(action.trial, action.attempt, action.params)
            elif isinstance(action, reconcile.MarkLaunched):
                self._set_system_attr(action.trial, ATTR_LAUNCHED, action.attempt)
            elif isinstance(action, reconcile.FailTrial):
                self._fail(action.trial, action.reason)
            elif isinstance(action, reconcile.DeleteRun):
                self.runs.delete(action.name)
            elif isinstance(action, reconcile.PostEvent):
                self._print_event(action)
            elif isinstance(action, reconcile.RecordAnnounced):
                assert self.storage is not None and self.study_id is not None
                self.storage.set_study_system_attr(self.study_id, ATTR_ANNOUNCED, action.announced.to_json())

    def _study(self) -> optuna.Study:
        if self.study is None:
            self.study = self._load_study()
        return self.study

    def _create_study(self, action: reconcile.CreateStudy) -> None:
        self.study = optuna.create_study(
            storage=self.storage,
            study_name=action.study_name,
            directions=list(action.directions),
            sampler=self._sampler(),
            load_if_exists=True,
        )
        self.study_id = self.study._study_id

    def _enqueue(self, action: reconcile.Enqueue) -> None:
        study = self._study()
        for params in action.params:
            study.enqueue_trial(dict(params), skip_if_exists=True)
        assert self.storage is not None and self.study_id is not None
        self.storage.set_study_system_attr(self.study_id, ATTR_ENQUEUED, action.start + len(action.params))

    def _finish_ask(self, number: int) -> None:
        """Suggest the parameters a cut-short ask did not store, with the study's own sampler."""
        trial = optuna.Trial(self._study(), self._trial_id(number))
        stored = trial.params
        for name, distribution in distributions(self.spec).items():
            if name not in stored:
                trial._suggest(name, distribution)

    def _trial_id(self, number: int) -> int:
        assert self.storage is not None and self.study_id is not None
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _set_system_attr(self, number: int, key: str, value: Any) -> None:
        assert self.storage is not None
        self.storage.set_trial_system_attr(self._trial_id(number), key, value)

    def _fail(self, number: int, reason: str) -> None:
        assert self.storage is not None
        trial_id = self._trial_id(number)
        if self.storage.get_trial(trial_id).state.is_finished():
            return
        self.storage.set_trial_user_attr(trial_id, contract.ATTR_FAIL_REASON, reason[:1000])
        self._study().tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)

    def _launch(self, number: int, attempt: int, params: Mapping[str, Any]) -> None:
        """Record the attempt, then start its process (``LaunchRun``'s order)."""
        assert self.storage is not None
        self.storage.set_trial_user_attr(self._trial_id(number), contract.ATTR_ATTEMPTS, attempt + 1)
        argv = self._command()
        name = names.pod_name(self.m.name, number, attempt)
        try:
            self.runs.launch(name, number, attempt, argv, self._env(number, attempt, params), cwd=self.m.dir)
        except OSError as e:
            field = "spec.template.command" if self.spec.template.command is not None else "python"
            raise CLIError(f"{field}: cannot start {argv[0]!r}: {e.strerror}") from None

    def _command(self) -> list[str]:
        """The trial's command line; ``python`` means the interpreter ``hpo`` runs on (it has hpo_trial)."""
        t = self.spec.template
        argv = list(t.command) if t.command is not None else list(DEFAULT_COMMAND)
        argv += list(t.args or ())
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    def _env(self, number: int, attempt: int, params: Mapping[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        # The container's variables from the template (values only: a Secret or a field of a pod means
        # nothing here); then the contract, which the template cannot override (the spec forbids it).
        for i, item in enumerate(self.spec.template.env):
            if "value" in item:
                env[str(item["name"])] = str(item["value"])
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

    # --------------------------------------------------------------------------------- interrupts

    def _release(self, stopped: list[tuple[int, int]]) -> list[int]:
        """Withdraw the launch record of stopped runs whose trial is still RUNNING (see module docs)."""
        if self.study_id is None:
            return []
        assert self.storage is not None
        released = []
        for number, attempt in stopped:
            try:
                trial_id = self._trial_id(number)
            except KeyError:
                continue
            trial = self.storage.get_trial(trial_id)
            if trial.state == optuna.trial.TrialState.RUNNING:
                self.storage.set_trial_system_attr(trial_id, ATTR_LAUNCHED, attempt - 1)
                released.append(number)
        return sorted(set(released))

    # ------------------------------------------------------------------------------------- output

    def _print(self, message: str, style: str | None = None) -> None:
        if self.progress is not None:
            self.progress.print(message, style)
        else:
            self.console.print(message, style=style, markup=False, highlight=False, soft_wrap=True)

    def _print_event(self, event: reconcile.PostEvent) -> None:
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
        if event.reason in ("TrialFailed", "TrialRetried"):
            m = _TRIAL_LINE.match(event.message)
            if m:
                number = int(m[1])
                if m["attempt"]:  # "Trial 3 attempt 1 of 2 failed": that attempt's log
                    attempt = int(m["attempt"]) - 1
                else:
                    attempt = max(
                        (r.attempt for r in self.runs.runs.values() if r.trial == number), default=0
                    )
                log = self.runs.log_path(number, attempt)
                if log.exists():
                    self._print(f"  log: {self._rel(log)}", "dim")

    def _update_progress(self, a: reconcile.Assessment, observed: Observed) -> None:
        if self.progress is None:
            return
        running = len(self.runs.active())
        if self.spec.multi_objective:
            front = pareto_front(self.spec.directions, observed.trials)
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

    def _finish(self, outcome: reconcile.Assessment | None) -> int:
        if outcome is None:
            return self._interrupted()
        views = self._trials()
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
            best = reconcile.best_trial(self.spec.directions, views)
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
        # A failed study's reason was printed as its StudyFailed line.
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
