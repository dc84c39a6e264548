"""What a stored-tile response looks like: its URL, ETag, and the one header builder.

Shared by the app's tile routes and the stored-tile chain (``http/chain.py``), which answers
before anything heavy is imported: so this module is standard library only.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol

TILES_ROUTE = "/slides/{slide_id}/tiles/{level:int}/{col:int}/{row:int}"
DZI_ROUTE = "/dzi/{slide_id}_files/{level:int}/{name}"
#: A native tile URL with no query: slide id, level, column, row.
TILE_PATH = re.compile(r"/slides/([^/]+)/tiles/(\d{1,6})/(\d{1,9})/(\d{1,9})", re.ASCII)
#: A Deep Zoom tile URL: slide id, DZI level, column, row, suffix.
DZI_PATH = re.compile(r"/dzi/([^/]+)_files/(\d{1,6})/(\d{1,9})_(\d{1,9})\.(\w+)", re.ASCII)
TILE_CACHE_CONTROL = "public, max-age=86400"
PRIVATE_CACHE_CONTROL = "private, max-age=86400"
EXPOSED_HEADERS = "ETag, Server-Timing, Link, Content-Type, Content-Length, Location"
JSON = "application/json"

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
    """ETag of a tile of the native API: the slide's content version and the tile's address,
    and the format when one was asked for (no hashing: every tile request computes one)."""
    address = f"{version}-t{level}-{col}-{row}-{plane.focal_plane}-{plane.optical_path}"
    return f'"{address}-{fmt}"' if fmt else f'"{address}"'


def dzi_etag(version: str, level: int, col: int, row: int, fmt: str) -> str:
    """ETag of a Deep Zoom tile, as ``tile_etag``."""
    return f'"{version}-z{level}-{col}-{row}-{fmt}"'


class Answer(NamedTuple):
    """A complete response the chain sends without the app: a tile, a probe, a refusal."""

    status: int
    body: bytes
    media_type: str
    etag: str | None = None  # set for tiles: they get the tile headers
    seconds: float = 0.0  # the read, for Server-Timing
    route: str = ""  # route template, for metrics ("" is not counted)
    early: bool = False  # read by the early path (``http/early.py``)
    extra: tuple[tuple[str, str], ...] = ()


class CorsPolicy:
    """Which origins may read responses, and the headers that say so; shared by
    ``CorsMiddleware`` and the chain, which answers before the middleware runs."""

    def __init__(self, origins: str = "*") -> None:
        """``origins``: comma-separated, "*" for any, "" for none (same-origin only)."""
        self.origins = [o.strip() for o in origins.split(",") if o.strip()]
        self.any = "*" in self.origins
        self.any_headers: Headers = [
            ("access-control-allow-origin", "*"),
            ("access-control-expose-headers", EXPOSED_HEADERS),
        ]
        self._any_raw = _encode(self.any_headers)

    def allow(self, origin: str) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request's Origin, or None."""
        if self.any:
            return "*"
        return origin if origin in self.origins else None

    def headers(self, origin: str) -> Headers:
        """CORS headers of a response to a request from ``origin`` ("" without one)."""
        if self.any:
            return self.any_headers
        allow = self.allow(origin)
        exposed = [] if allow is None else self.any_headers[1:]
        granted = [] if allow is None else [("access-control-allow-origin", allow)]
        # The answer depends on Origin: tell caches, also when the request had none.
        return [*granted, *exposed, ("vary", "Origin")]

    def raw_headers(self, origin: str) -> RawHeaders:
        """``headers`` as ASGI wants them (encoded once when any origin is allowed)."""
        if self.any:
            return self._any_raw
        return _encode(self.headers(origin))


def _encode(headers: Headers) -> RawHeaders:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


class ResponseHeaders:
    """The headers of every ``Answer``, as RSGI (``str``) or ASGI (``bytes``) wants them;
    what never changes is encoded once."""

    def __init__(self, cors: CorsPolicy) -> None:
        self.cors = cors
        self._fixed: Headers = [("cache-control", TILE_CACHE_CONTROL)]
        if cors.any:
            self._fixed += cors.any_headers
        self._fixed_raw = _encode(self._fixed)

    def build(self, answer: Answer, origin: str, private: bool = False) -> Headers:
        """RSGI's form (granian adds content-length); ``private`` keeps tiles out of
        shared caches (a request with a credential)."""
        if answer.etag is None:
            return [("content-type", answer.media_type), *answer.extra, *self.cors.headers(origin)]
        varying = self._varying(answer)
        if private:
            return [*varying, ("cache-control", PRIVATE_CACHE_CONTROL), *self.cors.headers(origin)]
        return varying + self._fixed if self.cors.any else varying + self._cors_tile(origin)

    def build_raw(self, answer: Answer, origin: str, private: bool = False) -> RawHeaders:
        """ASGI's form, content-length included."""
        length = (b"content-length", b"%d" % len(answer.body))
        if answer.etag is None or not self.cors.any or private:
            return [*_encode(self.build(answer, origin, private)), length]
        # The stored-tile hot path: only the values that vary are encoded.
        timing = b"read;dur=%.2f" % (answer.seconds * 1000)
        return [
            (b"content-type", answer.media_type.encode("latin-1")),
            (b"etag", answer.etag.encode("latin-1")),
            (b"server-timing", timing + b';desc="early"' if answer.early else timing),
            *self._fixed_raw,
            length,
        ]

    def _varying(self, answer: Answer) -> Headers:
        timing = f"read;dur={answer.seconds * 1000:.2f}"
        return [
            ("content-type", answer.media_type),
            ("etag", answer.etag or ""),
            ("server-timing", timing + ';desc="early"' if answer.early else timing),
        ]

    def _cors_tile(self, origin: str) -> Headers:
        return [self._fixed[0], *self.cors.headers(origin)]
