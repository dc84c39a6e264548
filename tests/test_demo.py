"""The demo slides ``make run`` serves: what they are (read by wsidicom and pydicom, not by
tileserver) and that tileserver serves their stored tiles unchanged."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from serverproc import ServerProcess
from wsidicom import WsiDicom

from fixtures.demo import NAMES, SLIDES, write_demo

pytestmark = pytest.mark.slow  # about ten seconds of generation on a busy machine


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    written = write_demo(out)
    assert [p.name for p in written] == [s.name for s in SLIDES] == list(NAMES)
    return out


@pytest.fixture(scope="module")
def server(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = ServerProcess([demo], tmp_path_factory.mktemp("demo-server")).start()
    try:
        yield process.url
    finally:
        process.stop()


def _slide(url: str, name: str) -> dict[str, Any]:
    slides = httpx.get(f"{url}/slides", timeout=30).json()["slides"]
    (entry,) = [s for s in slides if s["name"] == name]
    detail: dict[str, Any] = httpx.get(f"{url}/slides/{entry['id']}", timeout=30).json()
    return detail


def _served_tile(url: str, slide_id: str, col: int, row: int, **plane: int) -> np.ndarray:
    query = "&".join(f"{k}={v}" for k, v in plane.items())
    response = httpx.get(f"{url}/slides/{slide_id}/tiles/0/{col}/{row}?{query}", timeout=30)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)), dtype=np.int16)


def test_the_large_slide_is_a_real_pyramid(demo: Path) -> None:
    files = sorted((demo / "he-large").glob("level*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert headers[0].TotalPixelMatrixColumns >= 50_000 and len(headers) >= 5
    for level, ds in enumerate(headers):  # one multi-frame instance per level
        assert ds.DimensionOrganizationType == "TILED_FULL"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
        assert ds.TotalPixelMatrixColumns == -(-headers[0].TotalPixelMatrixColumns // 2**level)
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        assert float(spacing[0]) == pytest.approx(0.00025 * 2**level)
    with WsiDicom.open(demo / "he-large") as wsi:
        assert wsi.levels[0].mpp.width == pytest.approx(0.25)
        label, overview = np.asarray(wsi.read_label()), np.asarray(wsi.read_overview())
    # Printed text: dark strokes on a light label, which the overview shows too.
    assert (label.mean(axis=2) < 80).mean() > 0.02 and label.mean() > 180
    assert overview.shape[1] > overview.shape[0] * 2  # the whole glass, label at its left


def test_empty_areas_share_one_background_frame(demo: Path) -> None:
    """Background tiles are the same stored bytes, so the big level stays small."""
    ds = pydicom.dcmread(demo / "he-large" / "level0.dcm")
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    distinct = len(set(frames))
    assert distinct < len(frames) * 0.6  # most of the glass is empty
    assert sum(len(f) for f in set(frames)) < 400 * 2**20


def test_tissue_tiles_are_served_unchanged(demo: Path, server: str) -> None:
    slide = _slide(server, "he-large")
    assert slide["levels"][0]["mpp"] == pytest.approx([0.25, 0.25])
    col, row = 30, 36  # inside the largest tissue piece
    served = _served_tile(server, slide["id"], col, row)
    with WsiDicom.open(demo / "he-large") as wsi:
        expected = np.asarray(wsi.read_tile(0, (col, row)), dtype=np.int16)
    assert served.shape == expected.shape and np.abs(served - expected).mean() <= 1.0
    assert served.std() > 20  # tissue, not glass


def test_the_z_stack_has_five_planes_sharpest_in_the_middle(demo: Path, server: str) -> None:
    slide = _slide(server, "z-stack")
    planes = slide["focal_planes"]
    assert len(planes) == 5
    col, row = 7, 6  # in the tissue
    detail = []
    with WsiDicom.open(demo / "z-stack") as wsi:
        for z, um in enumerate(planes):
            served = _served_tile(server, slide["id"], col, row, z=z)
            expected = np.asarray(wsi.read_tile(0, (col, row), z=um), dtype=np.int16)
            assert np.abs(served - expected).mean() <= 1.0
            detail.append(np.abs(np.diff(served.mean(axis=2), axis=1)).mean())
    assert max(detail) == detail[2] and detail[0] < detail[1] < detail[2] > detail[3] > detail[4]


def test_the_fluorescence_slide_has_four_monochrome_channels(demo: Path, server: str) -> None:
    ds = pydicom.dcmread(demo / "fluorescence" / "level0.dcm", stop_before_pixels=True)
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel) == ("MONOCHROME2", 1)
    assert [p.OpticalPathIdentifier for p in ds.OpticalPathSequence] == [
        "DAPI",
        "FITC",
        "TRITC",
        "Cy5",
    ]
    slide = _slide(server, "fluorescence")
    col, row = 12, 12
    channels = []
    with WsiDicom.open(demo / "fluorescence") as wsi:
        for index, identifier in enumerate(slide["optical_paths"]):
            served = _served_tile(server, slide["id"], col, row, path=index)
            expected = np.asarray(wsi.read_tile(0, (col, row), path=identifier), dtype=np.int16)
            assert served.ndim == 2 and np.abs(served - expected).mean() <= 1.0
            channels.append(served)
    assert len({round(float(c.mean())) for c in channels}) == 4  # four different stains


def test_a_second_run_writes_nothing(demo: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*.dcm")}
    assert write_demo(demo) == []
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*.dcm")} == before
