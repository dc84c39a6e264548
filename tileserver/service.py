"""The one sync/async boundary: cache -> reader (in a worker thread) -> codec.

Fronts (native, DZI, IIIF, DICOMweb) call these coroutines; file reads and codec work run
in the thread pool so the event loop never blocks. Every derived image is cached under a
key that starts with the slide's version (its files' path, size and mtime), so a changed
file never serves a stale tile.

``tileserver.codec`` is imported where pixels are decoded or encoded (in worker threads),
so a process answering stored tiles never loads Pillow or the decoders.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np
from anyio import to_thread

from tileserver import audit, compose
from tileserver.budget import PixelBudget
from tileserver.cache import KeyPart, TieredCache, coalesce, make_key, pack, unpack
from tileserver.catalog import SlideLibrary
from tileserver.compose import DEFAULT_PLANE, Pixels, Plane
from tileserver.dzi import DziPlan
from tileserver.errors import (
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    TileAbsentError,
)
from tileserver.formats import JPEG, NPY, OUTPUT_FORMATS, EncodedTile
from tileserver.geometry import Region, Size
from tileserver.grants import may_see
from tileserver.settings import Settings
from tileserver.slide import Level, Slide
from tileserver.timing import Timings

#: Changes when derived images of the same request change (absent tiles were painted white
#: before "glass1", in the slide's glass colour since): keys of other renderings never match.
_RENDERING = "glass1"
#: Renders in flight at once at the largest output size (``--max-output-pixels``): the
#: render budget, which bounds the memory concurrent renders take.
RENDER_BUDGET_OUTPUTS = 4
#: The widest or tallest image each encoder can write.
_MAX_SIDE = {JPEG: 65_500, "image/webp": 16_383}
#: Slide versions whose Deep Zoom plans are kept.
_PLANS_KEPT = 4096


@dataclass(frozen=True, slots=True)
class Rendered:
    data: bytes
    media_type: str


class TileService:
    def __init__(self, library: SlideLibrary, cache: TieredCache, settings: Settings) -> None:
        self.library = library
        self.cache = cache
        self.settings = settings
        self.tiles = compose.DecodedTiles()
        #: Listing entries by slide id: (content version, entry), so a listing opens only
        #: slides that are new or changed.
        self.summaries: dict[str, tuple[str, dict[str, object]]] = {}
        self._plans: dict[tuple[str, str], DziPlan] = {}
        #: Pixels decoded and encoded at once, over all requests: large renders queue.
        self.budget = PixelBudget(RENDER_BUDGET_OUTPUTS * settings.max_output_pixels)

    # -- the thread boundary -----------------------------------------------------------------

    async def run(self, function: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``function`` in a worker thread: every blocking call of the fronts (catalog
        queries, file and codec work) crosses here, so the event loop never blocks."""
        return await to_thread.run_sync(functools.partial(function, *args, **kwargs))

    def dzi_plan(self, slide: Slide) -> DziPlan:
        """The slide version's Deep Zoom plan (``dzi.DziPlan``), made once."""
        key = (slide.id, slide.version)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _PLANS_KEPT:
                self._plans.clear()
            slide.base_level()  # NotFoundError for a slide of associated images only
            plan = self._plans[key] = DziPlan(slide.levels)
        return plan

    # -- slides and stored bytes -----------------------------------------------------------

    async def slide(
        self, slide_id: str, timings: Timings | None = None, keep: bool = True
    ) -> Slide:
        timings = timings or Timings()
        with timings.measure("index"):
            slide = self.library.get_open(slide_id)
            if slide is None:  # loading reads the catalog: off the event loop
                slide = await self.run(self.library.get, slide_id, keep)
        study = slide.attributes.get("StudyInstanceUID")
        if not may_see(study):
            raise NotFoundError(f"no slide {slide_id!r}")  # nothing tells that it exists
        audit.record("read", study, slide.id)
        return slide

    async def stored_tile(
        self,
        slide: Slide,
        level: int,
        col: int,
        row: int,
        plane: Plane = DEFAULT_PLANE,
        timings: Timings | None = None,
    ) -> EncodedTile:
        """Stored bytes of one frame: a lookup and one pread, no decoding."""
        timings = timings or Timings()
        with timings.measure("read"):
            # Page-cache hits are read right here; only a read that would wait on the disk
            # pays for the hop to a worker thread.
            cached = slide.read_tile_bytes_if_cached(
                level, col, row, plane.focal_plane, plane.optical_path
            )
            if cached is not None:
                return cached
            return await self.run(
                slide.read_tile_bytes, level, col, row, plane.focal_plane, plane.optical_path
            )

    # -- derived images ----------------------------------------------------------------------

    async def tile(
        self,
        slide: Slide,
        level: int,
        col: int,
        row: int,
        fmt: str,
        plane: Plane = DEFAULT_PLANE,
        timings: Timings | None = None,
    ) -> Rendered:
        """A stored tile's valid area as ``fmt``; JPEG frames pass through or crop losslessly.

        Only a pass-through reads the stored tile here; anything derived is looked up in the
        cache first, and the stored bytes are read only to produce it (a hit reads none)."""
        timings = timings or Timings()
        media_type = _media_type(fmt)
        slide.check_tile(level, col, row, plane.focal_plane, plane.optical_path)
        lvl = slide.level(level)
        valid = lvl.tile_region(col, row)
        jpeg_in_jpeg_out = media_type == JPEG and lvl.media_type == JPEG
        if jpeg_in_jpeg_out and valid.size == lvl.tile_size:
            try:
                encoded = await self.stored_tile(slide, level, col, row, plane, timings)
            except TileAbsentError:
                pass  # a sparse gap: rendered as background below
            else:
                if encoded.media_type == JPEG:
                    return Rendered(encoded.data, JPEG)
        parts = (level, col, row, plane.focal_plane, plane.optical_path, fmt)
        key = self._key(slide, "tile", slide.id, *parts)

        def produce() -> Rendered:
            if jpeg_in_jpeg_out:
                cropped = self._cropped_jpeg(slide, level, col, row, plane, timings)
                if cropped is not None:
                    return Rendered(cropped, JPEG)
            pixels = self._decode_tile(slide, level, col, row, plane, timings)
            return self._encode(slide, pixels, fmt, timings)

        return await self.cached(key, produce, timings)

    def _cropped_jpeg(
        self, slide: Slide, level: int, col: int, row: int, plane: Plane, timings: Timings
    ) -> bytes | None:
        """A stored JPEG edge tile cropped to its valid area without re-encoding, if it can
        be (None: decode and encode instead)."""
        from tileserver import codec

        try:
            with timings.measure("read"):
                encoded = slide.read_tile_bytes(
                    level, col, row, plane.focal_plane, plane.optical_path
                )
        except TileAbsentError:
            return None
        if encoded.media_type != JPEG:
            return None
        valid = slide.level(level).tile_region(col, row)
        with timings.measure("encode"):
            return codec.crop_jpeg(encoded.data, valid.width, valid.height)

    async def region(
        self,
        slide: Slide,
        level: int,
        l_region: Region,
        fmt: str,
        plane: Plane = DEFAULT_PLANE,
        timings: Timings | None = None,
    ) -> Rendered:
        timings = timings or Timings()
        self._check_output(l_region.size, fmt)
        lvl = slide.level(level)
        if l_region.intersect(Region(0, 0, lvl.size.width, lvl.size.height)) is None:
            raise InvalidRequestError(
                f"region {l_region.x},{l_region.y} {l_region.width}x{l_region.height} lies "
                f"outside the {lvl.size.width}x{lvl.size.height} image of level {level}"
            )
        if fmt == "npy":

            def read() -> bytes:
                with timings.measure("decode"):
                    return _npy(compose.region_pixels(slide, lvl, l_region, plane, self.tiles))

            async with self.budget.hold(2 * l_region.size.area):
                return Rendered(await self.run(read), NPY)
        key = self._key(
            slide,
            "region",
            slide.id,
            level,
            l_region.x,
            l_region.y,
            l_region.width,
            l_region.height,
            plane.focal_plane,
            plane.optical_path,
            fmt,
        )

        def produce() -> Rendered:
            with timings.measure("decode"):
                pixels = compose.region_pixels(slide, lvl, l_region, plane, self.tiles)
            return self._encode(slide, pixels, fmt, timings)

        return await self.cached(key, produce, timings, pixels=2 * l_region.size.area)

    async def render(
        self,
        slide: Slide,
        l0_region: Region,
        out_size: Size,
        fmt: str,
        *,
        key_parts: tuple[KeyPart, ...] = (),
        plane: Plane = DEFAULT_PLANE,
        transform: Callable[[Pixels], Pixels] | None = None,
        timings: Timings | None = None,
    ) -> Rendered:
        """``l0_region`` scaled to ``out_size`` (DZI and IIIF); ``transform`` post-processes
        (rotation, quality) and must be described by ``key_parts``."""
        timings = timings or Timings()
        self._check_output(out_size, fmt)
        key = self.render_key(slide, l0_region, out_size, fmt, key_parts, plane)

        def produce() -> Rendered:
            with timings.measure("decode"):
                pixels = compose.render(
                    slide,
                    l0_region,
                    out_size,
                    plane,
                    self.tiles,
                    max_read_pixels=4 * self.settings.max_output_pixels,
                )
                if transform is not None:
                    pixels = transform(pixels)
            return self._encode(slide, pixels, fmt, timings)

        # What is read may be up to four times the output (the next finer level).
        return await self.cached(key, produce, timings, pixels=5 * out_size.area)

    async def thumbnail(
        self, slide: Slide, max_side: int, fmt: str, timings: Timings | None = None
    ) -> Rendered:
        if max_side <= 0:
            raise InvalidRequestError("max must be positive")
        base = slide.base_level().size
        size = compose.thumbnail_size(base, max_side)
        return await self.render(
            slide,
            Region(0, 0, base.width, base.height),
            size,
            fmt,
            key_parts=("thumbnail",),
            timings=timings,
        )

    async def associated(
        self, slide: Slide, name: str, fmt: str, timings: Timings | None = None
    ) -> Rendered:
        timings = timings or Timings()
        image = slide.associated.get(name)
        whole = image is not None and image.grid.area == 1 and image.size == image.tile_size
        if whole and image is not None and image.media_type == _media_type(fmt):
            encoded = await self.run(slide.read_associated_bytes, name)
            if encoded.media_type == image.media_type:
                return Rendered(encoded.data, encoded.media_type)
        key = self._key(slide, "associated", slide.id, name, fmt)

        def produce() -> Rendered:
            with timings.measure("decode"):
                pixels = compose.associated_pixels(slide, name)
            return self._encode(slide, pixels, fmt, timings)

        return await self.cached(key, produce, timings)

    async def tissue_png(self, slide: Slide) -> bytes:
        """The slide's tissue mask as a PNG, cached, computed once in a worker thread."""
        from tileserver import tissue

        def produce() -> Rendered:
            return Rendered(tissue.compute(slide, self.tiles).png(), "image/png")

        key = make_key(slide.version, "tissue", slide.id, tissue.METHOD)
        return (await self.cached(key, produce)).data

    async def tissue_json(self, slide: Slide, level: Level) -> bytes:
        """The mask's facts and ``level``'s tile flags as JSON, cached like the PNG."""
        from tileserver import tissue

        png = await self.tissue_png(slide)

        def produce() -> Rendered:
            try:
                mask = tissue.TissueMask.from_png(png)
            except (ValueError, KeyError, OSError):  # a foreign cache value: recompute
                mask = tissue.compute(slide, self.tiles)
            return Rendered(tissue.facts_json(mask, level), "application/json")

        key = make_key(slide.version, "tissue-json", slide.id, tissue.METHOD, level.index)
        return (await self.cached(key, produce)).data

    # -- helpers ------------------------------------------------------------------------------

    def _decode_tile(
        self, slide: Slide, level: int, col: int, row: int, plane: Plane, timings: Timings
    ) -> Pixels:
        with timings.measure("decode"):
            return compose.tile_pixels(slide, slide.level(level), col, row, plane, self.tiles)

    def _encode(self, slide: Slide, pixels: Pixels, fmt: str, timings: Timings) -> Rendered:
        from tileserver import codec

        media_type = _media_type(fmt)
        icc = slide.icc_profile
        with timings.measure("encode"):
            if icc is not None and self.settings.convert_to_srgb:
                pixels, icc = codec.to_srgb(pixels, icc), None
            data = codec.encode(pixels, fmt, quality=self.settings.jpeg_quality, icc_profile=icc)
        return Rendered(data, media_type)

    async def cached(
        self,
        key: str,
        produce: Callable[[], Rendered],
        timings: Timings | None = None,
        pixels: int = 0,
    ) -> Rendered:
        """The image cached under ``key``, else ``produce()`` run once (in a worker thread,
        for every concurrent caller) and cached; a production of ``pixels`` (what it holds
        in memory at once, about) waits for room in the render budget."""
        timings = timings or Timings()
        with timings.measure("cache"):
            blob = await self.cache.get(key)
        if blob is not None:
            try:
                media_type, data = unpack(blob)
                return Rendered(data, media_type)
            except ValueError:
                pass  # not our envelope (another release wrote it): a miss

        async def build() -> bytes:
            if pixels > 0:
                async with self.budget.hold(pixels):
                    rendered = await self.run(produce)
            else:
                rendered = await self.run(produce)
            blob = pack(rendered.media_type, rendered.data)
            with timings.measure("cache"):
                await self.cache.set(key, blob)
            return blob

        media_type, data = unpack(await coalesce(key, build))
        return Rendered(data, media_type)

    def render_key(
        self,
        slide: Slide,
        l0_region: Region,
        out_size: Size,
        fmt: str,
        key_parts: tuple[KeyPart, ...] = (),
        plane: Plane = DEFAULT_PLANE,
    ) -> str:
        """The cache key ``render`` stores its result under."""
        r = l0_region
        return self._key(
            slide,
            "render",
            slide.id,
            r.x,
            r.y,
            r.width,
            r.height,
            out_size.width,
            out_size.height,
            plane.focal_plane,
            plane.optical_path,
            fmt,
            *key_parts,
        )

    def cached_in_process(self, key: str) -> Rendered | None:
        """A derived image from the in-process cache tier only (no I/O, no await)."""
        blob = self.cache.get_local(key)
        if blob is None:
            return None
        try:
            media_type, data = unpack(blob)
        except ValueError:
            return None
        return Rendered(data, media_type)

    def _key(self, slide: Slide, *parts: KeyPart) -> str:
        """Cache key of a derived image: slide version, request, and the output settings."""
        settings = self.settings
        return make_key(
            slide.version, *parts, settings.jpeg_quality, settings.convert_to_srgb, _RENDERING
        )

    def _check_output(self, size: Size, fmt: str) -> None:
        """``LimitExceededError`` for an image over the area limit or wider or taller than
        its format can hold (JPEG 65,500 px, WebP 16,383 px a side)."""
        self._check_area(size)
        limit = _MAX_SIDE.get(OUTPUT_FORMATS.get(fmt, ""))
        if limit is not None and max(size.width, size.height) > limit:
            raise LimitExceededError(
                f"{size.width}x{size.height} is more than {fmt} can hold ({limit} px a side); "
                "ask for png or a smaller size"
            )

    def _check_area(self, size: Size) -> None:
        if size.area > self.settings.max_output_pixels:
            raise LimitExceededError(
                f"{size.width}x{size.height} exceeds the limit of "
                f"{self.settings.max_output_pixels} output pixels"
            )


