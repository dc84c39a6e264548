"""The STOW-RS receiver without a server: a failing part stays with that part, limits and
timeouts end the request, and nothing half-received is left in the STOW directory."""

from __future__ import annotations

import errno
import io
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from tileserver.dicom.header import VL_WSI
from tileserver.dicomweb import stow
from tileserver.http import dicomweb_stow

BOUNDARY = "stowboundary"
#: What every DICOM file opens with (the receiver refuses a part without it at once).
MAGIC = b"\0" * 128 + b"DICM"


def body(parts: list[tuple[str, bytes]], close: bool = True) -> bytes:
    out = b""
    for media_type, data in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {media_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def incoming(stow_dir: Path) -> list[Path]:
    """What a STOW directory still holds half-received (nothing, once a request ended)."""
    return list((stow_dir / ".incoming").iterdir())


class FakeRequest:
    def __init__(self, chunks: list[bytes], then: BaseException | None = None) -> None:
        self.chunks, self.then = chunks, then

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.then is not None:
            raise self.then


def receive(
    stow_dir: Path, request: FakeRequest, limits: dicomweb_stow.Limits | None = None
) -> list[stow.Outcome]:
    async def run(function: Any, *args: Any) -> Any:  # the service's thread hop
        return await anyio.to_thread.run_sync(function, *args)

    service = SimpleNamespace(library=SimpleNamespace(catalog=None), run=run)
    receiver = dicomweb_stow._Receiver(service, stow_dir, str(stow_dir), None, limits)  # type: ignore[arg-type]
    anyio.run(receiver.run, request, BOUNDARY)
    return receiver.outcomes


def stored_ok(tmp: Path, *args: object) -> stow.Outcome:
    tmp.unlink()
    return stow.Outcome(VL_WSI, "1.2.3", "1.2", "1.2.3")


def test_a_crash_while_storing_fails_that_part_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = iter([RuntimeError("boom"), None])

    def store_part(tmp: Path, *args: object) -> stow.Outcome:
        error = next(calls)
        if error is not None:
            raise error  # before consuming ``tmp``
        return stored_ok(tmp)

    monkeypatch.setattr(stow, "store_part", store_part)
    data = body([("application/dicom", MAGIC + b"one"), ("application/dicom", MAGIC + b"two")])
    outcomes = receive(tmp_path, FakeRequest([data]))
    assert [o.failure for o in outcomes] == [stow.PROCESSING_FAILURE, None]
    assert "boom" in (outcomes[0].reason or "")
    assert incoming(tmp_path) == []


def test_a_write_error_fails_that_part_and_removes_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    opened: list[Path] = []

    def fake_open(path: Path, mode: str) -> io.BytesIO:
        opened.append(path)
        if len(opened) == 1:
            path.write_bytes(b"")  # the temporary file exists, as with a real open
            return FullDisk()
        return open(path, mode)

    monkeypatch.setattr(dicomweb_stow, "open", fake_open, raising=False)
    monkeypatch.setattr(dicomweb_stow._Receiver, "FLUSH_BYTES", 1)
    monkeypatch.setattr(stow, "store_part", stored_ok)
    data = body([("application/dicom", MAGIC + b"one" * 100), ("application/dicom", MAGIC)])
    outcomes = receive(tmp_path, FakeRequest([data[:50], data[50:]]))
    assert [o.failure for o in outcomes] == [stow.PROCESSING_FAILURE, None]
    assert "No space left" in (outcomes[0].reason or "")
    assert incoming(tmp_path) == []


class Cancelled(BaseException):
    """Stands in for cancellation (not an ``Exception``)."""


def test_cancellation_mid_part_removes_the_temporary_file(tmp_path: Path) -> None:
    data = body([("application/dicom", MAGIC + b"x" * 5000)], close=False)[:3000]
    with pytest.raises(Cancelled):
        receive(tmp_path, FakeRequest([data], then=Cancelled()))
    assert incoming(tmp_path) == []


class Stalled(FakeRequest):
    """A client that sends some bytes, then nothing."""

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        await anyio.sleep_forever()
        yield b""


def test_a_stalled_body_is_408_and_its_file_removed(tmp_path: Path) -> None:
    data = body([("application/dicom", MAGIC + b"x" * 5000)], close=False)
    limits = dicomweb_stow.Limits(read_timeout=0.2)
    with pytest.raises(dicomweb_stow.Refused) as refused:
        receive(tmp_path, Stalled([data]), limits)
    assert refused.value.status == 408 and "--body-timeout" in refused.value.reason
    assert incoming(tmp_path) == []


def test_a_part_that_is_not_dicom_is_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []

    class Recording(io.BytesIO):
        def write(self, data: Any) -> int:
            written.append(len(data))
            return len(data)

    monkeypatch.setattr(dicomweb_stow, "open", lambda path, mode: Recording(), raising=False)
    data = body([("application/dicom", b"y" * 3_000_000)])
    outcomes = receive(
        tmp_path, FakeRequest([data[i : i + 4096] for i in range(0, len(data), 4096)])
    )
    assert [o.failure for o in outcomes] == [stow.CANNOT_UNDERSTAND]
    assert "DICM" in (outcomes[0].reason or "") and written == []
    assert incoming(tmp_path) == []


def test_no_byte_past_the_part_limit_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dicomweb_stow._Receiver, "FLUSH_BYTES", 1)
    written: list[int] = []
    real_open = open

    def recording_open(path: Path, mode: str) -> Any:
        file = real_open(path, mode)
        write = file.write
        file.write = lambda data: written.append(len(data)) or write(data)  # type: ignore[method-assign]
        return file

    monkeypatch.setattr(dicomweb_stow, "open", recording_open, raising=False)
    data = body([("application/dicom", MAGIC + b"x" * 50_000)])
    limits = dicomweb_stow.Limits(part_bytes=10_000)
    with pytest.raises(dicomweb_stow.Refused) as refused:
        receive(
            tmp_path, FakeRequest([data[i : i + 1000] for i in range(0, len(data), 1000)]), limits
        )
    assert refused.value.status == 413
    assert 0 < sum(written) <= 10_000
    assert incoming(tmp_path) == []
