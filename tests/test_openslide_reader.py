"""The OpenSlide backend in process: multi-file slides, change checks, damaged data read,
concurrent reads, and the bounded handle pool (real OpenSlide handles throughout)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from ctypes import ArgumentError
from pathlib import Path

import openslide
import pytest

from fixtures.openslide_mrxs import openslide_mrxs
from fixtures.openslide_vms import openslide_vms
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.errors import CorruptSlideError, SlideChangedError
from tileserver.readers.openslide_backend import OpenSlideBackend
from tileserver.readers.openslide_parts import main_of, parts_of
from tileserver.readers.openslide_pool import HandlePool
from tileserver.slide import Slide

#: Each multi-file layout: its writer, its files, and a part to rewrite.
LAYOUTS = {
    "vms": (openslide_vms, {"slide.vms", "image.jpg", "map.jpg", "macro.jpg"}, "map.jpg"),
    "mrxs": (
        openslide_mrxs,
        {"slide.mrxs", "Slidedat.ini", "Index.dat", "Data0000.dat"},
        "slide/Data0000.dat",
    ),
}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def library(tmp_path: Path, layout: str) -> Iterator[SlideLibrary]:
    LAYOUTS[layout][0](tmp_path / "slides" / layout)
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [tmp_path / "slides"])
    yield library
    library.close()


def _tiles(slide: Slide) -> list[tuple[int, int, int]]:
    return [
        (lv.index, col, row)
        for lv in slide.levels
        for row in range(lv.grid.height)
        for col in range(lv.grid.width)
    ]


def test_every_file_of_a_multi_file_slide_is_indexed_into_it_and_none_is_skipped(
    library: SlideLibrary, layout: str
) -> None:
    report = library.refresh()
    assert report.skipped == []
    assert {Path(uri).name for uri, _ in report.indexed} == LAYOUTS[layout][1]
    assert len({indexed.slide_id for _, indexed in report.indexed}) == 1
    assert library.refresh().indexed == []  # a second scan finds nothing new


def test_a_rewritten_part_is_refused_reported_and_reindexed(
    library: SlideLibrary, layout: str
) -> None:
    library.refresh()
    (slide_id,) = library.ids()
    slide = library.get(slide_id)
    part = _main(slide).parent / LAYOUTS[layout][2]
    os.utime(part, ns=(part.stat().st_atime_ns, part.stat().st_mtime_ns + 10**9))
    assert slide.reader.changed_sources() == [str(part)]
    with pytest.raises(SlideChangedError):
        slide.read_tile_bytes(0, 0, 0)
    fresh = library.get(slide_id)
    assert fresh.version != slide.version
    assert fresh.read_tile_bytes(0, 0, 0).data == slide_tile(fresh)


def _main(slide: Slide) -> Path:
    return Path(slide.reader.main.uri)  # type: ignore[attr-defined]


def slide_tile(slide: Slide) -> bytes:
    """Tile (0, 0) of level 0 as OpenSlide renders it."""
    size = slide.levels[0].tile_region(0, 0)
    image = openslide.OpenSlide(_main(slide)).read_region((0, 0), 0, (size.width, size.height))
    return bytes(image.convert("RGB").tobytes())


def test_damaged_image_data_is_a_slide_error_and_other_tiles_still_read(
    tmp_path: Path,
) -> None:
    openslide_vms(tmp_path / "slides" / "vms")  # its lowest levels come from another file
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [tmp_path / "slides"])
    library.refresh()
    slide = library.get(library.ids()[0])
    image = _main(slide).with_name("image.jpg")
    stat = image.stat()
    data = bytearray(image.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)  # same size, same mtime
    image.write_bytes(bytes(data))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    failures = 0
    for level, col, row in _tiles(slide):
        try:
            slide.read_tile_bytes(level, col, row)
        except CorruptSlideError as exc:
            assert "OpenSlide" in str(exc)
            failures += 1
    assert 0 < failures < len(_tiles(slide))  # the map-file levels read on
    library.close()


def test_concurrent_reads_equal_sequential_ones(library: SlideLibrary) -> None:
    library.refresh()
    slide = library.get(library.ids()[0])
    tiles = _tiles(slide)
    sequential = [slide.read_tile_bytes(*t).data for t in tiles]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda t: slide.read_tile_bytes(*t).data, tiles * 3))
    assert concurrent == sequential * 3


def test_the_pool_keeps_at_most_max_open_handles_and_never_closes_one_in_use(
    tmp_path: Path,
) -> None:
    paths = [openslide_vms(tmp_path / f"s{i}") for i in range(3)]
    pool = HandlePool(max_open=2)
    keys = [(str(p.paths[0]),) for p in paths]
    with pool.borrow(keys[0], str(paths[0].paths[0])) as held:
        for key, fs in zip(keys[1:], paths[1:], strict=True):
            with pool.borrow(key, str(fs.paths[0])) as handle:
                handle.read_region((0, 0), 0, (8, 8))
        assert pool.open_count() == 2
        held.read_region((0, 0), 0, (8, 8))  # evicted while in use, still open
    with pytest.raises(ArgumentError, match="closed"):  # closed once its read ended
        held.read_region((0, 0), 0, (8, 8))
    pool.discard(keys[2])
    assert pool.open_count() == 1
    pool.close_all()
    assert pool.open_count() == 0


def test_mrxs_folder_files_belong_to_their_slide(tmp_path: Path) -> None:
    mrxs = tmp_path / "case.mrxs"
    mrxs.write_bytes(b"")
    (tmp_path / "case").mkdir()
    for name in ("Slidedat.ini", "Index.dat", "Data0000.dat"):
        (tmp_path / "case" / name).write_bytes(b"x")
    assert main_of(str(tmp_path / "case" / "Data0000.dat")) == str(mrxs)
    assert [Path(p).name for p in parts_of(str(mrxs))] == [
        "Data0000.dat",
        "Index.dat",
        "Slidedat.ini",
    ]
    assert main_of(str(mrxs)) is None
    assert main_of(str(tmp_path / "case.mrxs.txt")) is None
    backend = OpenSlideBackend()
    assert backend.accepts(b"x", str(tmp_path / "case" / "Index.dat"))
    assert not backend.accepts(b"x", "s3://bucket/case.svs")
