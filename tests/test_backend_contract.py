"""One contract for every format backend: the same tests run against each backend's slides,
opened as the server opens them (scanned into a catalog through the backend registry, then
loaded by the library). A new backend adds its cases to ``CASES``.

What every backend promises: stored tiles of the media type its level declares, the same
bytes by single, batched and non-waiting reads; regions equal to the stitched tiles;
associated images of their declared size; and a rewritten source refused and reported.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fixtures import FixtureSet
from tileserver import codec, compose
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.compose import DEFAULT_PLANE
from tileserver.errors import SlideChangedError, TileAbsentError
from tileserver.geometry import Region
from tileserver.readers.registry import BACKENDS
from tileserver.slide import Slide

#: (backend, fixture case): slides each backend serves, in the layouts it handles.
CASES = [
    ("dicom", "jpeg_bot"),
    ("dicom", "sparse"),
    ("dicom", "multi_focal_optical"),
    ("dicom", "native_explicit"),
    ("dicom", "j2k_lossless"),
    ("dicom", "jpeg_multifragment_nobot"),
    ("dicom", "padded_edges"),
    ("tiff", "svs_jpeg"),
    ("tiff", "svs_j2k"),
    ("tiff", "tiled_deflate"),
    ("tiff", "tiled_lzw"),
    ("tiff", "subifd_jpeg"),
    ("tiff", "subifd_j2k"),
    ("openslide", "openslide_vms"),
    ("openslide", "openslide_mrxs"),
]


def test_every_registered_backend_has_contract_cases() -> None:
    assert {backend for backend, _ in CASES} == set(BACKENDS)


@pytest.fixture(scope="session")
def vendor_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic vendor files (``fixtures/vendor.py``, ``fixtures/openslide_*.py``):
    case name -> its directory."""
    from fixtures.openslide_mrxs import openslide_mrxs
    from fixtures.openslide_vms import openslide_vms
    from fixtures.vendor import write_vendor

    root = tmp_path_factory.mktemp("vendor")
    written = {name: case.directory for name, case in write_vendor(root).items()}
    written["openslide_vms"] = openslide_vms(root / "openslide_vms").directory
    written["openslide_mrxs"] = openslide_mrxs(root / "openslide_mrxs").directory
    return written


@pytest.fixture(params=CASES, ids=[f"{b}-{c}" for b, c in CASES])
def opened(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    vendor_dir: dict[str, Path],
) -> Iterator[tuple[Slide, SlideLibrary, Path, str]]:
    """(slide, library, its copied tree, backend) for one case, opened through the catalog."""
    backend, case = request.param
    tree = tmp_path / "slides"
    source = fixture_dir[case].directory if case in fixture_dir else vendor_dir[case]
    shutil.copytree(source, tree / case)
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [tree])
    library.refresh()
    (slide_id,) = library.ids()
    stored = library.catalog.files()
    assert {record.backend for record in stored.values()} == {backend}
    slide = library.get(slide_id)
    yield slide, library, tree, backend
    library.close()


def _tiles(slide: Slide) -> Iterator[tuple[int, int, int]]:
    for level in slide.levels:
        for row in range(level.grid.height):
            for col in range(level.grid.width):
                yield level.index, col, row


def test_tiles_have_the_declared_media_type_and_equal_reads_agree(
    opened: tuple[Slide, SlideLibrary, Path, str],
) -> None:
    slide = opened[0]
    for level in slide.levels:
        addresses = [(c, r) for _, c, r in _tiles(slide) if _ == level.index]
        batched = slide.read_tiles(level.index, addresses)
        for (col, row), batch in zip(addresses, batched, strict=True):
            try:
                single = slide.read_tile_bytes(level.index, col, row)
            except TileAbsentError:
                assert batch is None
                continue
            assert batch is not None and batch.data == single.data
            assert single.media_type == level.media_type
            cached = slide.read_tile_bytes_if_cached(level.index, col, row)
            assert cached is None or cached.data == single.data


def test_a_region_equals_its_tiles_stitched(opened: tuple[Slide, SlideLibrary, Path, str]) -> None:
    slide = opened[0]
    level = slide.levels[0]
    width = min(level.size.width, 2 * level.tile_size.width)
    height = min(level.size.height, 2 * level.tile_size.height)
    region = compose.region_pixels(slide, level, Region(0, 0, width, height))
    stitched = np.zeros_like(region)
    for row in range(-(-height // level.tile_size.height)):
        for col in range(-(-width // level.tile_size.width)):
            tile = compose.as_rgb(compose.tile_pixels(slide, level, col, row, DEFAULT_PLANE))
            y, x = row * level.tile_size.height, col * level.tile_size.width
            part = stitched[y : y + tile.shape[0], x : x + tile.shape[1]]
            part[...] = tile[: part.shape[0], : part.shape[1]]
    assert region.shape == (height, width, 3)
    assert np.array_equal(region, stitched)


def test_associated_images_have_their_declared_size(
    opened: tuple[Slide, SlideLibrary, Path, str],
) -> None:
    slide = opened[0]
    for name, image in slide.associated.items():
        pixels = compose.associated_pixels(slide, name)
        assert pixels.shape[:2] == (image.size.height, image.size.width), name
        first = slide.read_associated_bytes(name)
        assert codec.decode(first).shape[0] > 0


def test_a_rewritten_source_is_refused_and_reported(
    opened: tuple[Slide, SlideLibrary, Path, str],
) -> None:
    slide, library, tree, _ = opened
    level, col, row = next((lv, c, r) for lv, c, r in _tiles(slide) if _stored(slide, lv, c, r))
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert slide.reader.changed_sources()
    with pytest.raises(SlideChangedError):
        slide.read_tile_bytes(level, col, row)
    assert slide.read_tile_bytes_if_cached(level, col, row) is None
    fresh = library.get(slide.id)  # re-indexed before it is served again
    assert fresh.version != slide.version
    assert fresh.read_tile_bytes(level, col, row).data


def _stored(slide: Slide, level: int, col: int, row: int) -> bool:
    try:
        slide.read_tile_bytes(level, col, row)
    except TileAbsentError:
        return False
    return True


def test_absent_tiles_and_outside_areas_are_the_slides_glass_colour(
    opened: tuple[Slide, SlideLibrary, Path, str],
) -> None:
    """The glass colour is the median of the smallest level's image border, and it is what
    an absent tile and a region past the image edge are painted with."""
    from tileserver import compose

    slide = opened[0]
    glass = compose.background_of(slide)
    smallest = slide.levels[-1]
    size = smallest.size
    whole = compose.region_pixels(slide, smallest, Region(0, 0, size.width, size.height))
    border = np.concatenate([whole[0], whole[-1], whole[:, 0], whole[:, -1]])
    assert np.abs(np.median(border, axis=0) - glass).max() <= 1
    level = slide.levels[0]
    outside = compose.region_pixels(slide, level, Region(level.size.width, 0, 8, 8))
    assert (outside == glass).all()
    for _, col, row in (t for t in _tiles(slide) if t[0] == 0):
        if not _stored(slide, 0, col, row):
            tile = compose.tile_pixels(slide, level, col, row, DEFAULT_PLANE)
            assert (tile == glass).all()
