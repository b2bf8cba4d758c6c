"""Build Go binaries from a pinned wrapper module once and cache them under ``~/.cache``.

The cache directory is keyed by a version string (``~/.cache/hpo-operator/<version_key>/bin``) and a
stamp file records a hash of everything that went into the build (go.mod, go.sum, the package list,
the ldflags), so a changed pin rebuilds and an unchanged one is reused in milliseconds (Go itself is
only needed to build).
A cold build of the Kubernetes control plane takes many minutes on two cores; Go's own build cache
(``~/.cache/go-build``) makes a rebuild with identical flags fast. Concurrent callers (several pytest
processes, ``python -m tests.harness up``) serialize on a file lock, so only one of them builds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.0"
K8S_MODULE_DIR = Path(__file__).resolve().parent / "k8s"
K8S_PACKAGES = (
    "k8s.io/kubernetes/cmd/kube-apiserver",
    "k8s.io/kubernetes/cmd/kube-controller-manager",
    "k8s.io/kubernetes/cmd/kube-scheduler",
    "k8s.io/kubernetes/cmd/kubectl",  # the client for this server: the system kubectl may be releases behind
    "k8s.io/kubernetes/cmd/kubelet",  # the real node (tests/harness/real_node.py)
    "k8s.io/kubernetes/cmd/kube-proxy",
    "./cmd/etcd",
)
# How long one `go build` may take before we give up (a cold build on 2 cores takes ~10 minutes).
BUILD_TIMEOUT_S = float(os.environ.get("HPO_GO_BUILD_TIMEOUT", "3600"))


class BuildError(RuntimeError):
    """The Go build failed or its toolchain is missing."""


def cache_root() -> Path:
    """The harness cache: ``$HPO_CACHE`` or ``~/.cache/hpo-operator``."""
    return Path(os.environ.get("HPO_CACHE") or Path.home() / ".cache" / "hpo-operator")


def k8s_ldflags(version: str = K8S_VERSION) -> str:
    """Linker flags that make ``/version`` report the real release (Helm and kubectl read it)."""
    major, minor = version.lstrip("v").split(".")[:2]
    return " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            "-X k8s.io/component-base/version.buildDate=2026-11-01T00:00:00Z",
            f"-X k8s.io/client-go/pkg/version.gitVersion={version}",
        ]
    )


def binary_name(package: str) -> str:
    """The file name ``go build -o dir/`` gives a main package: its last path element."""
    return package.rstrip("/").rsplit("/", 1)[-1]


def _log(message: str) -> None:
    print(f"[harness] {message}", file=sys.stderr, flush=True)


def _find_go() -> str:
    go = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", str(Path.home() / "go/bin/go")) if os.access(p, os.X_OK)), None
    )
    if go is None:
        raise BuildError(
            "the Go toolchain (`go`) is not on PATH nor in /usr/local/go/bin; install Go >= 1.26 to build "
            "the control-plane binaries"
        )
    return go


def _stamp(module_dir: Path, packages: Sequence[str], ldflags: str) -> str:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        path = module_dir / name
        digest.update(path.read_bytes() if path.exists() else b"")
    digest.update(json.dumps([list(packages), ldflags]).encode())
    return digest.hexdigest()


def _run_go_build(go: str, module_dir: Path, packages: Sequence[str], ldflags: str, out_dir: Path) -> None:
    """Run ``go build -v`` and print a progress line now and then (``-v`` names each package built)."""
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", f"{out_dir}/", *packages]
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=60)
    count = 0
    proc = subprocess.Popen(cmd, cwd=module_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killer = threading.Timer(BUILD_TIMEOUT_S, proc.kill)
    killer.start()
    last_report = started
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            count += 1
            now = time.monotonic()
            if now - last_report >= 30:
                last_report = now
                _log(f"  ... {count} packages compiled, {now - started:.0f}s (last: {line.strip()})")
        rc = proc.wait()
    finally:
        killer.cancel()
    if rc != 0:
        raise BuildError(
            f"`{' '.join(cmd[:2])} ... {' '.join(packages)}` in {module_dir} failed with exit code {rc} "
            f"after {time.monotonic() - started:.0f}s:\n" + "\n".join(tail)
        )
    _log(f"built {', '.join(binary_name(p) for p in packages)} in {time.monotonic() - started:.0f}s")


def ensure_go_binaries(
    module_dir: Path | str, packages: Sequence[str], version_key: str, ldflags: str = "-s -w"
) -> dict[str, Path]:
    """Build ``packages`` (main packages of the Go module in ``module_dir``) unless cached.

    Returns ``{binary name: path}``; the binaries live in ``<cache>/<version_key>/bin``. The build is
    skipped when every binary exists and the stamp (go.mod, go.sum, packages, ldflags) matches;
    otherwise it runs once, under a lock, into a temporary directory that is then moved into place,
    so a crashed build never leaves a half-written binary behind.
    """
    module_dir = Path(module_dir).resolve()
    if not (module_dir / "go.mod").is_file():
        raise BuildError(f"module_dir {module_dir} has no go.mod")
    if not packages:
        raise BuildError("packages is empty: name at least one main package to build")
    base = cache_root() / version_key
    bin_dir = base / "bin"
    wanted = {binary_name(p): bin_dir / binary_name(p) for p in packages}
    stamp_file = base / "stamp"
    base.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(module_dir, packages, ldflags)

    def fresh() -> bool:
        return (
            stamp_file.is_file()
            and stamp_file.read_text().strip() == stamp
            and all(os.access(p, os.X_OK) for p in wanted.values())
        )

    if fresh():
        return wanted
    with open(base / ".lock", "w") as lock:
        if not _try_lock(lock):
            _log(f"waiting for another process building {version_key} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if fresh():
            return wanted
        go = _find_go()
        _log(
            f"building {', '.join(wanted)} ({version_key}) from {module_dir}; a cold build takes "
            "about 10 minutes on 2 cores (more if Go modules must be downloaded); later runs reuse the cache"
        )
        staging = Path(tempfile.mkdtemp(prefix="build-", dir=base))
        try:
            _run_go_build(go, module_dir, packages, ldflags, staging)
            bin_dir.mkdir(exist_ok=True)
            for name, target in wanted.items():
                built = staging / name
                if not built.is_file():
                    raise BuildError(f"go build did not produce {name} in {staging}")
                os.replace(built, target)
            stamp_file.write_text(stamp + "\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return wanted


def _try_lock(lock: object) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # type: ignore[arg-type]
    except BlockingIOError:
        return False
    return True


def ensure_control_plane() -> dict[str, Path]:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl at the pinned release.

    Keys: ``etcd``, ``kube-apiserver``, ``kube-controller-manager``, ``kube-scheduler``, ``kubectl``. They
    are built together (one stamp, one cache directory ``k8s/<version>``), so ``kubectl version`` reports
    the same release as the API server's ``/version``.
    """
    return ensure_go_binaries(K8S_MODULE_DIR, K8S_PACKAGES, f"k8s/{K8S_VERSION}", k8s_ldflags())


def ensure_kubectl() -> Path:
    """The ``kubectl`` of the pinned release (built with the control plane, so usually already cached)."""
    return ensure_control_plane()["kubectl"]


if __name__ == "__main__":
    for name, path in ensure_control_plane().items():
        print(f"{name}\t{path}")


COREDNS_VERSION = "v1.15.0"
COREDNS_MODULE_DIR = Path(__file__).resolve().parent / "coredns"


def ensure_coredns() -> Path:
    """CoreDNS for the real node's cluster DNS (only the plugins in ``coredns/main.go``)."""
    return ensure_go_binaries(
        COREDNS_MODULE_DIR, ("hpo.dev/tests/harness/coredns",), f"coredns/{COREDNS_VERSION}"
    )["coredns"]
