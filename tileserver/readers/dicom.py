"""DICOM WSI backend: two array lookups and one ``os.pread`` per tile.

``os.pread`` takes the offset with each call, so threads share file descriptors without a
shared cursor or a lock around reads.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tileserver.dicom.pixeldata import strip_item_headers
from tileserver.dicom.series import LEVEL_FRAME_DTYPE, FrameGrid, SeriesLayout
from tileserver.errors import CorruptSlideError, NotFoundError, TileAbsentError
from tileserver.formats import EncodedTile, transfer_syntax
from tileserver.readers.base import ReaderLevel
from tileserver.readers.locator import Identity, LocatedFile, LocatedLevel, TileLocator
from tileserver.readers.pageread import FRAME_ROW, close_all, nowait_available, read_nowait

assert FRAME_ROW.size == LEVEL_FRAME_DTYPE.itemsize


class DicomReader:
    """Reads tiles of one assembled DICOM series."""

    def __init__(
        self, layout: SeriesLayout, on_changed: Callable[[str], None] | None = None
    ) -> None:
        self.layout = layout
        #: (size, mtime_ns) each file had when indexed; a read checks it still does.
        self._identity = {i.path: (i.file_size, i.mtime_ns) for i in layout.instances}
        self._on_changed = on_changed
        self._levels = [ReaderLevel(g.size, g.tile_size, len(g.frames)) for g in layout.levels]
        self._associated = {
            n: ReaderLevel(g.size, g.tile_size, len(g.frames)) for n, g in layout.associated.items()
        }
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
        self._fds: dict[str, int] = {}
        self._open_lock = threading.Lock()
        # Descriptors close when the last reference goes, never under an in-flight read
        # (a closed descriptor number can be reused by another file).
        weakref.finalize(self, close_all, self._fds)

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
        return sum(i.file_size for i in self.layout.instances)

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

    def read_frame(self, grid: FrameGrid, frame: int) -> EncodedTile:
        """Bytes of one frame by its number within ``grid``, one of this layout's grids."""
        return self._read_frame(grid, frame)

    def read_instance_frame(self, sop_instance_uid: str, number: int) -> EncodedTile:
        """Frame ``number`` (1-based, as in DICOM) of one instance, stored bytes joined."""
        for grid in (*self.layout.levels, *self.layout.associated.values()):
            for file_index, header in enumerate(grid.headers):
                if header.sop_instance_uid != sop_instance_uid:
                    continue
                first = int(np.searchsorted(grid.frames["file"], file_index))
                count = int(np.count_nonzero(grid.frames["file"] == file_index))
                if not 1 <= number <= count:
                    raise NotFoundError(f"frame {number} outside 1..{count}")
                return self._read_frame(grid, first + number - 1)
        raise NotFoundError(f"no instance {sop_instance_uid} in this series")

    def read_tile_if_cached(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile | None:
        """The tile when its bytes are in the page cache (``RWF_NOWAIT``: never waits on the
        disk, so an event loop may call it), else None: read it in a thread instead.

        The stored-tile hot path: a tile-map and a frame-row lookup on memoryviews (no
        numpy scalars, which cost microseconds each under load: "CPU per stored tile" in
        docs/benchmarks.md), an ``fstat`` and one read. Addresses must be checked by the
        caller; out of range raises ``IndexError``, a missing optical path ``NotFoundError``.
        """
        if not nowait_available():
            return None
        frame = self.frame_number(level, col, row, focal_plane, optical_path)
        if frame is None:
            return None
        grid = self.layout.levels[level]
        file_index, offset, length, fragments = self._row(grid, frame)
        file = grid.files[file_index]
        fd = self._fds.get(file)
        if fd is None or fragments > 1:
            return None  # opening may wait on the disk; fragments are joined in a thread
        try:
            self._check_unchanged(fd, file)
            data = read_nowait(fd, length, offset)
        except BlockingIOError:
            return None
        except OSError:
            return None  # the thread read reports it
        header = grid.headers[file_index]
        return EncodedTile(data, header.transfer_syntax, header.pixel_format)

    def tile_locator(self, version: str, series: Sequence[Identity]) -> TileLocator:
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
                    size, mtime_ns = self._identity[name]
                    media_type = transfer_syntax(header.transfer_syntax).media_type
                    located.append(LocatedFile(name, size, mtime_ns, media_type))
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

    def _read_frame(self, grid: FrameGrid, frame: int) -> EncodedTile:
        file_index, offset, length, fragments = self._row(grid, frame)
        path = grid.files[file_index]
        try:
            fd = self._fd(path)
            self._check_unchanged(fd, path)
            if fragments > 1:
                # The span starts 8 bytes early so the first item header is included.
                span = os.pread(fd, length + 8, offset - 8)
                data = strip_item_headers(span) if len(span) == length + 8 else b""
            else:
                data = os.pread(fd, length, offset)
                if len(data) != length:
                    data = b""
        except OSError as exc:
            raise CorruptSlideError(f"{grid.files[file_index]}: {exc.strerror or exc}") from exc
        if not data:
            raise CorruptSlideError(f"{grid.files[file_index]} is shorter than its index")
        header = grid.headers[file_index]
        return EncodedTile(data, header.transfer_syntax, header.pixel_format)

    def changed_files(self) -> list[str]:
        """Files whose size or mtime differ from when they were indexed, or that are gone
        (an ``fstat`` of open descriptors, a ``stat`` of the others: no reads)."""
        with self._open_lock:
            opened = dict(self._fds)
        changed = []
        for path, identity in self._identity.items():
            try:
                stat = os.fstat(opened[path]) if path in opened else os.stat(path)
            except OSError:
                changed.append(path)
                continue
            if (stat.st_size, stat.st_mtime_ns) != identity:
                changed.append(path)
        return changed

    def file_descriptor(self, path: str) -> int:
        """A shared read-only descriptor of one of the series' files (``os.pread`` only;
        never close it), after checking the file is still as indexed.

        ``CorruptSlideError`` when it changed (``on_changed`` is told) or cannot be opened.
        """
        try:
            fd = self._fd(path)
            self._check_unchanged(fd, path)
        except OSError as exc:
            raise CorruptSlideError(f"{path}: {exc.strerror or exc}") from exc
        return fd

    def _check_unchanged(self, fd: int, path: str) -> None:
        """Offsets are only valid for the file as indexed: refuse to read a rewritten one."""
        stat = os.fstat(fd)
        if (stat.st_size, stat.st_mtime_ns) != self._identity.get(path, (-1, -1)):
            if self._on_changed is not None:
                self._on_changed(path)
            raise CorruptSlideError(f"{path} changed since it was indexed; re-indexing")

    def _fd(self, path: str) -> int:
        fd = self._fds.get(path)
        if fd is None:
            with self._open_lock:
                fd = self._fds.get(path)
                if fd is None:
                    fd = self._fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def close(self) -> None:
        """Close descriptors now; only for owners sure no read is in flight."""
        with self._open_lock:
            close_all(self._fds)


def _plane_map(slide_planes: Sequence[float], level_planes: Sequence[float]) -> list[int]:
    """For each slide focal plane, the level's plane nearest in z."""
    ours = np.asarray(level_planes, dtype=np.float64)
    return [int(np.argmin(np.abs(ours - z))) for z in slide_planes] or [0]


def _path_map(slide_paths: Sequence[str], level_paths: Sequence[str]) -> list[int]:
    """For each slide optical path, its index in the level (-1 when the level lacks it)."""
    return [level_paths.index(p) if p in level_paths else -1 for p in slide_paths] or [0]
