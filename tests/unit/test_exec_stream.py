"""``hpo export``'s copy over the exec API: every frame up to the server's close reaches the sink, the
exit status comes from the error channel, and a tar stream that lost its end is refused, not unpacked
short."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hpo_operator.cli.errors import CLIError
from hpo_operator.cli.export import _check_complete, _unpack
from hpo_operator.shell.kube import Kube, KubeUnavailable
from websocket import ABNF, WebSocketTimeoutException

SUCCESS = json.dumps({"metadata": {}, "status": "Success"}).encode()


def exit_status(code: int) -> bytes:
    return json.dumps(
        {
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    ).encode()


class Frame:
    def __init__(self, data: bytes) -> None:
        self.data = data


class FakeSocket:
    """A websocket that hands out the frames it was given, then a close (or a timeout)."""

    def __init__(self, frames: list[tuple[int, bytes]], then: str = "close") -> None:
        self.frames: Iterator[tuple[int, bytes]] = iter(frames)
        self.then = then
        self.timeout: float | None = None
        self.shut = False

    def settimeout(self, timeout: float) -> None:
        self.timeout = timeout

    def shutdown(self) -> None:
        self.shut = True

    def recv_data_frame(self, control_frame: bool) -> tuple[int, Frame]:
        assert control_frame
        for opcode, data in self.frames:
            return opcode, Frame(data)
        if self.then == "timeout":
            raise WebSocketTimeoutException("timed out")
        if self.then == "reset":
            raise ConnectionResetError(104, "Connection reset by peer")
        return ABNF.OPCODE_CLOSE, Frame(b"")


class FakeWS:
    def __init__(self, sock: FakeSocket) -> None:
        self.sock = sock
        self.closed = False

    def close(self) -> None:
        self.closed = True


def run_exec(
    monkeypatch: pytest.MonkeyPatch, frames: list[tuple[int, bytes]], then: str = "close"
) -> tuple[bytes, FakeWS]:
    ws = FakeWS(FakeSocket(frames, then))

    def fake_stream(*args: Any, **kwargs: Any) -> FakeWS:
        assert kwargs["binary"] and not kwargs["_preload_content"]
        return ws

    monkeypatch.setattr("kubernetes.stream.stream", fake_stream)
    kube = Kube.__new__(Kube)
    kube.core = SimpleNamespace(connect_get_namespaced_pod_exec=None)  # type: ignore[assignment]
    sink = io.BytesIO()
    try:
        kube.exec_out("ml", "export-pod", ["tar", "-cf", "-", "."], sink, idle_timeout=5)
    finally:
        assert ws.closed and ws.sock.shut
    return sink.getvalue(), ws


def stdout(data: bytes) -> tuple[int, bytes]:
    return ABNF.OPCODE_BINARY, b"\x01" + data


def stderr(data: bytes) -> tuple[int, bytes]:
    return ABNF.OPCODE_BINARY, b"\x02" + data


def status(data: bytes) -> tuple[int, bytes]:
    return ABNF.OPCODE_BINARY, b"\x03" + data


def test_every_frame_before_the_close_reaches_the_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = [bytes([i]) * 32768 for i in range(1, 9)]
    frames = [stdout(c) for c in chunks[:4]]
    frames += [(ABNF.OPCODE_PING, b""), stderr(b"tar: a warning\n")]
    frames += [stdout(c) for c in chunks[4:]] + [status(SUCCESS)]
    got, ws = run_exec(monkeypatch, frames)
    assert got == b"".join(chunks)
    assert ws.sock.timeout == 5


def test_a_non_zero_exit_names_its_code_and_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KubeUnavailable, match=r"exited 2: tar: /models/x: Cannot open"):
        run_exec(monkeypatch, [stderr(b"tar: /models/x: Cannot open\n"), status(exit_status(2))])


def test_a_command_that_could_not_start_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    failure = json.dumps({"status": "Failure", "message": 'exec: "tar": executable file not found'}).encode()
    with pytest.raises(KubeUnavailable, match=r'exec API: exec: "tar": executable file not found'):
        run_exec(monkeypatch, [status(failure)])


def test_no_status_before_the_close_is_not_a_success(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KubeUnavailable, match="the node sent no exit status"):
        run_exec(monkeypatch, [stdout(b"partial")])


def test_a_silent_stream_gives_up_after_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KubeUnavailable, match="sent nothing for 5 s"):
        run_exec(monkeypatch, [stdout(b"x")], then="timeout")


def tar_of(tmp_path: Path, n: int) -> bytes:
    src = tmp_path / "model"
    src.mkdir()
    for i in range(n):
        (src / f"f{i}.bin").write_bytes(bytes([i]) * (700 + i))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname=".")
    return buf.getvalue()


def test_a_whole_archive_passes(tmp_path: Path) -> None:
    _check_complete(io.BytesIO(tar_of(tmp_path, 4)), "the copy")


def test_an_archive_cut_between_members_is_refused(tmp_path: Path) -> None:
    whole = tar_of(tmp_path, 4)
    # Cut after the third member: what tarfile would unpack without a word, one file short.
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        members = tar.getmembers()
    cut = whole[: members[-1].offset]
    with tarfile.open(fileobj=io.BytesIO(cut)) as tar:
        assert len(tar.getmembers()) == len(members) - 1
    with pytest.raises(CLIError, match="arrived incomplete"):
        _check_complete(io.BytesIO(cut), "the copy")


def test_a_connection_cut_before_the_status_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KubeUnavailable, match=r"broke off: .*Connection reset by peer"):
        run_exec(monkeypatch, [stdout(b"partial")], then="reset")


def test_a_connection_cut_after_the_status_is_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    got, _ = run_exec(monkeypatch, [stdout(b"all of it"), status(SUCCESS)], then="reset")
    assert got == b"all of it"


def tar_with(tmp_path: Path, name: str, kind: bytes = tarfile.REGTYPE) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ok = tarfile.TarInfo("./config.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        bad = tarfile.TarInfo(name)
        bad.type = kind
        if kind == tarfile.SYMTYPE:
            bad.linkname = "/etc/passwd"
        tar.addfile(bad, io.BytesIO(b""))
    buf.seek(0)
    return buf


@pytest.mark.parametrize("backport", [True, False], ids=["data filter", "an older 3.11"])
@pytest.mark.parametrize(
    ("name", "kind"), [("../outside", tarfile.REGTYPE), ("./link", tarfile.SYMTYPE)], ids=["outside", "link"]
)
def test_a_member_a_model_never_holds_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backport: bool, name: str, kind: bytes
) -> None:
    if not backport:
        monkeypatch.delattr(tarfile, "data_filter")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(CLIError, match="a model directory never does"):
        _unpack(tar_with(tmp_path, name, kind), dest)
    assert not (tmp_path / "outside").exists()


def test_a_model_unpacks_on_an_older_3_11_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(tarfile, "data_filter")
    dest = tmp_path / "dest"
    dest.mkdir()
    _unpack(io.BytesIO(tar_of(tmp_path, 3)), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["f0.bin", "f1.bin", "f2.bin"]
