"""The coalescing read plan (pure) and coalesced reads against the per-tile reader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from slidefiles import open_fixture

from fixtures import FixtureSet
from tileserver.errors import CorruptSlideError, TileAbsentError
from tileserver.readers.coalesce import MAX_GAP, ReadRun, Span, plan_reads
from tileserver.slide import Slide


def test_contiguous_spans_share_one_read() -> None:
    spans = [Span(0, 100, 50), Span(0, 150, 30), Span(0, 180, 20)]
    assert plan_reads(spans) == [ReadRun(0, 100, 100, (0, 1, 2))]


def test_spans_are_sorted_by_offset_and_members_keep_request_indexes() -> None:
    spans = [Span(0, 300, 10), Span(0, 100, 10), Span(0, 200, 10)]
    (run,) = plan_reads(spans)
    assert (run.offset, run.length, run.members) == (100, 210, (1, 2, 0))


def test_a_gap_below_the_limit_is_read_through() -> None:
    spans = [Span(0, 0, 10), Span(0, 10 + MAX_GAP - 1, 10)]
    assert len(plan_reads(spans)) == 1


def test_a_gap_at_the_limit_splits_the_read() -> None:
    spans = [Span(0, 0, 10), Span(0, 10 + MAX_GAP, 10)]
    assert [r.members for r in plan_reads(spans)] == [(0,), (1,)]


def test_different_files_never_share_a_read() -> None:
    spans = [Span(0, 0, 10), Span(1, 10, 10), Span(0, 20, 10)]
    assert [(r.file, r.members) for r in plan_reads(spans)] == [(0, (0, 2)), (1, (1,))]


def test_runs_are_capped_in_length() -> None:
    spans = [Span(0, i * 100, 100) for i in range(10)]
    runs = plan_reads(spans, max_run=300)
    assert [r.length for r in runs] == [300, 300, 300, 100]


def test_duplicate_and_overlapping_spans_merge() -> None:
    spans = [Span(0, 0, 100), Span(0, 0, 100), Span(0, 50, 100)]
    assert plan_reads(spans) == [ReadRun(0, 0, 150, (0, 1, 2))]


def test_no_spans_no_reads() -> None:
    assert plan_reads([]) == []


@pytest.mark.parametrize(
    "case", ["jpeg_bot", "jpeg_multifragment_bot", "sparse", "concatenation", "native_explicit"]
)
def test_coalesced_reads_equal_single_reads(fixture_dir: dict[str, FixtureSet], case: str) -> None:
    slide = open_fixture(fixture_dir[case])
    try:
        for level in slide.levels:
            tiles = [(c, r) for r in range(level.grid.height) for c in range(level.grid.width)][
                ::-1
            ]
            coalesced = slide.read_tiles(level.index, tiles)
            for (col, row), encoded in zip(tiles, coalesced, strict=True):
                single = _single(slide, level.index, col, row)
                assert (encoded.data if encoded else None) == single
    finally:
        slide.close()


def _single(slide: Slide, level: int, col: int, row: int) -> bytes | None:
    try:
        return slide.read_tile_bytes(level, col, row).data
    except TileAbsentError:
        return None


def test_sparse_fixture_has_absent_tiles(fixture_dir: dict[str, FixtureSet]) -> None:
    assert fixture_dir["sparse"].level(0).absent_tiles
    slide = open_fixture(fixture_dir["sparse"])
    try:
        absent = [(c, r) for _, _, c, r in fixture_dir["sparse"].level(0).absent_tiles]
        assert slide.read_tiles(0, absent) == [None] * len(absent)
    finally:
        slide.close()


def test_coalesced_reads_refuse_a_file_rewritten_since_indexing(
    fixture_dir: dict[str, FixtureSet], tmp_path: Path
) -> None:
    fs = fixture_dir["jpeg_bot"]
    shutil.copytree(fs.directory, tmp_path / "slide")
    changed: list[str] = []
    slide = open_fixture(fs, tmp_path / "slide", changed.append)
    try:
        assert slide.read_tiles(0, [(1, 1)])[0] is not None
        path = slide.reader.layout.levels[0].files[0]  # type: ignore[attr-defined]
        rewritten = pydicom.dcmread(path)
        rewritten.ImageComments = "X" * 500  # same pixels, frames 500 bytes further on
        rewritten.save_as(path)
        with pytest.raises(CorruptSlideError, match="changed since it was indexed"):
            slide.read_tiles(0, [(1, 1)])
        assert changed == [path]  # the library is told, so it re-indexes the file
    finally:
        slide.close()
