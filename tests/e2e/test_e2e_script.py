"""scripts/e2e.sh, the steps after "a cluster exists" that kind-e2e.sh and the real-node test share:
its argument handling, checked everywhere (the steps themselves run in test_real_node.py)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "e2e.sh"


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def test_usage_names_every_step_and_setting() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    assert os.stat(SCRIPT).st_mode & stat.S_IXUSR
    usage = run_script("--help")
    assert usage.returncode == 0
    for word in (
        "build",
        "load",
        "install",
        "run",
        "--example",
        "E2E_LOAD",
        "E2E_BASE_IMAGE",
        "E2E_HELM_SET",
    ):
        assert word in usage.stdout
    assert "set -euo" not in usage.stdout  # the comment block only


def test_unknown_argument_and_missing_loader_are_named() -> None:
    bad = run_script("deploy")
    assert bad.returncode == 2
    assert "unknown argument deploy" in bad.stderr
    no_loader = run_script("load", env={"E2E_LOAD": ""})
    assert no_loader.returncode == 1
    assert "E2E_LOAD is not set" in no_loader.stderr


def test_kind_workflow_runs_the_shared_script() -> None:
    kind = (ROOT / "scripts" / "kind-e2e.sh").read_text()
    assert '"$root/scripts/e2e.sh"' in kind
    assert "kind load docker-image" in kind or "load docker-image" in kind
