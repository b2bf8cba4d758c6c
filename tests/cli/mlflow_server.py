"""A real MLflow tracking server for the tests, started from the full ``mlflow`` package.

The package's pins (pyarrow, among others) would downgrade the project's environment, which only needs
the client (``mlflow-skinny``, in the ``tracking`` extra). So the server runs from a virtual environment
of its own, made once from PyPI and cached under ``~/.cache/hpo-operator/mlflow-server/<version>``
(like the harness's binaries), on a SQLite backend in the test's directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

VERSION = "3.17.2"
CACHE = Path(os.environ.get("HPO_CACHE", Path.home() / ".cache" / "hpo-operator")) / "mlflow-server" / VERSION


def server_venv() -> Path:
    """The environment with ``mlflow`` (server) installed; made on first use (``.complete`` marks it)."""
    done = CACHE / ".complete"
    if done.exists():
        return CACHE
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(CACHE)], check=True)
    subprocess.run(
        [str(CACHE / "bin" / "pip"), "install", "--quiet", f"mlflow=={VERSION}"], check=True, timeout=900
    )
    done.touch()
    return CACHE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def mlflow_server(workdir: Path, timeout: float = 120.0) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 with its store under ``workdir``; yields its tracking URI."""
    venv = server_venv()
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "mlflow-server.log").open("wb")
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'mlflow.db'}",
            "--artifacts-destination",
            str(workdir / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))},
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}: {_tail(workdir)}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer in {timeout:.0f}s: {_tail(workdir)}")
            time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _tail(workdir: Path) -> str:
    return (workdir / "mlflow-server.log").read_text(errors="replace")[-3000:]
