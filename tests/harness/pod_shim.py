"""The node agent's shim: the parent of one pod's process, as containerd-shim is of a container.

``python -I -S pod_shim.py <pod dir> <pod uid> -- <argv...>`` starts ``argv`` (the container's command)
in a process group of its own, writes ``<pod dir>/pid`` (``{"pid", "start", "shim", "uid"}``: the
process, its start time in clock ticks since boot, which tells it apart from a later process with the
same pid, and this shim), waits for it and writes ``<pod dir>/exit`` (``{"exitCode", "finishedAt"}``,
128 + N for a signal N) before it exits with the same code. A command that cannot be started is
``{"exitCode": 128, "reason": "StartError", "message": ...}``.

The shim outlives the node agent: an agent that restarts finds the pod's process through ``pid`` and,
once it has ended, its exit code in ``exit`` (``node_agent.PodWorker``), so a restart neither loses a
running pod nor its result. Standard library only, no site packages: it starts in a few milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def start_time(pid: int) -> int:
    """The process's start time (``/proc/<pid>/stat`` field 22); -1 once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[19])


def _ignore(signum: int, frame: object) -> None:
    """The shim stays until its process has ended."""


def write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    pod_dir, uid, sep, command = Path(argv[0]), argv[1], argv[2], argv[3:]
    assert sep == "--" and command, "usage: pod_shim.py <pod dir> <pod uid> -- <command...>"
    # The agent signals the pod's process group, not the shim; SIGTERM/SIGINT/SIGHUP that reach the shim
    # anyway (a whole session signalled) must not leave the pod's exit unrecorded. A handler (not
    # SIG_IGN, which the command would inherit) is reset to the default in the command by exec.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    finished = pod_dir / "exit"
    try:
        proc = subprocess.Popen(command, process_group=0)
    except OSError as exc:
        message = f"failed to start {command[0]!r}: {exc}"
        print(message, flush=True)
        write_json(finished, {"exitCode": 128, "reason": "StartError", "message": message})
        return 128
    write_json(
        pod_dir / "pid", {"pid": proc.pid, "start": start_time(proc.pid), "shim": os.getpid(), "uid": uid}
    )
    code = proc.wait()
    exit_code = code if code >= 0 else 128 - code
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    write_json(finished, {"exitCode": exit_code, "finishedAt": stamp})
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
