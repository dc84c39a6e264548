"""What a stored-tile response looks like: its URL, ETag, cache and CORS headers.

Shared by the app's tile route, the fast path and the early path (``http/early.py``),
which answers before anything heavy is imported: so this module is standard library only.
"""

from __future__ import annotations

import re
from typing import Protocol

TILES_ROUTE = "/slides/{slide_id}/tiles/{level:int}/{col:int}/{row:int}"
#: A native tile URL with no query: slide id, level, column, row.
TILE_PATH = re.compile(r"/slides/([^/]+)/tiles/(\d{1,6})/(\d{1,9})/(\d{1,9})", re.ASCII)
TILE_CACHE_CONTROL = "public, max-age=86400"
EXPOSED_HEADERS = "ETag, Server-Timing, Link, Content-Type, Content-Length, Location"
_RAW_CACHE_CONTROL = TILE_CACHE_CONTROL.encode()
_EARLY = ';desc="early"'
_RAW_EARLY = _EARLY.encode()

Headers = list[tuple[str, str]]
RawHeaders = list[tuple[bytes, bytes]]


class PlaneAddress(Protocol):
    @property
    def focal_plane(self) -> int: ...

    @property
    def optical_path(self) -> int: ...


def tile_etag(
    version: str, level: int, col: int, row: int, plane: PlaneAddress, fmt: str | None
) -> str:
    """ETag of a tile of the native API: the slide's content version and the tile's address
    (no hashing: every tile request computes one)."""
    return f'"{version}-t{level}-{col}-{row}-{plane.focal_plane}-{plane.optical_path}-{fmt}"'


def dzi_etag(version: str, level: int, col: int, row: int, fmt: str) -> str:
    """ETag of a Deep Zoom tile, as ``tile_etag``."""
    return f'"{version}-z{level}-{col}-{row}-{fmt}"'


def scan_headers(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bool]:
    """An ASGI request's Origin ("" without one) and whether it has ``If-None-Match``."""
    origin, conditional = b"", False
    for name, value in headers:
        if name == b"origin":
            origin = value
        elif name == b"if-none-match":
            conditional = True
    return origin, conditional


class CorsPolicy:
    """Which origins may read responses, and the headers that say so; shared by
    ``CorsMiddleware`` and the paths that answer before the middleware runs."""

    def __init__(self, origins: str = "*") -> None:
        self.origins = [o.strip() for o in origins.split(",") if o.strip()] or ["*"]
        self.any = "*" in self.origins
        self._any_headers = [
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", EXPOSED_HEADERS),
        ]
        self._any_raw = [(k.encode(), v.encode()) for k, v in self._any_headers]

    def allow(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request's Origin, or None."""
        if self.any:
            return "*"
        return origin if origin in self.origins else None

    def headers(self, origin: str) -> Headers:
        """CORS headers of a response to a request from ``origin`` ("" without one)."""
        if self.any:
            return self._any_headers
        allow = self.allow(origin)
        exposed = [] if allow is None else self._any_headers[1:]
        granted = [] if allow is None else [("access-control-allow-origin", allow)]
        # The answer depends on Origin: tell caches, also when the request had none.
        return [*granted, *exposed, ("vary", "Origin")]

    def raw_headers(self, origin: bytes) -> RawHeaders:
        """``headers`` as ASGI wants them (encoded once when any origin is allowed)."""
        if self.any:
            return self._any_raw
        return [
            (k.encode(), v.encode("latin-1")) for k, v in self.headers(origin.decode("latin-1"))
        ]


def tile_headers(
    cors: CorsPolicy, origin: str, media_type: str, etag: str, seconds: float, early: bool = False
) -> Headers:
    """Headers of a 200 tile answered before the app's middleware (RSGI's form); ``early``
    marks the read as the early path's (``http/early.py``) in ``Server-Timing``."""
    timing = f"read;dur={seconds * 1000:.2f}" + (_EARLY if early else "")
    return [
        ("content-type", media_type),
        ("etag", etag),
        ("cache-control", TILE_CACHE_CONTROL),
        ("server-timing", timing),
        *cors.headers(origin),
    ]


def raw_tile_headers(
    cors: CorsPolicy,
    origin: bytes,
    media_type: str,
    etag: str,
    seconds: float,
    length: int,
    early: bool = False,
) -> RawHeaders:
    """``tile_headers`` as ASGI wants them, content-length included."""
    timing = b"read;dur=%.2f" % (seconds * 1000) + (_RAW_EARLY if early else b"")
    return [
        (b"content-type", media_type.encode()),
        (b"etag", etag.encode()),
        (b"cache-control", _RAW_CACHE_CONTROL),
        (b"server-timing", timing),
        *cors.raw_headers(origin),
        (b"content-length", b"%d" % length),
    ]
