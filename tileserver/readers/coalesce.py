"""Many tiles in few reads: a pure plan that merges nearby frame byte ranges, and its I/O.

``plan_reads`` sorts the frames' byte spans by (file, offset) and merges a span into the
current run when it starts less than ``max_gap`` bytes after the run's end, so one
``os.pread`` returns a run of adjacent frames (the gap bytes are read and dropped: on any
disk, 64 KiB more in the same request is cheaper than a second request). Runs are capped
at ``max_run`` bytes to bound the memory one read holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from tileserver.dicom.pixeldata import strip_item_headers
from tileserver.dicom.series import FrameGrid
from tileserver.errors import CorruptSlideError, TileAbsentError
from tileserver.formats import EncodedTile
from tileserver.readers.dicom import DicomReader
from tileserver.slide import Slide

MAX_GAP = 64 * 1024
MAX_RUN = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes of one frame: file index (within its level), offset and length."""

    file: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class ReadRun:
    """One read covering the spans ``members`` (indexes into the planned sequence)."""

    file: int
    offset: int
    length: int
    members: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.offset + self.length


def plan_reads(
    spans: Sequence[Span], max_gap: int = MAX_GAP, max_run: int = MAX_RUN
) -> list[ReadRun]:
    """Group ``spans`` into reads; spans less than ``max_gap`` apart share one read."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i].file, spans[i].offset))
    runs: list[ReadRun] = []
    for i in order:
        span = spans[i]
        last = runs[-1] if runs else None
        if (
            last is not None
            and last.file == span.file
            and span.offset - last.end < max_gap
            and max(last.end, span.end) - last.offset <= max_run
        ):
            end = max(last.end, span.end)
            runs[-1] = ReadRun(last.file, last.offset, end - last.offset, (*last.members, i))
        else:
            runs.append(ReadRun(span.file, span.offset, span.length, (i,)))
    return runs


def read_tiles(
    slide: Slide,
    level: int,
    tiles: Sequence[tuple[int, int]],
    focal_plane: int = 0,
    optical_path: int = 0,
) -> list[EncodedTile | None]:
    """Stored bytes of each ``(col, row)`` of one level (None: absent sparse tile).

    Addresses must be valid (checked by the caller); plane indexes are the slide's, mapped
    per level as single-tile reads map them. DICOM slides read through ``plan_reads`` on
    the reader's descriptors, each checked to be unchanged since indexing; other readers
    fall back to one read per tile.
    """
    reader = slide.reader
    if not isinstance(reader, DicomReader):
        return [_read_one(slide, level, c, r, focal_plane, optical_path) for c, r in tiles]
    grid = reader.layout.levels[level]
    stored = [
        (index, frame)
        for index, (col, row) in enumerate(tiles)
        if (frame := reader.frame_number(level, col, row, focal_plane, optical_path)) is not None
    ]
    spans = [_frame_span(grid.frames[frame]) for _, frame in stored]
    out: list[EncodedTile | None] = [None] * len(tiles)
    for run in plan_reads(spans):
        path = grid.files[run.file]
        fd = reader.file_descriptor(path)  # raises for a file rewritten since indexing
        try:
            data = os.pread(fd, run.length, run.offset)
        except OSError as exc:
            raise CorruptSlideError(f"{path}: {exc.strerror or exc}") from exc
        _place(out, data, run, spans, stored, grid)
    return out


def check_plane(slide: Slide, level: int, focal_plane: int, optical_path: int) -> None:
    """``NotFoundError`` when ``level`` lacks the slide's optical path ``optical_path``
    (a DICOM level may hold fewer paths than level 0)."""
    if isinstance(slide.reader, DicomReader):
        slide.reader.frame_number(level, 0, 0, focal_plane, optical_path)


def _place(
    out: list[EncodedTile | None],
    data: bytes,
    run: ReadRun,
    spans: Sequence[Span],
    stored: Sequence[tuple[int, int]],
    grid: FrameGrid,
) -> None:
    header = grid.headers[run.file]
    for member in run.members:
        index, frame = stored[member]
        fragments = int(grid.frames[frame]["fragments"])
        payload = _slice(data, run, spans[member], fragments, grid.files[run.file])
        out[index] = EncodedTile(payload, header.transfer_syntax, header.pixel_format)


def _frame_span(row: object) -> Span:
    file_index, offset, length, fragments = row.tolist()  # type: ignore[attr-defined]
    if fragments > 1:
        # Item headers between fragments are inside the span; include the first one too.
        return Span(int(file_index), int(offset) - 8, int(length) + 8)
    return Span(int(file_index), int(offset), int(length))


def _slice(data: bytes, run: ReadRun, span: Span, fragments: int, path: str) -> bytes:
    start = span.offset - run.offset
    part = data[start : start + span.length]
    if len(part) != span.length:
        raise CorruptSlideError(f"{path} is shorter than its index")
    return strip_item_headers(part) if fragments > 1 else part


def _read_one(
    slide: Slide, level: int, col: int, row: int, focal_plane: int, optical_path: int
) -> EncodedTile | None:
    try:
        return slide.read_tile_bytes(level, col, row, focal_plane, optical_path)
    except TileAbsentError:
        return None
