"""The kind workflow (scripts/kind-e2e.sh): the product installed with Helm on a real kind cluster.

The full run needs a Docker engine and kind; it is skipped, saying which is missing, where they are not.
The script's own argument and prerequisite handling is checked everywhere.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.harness.helm import Helm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "kind-e2e.sh"


def run_script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def docker_unavailable() -> str | None:
    """Why the kind workflow cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "Docker is not installed; the kind workflow needs a Docker engine, kind and kubectl"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60, check=False)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"no running Docker engine (`docker info` failed: {lines[-1] if lines else 'no output'})"
    for tool in ("kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed; the kind workflow needs a Docker engine, kind and kubectl"
    return None


def test_script_is_valid_bash_with_usage() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    assert os.stat(SCRIPT).st_mode & stat.S_IXUSR
    usage = run_script("--help")
    assert usage.returncode == 0
    for option in ("--example", "--timeout", "--keep", "--skip-build"):
        assert option in usage.stdout
    bad = run_script("--bogus")
    assert bad.returncode == 2
    assert "unknown argument --bogus" in bad.stderr


def test_script_names_a_missing_tool(tmp_path: Path) -> None:
    result = run_script(env={"KIND": str(tmp_path / "no-kind")})
    assert result.returncode == 1
    assert f"{tmp_path / 'no-kind'} is not installed" in result.stderr


def test_script_refuses_to_start_without_a_docker_engine(tmp_path: Path) -> None:
    # A `docker` whose `info` fails, as on a machine with the CLI but no running engine.
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    true = shutil.which("true")
    assert true is not None
    result = run_script(env={"DOCKER": str(fake), "KIND": true, "KUBECTL": true, "HELM": true})
    assert result.returncode == 1
    assert "the Docker engine is not running" in result.stderr


@pytest.mark.docker
@pytest.mark.timeout(3600)
def test_kind_install_runs_an_example_study_to_success(request: pytest.FixtureRequest) -> None:
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(reason)
    helm: Helm = request.getfixturevalue("helm")  # built only when the test can run
    result = run_script(
        "--example",
        "examples/custom-container-study.yaml",
        "--timeout",
        "900",
        env={"HELM": str(helm.binary), **helm.env()},
        timeout=3300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert "succeeded" in output
