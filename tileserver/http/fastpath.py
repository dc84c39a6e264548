"""The app's stored-tile lookup for the chain (``http/chain.py``): stored frames whose bytes
can be read without waiting, and DZI tiles already in the in-process cache.

For those it does the whole job (one regular expression, a slide lookup, two array lookups
and one ``read_if_cached``, or one dictionary lookup), with the ETag the app's routes give
the same tile. Anything else (a slide not open yet, bytes not cached, an edge tile to crop,
a cache miss, any error) is left to the app.
"""

from __future__ import annotations

import time

from tileserver.catalog.library import CHANGE_CHECK_SECONDS
from tileserver.compose import DEFAULT_PLANE
from tileserver.formats import JPEG
from tileserver.http.dzi import COMPOSED_KEY, DZI_FORMATS
from tileserver.http.state import AppState
from tileserver.http.stored import (
    DZI_PATH,
    DZI_ROUTE,
    TILE_PATH,
    TILES_ROUTE,
    Answer,
    dzi_etag,
    tile_etag,
)
from tileserver.service import TileService


class FastPath:
    """A request path to a complete 200 ``Answer``, or None when the app must answer."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def lookup(self, path: str) -> Answer | None:
        start = time.perf_counter()
        service = self.state.service
        if service is None:
            return None
        try:
            match = TILE_PATH.fullmatch(path)
            if match is not None:
                found = self._stored(service, *match.groups())
            else:
                match = DZI_PATH.fullmatch(path)
                found = None if match is None else self._dzi(service, *match.groups())
        except Exception:  # the full app answers with the right status and message
            return None
        if found is None:
            return None
        route, data, media_type, etag = found
        return Answer(200, data, media_type, etag, time.perf_counter() - start, route)

    def _stored(
        self, service: TileService, slide_id: str, level_text: str, col_text: str, row_text: str
    ) -> tuple[str, bytes, str, str] | None:
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
        return TILES_ROUTE, tile.data, tile.media_type, etag

    def _dzi(
        self,
        service: TileService,
        slide_id: str,
        level_text: str,
        col_text: str,
        row_text: str,
        suffix: str,
    ) -> tuple[str, bytes, str, str] | None:
        slide = service.library.get_open(slide_id, CHANGE_CHECK_SECONDS)
        fmt = DZI_FORMATS.get(suffix)
        if slide is None or fmt is None:
            return None
        z_level, col, row = int(level_text), int(col_text), int(row_text)
        plan = service.dzi_plan(slide)
        native = plan.native.get(z_level)
        etag = dzi_etag(slide.version, z_level, col, row, fmt)
        if native is not None:
            level = slide.levels[native]
            if fmt != "jpeg" or level.tile_region(col, row).size != level.tile_size:
                return None  # a transcode, or a padded edge frame to crop: the app's job
            tile = slide.reader.read_tile_if_cached(native, col, row)
            if tile is None or tile.media_type != JPEG:
                return None
            return DZI_ROUTE, tile.data, JPEG, etag
        key = plan.keys.get((z_level, col, row, fmt))
        if key is None:
            l0, out_size = plan.composed(z_level, col, row)
            key = service.render_key(slide, l0, out_size, fmt, COMPOSED_KEY)
            plan.remember((z_level, col, row, fmt), key)
        rendered = service.cached_in_process(key)
        if rendered is None:
            return None
        return DZI_ROUTE, rendered.data, rendered.media_type, etag
