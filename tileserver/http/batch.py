"""AI-pipeline endpoints: many tiles in one request, and the slide's tissue mask.

``POST /slides/{id}/tiles:batch`` takes ``{"tiles": [[level, col, row], ...], "format":
"raw" | "npy", "z": 0, "path": 0}`` and streams, in request order, either

* ``raw``: ``multipart/mixed``, one part per tile holding its stored frame bytes, with
  ``Content-Type``, ``X-Tile-Level``/``-Col``/``-Row`` and ``X-Transfer-Syntax`` headers
  (an absent sparse tile is an empty part with ``X-Tile-Absent: 1``); or
* ``npy``: one ``(n, h, w, 3)`` uint8 array of decoded RGB tiles; every requested level
  must share one tile size, and edge and absent tiles are padded with background (255).

The body is read up to ``MAX_BODY`` bytes (400 beyond). Frames of one file are read with
coalesced ``os.pread`` calls (``tileserver.readers.coalesce``), in worker threads, a chunk
at a time: at most ``CHUNK`` tiles and about ``CHUNK_BYTES`` of decoded pixels a chunk,
``READ_AHEAD`` chunks ahead of the one being sent. Every address (and the optical path of
every requested level) is checked before the first byte is sent; a read that fails later
aborts the stream.

``GET /slides/{id}/tissue`` returns the tissue mask (``tileserver.tissue``) as a PNG, or
with ``?format=json`` its size and the tile flags of level ``?level=N`` (default 0). Both
are computed in a worker thread and kept in the service cache per slide version (and
level). The codecs and ``tileserver.tissue`` (Pillow) are imported where used, not at
start-up.
"""

from __future__ import annotations

import functools
import io
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np
import orjson
from anyio.abc import TaskGroup
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from tileserver import compose
from tileserver.compose import Plane
from tileserver.errors import InvalidRequestError, LimitExceededError
from tileserver.formats import NPY, OCTET_STREAM, PNG, EncodedTile
from tileserver.geometry import Size
from tileserver.http.params import format_param, int_param
from tileserver.http.responses import etag_for, image_response
from tileserver.http.state import service_of
from tileserver.service import importing
from tileserver.slide import Slide

if TYPE_CHECKING:
    pass

MAX_BATCH = 1024
#: Request body limit: room for MAX_BATCH ``[level, col, row]`` entries, even indented.
MAX_BODY = MAX_BATCH * 64 + 4096
CHUNK = 64
#: Decoded RGB bytes a chunk may hold (a larger tile gets a chunk of its own).
CHUNK_BYTES = 16 * 1024 * 1024
#: Chunks read ahead of the one being sent.
READ_AHEAD = 2
JSON = "application/json"

Address = tuple[int, int, int]


# -- batch ------------------------------------------------------------------------------------


async def post_batch(request: Request) -> Response:
    service = service_of(request)
    slide = await service.slide(request.path_params["slide_id"])
    addresses, fmt, plane = _parse_batch(await _read_body(request), slide)
    work: Callable[[Sequence[Address]], bytes]
    if fmt == "raw":
        boundary = secrets.token_hex(16)
        work = functools.partial(_multipart_chunk, slide, plane=plane, boundary=boundary)
        prefix, suffix = b"", f"--{boundary}--\r\n".encode()
        media_type = f"multipart/mixed; boundary={boundary}"
        tile_size = _largest_tile_size(slide, addresses)
    else:
        tile_size = _uniform_tile_size(slide, addresses)
        work = functools.partial(_pixels_chunk, slide, plane=plane, size=tile_size)
        prefix, suffix = _npy_header((len(addresses), tile_size.height, tile_size.width, 3)), b""
        media_type = NPY
    chunks = plan_chunks(addresses, tile_size.area * 3)
    # The first chunk is read before the response starts, so its errors get a status.
    first = prefix + await service.run(work, chunks[0])
    if len(chunks) == 1:
        return Response(first + suffix, media_type=media_type)
    read = functools.partial(service.run, work)
    return ReadAheadResponse(first, chunks[1:], read, suffix, media_type)


