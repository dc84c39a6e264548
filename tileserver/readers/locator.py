"""Where a slide's stored tiles lie, as a value persisted in the catalog and read back with
the standard library alone: the early tile path (``http/early.py``) serves stored tiles
from it while the rest of the app (numpy, Pillow, pydicom, Starlette) is still loading.

A locator belongs to one version of a slide: it lists the identity of every source of the
slide the version was made from, so a reader can tell, without hashing, whether the catalog
still describes the same sources. It covers the slide's first focal plane and optical path,
what a tile URL without a query asks for: per level, the grid and one packed frame row per
tile, row-major (``FRAME_ROW``; length 0 for a tile not stored), whose file indexes point
into one list of sources, each with its identity and its frames' media type. Reads go
through the sources' own ``ByteSource`` (``readers/source.py``).
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from tileserver.errors import SlideError
from tileserver.readers.source import ByteSource, SourceIdentity, open_source

#: One frame row, as the DICOM reader's frame tables pack it: file index, offset, length,
#: fragments.
FRAME_ROW = struct.Struct("<HQQI")
#: Changes with what ``encode`` writes.
FORMAT = 2


@dataclass(frozen=True)
class LocatedFile:
    identity: SourceIdentity
    media_type: str


@dataclass(frozen=True)
class LocatedLevel:
    cols: int
    rows: int
    table: bytes  # cols * rows packed FRAME_ROWs


def _identity(fields: Sequence[object]) -> SourceIdentity:
    uri, size, tag = fields
    return SourceIdentity(str(uri), int(size), str(tag))  # type: ignore[call-overload]


class TileLocator:
    """One slide version's stored tiles: (level, col, row) to source, offset and length."""

    def __init__(
        self,
        version: str,
        series: Sequence[SourceIdentity],
        files: Sequence[LocatedFile],
        levels: Sequence[LocatedLevel],
    ) -> None:
        for level in levels:
            if len(level.table) != level.cols * level.rows * FRAME_ROW.size:
                raise ValueError("a level's table does not match its grid")
        self.version = version
        self.series = sorted(series)  # every source the version was made from
        self.files = list(files)
        self.levels = list(levels)
        self._sources: dict[int, ByteSource] = {}
        self._lock = threading.Lock()

    def encode(self) -> tuple[bytes, bytes]:
        """(JSON description, the levels' tables back to back): two catalog columns."""
        meta = {
            "format": FORMAT,
            "version": self.version,
            "series": [_fields(i) for i in self.series],
            "files": [[*_fields(f.identity), f.media_type] for f in self.files],
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
            files = [LocatedFile(_identity(f[:3]), str(f[3])) for f in fields["files"]]
            levels, start = [], 0
            for cols, rows in fields["levels"]:
                end = start + int(cols) * int(rows) * FRAME_ROW.size
                levels.append(LocatedLevel(int(cols), int(rows), tables[start:end]))
                start = end
            version = str(fields["version"])
            series = [_identity(i) for i in fields["series"]]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
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
        """A stored tile's bytes and media type, from its source as indexed; None when the
        locator has no such tile or the source changed since (blocking: call it in a
        thread)."""
        found = self.span(level, col, row)
        if found is None:
            return None
        file, offset, length = found
        try:
            data = self._source(file).read(offset, length)
        except SlideError:
            return None  # changed or short: the full app reports it
        return data, self.files[file].media_type

    def _source(self, file: int) -> ByteSource:
        with self._lock:
            source = self._sources.get(file)
            if source is None:
                source = self._sources[file] = open_source(self.files[file].identity)
            return source


def _fields(identity: SourceIdentity) -> list[object]:
    return [identity.uri, identity.size, identity.tag]
