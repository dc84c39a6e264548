"""DICOM WSI reader: two array lookups and one source read per tile.

Reads go through each file's ``ByteSource`` (``readers/source.py``), which takes the offset
with every read, so threads share sources without a cursor or a lock around reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tileserver.dicom.pixeldata import strip_item_headers
from tileserver.dicom.series import LEVEL_FRAME_DTYPE, FrameGrid, SeriesLayout
from tileserver.errors import NotFoundError, SlideChangedError, TileAbsentError
from tileserver.formats import EncodedTile, transfer_syntax
from tileserver.geometry import Size
from tileserver.readers.base import ReaderLevel
from tileserver.readers.coalesce import Span, plan_reads
from tileserver.readers.locator import FRAME_ROW, LocatedFile, LocatedLevel, TileLocator
from tileserver.readers.source import ByteSource, SourceIdentity, local_identity, open_source

assert FRAME_ROW.size == LEVEL_FRAME_DTYPE.itemsize


class DicomReader:
    """Reads tiles of one assembled DICOM series."""

    def __init__(
        self,
        layout: SeriesLayout,
        identities: Mapping[str, SourceIdentity] | None = None,
        on_changed: Callable[[str], None] | None = None,
    ) -> None:
        """``identities``: each file's source as indexed (a read checks it still is);
        without them, local files as they are now."""
        self.layout = layout
        if identities is None:
            identities = {i.path: local_identity(i.path) for i in layout.instances}
        self._identity = {i.path: identities[i.path] for i in layout.instances}
        self._on_changed = on_changed
        self._levels = [_reader_level(g) for g in layout.levels]
        self._associated = {n: _reader_level(g) for n, g in layout.associated.items()}
        # Plane and path indexes are the slide's (level 0's); each level maps them by value.
        self._planes = [_plane_map(self.focal_planes, g.focal_planes) for g in layout.levels]
        self._paths = [_path_map(self.optical_paths, g.optical_paths) for g in layout.levels]
        # The tables as memoryviews, read as Python ints: a numpy scalar lookup costs a few
        # microseconds per tile under load, more than the rest of a stored-tile read.
        self._tile_maps = [np.ascontiguousarray(g.tile_map).data for g in layout.levels]
        self._rows = {
            id(g): np.ascontiguousarray(g.frames).view(np.uint8).data
            for g in (*layout.levels, *layout.associated.values())
        }
        self._sources: dict[str, ByteSource] = {}
        self._open_lock = threading.Lock()

    @property
    def levels(self) -> Sequence[ReaderLevel]:
        return self._levels

    @property
    def associated(self) -> Mapping[str, ReaderLevel]:
        return self._associated

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self.layout.levels[0].headers[0].mpp if self.layout.levels else None

    @property
    def focal_planes(self) -> Sequence[float]:
        return self.layout.levels[0].focal_planes if self.layout.levels else (0.0,)

    @property
    def optical_paths(self) -> Sequence[str]:
        return self.layout.levels[0].optical_paths if self.layout.levels else ()

    @property
    def icc_profile(self) -> bytes | None:
        return next(
            (i.header.icc_profile for i in self.layout.instances if i.header.icc_profile), None
        )

    @property
    def transfer_syntax(self) -> str | None:
        levels = self.layout.levels
        return levels[0].headers[0].transfer_syntax if levels else None

    @property
    def size_bytes(self) -> int:
        return sum(i.size for i in self._identity.values())

    def read_tile(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile:
        frame = self.frame_number(level, col, row, focal_plane, optical_path)
        if frame is None:
            raise TileAbsentError(f"tile ({col}, {row}) of level {level} is not stored")
        return self._read_frame(self.layout.levels[level], frame)

    def frame_number(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> int | None:
        """Frame of a tile within ``layout.levels[level]`` (None: an absent sparse tile).

        ``focal_plane`` and ``optical_path`` are the slide's indexes, mapped to the
        level's own by value; ``NotFoundError`` when the level lacks the optical path.
        """
        path = self._paths[level][optical_path]
        if path < 0:
            raise NotFoundError(f"level {level} has no optical path {optical_path}")
        plane = self._planes[level][focal_plane]
        frame: int = self._tile_maps[level][path, plane, row, col]
        return frame if frame >= 0 else None

    def read_associated(self, name: str, col: int = 0, row: int = 0) -> EncodedTile:
        grid = self.layout.associated.get(name)
        if grid is None:
            raise NotFoundError(f"no {name} image")
        frame = int(grid.tile_map[0, 0, row, col])
        if frame < 0:
            raise TileAbsentError(f"tile ({col}, {row}) of the {name} image is not stored")
        return self._read_frame(grid, frame)

    def read_tile_if_cached(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile | None:
        """The tile when its source can answer without waiting (a local file's page
        cache), else None: read it in a thread instead.

        The stored-tile hot path: a tile-map and a frame-row lookup on memoryviews (no
        numpy scalars, which cost microseconds each under load: "CPU per stored tile" in
        docs/benchmarks.md) and one ``read_if_cached``. Addresses must be checked by the
        caller; out of range raises ``IndexError``, a missing optical path ``NotFoundError``.
        """
        frame = self.frame_number(level, col, row, focal_plane, optical_path)
        if frame is None:
            return None
        grid = self.layout.levels[level]
        file_index, offset, length, fragments = self._row(grid, frame)
        source = self._sources.get(grid.files[file_index])
        if source is None or fragments > 1:
            return None  # opening may wait; fragments are joined in a thread
        data = source.read_if_cached(offset, length)
        if data is None:
            return None
        header = grid.headers[file_index]
        return EncodedTile(data, header.transfer_syntax, header.pixel_format)

    def tile_locator(self, version: str, series: Sequence[SourceIdentity]) -> TileLocator:
        """The stored tiles of the slide's first focal plane and optical path, for the
        catalog (``readers/locator.py``); a level without that optical path is empty.
        ``series``: the files ``version`` was made from."""
        files: dict[str, int] = {}
        located: list[LocatedFile] = []
        levels = []
        for number, grid in enumerate(self.layout.levels):
            path, plane = self._paths[number][0], self._planes[number][0]
            if path < 0:
                levels.append(LocatedLevel(0, 0, b""))
                continue
            for name, header in zip(grid.files, grid.headers, strict=True):
                if name not in files:
                    files[name] = len(located)
                    media_type = transfer_syntax(header.transfer_syntax).media_type
                    located.append(LocatedFile(self._identity[name], media_type))
            numbers = np.asarray([files[name] for name in grid.files], dtype=np.uint16)
            frames = grid.tile_map[path, plane]
            table = grid.frames[np.maximum(frames, 0)]  # a copy: rows in tile order
            table["file"] = numbers[table["file"]]
            table["length"][frames < 0] = 0
            levels.append(LocatedLevel(frames.shape[1], frames.shape[0], table.tobytes()))
        return TileLocator(version, series, located, levels)

    def _row(self, grid: FrameGrid, frame: int) -> tuple[int, int, int, int]:
        """(file index, offset, length, fragments) of a frame of one of this layout's grids."""
        row: tuple[int, int, int, int] = FRAME_ROW.unpack_from(
            self._rows[id(grid)], frame * FRAME_ROW.size
        )
        return row

    def read_frame(self, grid: FrameGrid, frame: int) -> EncodedTile:
        """Bytes of one frame by its number within ``grid``, one of this layout's grids."""
        return self._read_frame(grid, frame)

    def _read_frame(self, grid: FrameGrid, frame: int) -> EncodedTile:
        file_index, offset, length, fragments = self._row(grid, frame)
        path = grid.files[file_index]
        if fragments > 1:
            # The span starts 8 bytes early so the first item header is included.
            data = strip_item_headers(self._read(path, offset - 8, length + 8))
        else:
            data = self._read(path, offset, length)
        header = grid.headers[file_index]
        return EncodedTile(data, header.transfer_syntax, header.pixel_format)

    def read_tiles(
        self, level: int, tiles: Sequence[tuple[int, int]], focal_plane: int, optical_path: int
    ) -> list[EncodedTile | None]:
        """Stored bytes of each ``(col, row)`` (None: absent), adjacent frames in one read
        (``readers/coalesce.py``). Addresses must be valid (checked by the caller)."""
        grid = self.layout.levels[level]
        stored = [
            (index, frame)
            for index, (col, row) in enumerate(tiles)
            if (frame := self.frame_number(level, col, row, focal_plane, optical_path)) is not None
        ]
        spans = [_frame_span(*self._row(grid, frame)) for _, frame in stored]
        out: list[EncodedTile | None] = [None] * len(tiles)
        for run in plan_reads(spans):
            data = self._read(grid.files[run.file], run.offset, run.length)
            header = grid.headers[run.file]
            for member in run.members:
                span, fragments = spans[member], self._row(grid, stored[member][1])[3]
                part = data[span.offset - run.offset : span.end - run.offset]
                payload = strip_item_headers(part) if fragments > 1 else part
                out[stored[member][0]] = EncodedTile(
                    payload, header.transfer_syntax, header.pixel_format
                )
        return out

    def check_plane(self, level: int, focal_plane: int, optical_path: int) -> None:
        self.frame_number(level, 0, 0, focal_plane, optical_path)

    def instance_frames(self, sop_instance_uid: str) -> DicomInstanceFrames:
        for number, grid in enumerate((*self.layout.levels, *self.layout.associated.values())):
            for file_index, header in enumerate(grid.headers):
                if header.sop_instance_uid == sop_instance_uid:
                    files = grid.frames["file"]
                    first = int(np.searchsorted(files, file_index))
                    count = int(np.searchsorted(files, file_index, side="right")) - first
                    level = number if number < len(self.layout.levels) else None
                    name = next((n for n, g in self.layout.associated.items() if g is grid), None)
                    return DicomInstanceFrames(self, grid, first, count, level, name)
        raise NotFoundError(
            f"instance {sop_instance_uid} is not part of its series' pyramid (see validation)"
        )

    def changed_sources(self) -> list[str]:
        """Files whose identity differs from when they were indexed, or that are gone
        (no reads)."""
        return [path for path in self._identity if self._source(path).changed()]

    def _read(self, path: str, offset: int, length: int) -> bytes:
        try:
            return self._source(path).read(offset, length)
        except SlideChangedError:
            if self._on_changed is not None:
                self._on_changed(path)
            raise

    def _source(self, path: str) -> ByteSource:
        source = self._sources.get(path)
        if source is None:
            with self._open_lock:
                source = self._sources.get(path)
                if source is None:
                    source = self._sources[path] = open_source(self._identity[path])
        return source

    def close(self) -> None:
        """Close sources now; only for owners sure no read is in flight."""
        with self._open_lock:
            for source in self._sources.values():
                source.close()
            self._sources.clear()


