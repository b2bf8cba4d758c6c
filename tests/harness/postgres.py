"""A throw-away PostgreSQL server for tests: its own data directory, a free port on 127.0.0.1.

The binaries come from PATH or ``/usr/lib/postgresql/<version>/bin``; when they are missing and we
are root they are installed from Debian's ``postgresql`` package. PostgreSQL refuses to run as root,
so as root the server runs as the ``postgres`` system user (created if missing) with a data directory
under the system temp dir that this user owns. Authentication is ``trust`` (loopback only), fsync is
off: this is test infrastructure, not a database to keep.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from .cluster import HarnessError, free_port, pid_alive, set_pdeathsig

STATE_FILE = "postgres.json"
SUPERUSER = "postgres"
SERVICE_USER = "postgres"
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "log_min_messages": "warning",
}


def _pg_bin_dirs() -> list[Path]:
    dirs = []
    on_path = shutil.which("initdb")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name.split(".")[0]),
        reverse=True,
    )
    dirs += [Path(p) for p in versions]
    return [d for d in dirs if (d / "initdb").exists() and (d / "postgres").exists()]


def find_pg_bin(install: bool = True) -> Path:
    """The directory holding ``initdb`` and ``postgres``; installs Debian's package if allowed and needed."""
    dirs = _pg_bin_dirs()
    if dirs:
        return dirs[0]
    if not install:
        raise HarnessError(
            "PostgreSQL is not installed (no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin)"
        )
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise HarnessError(
            "PostgreSQL is not installed (no initdb/postgres on PATH or in /usr/lib/postgresql/*/bin); "
            "install it, e.g. `sudo apt-get install -y postgresql`"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "postgresql"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise HarnessError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return find_pg_bin(install=False)


def _service_account() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


class PostgresServer:
    """``start()`` a server, ``create_database()`` per test, ``stop()``; ``load(dir)`` re-attaches."""

    def __init__(self, state_dir: Path | str | None = None, *, detached: bool = False) -> None:
        self.state_dir = Path(state_dir).resolve() if state_dir else None
        self.detached = detached  # survive this process (``up``); otherwise die with it
        self._proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.base_dir: Path | None = None  # owned by the service user; holds data/ and server.log
        self.bin_dir: Path | None = None
        self.external = False

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg2 driver)."""
        return f"postgresql+psycopg2://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def dsn(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={database}"

    @property
    def pid(self) -> int | None:
        if self.base_dir is None:
            return None
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # ---- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str) -> PostgresServer:
        """An already running server (``HPO_TEST_POSTGRES_URL``, e.g. from ``python -m tests.harness up``)."""
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        server = cls()
        server.host = parsed.host or "127.0.0.1"
        server.port = parsed.port or 5432
        server.external = True
        return server

    def _account_kwargs(self) -> dict[str, Any]:
        account = _service_account()
        if account is None:
            return {}
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": str(self.base_dir)}

    def start(self) -> PostgresServer:
        """initdb a new data directory and run ``postgres`` on it as our child process."""
        self.bin_dir = find_pg_bin()
        account = _service_account()
        # The service user must be able to reach its directory: a root-owned pytest tmp dir or
        # ~/.cache is not traversable by it, so the data lives under the system temp dir.
        self.base_dir = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        if account is not None:
            os.chown(self.base_dir, account.pw_uid, account.pw_gid)
        self.port = free_port()
        self._save()
        try:
            self._tool(
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER,
                "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync",
                timeout=120,
            )  # fmt: skip
            with open(self.data_dir / "postgresql.conf", "a") as conf:
                conf.write("\n# hpo-operator test harness\n")
                conf.write(f"port = {self.port}\n")
                conf.writelines(f"{k} = {v}\n" for k, v in SETTINGS.items())
            self._spawn()
            self._save()
            self._wait_ready(60.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tool(self, name: str, *args: str, timeout: float) -> None:
        """Run one of PostgreSQL's programs (as the service account); raise with its output if it fails."""
        assert self.bin_dir is not None
        done = subprocess.run(
            [str(self.bin_dir / name), *args],
            cwd=self.base_dir,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **self._account_kwargs(),
        )
        if done.returncode != 0:
            raise HarnessError(
                f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )

    def _spawn(self) -> None:
        """Run ``postgres`` on the data directory as our child (its log appended to ``log_file``)."""
        assert self.bin_dir is not None
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if self.detached else set_pdeathsig,
                **self._account_kwargs(),
            )

    def pause(self) -> None:
        """Shut the server down (``pg_ctl stop -m fast``) and keep its data: clients are disconnected
        at once and new connections refused until :meth:`resume`, as in a database restart."""
        if self.external or self.bin_dir is None:
            raise HarnessError("only a server the harness started can be paused")
        self._tool("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", timeout=60)
        if self._proc is not None:
            self._proc.wait(timeout=30)  # our child: reap it

    def resume(self, timeout: float = 60.0) -> None:
        """Start a paused server again on the same data directory and port; wait until it answers."""
        self._spawn()
        self._save()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                log = self.log_file.read_text(errors="replace")[-3000:]
                raise HarnessError(f"postgres exited with code {self._proc.returncode}:\n{log}")
            try:
                psycopg2.connect(self.dsn(), connect_timeout=3).close()
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise HarnessError(
                        f"PostgreSQL on port {self.port} did not accept connections: {exc}"
                    ) from exc
                time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (fast shutdown), remove its data directory; no-op for an external server."""
        if self.external or self.base_dir is None:
            return
        pid = self._proc.pid if self._proc is not None else self.pid
        if pid is not None and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # SIGINT: fast shutdown (SIGTERM would wait for clients)
            if not self._wait_dead(pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if not self._wait_dead(pid, 10.0):
                    raise HarnessError(f"postgres (pid {pid}) did not exit after SIGKILL")
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self.state_dir is not None:
            with contextlib.suppress(OSError):
                (self.state_dir / STATE_FILE).unlink()
        self.base_dir = None
        self._proc = None

    def _wait_dead(self, pid: int, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # ---- state file (for `python -m tests.harness down`) -----------------------------------
    def _save(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "port": self.port,
            "base_dir": str(self.base_dir),
            "bin_dir": str(self.bin_dir),
            "url": self.admin_url,
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, state_dir: Path | str) -> PostgresServer:
        path = Path(state_dir) / STATE_FILE
        if not path.is_file():
            raise HarnessError(f"no PostgreSQL state at {path}")
        state = json.loads(path.read_text())
        server = cls(state_dir, detached=True)
        server.port = state["port"]
        server.base_dir = Path(state["base_dir"])
        server.bin_dir = Path(state["bin_dir"])
        return server

    # ---- databases ---------------------------------------------------------------------------
    def _admin(self, statement: sql.Composable) -> None:
        conn = psycopg2.connect(self.dsn(), connect_timeout=10)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its SQLAlchemy URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it (trial processes, engines)."""
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
