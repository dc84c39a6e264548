"""DICOMweb STOW-RS: streamed multipart ingest into the stow directory, one part at a time.

Each part streams to a temporary file, is indexed like any other file, moved under
``<stow>/<study>/<series>/<sop>.dcm`` and put into the catalog, so it is searchable and
servable through every front as soon as the response is sent.

Limits hold while the body streams: a declared or received body over
``--max-upload-bytes``, or a part over ``--max-part-bytes``, ends the request with a 413
(no byte past the limit is written); ``--body-timeout`` seconds without a byte end it with
a 408. Either way the part in flight's temporary file is removed and the connection is
closed; parts completed before stay stored and are listed. A part that does not open as a
DICOM file (``DICM`` at byte 128) is refused at once, its bytes never written.

``tileserver.dicomweb.stow`` needs pydicom: like the rest of DICOMweb it is imported where
used, and first in a worker thread (``importing``), not at start-up.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tileserver.dicomweb import accept
from tileserver.dicomweb.multipart import (
    MultipartError,
    MultipartParser,
    PartEvent,
    boundary_of,
)
from tileserver.errors import UnsupportedError, UnsupportedMediaTypeError
from tileserver.http.dicomweb import DICOM_JSON, base_url
from tileserver.http.responses import json_response
from tileserver.http.state import service_of
from tileserver.service import TileService, importing
from tileserver.settings import Settings

if TYPE_CHECKING:
    from tileserver.dicomweb import stow

log = logging.getLogger(__name__)


@importing("tileserver.dicomweb.stow")
async def store(request: Request) -> Response:
    from tileserver.dicomweb import stow

    service = service_of(request)
    stow_dir = service.settings.stow_directory
    if stow_dir is None:
        raise UnsupportedError("STOW-RS needs a slide directory or --stow-dir")
    media, params = boundary_of(request.headers.get("content-type", ""))
    part_type = params.get("type", accept.DICOM).lower()
    if media != accept.MULTIPART or part_type != accept.DICOM:
        raise UnsupportedMediaTypeError('STOW-RS takes multipart/related; type="application/dicom"')
    limits = Limits.of(service.settings)
    declared = _declared_length(request)
    if declared is not None and declared > limits.upload_bytes:
        limit = limits.upload_bytes
        return _refusal(
            Refused(413, f"a body of {declared} bytes is over {limit} (--max-upload-bytes)")
        )
    study = request.path_params.get("study")
    stow_dir = stow_dir.resolve()
    root = stow.catalog_root(stow_dir, service.library.roots)
    receiver = _Receiver(service, stow_dir, root, study, limits)
    try:
        await receiver.run(request, params.get("boundary", ""))
    except Refused as exc:
        await service.run(service.library.sync)
        return _refusal(exc, [o.sop_instance_uid for o in receiver.outcomes if not o.failure])
    if not receiver.outcomes:
        raise MultipartError(receiver.error or "the request holds no multipart parts")
    await service.run(service.library.sync)
    status, body = stow.store_response(receiver.outcomes, base_url(request), study)
    return json_response(body, status_code=status, media_type=DICOM_JSON)


@dataclass(frozen=True)
class Limits:
    """What one STOW request may take: bytes in all, bytes per part, seconds per read."""

    upload_bytes: int = Settings.max_upload_bytes
    part_bytes: int = Settings.max_part_bytes
    read_timeout: float = Settings.body_timeout
    overwrite: bool = False

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_upload_bytes,
            settings.max_part_bytes,
            settings.body_timeout,
            settings.stow_overwrite,
        )


class Refused(Exception):
    """The request as a whole ends here (413, 408): the rest of the body is not read."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _refusal(exc: Refused, stored: Sequence[str | None] = ()) -> Response:
    # The unread rest of the body cannot be skipped cheaply: close the connection.
    body: dict[str, Any] = {"error": exc.reason, "stored": [uid for uid in stored if uid]}
    return json_response(body, status_code=exc.status, headers={"Connection": "close"})


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


