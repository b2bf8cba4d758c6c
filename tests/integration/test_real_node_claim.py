"""One real node per machine (tests/harness/real_node.py): a second run waits for the first."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import real_node
from tests.harness.real_node import RealNode, RealNodeError


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "registry"
    monkeypatch.setattr(real_node, "REGISTRY", path)
    return path


@pytest.fixture
def cleaned(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The state directories a claim would clean up after (recorded, not cleaned: this machine's
    iptables may belong to a real node another test run has up right now)."""
    calls: list[Path] = []
    monkeypatch.setattr(RealNode, "_clean_up_after", lambda self, state_dir: calls.append(state_dir))
    return calls


def test_a_second_node_waits_while_the_first_ones_starter_lives(
    registry: Path, cleaned: list[Path], tmp_path: Path
) -> None:
    starter = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        registry.write_text(f"{starter.pid} {tmp_path / 'first' / 'node'}\n")
        second = RealNode(tmp_path / "second", "n", 0, tmp_path / "cache")
        started = time.monotonic()
        with pytest.raises(RealNodeError, match=f"another real node \\(pid {starter.pid}"):
            second.claim_machine(wait_s=0.5)
        assert time.monotonic() - started < 30
    finally:
        starter.kill()
        starter.wait()
    assert cleaned == []
    # Its starter gone, the machine is free: the second cleans up after the first and claims it.
    second.claim_machine(wait_s=0)
    assert cleaned == [tmp_path / "first"]
    assert registry.read_text().split()[1] == str(second.dir)
    second.release_machine()
    assert not registry.exists()


def test_a_detached_node_counts_as_running_while_its_kubelet_lives(
    registry: Path, cleaned: list[Path], tmp_path: Path
) -> None:
    kubelet = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        first = tmp_path / "first"
        first.mkdir()
        (first / "harness.json").write_text(
            json.dumps({"components": {"kubelet": {"pid": kubelet.pid}}, "real_node": {}})
        )
        registry.write_text(f"999999999 {first / 'node'}\n")  # the `up` process that started it is gone
        with pytest.raises(RealNodeError):
            RealNode(tmp_path / "second", "n", 0, tmp_path / "cache").claim_machine(wait_s=0)
        assert cleaned == []
    finally:
        kubelet.kill()
        kubelet.wait()