async def _read_body(request: Request) -> bytes:
    """The request body, refused (``LimitExceededError``) past ``MAX_BODY`` bytes before
    more than that is held."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise LimitExceededError(f"batch body of {declared} bytes (limit {MAX_BODY})")
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_BODY:
            raise LimitExceededError(f"batch body over {MAX_BODY} bytes")
    return bytes(body)


def _parse_batch(body: bytes, slide: Slide) -> tuple[list[Address], str, Plane]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("body must be JSON") from None
    if not isinstance(request, dict) or not isinstance(request.get("tiles"), list):
        raise InvalidRequestError('body must be {"tiles": [[level, col, row], ...]}')
    fmt = request.get("format", "raw")
    if fmt not in ("raw", "npy"):
        raise InvalidRequestError(f"format must be raw or npy, not {fmt!r}")
    tiles: list[Any] = request["tiles"]
    if len(tiles) > MAX_BATCH:
        raise LimitExceededError(f"{len(tiles)} tiles in one batch (limit {MAX_BATCH})")
    plane = Plane(_index(request.get("z", 0), "z"), _index(request.get("path", 0), "path"))
    if plane.focal_plane >= len(slide.focal_planes):
        raise InvalidRequestError(f"focal plane {plane.focal_plane} does not exist")
    if plane.optical_path >= max(1, len(slide.optical_paths)):
        raise InvalidRequestError(f"optical path {plane.optical_path} does not exist")
    addresses = [_address(t, slide) for t in tiles]
    for level in sorted({a[0] for a in addresses}):
        slide.check_plane(level, plane.focal_plane, plane.optical_path)
    return addresses, fmt, plane


def _index(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise InvalidRequestError(f"{name} must be a non-negative integer")
    return value


def _address(entry: object, slide: Slide) -> Address:
    if not (isinstance(entry, list) and len(entry) == 3 and all(type(v) is int for v in entry)):
        raise InvalidRequestError(f"tile {entry!r} is not [level, col, row]")
    level, col, row = entry
    if not 0 <= level < len(slide.levels):
        raise InvalidRequestError(f"tile {entry!r}: level {level} does not exist")
    grid = slide.levels[level].grid
    if not (0 <= col < grid.width and 0 <= row < grid.height):
        raise InvalidRequestError(f"tile {entry!r} is outside the {grid.width}x{grid.height} grid")
    return level, col, row


def _largest_tile_size(slide: Slide, addresses: Sequence[Address]) -> Size:
    sizes = {slide.levels[level].tile_size for level, _, _ in addresses}
    return max(sizes, key=lambda s: s.area, default=Size(0, 0))


def _uniform_tile_size(slide: Slide, addresses: Sequence[Address]) -> Size:
    sizes = {slide.levels[level].tile_size for level, _, _ in addresses}
    if len(sizes) > 1:
        raise InvalidRequestError("npy batches need one tile size; split the batch by level")
    return sizes.pop() if sizes else Size(0, 0)


def plan_chunks(addresses: Sequence[Address], tile_bytes: int) -> list[list[Address]]:
    """``addresses`` in order, split into chunks of at most ``CHUNK`` tiles and
    ``CHUNK_BYTES`` (one tile a chunk when a tile alone is larger); never no chunk."""
    per_chunk = max(1, min(CHUNK, CHUNK_BYTES // max(1, tile_bytes)))
    return [list(addresses[i : i + per_chunk]) for i in range(0, len(addresses), per_chunk)] or [[]]


@dataclass
class _Slot:
    """One chunk's result, filled by a worker thread, taken in order by the sender."""

    done: anyio.Event = field(default_factory=anyio.Event)
    value: bytes = b""
    error: Exception | None = None


async def read_ahead(
    chunks: Sequence[Sequence[Address]],
    work: Callable[[Sequence[Address]], Awaitable[bytes]],
    emit: Callable[[bytes], Awaitable[None]],
) -> None:
    """``emit(await work(chunk))`` for each chunk in order (``work`` runs the read in a
    worker thread: ``TileService.run``), at most ``READ_AHEAD + 1`` chunks read or waiting
    besides the one being emitted. The first failing chunk's error is raised once the
    chunks before it are emitted."""
    slots = [_Slot() for _ in chunks]
    window = anyio.Semaphore(READ_AHEAD + 1)

    async def read(slot: _Slot, chunk: Sequence[Address]) -> None:
        try:
            slot.value = await work(chunk)
        except Exception as exc:  # raised in order, by the sender
            slot.error = exc
        slot.done.set()

    async def start_reads(group: TaskGroup) -> None:
        for slot, chunk in zip(slots, chunks, strict=True):
            await window.acquire()
            group.start_soon(read, slot, chunk)

    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(start_reads, group)
        try:
            for slot in slots:
                await slot.done.wait()
                window.release()
                if slot.error is not None:
                    raise slot.error
                data, slot.value = slot.value, b""
                await emit(data)
        except Exception as exc:  # raised below, as itself rather than in a group
            failure = exc
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure


