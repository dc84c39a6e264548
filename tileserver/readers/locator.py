"""Where a slide's stored tiles lie, as a value persisted in the catalog and read back with
the standard library alone: the early tile path (``http/early.py``) serves stored tiles
from it while the rest of the app (numpy, Pillow, pydicom, Starlette) is still loading.

A locator belongs to one version of a slide: it lists the identity (path, size, mtime_ns) of
every file of the series the version was made from, so a reader can tell, without hashing,
whether the catalog still describes the same files. It covers the slide's first focal plane
and optical path, what a tile URL without a query asks for: per level, the grid and one
packed frame row per tile, row-major (``FRAME_ROW``; length 0 for a tile not stored), whose
file indexes point into one list of files, each with the identity it had when indexed and
its frames' media type.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from tileserver.readers.pageread import FRAME_ROW, close_all

#: Changes with what ``encode`` writes.
FORMAT = 1
#: A file's (path, size, mtime_ns): what a slide's version is made from.
Identity = tuple[str, int, int]


@dataclass(frozen=True)
class LocatedFile:
    path: str
    size: int
    mtime_ns: int
    media_type: str


@dataclass(frozen=True)
class LocatedLevel:
    cols: int
    rows: int
    table: bytes  # cols * rows packed FRAME_ROWs


class TileLocator:
    """One slide version's stored tiles: (level, col, row) to file, offset and length."""

    def __init__(
        self,
        version: str,
        series: Sequence[Identity],
        files: Sequence[LocatedFile],
        levels: Sequence[LocatedLevel],
    ) -> None:
        for level in levels:
            if len(level.table) != level.cols * level.rows * FRAME_ROW.size:
                raise ValueError("a level's table does not match its grid")
        self.version = version
        self.series = sorted(series)  # every file of the series the version was made from
        self.files = list(files)
        self.levels = list(levels)
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        # Descriptors close when the last reference goes, never under an in-flight read.
        weakref.finalize(self, close_all, self._fds)

    def encode(self) -> tuple[bytes, bytes]:
        """(JSON description, the levels' tables back to back): two catalog columns."""
        meta = {
            "format": FORMAT,
            "version": self.version,
            "series": [list(identity) for identity in self.series],
            "files": [[f.path, f.size, f.mtime_ns, f.media_type] for f in self.files],
            "levels": [[level.cols, level.rows] for level in self.levels],
        }
        return json.dumps(meta).encode(), b"".join(level.table for level in self.levels)

    @classmethod
    def decode(cls, meta: bytes, tables: bytes) -> TileLocator:
        """``encode``'s inverse; ``ValueError`` for anything that does not fit."""
        try:
            fields = json.loads(meta)
            if fields["format"] != FORMAT:
                raise ValueError(f"format {fields['format']}, not {FORMAT}")
            files = [LocatedFile(str(p), int(s), int(m), str(t)) for p, s, m, t in fields["files"]]
            levels, start = [], 0
            for cols, rows in fields["levels"]:
                end = start + int(cols) * int(rows) * FRAME_ROW.size
                levels.append(LocatedLevel(int(cols), int(rows), tables[start:end]))
                start = end
            version = str(fields["version"])
            series = [(str(p), int(s), int(m)) for p, s, m in fields["series"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a tile locator: {exc}") from exc
        if start != len(tables):
            raise ValueError("tile locator tables do not match its levels")
        return cls(version, series, files, levels)

    def span(self, level: int, col: int, row: int) -> tuple[int, int, int] | None:
        """(file index, offset, length) of a stored tile; None outside the grid, for a tile
        not stored, or for a frame in several fragments (joined by the full reader)."""
        if not 0 <= level < len(self.levels):
            return None
        grid = self.levels[level]
        if not (0 <= col < grid.cols and 0 <= row < grid.rows):
            return None
        file, offset, length, fragments = FRAME_ROW.unpack_from(
            grid.table, (row * grid.cols + col) * FRAME_ROW.size
        )
        if length == 0 or fragments > 1 or file >= len(self.files):
            return None
        return file, offset, length

    def read(self, level: int, col: int, row: int) -> tuple[bytes, str] | None:
        """A stored tile's bytes and media type, from its file as indexed; None when the
        locator has no such tile or the file changed since (blocking: call it in a thread)."""
        found = self.span(level, col, row)
        if found is None:
            return None
        file, offset, length = found
        located = self.files[file]
        try:
            fd = self._fd(file)
            stat = os.fstat(fd)
            if (stat.st_size, stat.st_mtime_ns) != (located.size, located.mtime_ns):
                return None
            data = os.pread(fd, length, offset)
        except OSError:
            return None  # the full app reports it
        return (data, located.media_type) if len(data) == length else None

    def _fd(self, file: int) -> int:
        with self._lock:
            fd = self._fds.get(file)
            if fd is None:
                fd = self._fds[file] = os.open(self.files[file].path, os.O_RDONLY)
            return fd