class _Receiver:
    """Streams each part to a temporary file, then stores it; one part in flight.

    Whatever goes wrong with a part (unwritable disk, too many open files, a failing
    store) fails that part alone; its temporary file is removed even on cancellation.
    """

    FLUSH_BYTES = 1 << 20

    #: A DICOM file (PS3.10) has ``DICM`` after a 128-byte preamble.
    MAGIC_AT, MAGIC = 128, b"DICM"

    def __init__(
        self,
        service: TileService,
        stow_dir: Path,
        root: str,
        study: str | None,
        limits: Limits | None = None,
    ):
        self.service, self.stow_dir, self.root, self.study = service, stow_dir, root, study
        self.limits = limits or Limits()
        self._received = 0
        self._part_bytes = 0
        self._head: bytes | None = None  # a part's first bytes, until its magic is checked
        self.outcomes: list[stow.Outcome] = []
        self.error: str | None = None
        self._file: Any = None
        self._path: Path | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        #: The failure of the part in flight, reported when it ends (its bytes are dropped).
        self._rejected: stow.Outcome | None = None

    async def run(self, request: Request, boundary: str) -> None:
        from tileserver.dicomweb import stow

        parser = MultipartParser(boundary)
        try:
            await self._receive(request, parser)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._drop_file()
            raise
        if parser.parts and (self.error is not None or not parser.complete):
            # An incomplete part, or the malformed rest of the body: never "all stored".
            await self._drop_file()
            reason = self.error or "request truncated: closing delimiter missing"
            self.outcomes.append(stow.failed(reason, stow.CANNOT_UNDERSTAND))

    async def _receive(self, request: Request, parser: MultipartParser) -> None:
        chunks = request.stream().__aiter__()
        try:
            while (chunk := await self._next(chunks)) is not None:
                self._received += len(chunk)
                if self._received > self.limits.upload_bytes:
                    limit = self.limits.upload_bytes
                    raise Refused(413, f"the body is over {limit} bytes (--max-upload-bytes)")
                for event in parser.feed(chunk):
                    await self._on_guarded(event)
                if parser.error is not None:
                    self.error = str(parser.error)
                    return
        except ClientDisconnect:
            self.error = "the client disconnected before the end of the request"

    async def _next(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next chunk of the body, None at its end; ``Refused`` (408) after a silence."""
        with anyio.move_on_after(self.limits.read_timeout):
            try:
                return await chunks.__anext__()
            except StopAsyncIteration:
                return None
        seconds = self.limits.read_timeout
        raise Refused(408, f"no byte of the body arrived for {seconds:g} s (--body-timeout)")

    async def _on_guarded(self, event: PartEvent) -> None:
        from tileserver.dicomweb import stow

        try:
            await self._on(event)
        except Refused:
            raise
        except Exception as exc:  # any failure of one part: report it, go on with the next
            log.warning("STOW part failed", exc_info=True)
            await self._drop_file()
            outcome = stow.failed(f"processing failed: {exc}", stow.PROCESSING_FAILURE)
            if event.kind == "end":
                self.outcomes.append(outcome)
            else:
                self._rejected = outcome

    async def _on(self, event: PartEvent) -> None:
        from tileserver.dicomweb import stow

        if event.kind == "start":
            part_type = event.headers.get("content-type", accept.DICOM).split(";")[0].strip()
            self._rejected, self._part_bytes, self._head = None, 0, b""
            if part_type.lower() != accept.DICOM:
                reason = f"part is {part_type}, not application/dicom"
                self._rejected = stow.failed(reason, stow.CANNOT_UNDERSTAND)
                return
            self._path = await self.service.run(stow.incoming_path, self.stow_dir)
            self._file = await self.service.run(open, self._path, "wb")
        elif event.kind == "data":
            self._part_bytes += len(event.data)
            if self._part_bytes > self.limits.part_bytes:
                limit = self.limits.part_bytes
                raise Refused(413, f"a part is over {limit} bytes (--max-part-bytes)")
            await self._check_magic(event.data)
            if self._file is not None:
                self._pending.append(event.data)
                self._pending_bytes += len(event.data)
                if self._pending_bytes >= self.FLUSH_BYTES:
                    await self._flush()
        elif event.kind == "end":
            await self._check_magic(b"", final=True)
            await self._finish()

    async def _check_magic(self, data: bytes, final: bool = False) -> None:
        """Refuse a part that is not a DICOM file as soon as its first bytes show it."""
        from tileserver.dicomweb import stow

        if self._head is None or self._rejected is not None:
            return
        self._head += data
        end = self.MAGIC_AT + len(self.MAGIC)
        if len(self._head) < end and not final:
            return
        head, self._head = self._head, None
        if head[self.MAGIC_AT : end] != self.MAGIC:
            await self._drop_file()
            reason = "not a DICOM file: no 'DICM' after the 128-byte preamble (PS3.10 7.1)"
            self._rejected = stow.failed(reason, stow.CANNOT_UNDERSTAND)

    async def _flush(self) -> None:
        data, self._pending, self._pending_bytes = b"".join(self._pending), [], 0
        if data:
            await self.service.run(self._file.write, data)

    async def _finish(self) -> None:
        from tileserver.dicomweb import stow

        if self._rejected is not None:
            self.outcomes.append(self._rejected)
            self._rejected = None
            return
        await self._flush()
        await self.service.run(self._file.close)
        path, self._file, self._path = self._path, None, None
        assert path is not None
        catalog = self.service.library.catalog
        args = (path, self.stow_dir, self.root, catalog, self.study, self.limits.overwrite)
        try:
            self.outcomes.append(await self.service.run(stow.store_part, *args))
        except BaseException:
            path.unlink(missing_ok=True)  # store_part consumes it; this covers a crash
            raise

    async def _drop_file(self) -> None:
        """Close and remove the part in flight's temporary file, if any."""
        file, path, self._file, self._path = self._file, self._path, None, None
        self._pending, self._pending_bytes = [], 0
        await self.service.run(_remove, file, path)


def _remove(file: Any, path: Path | None) -> None:
    with contextlib.suppress(OSError):
        if file is not None:
            file.close()
    with contextlib.suppress(OSError):
        if path is not None:
            path.unlink()


routes = [
    Route("/dicomweb/studies", store, methods=["POST"]),
    Route("/dicomweb/studies/{study}", store, methods=["POST"]),
]
