"""AI-pipeline endpoints: many tiles in one request, and the slide's tissue mask.

``POST /slides/{id}/tiles:batch`` takes ``{"tiles": [[level, col, row], ...], "format":
"raw" | "npy", "z": 0, "path": 0}`` and streams, in request order, either

* ``raw``: ``multipart/mixed``, one part per tile holding its stored frame bytes, with
  ``Content-Type``, ``X-Tile-Level``/``-Col``/``-Row`` and ``X-Transfer-Syntax`` headers
  (an absent sparse tile is an empty part with ``X-Tile-Absent: 1``); or
* ``npy``: one ``(n, h, w, 3)`` uint8 array of decoded RGB tiles; every requested level
  must share one tile size, and edge and absent tiles are padded with background (255).

Frames of one file are read with coalesced ``os.pread`` calls
(``tileserver.readers.coalesce``), in worker threads, a chunk at a time. Every address is
checked before the first byte is sent; a read that fails later aborts the stream.

``GET /slides/{id}/tissue`` returns the tissue mask (``tileserver.tissue``) as a PNG, or
with ``?format=json`` its size and the tile flags of level ``?level=N`` (default 0).
"""

from __future__ import annotations

import asyncio
import functools
import io
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import orjson
from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tileserver import codec, compose, tissue
from tileserver.cache import coalesce, make_key, pack, unpack
from tileserver.compose import Plane
from tileserver.errors import InvalidRequestError, LimitExceededError
from tileserver.formats import NPY, OCTET_STREAM, PNG, EncodedTile
from tileserver.geometry import Size
from tileserver.http.params import format_param, int_param
from tileserver.http.responses import etag_for, image_response, json_response
from tileserver.http.state import service_of
from tileserver.readers.coalesce import read_tiles
from tileserver.service import TileService
from tileserver.slide import Slide

MAX_BATCH = 1024
CHUNK = 64
#: Chunks read ahead of the one being sent.
READ_AHEAD = 2

Address = tuple[int, int, int]


# -- batch ------------------------------------------------------------------------------------


async def post_batch(request: Request) -> Response:
    service = service_of(request)
    slide = await service.slide(request.path_params["slide_id"])
    addresses, fmt, plane = _parse_batch(await request.body(), slide)
    chunks = [addresses[i : i + CHUNK] for i in range(0, len(addresses), CHUNK)] or [[]]
    work: Callable[[Sequence[Address]], bytes]
    if fmt == "raw":
        boundary = secrets.token_hex(16)
        work = functools.partial(_multipart_chunk, slide, plane=plane, boundary=boundary)
        prefix, suffix = b"", f"--{boundary}--\r\n".encode()
        media_type = f"multipart/mixed; boundary={boundary}"
    else:
        tile_size = _uniform_tile_size(slide, addresses)
        work = functools.partial(_pixels_chunk, slide, plane=plane, size=tile_size)
        prefix, suffix = _npy_header((len(addresses), tile_size.height, tile_size.width, 3)), b""
        media_type = NPY
    # The first chunk is read before the response starts, so its errors get a status.
    first = prefix + await to_thread.run_sync(work, chunks[0])
    if len(chunks) == 1:
        return Response(first + suffix, media_type=media_type)
    return StreamingResponse(_stream(first, chunks[1:], work, suffix), media_type=media_type)


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
    return [_address(t, slide) for t in tiles], fmt, plane


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


def _uniform_tile_size(slide: Slide, addresses: Sequence[Address]) -> Size:
    sizes = {slide.levels[level].tile_size for level, _, _ in addresses}
    if len(sizes) > 1:
        raise InvalidRequestError("npy batches need one tile size; split the batch by level")
    return sizes.pop() if sizes else Size(0, 0)


async def _stream(
    first: bytes,
    rest: Sequence[Sequence[Address]],
    work: Callable[[Sequence[Address]], bytes],
    suffix: bytes = b"",
) -> AsyncIterator[bytes]:
    """``first``, then ``work`` of each chunk run in a worker thread, a few ahead, in order."""
    yield first
    pending: list[asyncio.Task[bytes]] = []
    try:
        for index in range(len(rest)):
            while len(pending) <= READ_AHEAD and index + len(pending) < len(rest):
                chunk = rest[index + len(pending)]
                pending.append(asyncio.ensure_future(to_thread.run_sync(work, chunk)))
            yield await pending.pop(0)
    finally:
        for task in pending:
            task.cancel()
    if suffix:
        yield suffix


def _read_chunk(slide: Slide, chunk: Sequence[Address], plane: Plane) -> list[EncodedTile | None]:
    """Stored bytes of ``chunk`` in order; one coalesced read plan per level."""
    out: list[EncodedTile | None] = [None] * len(chunk)
    for level in sorted({a[0] for a in chunk}):
        indexes = [i for i, a in enumerate(chunk) if a[0] == level]
        tiles = [(chunk[i][1], chunk[i][2]) for i in indexes]
        read = read_tiles(slide, level, tiles, plane.focal_plane, plane.optical_path)
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
    out = np.full((len(chunk), size.height, size.width, 3), compose.BACKGROUND, dtype=np.uint8)
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


async def get_tissue(request: Request) -> Response:
    service = service_of(request)
    slide = await service.slide(request.path_params["slide_id"])
    fmt = format_param(request, "png", ("png", "json"))
    level = slide.level(int_param(request, "level", 0, minimum=0))
    mask, png = await tissue_mask(service, slide)
    if fmt == "png":
        return image_response(request, png, PNG, etag_for(slide.version, tissue.METHOD))
    flags = mask.tile_flags(level)
    height, width = mask.mask.shape
    return json_response(
        {
            "method": tissue.METHOD,
            "threshold": mask.threshold,
            "source_level": mask.source_level,
            "width": width,
            "height": height,
            "l0_per_mask": list(mask.l0_per_mask),
            "tissue_fraction": float(mask.mask.mean()),
            "level": level.index,
            "grid": [level.grid.width, level.grid.height],
            "tiles_with_tissue": int(flags.sum()),
            "flags": flags.astype(np.uint8).tolist(),
        }
    )


async def tissue_mask(service: TileService, slide: Slide) -> tuple[tissue.TissueMask, bytes]:
    """The slide's mask and its PNG, from the service cache or computed once."""
    key = make_key(slide.version, "tissue", slide.id, tissue.METHOD)
    blob = await service.cache.get(key)
    if blob is not None:
        try:
            png = unpack(blob)[1]
            return tissue.TissueMask.from_png(png), png
        except (ValueError, KeyError, OSError):
            pass  # not ours: a miss

    async def build() -> bytes:
        def produce() -> bytes:
            return tissue.compute(slide, service.tiles).png()

        blob = pack(PNG, await to_thread.run_sync(produce))
        await service.cache.set(key, blob)
        return blob

    produced: Callable[[], Awaitable[bytes]] = build
    png = unpack(await coalesce(key, produced))[1]
    return tissue.TissueMask.from_png(png), png


routes = [
    Route("/slides/{slide_id}/tiles:batch", post_batch, methods=["POST"]),
    Route("/slides/{slide_id}/tissue", get_tissue),
]
