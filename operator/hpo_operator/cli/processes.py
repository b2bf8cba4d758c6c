"""Trial runs as local processes: what a pod is to the operator, a subprocess is to ``hpo run``.

Each run is started in its own session (process group), so the terminal's Ctrl-C reaches ``hpo run``
alone and ``hpo run`` decides how its children stop: SIGTERM to the run's whole process group, then
SIGKILL after a grace period. Output goes to a per-run log file; the log's last lines become the run's
failure message, as ``terminationMessagePolicy: FallbackToLogsOnError`` does for a pod.

``hpo run`` sleeps between looks at its runs, but a run that exits wakes it at once
(:meth:`ProcessRuns.wait_for_exit`), so a slot does not sit idle for the rest of a poll interval.

A small JSON file per live run (``<work dir>/runs/<name>.json``: pid, start time) lets the next
``hpo run`` find processes a killed ``hpo run`` left behind, and stop them before it decides anything.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from hpo_operator.core.observe import RunView

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 8192
HEADER = "=== hpo run:"
RUN_KIND = "trial process"  # a run, in the words of its messages ("trial process demo-trial-3 failed")


@dataclass
class LocalRun:
    """One process running one attempt of one trial."""

    name: str
    trial: int
    attempt: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    created: dt.datetime
    log_file: IO[bytes] | None = None
    exit_code: int | None = None
    deleting: bool = False
    kill_at: float | None = None  # monotonic deadline for SIGKILL after SIGTERM
    started_now: bool = True  # False when launch() found this run alive and kept it
    _tail: str | None = field(default=None, repr=False)

    def poll(self) -> int | None:
        if self.exit_code is None:
            code = self.proc.poll()
            if code is not None:
                self.exit_code = code
                if self.log_file is not None:
                    self.log_file.close()
                    self.log_file = None
        return self.exit_code

    def view(self) -> RunView:
        code = self.poll()
        if code is None:
            return RunView(
                self.name,
                self.trial,
                self.attempt,
                "Running",
                created=self.created,
                deleting=self.deleting,
                kind=RUN_KIND,
            )
        reason = f"killed by {_signal_name(-code)}" if code < 0 else ("Error" if code else "Completed")
        message = self.log_tail() if code else None
        return RunView(
            self.name,
            self.trial,
            self.attempt,
            "Succeeded" if code == 0 else "Failed",
            exit_code=code,
            reason=reason,
            message=message,
            deleting=self.deleting,
            created=self.created,
            kind=RUN_KIND,
        )

    def log_tail(self) -> str:
        """The last lines of the run's log (what a failed pod's termination message would hold)."""
        if self._tail is None:
            try:
                with self.log_path.open("rb") as f:
                    f.seek(0, os.SEEK_END)
                    size = f.tell()
                    f.seek(max(0, size - LOG_TAIL_BYTES))
                    text = f.read().decode("utf-8", errors="replace")
            except OSError:
                text = ""
            # This attempt's output only: a log appended to by a resumed run has a header per start.
            text = text.rsplit(HEADER, 1)[-1].split("\n", 1)[-1] if HEADER in text else text
            lines = [ln for ln in text.splitlines() if ln.strip()]
            tail = "\n".join(lines[-LOG_TAIL_LINES:])
            if self.exit_code is None:
                return tail  # still running: do not cache
            self._tail = tail
        return self._tail


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class ProcessRuns:
    """The live and finished runs of this ``hpo run`` session."""

    def __init__(self, work_dir: Path, grace: float) -> None:
        self.work_dir = work_dir
        self.state_dir = work_dir / "runs"
        self.grace = grace
        self.runs: dict[str, LocalRun] = {}
        self._exited = threading.Event()  # set by a run's watcher thread when its process exits

    def log_path(self, trial: int, attempt: int) -> Path:
        return self.work_dir / (f"trial-{trial}.log" if attempt == 0 else f"trial-{trial}-r{attempt}.log")

    def launch(
        self,
        name: str,
        trial: int,
        attempt: int,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
    ) -> LocalRun:
        """Start a run (a run of that name that is still alive is kept: launching is idempotent)."""
        existing = self.runs.get(name)
        if existing is not None and existing.poll() is None:
            existing.started_now = False
            return existing
        log_path = self.log_path(trial, attempt)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("ab")
        header = f"{HEADER} trial {trial}, attempt {attempt}, {dt.datetime.now():%Y-%m-%d %H:%M:%S} ===\n"
        log_file.write(header.encode())
        log_file.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            log_file.write(f"cannot start {argv[0]}: {e}\n".encode())
            log_file.close()
            raise
        run = LocalRun(name, trial, attempt, proc, log_path, dt.datetime.now(dt.UTC), log_file)
        self.runs[name] = run
        self._write_state(run)
        threading.Thread(target=self._watch, args=(proc,), name=f"wait-{name}", daemon=True).start()
        return run

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()  # Popen serializes waits: poll() elsewhere returns None until this one is done
        self._exited.set()

    def wait_for_exit(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less when a run exits meanwhile; True when one did.

        An exit during the caller's following look is not lost: the caller sees it then, or it ends
        the next wait at once."""
        exited = self._exited.wait(timeout)
        self._exited.clear()
        return exited

    def views(self) -> tuple[RunView, ...]:
        """Every run of this session as a :class:`RunView` (finished runs stay, as finished pods do)."""
        out = []
        for run in self.runs.values():
            if run.poll() is not None:
                self._clear_state(run.name)
            out.append(run.view())
        return tuple(out)

    def active(self) -> list[LocalRun]:
        return [r for r in self.runs.values() if r.poll() is None]

    def delete(self, name: str) -> None:
        """Stop a run: SIGTERM to its process group now, SIGKILL once the grace period is over."""
        run = self.runs.get(name)
        if run is None:
            return
        if run.poll() is None and not run.deleting:
            run.deleting = True
            run.kill_at = time.monotonic() + self.grace
            _signal_group(run.proc.pid, signal.SIGTERM)
        elif run.poll() is not None:
            del self.runs[name]  # a finished run's "pod" is deleted: forget it
            self._clear_state(name)

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for run in self.active():
            if run.kill_at is not None and now >= run.kill_at:
                _signal_group(run.proc.pid, signal.SIGKILL)
                run.kill_at = None

    def stop_all(self, *, grace: float | None = None) -> list[LocalRun]:
        """Stop every live run (SIGTERM, then SIGKILL after ``grace``); return the runs that were stopped."""
        grace = self.grace if grace is None else grace
        stopped = self.active()
        for run in stopped:
            run.deleting = True
            _signal_group(run.proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        while any(r.poll() is None for r in stopped) and time.monotonic() < deadline:
            time.sleep(0.05)
        for run in stopped:
            if run.poll() is None:
                _signal_group(run.proc.pid, signal.SIGKILL)
        for run in stopped:
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=10)
            run.poll()
            self._clear_state(run.name)
        return stopped

    def kill_now(self) -> None:
        """A second Ctrl-C: SIGKILL every live run at once."""
        for run in self.active():
            _signal_group(run.proc.pid, signal.SIGKILL)

    # Processes left behind by an earlier `hpo run` that was killed before it could stop them.

    def _write_state(self, run: LocalRun) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pid = run.proc.pid
        state = {"pid": pid, "trial": run.trial, "attempt": run.attempt, "start": _start_time(pid)}
        (self.state_dir / f"{run.name}.json").write_text(json.dumps(state))

    def _clear_state(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / f"{name}.json").unlink()

    def stop_orphans(self) -> list[tuple[int, int]]:
        """Stop live processes recorded by an earlier session; return their (trial, attempt)."""
        found = []
        if not self.state_dir.is_dir():
            return found
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                state = json.loads(path.read_text())
                pid, trial, attempt = int(state["pid"]), int(state["trial"]), int(state["attempt"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            # A pid is only ours if its start time matches what was recorded (pids are reused).
            if state.get("start") is not None and _start_time(pid) == state.get("start"):
                _signal_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + self.grace
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _alive(pid):
                    _signal_group(pid, signal.SIGKILL)
                found.append((trial, attempt))
            path.unlink(missing_ok=True)
        return found


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a pid's reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may contain spaces, so split after its ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    stat = _start_time(pid)
    if stat is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
