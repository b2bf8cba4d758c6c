"""Container images without a registry: a Docker engine of the harness's own and local base images.

No registry is reachable from this machine, so no base image can be pulled. The harness makes its own:

- ``hpo-local/python:3.11-bookworm``: Debian bookworm (``debootstrap --variant=minbase``) with Debian's
  Python 3.11 and a virtual environment first on PATH, standing in for ``python:3.11-slim-bookworm``.
  The machine's extra CA certificates (``/usr/local/share/ca-certificates``) go into this local image's
  trust store only, never into the repository's Dockerfiles: builds on it reach PyPI as the host does.
- ``hpo-local/torch:<version>``: that plus the torch wheel from PyPI at the version of the project's own
  environment, standing in for the trial image's ``pytorch/pytorch`` base.
- ``hpo-local/postgres:15-bookworm``: Debian's PostgreSQL 15 with an entry point that honours the official
  image's ``POSTGRES_USER``/``POSTGRES_PASSWORD``/``POSTGRES_DB``/``PGDATA``, as the chart's bundled database
  uses it.

The repository's own Dockerfiles take their base as the ``BASE_IMAGE`` build argument, so the tests build
the very files users build. ``DockerEngine`` uses a running engine when ``docker info`` answers (a laptop),
or starts Debian's ``dockerd`` with its data under ``~/.cache/hpo-operator/docker``: a warm run reuses every
layer (torch is downloaded once per machine). Builds use the legacy builder (``DOCKER_BUILDKIT=0``): the
BuildKit front end would be pulled from a registry.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from .binaries import cache_root
from .real_node import RealNodeError, ensure_packages, run

ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = Path(__file__).resolve().parent / "images"
BASE_VERSION = "1"  # bump to rebuild the local base images on every machine
PYTHON_BASE = "hpo-local/python:3.11-bookworm"
POSTGRES_IMAGE = "hpo-local/postgres:15-bookworm"  # a tag Helm reads as a string
DOCKER_PACKAGES = ("docker.io", "debootstrap")
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def _log(message: str) -> None:
    print(f"[harness] {message}", file=sys.stderr, flush=True)


def torch_base() -> str:
    return f"hpo-local/torch:{metadata.version('torch').split('+')[0]}"


class DockerEngine:
    """A Docker engine to build with: the one ``docker info`` reaches, or a ``dockerd`` started here."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return self.env.get("DOCKER_HOST", "unix:///var/run/docker.sock")

    def docker(self, *args: str, timeout: float = 3600, check: bool = True, **kw: object) -> str:
        return run(["docker", *args], timeout=timeout, check=check, env=self.env, **kw)

    def _answers(self) -> bool:
        return (
            shutil.which("docker") is not None
            and subprocess.run(
                ["docker", "info"], capture_output=True, env=self.env, timeout=60, check=False
            ).returncode
            == 0
        )

    def start(self) -> DockerEngine:
        if self._answers():
            return self
        ensure_packages(DOCKER_PACKAGES)
        run_dir = self.state_dir / "docker"
        run_dir.mkdir(parents=True, exist_ok=True)
        data_root = cache_root() / "docker"
        data_root.mkdir(parents=True, exist_ok=True)
        socket = run_dir / "docker.sock"
        self.env["DOCKER_HOST"] = f"unix://{socket}"
        log = open(run_dir / "dockerd.log", "ab")  # noqa: SIM115 - the daemon keeps writing to it
        from .cluster import set_pdeathsig

        self._proc = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--ip-forward=false",  # leave the machine's forwarding as it is
                "--bridge=none",  # builds run with --network host; no container gets a network of its own
                "--storage-driver=overlay2",
                f"--data-root={data_root}",
                f"--exec-root={run_dir / 'exec'}",
                f"--pidfile={run_dir / 'dockerd.pid'}",
                f"--host=unix://{socket}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(set_pdeathsig, signal.SIGTERM),
        )
        self.pid = self._proc.pid
        deadline = time.monotonic() + 60
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (run_dir / "dockerd.log").read_text(errors="replace").splitlines()[-20:]
                raise RealNodeError("dockerd did not start:\n" + "\n".join(tail))
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        """Stop the dockerd this engine started (if any) and unmount what it left under its run dir."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None
        for point in sorted(self.mounts(), key=len, reverse=True):
            run(["umount", "-l", point], check=False)

    def mounts(self) -> list[str]:
        """Mounts under the run directory of a dockerd started here (its network namespace files)."""
        prefix = str(self.state_dir / "docker") + "/"
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        return [p for p in (line.split()[4] for line in lines) if p.startswith(prefix)]

    # ---- images ------------------------------------------------------------------------------
    def id_of(self, image: str) -> str | None:
        """The image's ID (a name or an ID); None when the engine has no such image."""
        found = self.docker("image", "inspect", "-f", "{{.Id}}", image, check=False, timeout=60).strip()
        return found or None

    def has(self, image: str) -> bool:
        return self.id_of(image) is not None

    def image_id(self, image: str) -> str:
        return self.docker("image", "inspect", "-f", "{{.Id}}", image, timeout=60).strip()

    def build(self, tag: str, context: Path, dockerfile: Path | None = None, **build_args: str) -> None:
        """Build ``tag``, then remove the image it replaced (by ID, with the layers only it used; kept
        while another tag or a container uses it), so the cache holds one copy of each image."""
        old = self.id_of(tag)
        argv = ["build", "--network", "host", "-t", tag]
        if dockerfile is not None:
            argv += ["-f", str(dockerfile)]
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        started = time.monotonic()
        self.docker(*argv, str(context))
        if old is not None and old != self.id_of(tag):
            self.docker("rmi", old, check=False, timeout=600)
        _log(f"built {tag} in {time.monotonic() - started:.0f}s")

    def ensure_python_base(self) -> str:
        """``hpo-local/python:3.11-bookworm`` from debootstrap, once per machine (about a minute)."""
        tag = PYTHON_BASE
        if self.has(tag) and self._label(tag, "dev.hpo.base-version") == BASE_VERSION:
            return tag
        ensure_packages(DOCKER_PACKAGES)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="hpo-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,ca-certificates",
                    "bookworm",
                    str(rootfs),
                    DEBIAN_MIRROR,
                ],
                timeout=1800,
            )
            # This machine's own CAs, in the local test base only (HTTPS from builds goes through them).
            for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
                shutil.copy(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
            run(["chroot", str(rootfs), "update-ca-certificates"])
            run(["mount", "-t", "proc", "proc", str(rootfs / "proc")])
            try:
                run(["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", "/opt/python"], timeout=300)
            finally:
                run(["umount", str(rootfs / "proc")], check=False)
            run(["chroot", str(rootfs), "apt-get", "clean"], check=False)
            changes = [
                "ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                f"LABEL dev.hpo.base-version={BASE_VERSION}",
            ]
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            argv = ["import", *(a for c in changes for a in ("--change", c)), "-", tag]
            self.docker(*argv, stdin=tar.stdout, timeout=600)
            tar.wait()
        _log(f"made {tag} with debootstrap in {time.monotonic() - started:.0f}s")
        return tag

    def _label(self, image: str, key: str) -> str:
        out = self.docker("image", "inspect", "-f", "{{json .Config.Labels}}", image, check=False, timeout=60)
        with contextlib.suppress(ValueError):
            return str((json.loads(out or "null") or {}).get(key, ""))
        return ""

    def ensure_torch_base(self) -> str:
        tag = torch_base()
        if not self.has(tag):
            version = tag.rsplit(":", 1)[1]
            self.build(tag, IMAGES_DIR / "torch", BASE_IMAGE=self.ensure_python_base(), TORCH_VERSION=version)
        return tag

    def ensure_postgres(self) -> str:
        if (
            not self.has(POSTGRES_IMAGE)
            or self._label(POSTGRES_IMAGE, "dev.hpo.base-version") != BASE_VERSION
        ):
            self.build(
                POSTGRES_IMAGE,
                IMAGES_DIR / "postgres",
                BASE_IMAGE=self.ensure_python_base(),
                VERSION=BASE_VERSION,
            )
        return POSTGRES_IMAGE


def load_into_node(engine: DockerEngine, node: object, images: list[str]) -> list[str]:
    """Import ``images`` from Docker into the real node's containerd, skipping those it already holds
    at the same image ID (a stamp next to containerd's cached content store). Returns those imported."""
    from .real_node import RealNode

    assert isinstance(node, RealNode)
    stamp_file = node.containerd_root.parent / "loaded.json"
    stamps: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        stamps = json.loads(stamp_file.read_text())
    present = node.images()

    def qualified(image: str) -> str:
        first = image.split("/", 1)[0]
        has_registry = "/" in image and ("." in first or ":" in first or first == "localhost")
        name = image if has_registry else f"docker.io/{image if '/' in image else 'library/' + image}"
        return name

    wanted = [i for i in images if stamps.get(i) != engine.image_id(i) or qualified(i) not in present]
    if wanted:
        # `docker save` streams straight into `ctr import`: no archive of several GiB on the disk.
        started = time.monotonic()
        save = subprocess.Popen(
            ["docker", "save", *wanted], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=engine.env
        )
        try:
            node.import_docker_archive(save.stdout)  # type: ignore[arg-type]
        finally:
            if save.poll() is None:
                save.kill()
            save.wait()
        if save.returncode != 0:
            stderr = save.stderr.read().decode(errors="replace") if save.stderr else ""
            raise RealNodeError(f"docker save {' '.join(wanted)} failed: {stderr.strip()[-2000:]}")
        _log(f"imported {', '.join(wanted)} into the node's containerd in {time.monotonic() - started:.0f}s")
        stamps.update({i: engine.image_id(i) for i in wanted})
        stamp_file.write_text(json.dumps(stamps, indent=2))
    return wanted
