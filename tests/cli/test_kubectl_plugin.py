"""``kubectl-hpo``: the read commands as a kubectl plugin (kubectl runs ``kubectl-<name>`` from PATH).

Against a real cluster with the real kubectl: test_cluster.py."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.cli.conftest import REPO, hpo_env

PLUGIN = Path(sys.executable).parent / "kubectl-hpo"


def test_the_package_declares_the_plugin_entry_point() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-hpo"] == "hpo_operator.cli.main:kubectl_main"
    module, _, name = scripts["kubectl-hpo"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    # Installed next to this interpreter (scripts/bootstrap installs the checkout), where PATH finds it.
    assert PLUGIN.is_file(), f"{PLUGIN} is missing: run scripts/bootstrap to reinstall the checkout"


def test_the_plugin_offers_the_read_commands_on_hpostudy_names(tmp_path: Path) -> None:
    def plugin(*args: str) -> subprocess.CompletedProcess[str]:
        env = hpo_env({"KUBECONFIG": str(tmp_path / "no-kubeconfig")})
        return subprocess.run(
            [str(PLUGIN), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    usage = plugin("--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: kubectl hpo ")
    for command in ("status", "trials", "report", "dashboard"):
        assert f"    {command} " in usage.stdout or f"    {command}\n" in usage.stdout, usage.stdout
    assert "run " not in usage.stdout and "validate" not in usage.stdout
    trials = plugin("trials", "--help")
    assert (
        trials.returncode == 0
        and "usage: kubectl hpo trials [-h]" in trials.stdout
        and "NAME" in trials.stdout
    )
    # A name, never a file: even one that looks like a manifest goes to the cluster.
    (tmp_path / "study.yaml").write_text("kind: HPOStudy\n")
    status = plugin("status", "study.yaml")
    assert status.returncode == 1 and "cannot use the kubeconfig" in status.stderr, status.stderr
    assert "Reading HPOStudy study.yaml (the kubeconfig's namespace) on the cluster" in status.stderr
    assert plugin("status").returncode == 2  # the name is required
