"""Tiled TIFF reader: one frame-table lookup and one source read per tile, like DICOM's.

JPEG tiles are spliced with their tables (and an Adobe marker where they are RGB-coded)
and served without decoding; JPEG 2000 codestreams are served as stored; other codings
are inflated to native pixels (``readers/tiffcodec.py``), which the service decodes,
encodes and caches as it does DICOM's non-browser frames.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tileserver.errors import NotFoundError, SlideChangedError, TileAbsentError
from tileserver.formats import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    JP2,
    JPEG,
    JPEG_BASELINE,
    OCTET_STREAM,
    EncodedTile,
)
from tileserver.readers.base import ReaderDefaults, ReaderLevel
from tileserver.readers.coalesce import Span, plan_reads
from tileserver.readers.locator import FRAME_ROW, LocatedFile, LocatedLevel, TileLocator
from tileserver.readers.source import ByteSource, SourceIdentity, open_source
from tileserver.readers.tiff_layout import TiffImage, TiffLayout
from tileserver.readers.tiffcodec import JPEG_2000, encoded, splice

_MEDIA_TYPES = {"jpeg": JPEG, "j2k": JP2, "raw": OCTET_STREAM}
_SYNTAXES = {"jpeg": JPEG_BASELINE, "j2k": JPEG_2000, "raw": EXPLICIT_VR_LITTLE_ENDIAN}


class _Served:
    """One image's lookups, precomputed so a tile read is arithmetic and one read."""

    def __init__(self, image: TiffImage) -> None:
        self.image = image
        self.cols = image.grid.width
        self.rows = image.grid.height
        self.table = np.ascontiguousarray(image.frames).view(np.uint8).data
        self.prefix = image.coding.jpeg_prefix() if image.coding.kind == "jpeg" else None
        self.kind = image.coding.kind
        self.syntax = _SYNTAXES[self.kind]
        self.format = image.coding.pixel_format(image.tile_size.width, image.tile_size.height)
        self.level = ReaderLevel(image.size, image.tile_size, image.stored, _MEDIA_TYPES[self.kind])

    def span(self, col: int, row: int) -> tuple[int, int]:
        """(offset, length) of a tile; ``IndexError`` outside the grid."""
        if not (0 <= col < self.cols and 0 <= row < self.rows):
            raise IndexError(f"tile ({col}, {row}) outside the {self.cols}x{self.rows} grid")
        _, offset, length, _ = FRAME_ROW.unpack_from(
            self.table, (row * self.cols + col) * FRAME_ROW.size
        )
        return offset, length

    def tile(self, data: bytes) -> EncodedTile:
        return encoded(self.image.coding, self.prefix, data, self.format)


class TiffReader(ReaderDefaults):
    """Reads tiles of one tiled TIFF through its ``ByteSource``."""

    def __init__(
        self,
        layout: TiffLayout,
        identity: SourceIdentity,
        on_changed: Callable[[str], None] | None = None,
    ) -> None:
        self.layout = layout
        self._identity = identity
        self._on_changed = on_changed
        self._levels = [_Served(image) for image in layout.levels]
        self._associated = {name: _Served(image) for name, image in layout.associated.items()}
        self._source: ByteSource | None = None
        self._open_lock = threading.Lock()

    @property
    def levels(self) -> Sequence[ReaderLevel]:
        return [served.level for served in self._levels]

    @property
    def associated(self) -> Mapping[str, ReaderLevel]:
        return {name: served.level for name, served in self._associated.items()}

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self.layout.mpp

    @property
    def icc_profile(self) -> bytes | None:
        return self.layout.icc_profile

    @property
    def transfer_syntax(self) -> str | None:
        return self._levels[0].syntax if self._levels else None

    @property
    def size_bytes(self) -> int:
        return self._identity.size

    def read_tile(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile:
        served = self._levels[level]
        offset, length = served.span(col, row)
        if not length:
            raise TileAbsentError(f"tile ({col}, {row}) of level {level} is not stored")
        return served.tile(self._read(offset, length))

    def read_tile_if_cached(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile | None:
        """The stored-tile hot path: JPEG and JPEG 2000 tiles from the page cache (a
        splice at most); tiles to inflate are read in a thread."""
        served = self._levels[level]
        source = self._source
        if source is None or served.kind == "raw":
            return None
        offset, length = served.span(col, row)
        data = source.read_if_cached(offset, length) if length else None
        if data is None:
            return None
        return EncodedTile(splice(served.prefix, data), served.syntax, served.format)

    def read_tiles(
        self, level: int, tiles: Sequence[tuple[int, int]], focal_plane: int, optical_path: int
    ) -> list[EncodedTile | None]:
        """Stored tiles of each ``(col, row)`` (None: not stored), nearby ones in one read."""
        served = self._levels[level]
        wanted = [(index, served.span(col, row)) for index, (col, row) in enumerate(tiles)]
        wanted = [(index, span) for index, span in wanted if span[1]]
        spans = [Span(0, offset, length) for _, (offset, length) in wanted]
        out: list[EncodedTile | None] = [None] * len(tiles)
        for run in plan_reads(spans):
            data = self._read(run.offset, run.length)
            for member in run.members:
                span = spans[member]
                part = data[span.offset - run.offset : span.end - run.offset]
                out[wanted[member][0]] = served.tile(part)
        return out

    def read_associated(self, name: str, col: int = 0, row: int = 0) -> EncodedTile:
        served = self._associated.get(name)
        if served is None:
            raise NotFoundError(f"no {name} image")
        offset, length = served.span(col, row)
        if not length:
            raise TileAbsentError(f"strip {row} of the {name} image is not stored")
        return served.tile(self._read(offset, length))

    def tile_locator(self, version: str, series: Sequence[SourceIdentity]) -> TileLocator | None:
        """Levels whose tiles are served as stored (JPEG without tables or Adobe marker to
        add, JPEG 2000); the others are left to the full reader (an empty level)."""
        levels = []
        for served in self._levels:
            if served.kind == "raw" or served.prefix is not None:
                levels.append(LocatedLevel(0, 0, b""))
            else:
                levels.append(LocatedLevel(served.cols, served.rows, bytes(served.table)))
        if not any(level.cols for level in levels):
            return None
        media_type = next(
            s.level.media_type for s in self._levels if s.kind != "raw" and s.prefix is None
        )
        if any(
            s.level.media_type != media_type
            for s, lv in zip(self._levels, levels, strict=True)
            if lv.cols
        ):
            return None  # one file, one media type in a locator
        return TileLocator(version, series, [LocatedFile(self._identity, media_type)], levels)

    def changed_sources(self) -> list[str]:
        return [self._identity.uri] if self._open().changed() else []

    def close(self) -> None:
        """Close the source now; only for owners sure no read is in flight."""
        with self._open_lock:
            if self._source is not None:
                self._source.close()
                self._source = None

    def _read(self, offset: int, length: int) -> bytes:
        try:
            return self._open().read(offset, length)
        except SlideChangedError:
            if self._on_changed is not None:
                self._on_changed(self._identity.uri)
            raise

    def _open(self) -> ByteSource:
        source = self._source
        if source is None:
            with self._open_lock:
                source = self._source
                if source is None:
                    source = self._source = open_source(self._identity)
        return source