class ReadAheadResponse(StreamingResponse):
    """``first``, then each chunk's ``work`` (see ``read_ahead``), then ``suffix``.

    A response rather than a body iterator: the task group must not span a ``yield``.
    """

    def __init__(
        self,
        first: bytes,
        rest: Sequence[Sequence[Address]],
        work: Callable[[Sequence[Address]], Awaitable[bytes]],
        suffix: bytes,
        media_type: str,
    ) -> None:
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(None)
        self._first, self._rest, self._work, self._suffix = first, rest, work, suffix

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )

        async def emit(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        first, self._first = self._first, b""  # held no longer than needed
        await emit(first)
        await read_ahead(self._rest, self._work, emit)
        await send({"type": "http.response.body", "body": self._suffix, "more_body": False})


def _read_chunk(slide: Slide, chunk: Sequence[Address], plane: Plane) -> list[EncodedTile | None]:
    """Stored bytes of ``chunk`` in order; one coalesced read plan per level."""
    out: list[EncodedTile | None] = [None] * len(chunk)
    for level in sorted({a[0] for a in chunk}):
        indexes = [i for i, a in enumerate(chunk) if a[0] == level]
        tiles = [(chunk[i][1], chunk[i][2]) for i in indexes]
        read = slide.read_tiles(level, tiles, plane.focal_plane, plane.optical_path)
        for i, encoded in zip(indexes, read, strict=True):
            out[i] = encoded
    return out


def _multipart_chunk(slide: Slide, chunk: Sequence[Address], plane: Plane, boundary: str) -> bytes:
    parts = []
    for (level, col, row), encoded in zip(chunk, _read_chunk(slide, chunk, plane), strict=True):
        headers = [
            f"--{boundary}",
            f"Content-Type: {encoded.media_type if encoded else OCTET_STREAM}",
            f"Content-Length: {len(encoded.data) if encoded else 0}",
            f"X-Tile-Level: {level}",
            f"X-Tile-Col: {col}",
            f"X-Tile-Row: {row}",
        ]
        if encoded is None:
            headers.append("X-Tile-Absent: 1")
        else:
            headers.append(f"X-Transfer-Syntax: {encoded.transfer_syntax}")
        parts.append("\r\n".join(headers).encode() + b"\r\n\r\n")
        parts.append((encoded.data if encoded else b"") + b"\r\n")
    return b"".join(parts)


def _pixels_chunk(slide: Slide, chunk: Sequence[Address], *, plane: Plane, size: Size) -> bytes:
    from tileserver import codec

    glass = compose.background_of(slide)
    out = np.full((len(chunk), size.height, size.width, 3), glass, dtype=np.uint8)
    for i, ((level, col, row), encoded) in enumerate(
        zip(chunk, _read_chunk(slide, chunk, plane), strict=True)
    ):
        if encoded is None:
            continue
        valid = slide.levels[level].tile_region(col, row)
        decoded = compose.as_rgb(codec.decode(encoded))
        h, w = min(valid.height, decoded.shape[0]), min(valid.width, decoded.shape[1])
        out[i, :h, :w] = decoded[:h, :w]
    return out.tobytes()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


# -- tissue -----------------------------------------------------------------------------------


@importing("tileserver.tissue")
async def get_tissue(request: Request) -> Response:
    from tileserver import tissue

    service = service_of(request)
    slide = await service.slide(request.path_params["slide_id"])
    fmt = format_param(request, "png", ("png", "json"))
    level = slide.level(int_param(request, "level", 0, minimum=0))
    if fmt == "png":
        png = await service.tissue_png(slide)
        return image_response(request, png, PNG, etag_for(slide.version, tissue.METHOD))
    return Response(await service.tissue_json(slide, level), media_type=JSON)


routes = [
    Route("/slides/{slide_id}/tiles:batch", post_batch, methods=["POST"]),
    Route("/slides/{slide_id}/tissue", get_tissue),
]
