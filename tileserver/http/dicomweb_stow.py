"""DICOMweb STOW-RS: streamed multipart ingest into the stow directory, one part at a time.

Each part streams to a temporary file, is indexed like any other file, moved under
``<stow>/<study>/<series>/<sop>.dcm`` and put into the catalog, so it is searchable and
servable through every front as soon as the response is sent.

``tileserver.dicomweb.stow`` needs pydicom: like the rest of DICOMweb it is imported where
used, and first in a worker thread (``importing``), not at start-up.
"""

from __future__ import annotations

import contextlib
import logging
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
    study = request.path_params.get("study")
    root = stow.catalog_root(stow_dir, service.library.roots)
    receiver = _Receiver(service, stow_dir, root, study)
    await receiver.run(request, params.get("boundary", ""))
    if not receiver.outcomes:
        raise MultipartError(receiver.error or "the request holds no multipart parts")
    await service.run(service.library.sync)
    status, body = stow.store_response(receiver.outcomes, base_url(request), study)
    return json_response(body, status_code=status, media_type=DICOM_JSON)


class _Receiver:
    """Streams each part to a temporary file, then stores it; one part in flight.

    Whatever goes wrong with a part (unwritable disk, too many open files, a failing
    store) fails that part alone; its temporary file is removed even on cancellation.
    """

    FLUSH_BYTES = 1 << 20

    def __init__(self, service: TileService, stow_dir: Path, root: str, study: str | None):
        self.service, self.stow_dir, self.root, self.study = service, stow_dir, root, study
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
        try:
            async for chunk in request.stream():
                for event in parser.feed(chunk):
                    await self._on_guarded(event)
                if parser.error is not None:
                    self.error = str(parser.error)
                    return
        except ClientDisconnect:
            self.error = "the client disconnected before the end of the request"

    async def _on_guarded(self, event: PartEvent) -> None:
        from tileserver.dicomweb import stow

        try:
            await self._on(event)
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
            self._rejected = None
            if part_type.lower() != accept.DICOM:
                reason = f"part is {part_type}, not application/dicom"
                self._rejected = stow.failed(reason, stow.CANNOT_UNDERSTAND)
                return
            self._path = await self.service.run(stow.incoming_path, self.stow_dir)
            self._file = await self.service.run(open, self._path, "wb")
        elif event.kind == "data" and self._file is not None:
            self._pending.append(event.data)
            self._pending_bytes += len(event.data)
            if self._pending_bytes >= self.FLUSH_BYTES:
                await self._flush()
        elif event.kind == "end":
            await self._finish()

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
        args = (path, self.stow_dir, self.root, catalog, self.study)
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
