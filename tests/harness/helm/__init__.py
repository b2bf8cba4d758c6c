"""Helm for the tests: built from the Go module proxy (this directory's go.mod) and cached.

``ensure_helm()`` builds ``helm.sh/helm/v3/cmd/helm`` at the pinned version once, through the harness's
``ensure_go_binaries`` (cached under ``~/.cache/hpo-operator/helm/<version>``; a cold build takes about
three minutes on two cores). The ldflags are those of Helm's own Makefile: the version, and the
Kubernetes version that ``helm lint`` and ``helm template`` assume without a cluster, which is the
release the Kubernetes client modules in go.mod come from (1.37, as the harness's control plane).

``Helm`` runs that binary with its configuration, cache and data directories kept in a private
directory, so tests never read or write the user's ``~/.config/helm``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.binaries import ensure_go_binaries

MODULE_DIR = Path(__file__).resolve().parent
PACKAGE = "helm.sh/helm/v3/cmd/helm"


def _require(module: str) -> str:
    """The version go.mod pins for ``module``."""
    text = (MODULE_DIR / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{MODULE_DIR / 'go.mod'} does not require {module}")
    return match.group(1)


HELM_VERSION = _require("helm.sh/helm/v3")
# Helm's Makefile derives the default Kubernetes version from client-go: v0.37.x is Kubernetes 1.37.
_CLIENT_GO_MINOR = _require("k8s.io/client-go").lstrip("v").split(".")[1]
KUBE_VERSION = f"1.{_CLIENT_GO_MINOR}"


def helm_ldflags() -> str:
    major, minor = KUBE_VERSION.split(".")
    return " ".join(
        [
            "-s -w",
            f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor={major}",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}",
        ]
    )


def ensure_helm() -> Path:
    """The path of the pinned Helm binary, built on first use."""
    return ensure_go_binaries(MODULE_DIR, [PACKAGE], f"helm/{HELM_VERSION}", helm_ldflags())["helm"]


class HelmError(RuntimeError):
    """A helm command failed; the message carries its arguments and output."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}".rstrip()
        )


@dataclass
class Helm:
    """The Helm command line, with private config/cache/data directories under ``home``."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_DATA_HOME=str(self.home / "data"),
        )
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run ``helm *args``; raise :class:`HelmError` on a non-zero exit when ``check``."""
        result = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise HelmError(args, result)
        return result

    def with_kubeconfig(self, kubeconfig: Path) -> Helm:
        return Helm(self.binary, self.home, kubeconfig)
