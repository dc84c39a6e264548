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
from dataclasses import dataclass, field
from typing import NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from tileserver.catalog.library import CHANGE_CHECK_SECONDS
from tileserver.compose import DEFAULT_PLANE
from tileserver.dzi import DeepZoom, frame_aligned, native_level_for
from tileserver.formats import JPEG
from tileserver.http.dzi import COMPOSED_KEY, DZI_FORMATS, composed_request, deep_zoom
from tileserver.http.state import AppState
from tileserver.http.stored import (
    TILE_PATH,
    TILES_ROUTE,
    CorsPolicy,
    Headers,
    RawHeaders,
    dzi_etag,
    raw_tile_headers,
    scan_headers,
    tile_etag,
    tile_headers,
)
from tileserver.service import TileService
from tileserver.slide import Slide

DZI_ROUTE = "/dzi/{slide_id}_files/{level:int}/{name}"
_DZI_PATH = re.compile(r"/dzi/([^/]+)_files/(\d{1,6})/(\d{1,9})_(\d{1,9})\.(\w+)", re.ASCII)
_SLIDE_MEMO_LIMIT = 4096
_KEY_MEMO_LIMIT = 65536  # composed-tile cache keys per slide, ~250 bytes each


class Answer(NamedTuple):
    route: str  # route template, for metrics
    data: bytes
    media_type: str
    etag: str


@dataclass
class _SlideMemo:
    """What the fast path derives once per slide version."""

    zoom: DeepZoom
    #: DZI level -> stored level, for levels whose DZI tiles are the stored frames.
    native: dict[int, int]
    #: (DZI level, col, row, format) -> the cache key the app renders that tile under.
    keys: dict[tuple[int, int, int, str], str] = field(default_factory=dict)


class FastPath:
    """A request path to a complete 200 answer, or None when the app must answer."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.cors = CorsPolicy(state.settings.cors_origins)
        self._slides: dict[tuple[str, str], _SlideMemo] = {}

    def respond(self, path: str, origin: str) -> tuple[Answer, Headers] | None:
        """The answer and its response headers (counted in the metrics), or None."""
        found = self._timed(path)
        if found is None:
            return None
        answer, elapsed = found
        return answer, tile_headers(self.cors, origin, answer.media_type, answer.etag, elapsed)

    def respond_raw(self, path: str, origin: bytes) -> tuple[Answer, RawHeaders] | None:
        """``respond`` with the headers as ASGI wants them, content-length included; the
        fixed ones are encoded once."""
        found = self._timed(path)
        if found is None:
            return None
        answer, elapsed = found
        media_type, etag, length = answer.media_type, answer.etag, len(answer.data)
        return answer, raw_tile_headers(self.cors, origin, media_type, etag, elapsed, length)

    def _timed(self, path: str) -> tuple[Answer, float] | None:
        start = time.perf_counter()
        answer = self.answer(path)
        if answer is None:
            return None
        elapsed = time.perf_counter() - start
        self.state.metrics.observe_request(answer.route, "GET", 200, elapsed)
        return answer, elapsed

    def answer(self, path: str) -> Answer | None:
        service = self.state.service
        if service is None:
            return None
        try:
            match = TILE_PATH.fullmatch(path)
            if match is not None:
                return self._stored(service, *match.groups())
            match = _DZI_PATH.fullmatch(path)
            if match is not None:
                return self._dzi(service, *match.groups())
        except Exception:  # the full app answers with the right status and message
            return None
        return None

    def _stored(
        self, service: TileService, slide_id: str, level_text: str, col_text: str, row_text: str
    ) -> Answer | None:
        slide = service.library.get_open(slide_id, CHANGE_CHECK_SECONDS)
        if slide is None:
            return None
        # The reader, not Slide: no address check, as the regular expression only yields
        # non-negative numbers and the reader raises IndexError past the grid.
        level, col, row = int(level_text), int(col_text), int(row_text)
        tile = slide.reader.read_tile_if_cached(level, col, row)
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
        memo = self._memo(slide)
        native = memo.native.get(z_level)
        if native is None:
            key = memo.keys.get((z_level, col, row, fmt))
            if key is None:
                l0, out_size = composed_request(memo.zoom, z_level, col, row)
                key = service.render_key(slide, l0, out_size, fmt, COMPOSED_KEY)
                if len(memo.keys) >= _KEY_MEMO_LIMIT:
                    memo.keys.clear()
                memo.keys[(z_level, col, row, fmt)] = key
            rendered = service.cached_in_process(key)
            if rendered is None:
                return None
            data, media_type = rendered.data, rendered.media_type
        else:
            level = slide.levels[native]
            if fmt != "jpeg" or level.tile_region(col, row).size != level.tile_size:
                return None  # a transcode, or a padded edge frame to crop: the app's job
            tile = slide.reader.read_tile_if_cached(native, col, row)
            if tile is None or tile.media_type != JPEG:
                return None
            data, media_type = tile.data, JPEG
        return Answer(DZI_ROUTE, data, media_type, dzi_etag(slide.version, z_level, col, row, fmt))

    def _memo(self, slide: Slide) -> _SlideMemo:
        key = (slide.id, slide.version)
        memo = self._slides.get(key)
        if memo is None:
            zoom = deep_zoom(slide)
            native = {}
            for z_level in range(zoom.level_count):
                level = native_level_for(zoom, z_level, slide.levels)
                if level is not None and frame_aligned(zoom, slide.levels[level]):
                    native[z_level] = level
            if len(self._slides) >= _SLIDE_MEMO_LIMIT:
                self._slides.clear()
            memo = self._slides[key] = _SlideMemo(zoom, native)
        return memo


class StoredTileFastPath:
    """ASGI: the fast path in front of the full app."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.fast = FastPath(state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            origin, conditional = scan_headers(scope["headers"])
            found = None if conditional else self.fast.respond_raw(scope["path"], origin)
            if found is not None:
                answer, headers = found
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": answer.data})
                return
        await self.app(scope, receive, send)
