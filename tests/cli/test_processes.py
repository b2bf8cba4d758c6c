"""Local trial runs (``hpo run``): a run that exits wakes the loop at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hpo_operator.cli.processes import ProcessRuns


def test_a_run_exiting_ends_the_wait_at_once(tmp_path: Path) -> None:
    runs = ProcessRuns(tmp_path, grace=5.0)
    assert runs.wait_for_exit(0.05) is False  # nothing ran: the whole timeout, and no exit
    run = runs.launch("t-0", 0, 0, [sys.executable, "-c", "import time; time.sleep(0.3)"], {}, tmp_path)
    began = time.monotonic()
    assert runs.wait_for_exit(60.0) is True
    assert time.monotonic() - began < 30.0  # woken by the exit, not by the timeout
    assert run.poll() == 0 and run.view().phase == "Succeeded"
    assert runs.active() == []


def test_an_exit_between_two_waits_is_not_lost(tmp_path: Path) -> None:
    runs = ProcessRuns(tmp_path, grace=5.0)
    run = runs.launch("t-1", 1, 0, [sys.executable, "-c", "raise SystemExit(3)"], {}, tmp_path)
    deadline = time.monotonic() + 30.0
    while run.proc.returncode is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the process has exited (and its watcher reaped it) before anyone waits
    began = time.monotonic()
    assert runs.wait_for_exit(60.0) is True
    assert time.monotonic() - began < 30.0
    assert run.poll() == 3 and run.view().phase == "Failed"