@dataclass(frozen=True)
class DicomInstanceFrames:
    """One instance's frames: ``count`` consecutive frames of ``grid`` from ``first``."""

    reader: DicomReader
    grid: FrameGrid
    first: int
    count: int
    level_index: int | None
    associated: str | None

    @property
    def size(self) -> Size:
        return self.grid.size

    def read(self, number: int) -> EncodedTile:
        if not 1 <= number <= self.count:
            raise NotFoundError(f"frame {number} outside 1..{self.count}")
        return self.reader._read_frame(self.grid, self.first + number - 1)


def _reader_level(grid: FrameGrid) -> ReaderLevel:
    media_type = transfer_syntax(grid.headers[0].transfer_syntax).media_type
    return ReaderLevel(grid.size, grid.tile_size, len(grid.frames), media_type)


def _frame_span(file_index: int, offset: int, length: int, fragments: int) -> Span:
    if fragments > 1:
        # Item headers between fragments are inside the span; include the first one too.
        return Span(file_index, offset - 8, length + 8)
    return Span(file_index, offset, length)


def _plane_map(slide_planes: Sequence[float], level_planes: Sequence[float]) -> list[int]:
    """For each slide focal plane, the level's plane nearest in z."""
    ours = np.asarray(level_planes, dtype=np.float64)
    return [int(np.argmin(np.abs(ours - z))) for z in slide_planes] or [0]


def _path_map(slide_paths: Sequence[str], level_paths: Sequence[str]) -> list[int]:
    """For each slide optical path, its index in the level (-1 when the level lacks it)."""
    return [level_paths.index(p) if p in level_paths else -1 for p in slide_paths] or [0]
