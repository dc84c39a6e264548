"""The tile fast path: stored frames in the page cache and composed DZI tiles in the
in-process cache, served before routing.

A viewer's stream of tile requests is mostly plain ``GET``s of stored frames or of DZI
tiles rendered before. For those this outermost ASGI layer does the whole job (path split,
slide lookup, two array lookups and one ``RWF_NOWAIT`` read, or one dictionary lookup) and
writes the response itself, with the same ETag, cache and CORS headers as the full app.
Anything else (a query string, ``If-None-Match``, a slide not open yet, bytes not cached,
an edge tile to crop, a cache miss, any error) falls through to the app.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from tileserver.compose import DEFAULT_PLANE
from tileserver.dzi import DeepZoom, frame_aligned, native_level_for
from tileserver.formats import JPEG, EncodedTile
from tileserver.http.dzi import COMPOSED_KEY, DZI_FORMATS, composed_request, deep_zoom
from tileserver.http.middleware import EXPOSED_HEADERS
from tileserver.http.responses import TILE_CACHE_CONTROL, etag_for
from tileserver.http.state import AppState
from tileserver.service import Rendered
from tileserver.slide import Slide

TILES_ROUTE = "/slides/{slide_id}/tiles/{level:int}/{col:int}/{row:int}"
DZI_ROUTE = "/dzi/{slide_id}_files/{level:int}/{name}"
#: (route template for metrics, stored or cached tile, ETag)
Found = tuple[str, EncodedTile | Rendered, str]


class StoredTileFastPath:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        self.cors = state.settings.cors_origins.strip() == "*"
        self._native: dict[tuple[str, str], dict[int, int]] = {}
        self._zooms: dict[tuple[str, str], DeepZoom] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            start = time.perf_counter()
            found = self._lookup(scope)
            if found is not None:
                route, tile, etag = found
                await self._send(send, tile, etag, time.perf_counter() - start)
                self.state.metrics.observe_request(route, "GET", 200, time.perf_counter() - start)
                return
        await self.app(scope, receive, send)

    def _lookup(self, scope: Scope) -> Found | None:
        service = self.state.service
        if service is None or any(k == b"if-none-match" for k, _ in scope["headers"]):
            return None
        parts = scope["path"].split("/")
        try:
            if len(parts) == 7 and parts[1] == "slides" and parts[3] == "tiles":
                return self._stored(service.library.get_open(parts[2]), parts[4:7])
            if len(parts) == 5 and parts[1] == "dzi" and parts[2].endswith("_files"):
                return self._dzi(service.library.get_open(parts[2][:-6]), parts[3], parts[4])
        except Exception:  # the full app answers with the right status and message
            return None
        return None

    def _stored(self, slide: Slide | None, numbers: list[str]) -> Found | None:
        if slide is None or not all(n.isascii() and n.isdigit() for n in numbers):
            return None
        level, col, row = (int(n) for n in numbers)
        tile = slide.read_tile_bytes_if_cached(level, col, row)
        if tile is None:
            return None
        etag = etag_for(slide.version, "tile", level, col, row, DEFAULT_PLANE, None)
        return TILES_ROUTE, tile, etag

    def _dzi(self, slide: Slide | None, level_text: str, name: str) -> Found | None:
        if slide is None or not level_text.isascii() or not level_text.isdigit():
            return None
        stem, _, fmt = name.partition(".")
        col_text, _, row_text = stem.partition("_")
        if fmt not in DZI_FORMATS or not (col_text.isdigit() and row_text.isdigit()):
            return None
        fmt = DZI_FORMATS[fmt]
        z_level, col, row = int(level_text), int(col_text), int(row_text)
        native = self._native_levels(slide).get(z_level)
        if native is None:
            return self._composed(slide, z_level, col, row, fmt)
        if fmt != "jpeg":
            return None
        level = slide.levels[native]
        if level.tile_region(col, row).size != level.tile_size:
            return None  # edge frames are padded: the app crops them
        tile = slide.read_tile_bytes_if_cached(native, col, row)
        if tile is None or tile.media_type != JPEG:
            return None
        return DZI_ROUTE, tile, etag_for(slide.version, "dzi", z_level, col, row, "jpeg")

    def _composed(self, slide: Slide, z_level: int, col: int, row: int, fmt: str) -> Found | None:
        service = self.state.service
        if service is None:
            return None
        l0, out_size = composed_request(self._deep_zoom(slide), z_level, col, row)
        key = service.render_key(slide, l0, out_size, fmt, COMPOSED_KEY)
        rendered = service.cached_in_process(key)
        if rendered is None:
            return None
        return DZI_ROUTE, rendered, etag_for(slide.version, "dzi", z_level, col, row, fmt)

    def _native_levels(self, slide: Slide) -> dict[int, int]:
        """DZI level -> stored level, for levels whose DZI tiles are the stored frames."""
        key = (slide.id, slide.version)
        known = self._native.get(key)
        if known is None:
            dz = self._deep_zoom(slide)
            known = {}
            for z_level in range(dz.level_count):
                native = native_level_for(dz, z_level, slide.levels)
                if native is not None and frame_aligned(dz, slide.levels[native]):
                    known[z_level] = native
            if len(self._native) > 4096:
                self._native.clear()
            self._native[key] = known
        return known

    def _deep_zoom(self, slide: Slide) -> DeepZoom:
        key = (slide.id, slide.version)
        dz = self._zooms.get(key)
        if dz is None:
            if len(self._zooms) > 4096:
                self._zooms.clear()
            dz = self._zooms[key] = deep_zoom(slide)
        return dz

    async def _send(
        self, send: Send, tile: EncodedTile | Rendered, etag: str, seconds: float
    ) -> None:
        headers = [
            (b"content-type", tile.media_type.encode()),
            (b"content-length", str(len(tile.data)).encode()),
            (b"etag", etag.encode()),
            (b"cache-control", TILE_CACHE_CONTROL.encode()),
            (b"server-timing", f"read;dur={seconds * 1000:.2f}".encode()),
        ]
        if self.cors:
            headers += [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
            ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": tile.data})
