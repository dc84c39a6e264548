"""The tiled TIFF backend: synthetic vendor-style files (``fixtures/vendor.py``) read tile by
tile against tifffile, stored JPEG tiles spliced and served undecoded, non-browser tiles
transcoded, bad files skipped with their reason, and layouts' mpp and associated images.
The real Aperio slide and the browser checks are in ``tests/test_tiff_real.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fixtures.vendor import OME_MPP, SVS_MPP, VENDOR, VendorSlide, write_vendor
from fixtures.vendor_broken import BROKEN_VENDOR, write_broken_vendor
from tileserver import codec, compose
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.errors import SlideError
from tileserver.formats import JPEG, JPEG_BASELINE, EncodedTile, PixelFormat
from tileserver.readers import tiffparse
from tileserver.readers.source import LocalFile
from tileserver.readers.tiff_backend import TiffBackend
from tileserver.readers.tiffcodec import ADOBE_RGB
from tileserver.slide import Slide


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VendorSlide]:
    return write_vendor(tmp_path_factory.mktemp("vendor"))


@pytest.fixture(scope="module")
def library(
    vendor: dict[str, VendorSlide], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlideLibrary]:
    """Every vendor case and every broken file under one root, scanned once."""
    root = tmp_path_factory.mktemp("tiff-root")
    for name, case in vendor.items():
        shutil.copytree(case.directory, root / name)
    write_broken_vendor(root / "broken", vendor["svs_jpeg"].path)
    opened = SlideLibrary(Catalog(root.parent / f"{root.name}.sqlite"), [root])
    opened.refresh()
    yield opened
    opened.close()


def slide_of(library: SlideLibrary, case: VendorSlide) -> Slide:
    slide_id = TiffBackend().index(LocalFile.at(str(case.path))).slide_id
    return library.get(slide_id)


def tifffile_levels(path: Path) -> list[np.ndarray]:
    """Each pyramid level as tifffile decodes it (SubIFD levels, or tiled main-chain pages)."""
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        if tiff.pages[0].subifds:
            return [level.asarray() for level in tiff.series[0].levels]
        return [page.asarray() for page in tiff.pages if page.is_tiled]


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels


@pytest.mark.parametrize("name", sorted(VENDOR))
def test_every_tile_equals_tifffile(
    library: SlideLibrary, vendor: dict[str, VendorSlide], name: str
) -> None:
    case = vendor[name]
    slide = slide_of(library, case)
    oracle = tifffile_levels(case.path)
    assert len(slide.levels) == len(case.levels) == len(oracle)
    for level, expected, written in zip(slide.levels, oracle, case.levels, strict=True):
        assert (level.size.height, level.size.width) == expected.shape[:2]
        for row in range(level.grid.height):
            for col in range(level.grid.width):
                area = level.tile_region(col, row)
                tile = codec.decode(slide.read_tile_bytes(level.index, col, row))
                got = as_rgb(tile[: area.height, : area.width])
                want = as_rgb(expected[area.y : area.y + area.height, area.x : area.x + area.width])
                assert np.array_equal(got, want), (name, level.index, col, row)
        if case.lossless:
            assert np.array_equal(expected, written)


def test_svs_jpeg_tiles_are_spliced_not_decoded(
    library: SlideLibrary, vendor: dict[str, VendorSlide]
) -> None:
    case = vendor["svs_jpeg"]
    slide = slide_of(library, case)
    source = LocalFile.at(str(case.path))
    _, ifds = tiffparse.walk(source)
    tables = ifds[0].raw(347)
    offsets, counts = ifds[0].array(324), ifds[0].array(325)
    stored = source.read(int(offsets[5]), int(counts[5]))
    grid = slide.levels[0].grid
    served = slide.read_tile_bytes(0, 5 % grid.width, 5 // grid.width)
    assert served.media_type == JPEG
    assert served.data == b"\xff\xd8" + ADOBE_RGB + tables[2:-2] + stored[2:]
    assert slide.levels[0].media_type == JPEG


def test_self_contained_jpeg_tiles_are_served_as_stored_and_located(
    library: SlideLibrary, vendor: dict[str, VendorSlide]
) -> None:
    case = vendor["subifd_jpeg"]
    slide = slide_of(library, case)
    source = LocalFile.at(str(case.path))
    _, ifds = tiffparse.walk(source)
    offset, count = int(ifds[0].array(324)[0]), int(ifds[0].array(325)[0])
    assert slide.read_tile_bytes(0, 0, 0).data == source.read(offset, count)
    locator = slide.reader.tile_locator(slide.version, [source.identity])
    assert locator is not None
    found = locator.read(0, 0, 0)
    assert found == (source.read(offset, count), JPEG)


def test_spliced_levels_have_no_locator(
    library: SlideLibrary, vendor: dict[str, VendorSlide]
) -> None:
    slide = slide_of(library, vendor["svs_jpeg"])
    identity = LocalFile.at(str(vendor["svs_jpeg"].path)).identity
    assert slide.reader.tile_locator(slide.version, [identity]) is None


def test_a_page_cached_read_equals_the_read(
    library: SlideLibrary, vendor: dict[str, VendorSlide]
) -> None:
    slide = slide_of(library, vendor["svs_jpeg"])
    full = slide.read_tile_bytes(0, 1, 1)
    cached = slide.read_tile_bytes_if_cached(0, 1, 1)
    assert cached is None or cached.data == full.data


@pytest.mark.parametrize(
    ("name", "mpp"),
    [("svs_jpeg", SVS_MPP), ("subifd_jpeg", OME_MPP), ("tiled_lzw", 0.75), ("tiled_deflate", None)],
)
def test_mpp_from_each_layout(
    library: SlideLibrary, vendor: dict[str, VendorSlide], name: str, mpp: float | None
) -> None:
    slide = slide_of(library, vendor[name])
    if mpp is None:
        assert slide.mpp is None
    else:
        assert slide.mpp == pytest.approx((mpp, mpp))


def test_aperio_objective_power_and_format(
    library: SlideLibrary, vendor: dict[str, VendorSlide]
) -> None:
    slide = slide_of(library, vendor["svs_jpeg"])
    assert slide.attributes["ObjectivePower"] == "20"
    assert slide.attributes["Format"] == "Aperio SVS"


@pytest.mark.parametrize("name", ["svs_jpeg", "svs_j2k"])
def test_associated_images_equal_tifffile(
    library: SlideLibrary, vendor: dict[str, VendorSlide], name: str
) -> None:
    import tifffile

    case = vendor[name]
    slide = slide_of(library, case)
    assert set(slide.associated) == set(case.associated)
    with tifffile.TiffFile(case.path) as tiff:
        by_size = {page.shape[:2]: page.asarray() for page in tiff.pages if not page.is_tiled}
    for role, written in case.associated.items():
        pixels = compose.associated_pixels(slide, role)
        assert np.array_equal(pixels, by_size[written.shape[:2]]), role
        tolerance = 0 if role == "label" else 2  # LZW label; JPEG thumbnail and macro
        assert np.abs(pixels.astype(int) - written.astype(int)).mean() <= tolerance


@pytest.mark.parametrize("name", ["tiled_deflate", "tiled_lzw", "svs_j2k"])
def test_non_browser_tiles_transcode_to_jpeg(
    library: SlideLibrary, vendor: dict[str, VendorSlide], name: str
) -> None:
    """What ``service.tile(..., "jpeg")`` does for tiles not stored as JPEG."""
    slide = slide_of(library, vendor[name])
    level = slide.levels[0]
    assert level.media_type != JPEG
    pixels = compose.tile_pixels(slide, level, 1, 1, compose.DEFAULT_PLANE)
    area = level.tile_region(1, 1)
    want = as_rgb(
        vendor[name].levels[0][area.y : area.y + area.height, area.x : area.x + area.width]
    )
    assert np.array_equal(as_rgb(pixels)[: area.height, : area.width], want)
    jpeg = codec.encode(pixels, "jpeg", quality=90)
    back = codec.decode(EncodedTile(jpeg, JPEG_BASELINE, PixelFormat(area.height, area.width)))
    assert np.abs(as_rgb(back).astype(int) - want.astype(int)).mean() <= 3


def test_bad_files_are_skipped_with_their_reason(
    library: SlideLibrary, vendor: dict[str, VendorSlide]
) -> None:
    skipped = {Path(f.path).name: f.reason or "" for f in library.catalog.skipped(library.roots)}
    for name, (_, words) in BROKEN_VENDOR.items():
        assert words in skipped[name], (name, skipped.get(name))
    served = {slide_of(library, case).id for case in vendor.values()}
    assert served <= set(library.ids())


def test_index_command_prints_the_reasons(vendor: dict[str, VendorSlide], tmp_path: Path) -> None:
    root = tmp_path / "slides"
    shutil.copytree(vendor["tiled_lzw"].directory, root / "good")
    write_broken_vendor(root / "broken", vendor["svs_jpeg"].path)
    result = subprocess.run(
        [sys.executable, "-m", "tileserver.cli", "index", str(root), "--json",
         "--catalog", str(tmp_path / "c.sqlite")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    for name, (_, words) in BROKEN_VENDOR.items():
        assert words in reasons[name]
    assert [s["name"] for s in summary["slides"]] == ["tiled_lzw"]


def test_big_endian_bigtiff_directories(vendor: dict[str, VendorSlide]) -> None:
    header, ifds = tiffparse.walk(LocalFile.at(str(vendor["tiled_deflate"].path)))
    assert header.order == ">" and header.big
    assert [ifd.first(256) for ifd in ifds] == [900, 450, 225]


def test_a_truncated_tile_table_is_refused(vendor: dict[str, VendorSlide], tmp_path: Path) -> None:
    """Directories intact, tile data cut short: the reason names the end of the file."""
    data = vendor["tiled_lzw"].path.read_bytes()
    _, ifds = tiffparse.walk(LocalFile.at(str(vendor["tiled_lzw"].path)))
    last_tile = int(ifds[0].array(324).max())
    assert ifds[0].offset < last_tile, "tifffile writes directories before tile data"
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: last_tile + 10])
    with pytest.raises(SlideError, match="past the end of the file"):
        TiffBackend().index(LocalFile.at(str(cut)))


def test_a_validate_report_of_a_tiff_slide(vendor: dict[str, VendorSlide]) -> None:
    from tileserver.readers.tiff_layout import read_layout
    from tileserver.readers.tiff_record import describe
    from tileserver.report import render_text

    path = str(vendor["svs_jpeg"].path)
    slide_id, layout = read_layout(LocalFile.at(path))
    text = render_text({"slides": [describe(layout, slide_id, path)], "skipped": []})
    assert f"slide svs_jpeg: {path}" in text
    assert "level 2: 250x190, tiles 256x256, 1 frames" in text
    assert "label: 130x150" in text
