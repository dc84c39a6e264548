"""Oracle checks on slides written by other projects: bytes and pixels vs wsidicom and pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from slidefiles import open_files
from wsidicom import WsiDicom

from tileserver import codec
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.dicom import assemble, index_instance
from tileserver.readers.dicom import DicomReader
from tileserver.slide import Slide

DICOM_FILES = [
    "camelyon-resampled-level.dcm",
    "gcp-converter-jpeg.dcm",
    "gcp-converter-jpeg2000.dcm",
    "gcp-converter-raw.dcm",
    "highdicom-sm_image.dcm",
    "highdicom-sm_image_grayscale.dcm",
    "highdicom-sm_image_jpegls.dcm",
    "highdicom-sm_image_jpegls_nobot.dcm",
    "ezwsi-label.dcm",
]
WSIDICOM_LEVEL_FILES = [f for f in DICOM_FILES if f != "ezwsi-label.dcm"]


def open_slide(path: Path) -> Slide:
    return open_files([path], path.stem)


def pydicom_frames(path: Path) -> list[bytes]:
    ds = pydicom.dcmread(path)
    n = int(ds.get("NumberOfFrames", 1))
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=n))
    size = len(ds.PixelData) // n
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(n)]


@pytest.mark.parametrize("name", DICOM_FILES)
def test_every_frame_equals_pydicom(real_slides: Path, name: str) -> None:
    path = real_slides / name
    inst = index_instance(path)
    reader = DicomReader(assemble([inst]))
    grid = (reader.layout.levels or list(reader.layout.associated.values()))[0]
    expected = pydicom_frames(path)
    assert len(grid.frames) == len(expected)
    for number, frame in enumerate(expected):
        assert reader.read_frame(grid, number).data == frame, f"frame {number + 1}"


@pytest.mark.parametrize("name", WSIDICOM_LEVEL_FILES)
def test_every_tile_equals_wsidicom_bytes(real_slides: Path, name: str) -> None:
    slide = open_slide(real_slides / name)
    with WsiDicom.open(real_slides / name) as wsi:
        assert len(slide.levels) == len(wsi.levels)
        for level in slide.levels:
            theirs_size = wsi.levels[level.index].size
            assert (level.size.width, level.size.height) == (theirs_size.width, theirs_size.height)
            for row in range(level.grid.height):
                for col in range(level.grid.width):
                    ours = slide.read_tile_bytes(level.index, col, row).data
                    theirs = wsi.read_encoded_tile(
                        level.index, (col, row), crop_to_image_boundary=False
                    )
                    assert ours == theirs, f"level {level.index} tile ({col}, {row})"


@pytest.mark.parametrize("name", [f for f in WSIDICOM_LEVEL_FILES if "grayscale" not in f])
def test_decoded_pixels_equal_wsidicom(real_slides: Path, name: str) -> None:
    slide = open_slide(real_slides / name)
    lossy = "jpeg." in name or "camelyon" in name
    with WsiDicom.open(real_slides / name) as wsi:
        level = slide.levels[0]
        for row in range(level.grid.height):
            for col in range(level.grid.width):
                valid = level.tile_region(col, row)
                ours = codec.decode(slide.read_tile_bytes(0, col, row))
                ours = ours[: valid.height, : valid.width]
                theirs = np.asarray(wsi.read_tile(0, (col, row)).convert("RGB"))
                assert ours.shape == theirs.shape
                diff = np.abs(ours.astype(int) - theirs.astype(int))
                if lossy:
                    assert diff.mean() < 1.5
                else:
                    assert diff.max() == 0


def test_grayscale_16_bit_scales_like_pydicom(real_slides: Path) -> None:
    path = real_slides / "highdicom-sm_image_grayscale.dcm"
    slide = open_slide(path)
    array = pydicom.dcmread(path).pixel_array
    for number in range(array.shape[0]):
        col, row = number % 5, number // 5
        ours = codec.decode(slide.read_tile_bytes(0, col, row))
        assert np.array_equal(ours, (array[number] >> 8).astype(np.uint8))


def test_label_instance_is_an_associated_image(real_slides: Path) -> None:
    slide = open_slide(real_slides / "ezwsi-label.dcm")
    assert slide.levels == []
    assert list(slide.associated) == ["label"]
    label = slide.read_associated_bytes("label")
    assert label.data == pydicom_frames(real_slides / "ezwsi-label.dcm")[0]


def test_catalog_round_trip_serves_the_same_bytes(real_slides: Path, tmp_path: Path) -> None:
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [real_slides])
    report = library.refresh()
    skipped = {Path(p).name for p, _ in report.skipped}
    assert skipped == {"README.md"}  # the SVS is the TIFF backend's (tests/test_tiff_real.py)
    assert len(library.ids()) == len(DICOM_FILES) + 1
    for slide_id in library.ids():
        slide = library.get(slide_id)
        if slide.path not in DICOM_FILES:
            continue
        direct = open_slide(real_slides / slide.path)
        for level in slide.levels:
            for row in range(level.grid.height):
                for col in range(level.grid.width):
                    assert slide.read_tile_bytes(level.index, col, row) == direct.read_tile_bytes(
                        level.index, col, row
                    )


def test_cached_reads_never_wait_and_equal_normal_reads(real_slides: Path) -> None:
    slide = open_slide(real_slides / "gcp-converter-jpeg.dcm")
    assert slide.read_tile_bytes_if_cached(0, 1, 1) is None  # file not open yet: no wait
    expected = slide.read_tile_bytes(0, 1, 1)  # opens the file, pages now cached
    cached = slide.read_tile_bytes_if_cached(0, 1, 1)
    assert cached is not None and cached.data == expected.data
