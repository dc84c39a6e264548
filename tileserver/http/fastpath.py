"""The tile fast path: stored frames in the page cache and composed DZI tiles in the
in-process cache, answered before routing.

A viewer's stream of tile requests is mostly plain ``GET``s of stored frames or of DZI
tiles rendered before. For those the fast path does the whole job (one regular expression,
a slide lookup, two array lookups and one ``RWF_NOWAIT`` read, or one dictionary lookup)
and the server front writes the response itself, with the same ETag, cache and CORS
headers as the full app. Anything else (a query string, ``If-None-Match``, a slide not open
yet, bytes not cached, an edge tile to crop, a cache miss, any error) goes to the app.

``FastPath`` is server-neutral; ``StoredTileFastPath`` puts it in front of the ASGI app
and ``tileserver.http.rsgi`` in front of granian's RSGI interface.
"""

from __future__ import annotations

import re
import time
from typing import NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from tileserver.catalog.library import CHANGE_CHECK_SECONDS
from tileserver.compose import DEFAULT_PLANE
from tileserver.dzi import DeepZoom, frame_aligned, native_level_for
from tileserver.formats import JPEG
from tileserver.http.dzi import COMPOSED_KEY, DZI_FORMATS, composed_request, deep_zoom
from tileserver.http.middleware import EXPOSED_HEADERS
from tileserver.http.responses import TILE_CACHE_CONTROL, dzi_etag, tile_etag
from tileserver.http.state import AppState
from tileserver.service import TileService
from tileserver.slide import Slide

TILES_ROUTE = "/slides/{slide_id}/tiles/{level:int}/{col:int}/{row:int}"
DZI_ROUTE = "/dzi/{slide_id}_files/{level:int}/{name}"
_TILE_PATH = re.compile(r"/slides/([^/]+)/tiles/(\d{1,6})/(\d{1,9})/(\d{1,9})", re.ASCII)
_DZI_PATH = re.compile(r"/dzi/([^/]+)_files/(\d{1,6})/(\d{1,9})_(\d{1,9})\.(\w+)", re.ASCII)
_MEMO_LIMIT = 4096
_KEY_MEMO_LIMIT = 65536  # composed-tile cache keys, ~250 bytes each


class Answer(NamedTuple):
    route: str  # route template, for metrics
    data: bytes
    media_type: str
    etag: str


class FastPath:
    """A request path to a complete 200 answer, or None when the app must answer."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.cors = state.settings.cors_origins.strip() == "*"
        self._native: dict[tuple[str, str], dict[int, int]] = {}
        self._zooms: dict[tuple[str, str], DeepZoom] = {}
        self._keys: dict[tuple[str, str, int, int, int, str], str] = {}
        fixed = [("cache-control", TILE_CACHE_CONTROL)]
        if self.cors:
            fixed += [
                ("access-control-allow-origin", "*"),
                ("access-control-expose-headers", EXPOSED_HEADERS),
            ]
        self.fixed_headers = fixed
        self.fixed_raw_headers = [(k.encode(), v.encode()) for k, v in fixed]

    def answer(self, path: str) -> Answer | None:
        service = self.state.service
        if service is None:
            return None
        try:
            match = _TILE_PATH.fullmatch(path)
            if match is not None:
                return self._stored(service, *match.groups())
            match = _DZI_PATH.fullmatch(path)
            if match is not None:
                return self._dzi(service, *match.groups())
        except Exception:  # the full app answers with the right status and message
            return None
        return None

    def observe(self, answer: Answer, seconds: float) -> None:
        self.state.metrics.observe_request(answer.route, "GET", 200, seconds)

    def _stored(
        self, service: TileService, slide_id: str, level_text: str, col_text: str, row_text: str
    ) -> Answer | None:
        slide = service.library.get_open(slide_id, CHANGE_CHECK_SECONDS)
        if slide is None:
            return None
        level, col, row = int(level_text), int(col_text), int(row_text)
        tile = slide.read_tile_bytes_if_cached(level, col, row)
        if tile is None:
            return None
        etag = tile_etag(slide.version, level, col, row, DEFAULT_PLANE, None)
        return Answer(TILES_ROUTE, tile.data, tile.media_type, etag)

    def _dzi(
        self,
        service: TileService,
        slide_id: str,
        level_text: str,
        col_text: str,
        row_text: str,
        suffix: str,
    ) -> Answer | None:
        slide = service.library.get_open(slide_id, CHANGE_CHECK_SECONDS)
        fmt = DZI_FORMATS.get(suffix)
        if slide is None or fmt is None:
            return None
        z_level, col, row = int(level_text), int(col_text), int(row_text)
        etag = dzi_etag(slide.version, z_level, col, row, fmt)
        native = self._native_levels(slide).get(z_level)
        if native is None:
            rendered = service.cached_in_process(
                self._composed_key(service, slide, z_level, col, row, fmt)
            )
            if rendered is None:
                return None
            return Answer(DZI_ROUTE, rendered.data, rendered.media_type, etag)
        if fmt != "jpeg":
            return None
        level = slide.levels[native]
        if level.tile_region(col, row).size != level.tile_size:
            return None  # edge frames are padded: the app crops them
        tile = slide.read_tile_bytes_if_cached(native, col, row)
        if tile is None or tile.media_type != JPEG:
            return None
        return Answer(DZI_ROUTE, tile.data, JPEG, etag)

    def _composed_key(
        self, service: TileService, slide: Slide, z_level: int, col: int, row: int, fmt: str
    ) -> str:
        """The cache key the app renders this DZI tile under (memoized: a viewer asks for
        the same tiles again and again, and the key costs a digest)."""
        memo = (slide.id, slide.version, z_level, col, row, fmt)
        key = self._keys.get(memo)
        if key is None:
            l0, out_size = composed_request(self._deep_zoom(slide), z_level, col, row)
            key = service.render_key(slide, l0, out_size, fmt, COMPOSED_KEY)
            if len(self._keys) >= _KEY_MEMO_LIMIT:
                self._keys.clear()
            self._keys[memo] = key
        return key

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
            if len(self._native) > _MEMO_LIMIT:
                self._native.clear()
            self._native[key] = known
        return known

    def _deep_zoom(self, slide: Slide) -> DeepZoom:
        key = (slide.id, slide.version)
        dz = self._zooms.get(key)
        if dz is None:
            if len(self._zooms) > _MEMO_LIMIT:
                self._zooms.clear()
            dz = self._zooms[key] = deep_zoom(slide)
        return dz


def server_timing(seconds: float) -> str:
    return f"read;dur={seconds * 1000:.2f}"


class StoredTileFastPath:
    """ASGI: the fast path in front of the full app."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.fast = FastPath(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            start = time.perf_counter()
            answer = None
            if not any(k == b"if-none-match" for k, _ in scope["headers"]):
                answer = self.fast.answer(scope["path"])
            if answer is not None:
                elapsed = time.perf_counter() - start
                headers = [
                    (b"content-type", answer.media_type.encode()),
                    (b"content-length", b"%d" % len(answer.data)),
                    (b"etag", answer.etag.encode()),
                    (b"server-timing", server_timing(elapsed).encode()),
                    *self.fast.fixed_raw_headers,
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": answer.data})
                self.fast.observe(answer, time.perf_counter() - start)
                return
        await self.app(scope, receive, send)