_P = ParamSpec("_P")
_R = TypeVar("_R")
#: Modules ``importing`` has seen fully imported.
_IMPORTED: set[str] = set()


def importing(
    *names: str,
) -> Callable[[Callable[_P, Awaitable[_R]]], Callable[_P, Awaitable[_R]]]:
    """Decorate a coroutine function to import modules ``names`` first, in a worker thread.

    Fronts with heavy dependencies (pydicom, Pillow) import them on first use rather than
    at start-up, in the functions that use them; this makes that first import happen off
    the event loop, which it would otherwise stall for a good fraction of a second. A
    module another thread is still importing counts as not imported: the wait for it is
    in the worker thread too.
    """

    def decorate(function: Callable[_P, Awaitable[_R]]) -> Callable[_P, Awaitable[_R]]:
        @functools.wraps(function)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            missing = [name for name in names if name not in _IMPORTED]
            if missing:
                await to_thread.run_sync(_import_all, missing)
            return await function(*args, **kwargs)

        return wrapper

    return decorate


def _import_all(names: list[str]) -> None:
    for name in names:
        importlib.import_module(name)
        _IMPORTED.add(name)


def _media_type(fmt: str) -> str:
    try:
        return OUTPUT_FORMATS[fmt]
    except KeyError:
        raise InvalidRequestError(
            f"unknown format {fmt!r}; use one of {', '.join(sorted(OUTPUT_FORMATS))}"
        ) from None


def _npy(pixels: Pixels) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(pixels), allow_pickle=False)
    return buf.getvalue()
