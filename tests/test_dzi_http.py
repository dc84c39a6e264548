"""Deep Zoom over HTTP against OpenSlide's DeepZoomGenerator on the same files."""

from __future__ import annotations

import io
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from serverproc import ServerProcess

from fixtures import FixtureSet

REAL = [
    "camelyon-resampled-level.dcm",
    "gcp-converter-jpeg.dcm",
    "gcp-converter-jpeg2000.dcm",
    "gcp-converter-raw.dcm",
    "highdicom-sm_image.dcm",
]
FIXTURES = ["jpeg_bot", "j2k_lossless", "native_explicit"]
DZ_NS = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture(scope="module")
def server(
    real_slides: Path, fixture_dir: dict[str, FixtureSet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("dzi-fixtures")
    for case in FIXTURES:
        shutil.copytree(fixture_dir[case].directory, root / case)
    process = ServerProcess([root, real_slides], tmp_path_factory.mktemp("dzi-server")).start()
    try:
        with httpx.Client(base_url=process.url, timeout=60) as client:
            yield client
    finally:
        process.stop()


def slide_ids(client: httpx.Client) -> dict[str, str]:
    return {s["path"]: s["id"] for s in client.get("/slides").json()["slides"]}


def sources(real_slides: Path, fixture_dir: dict[str, FixtureSet]) -> dict[str, Path]:
    paths = {name: real_slides / name for name in REAL}
    paths.update({case: fixture_dir[case].level(0).paths[0] for case in FIXTURES})
    return paths


def decoded(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGB")).astype(int)


@pytest.mark.parametrize("name", REAL + FIXTURES)
def test_every_dzi_tile_matches_openslide(
    server: httpx.Client, real_slides: Path, fixture_dir: dict[str, FixtureSet], name: str
) -> None:
    slide_id = slide_ids(server)[name]
    descriptor = ET.fromstring(server.get(f"/dzi/{slide_id}.dzi").text)
    tile_size = int(descriptor.get("TileSize", "0"))
    assert descriptor.get("Overlap") == "0"
    generator = DeepZoomGenerator(
        openslide.OpenSlide(sources(real_slides, fixture_dir)[name]),
        tile_size=tile_size,
        overlap=0,
        limit_bounds=False,
    )
    size = descriptor.find(f"{DZ_NS}Size")
    assert size is not None
    assert (int(size.get("Width", "0")), int(size.get("Height", "0"))) == (
        generator.level_dimensions[-1]
    )
    for level in range(generator.level_count):
        cols, rows = generator.level_tiles[level]
        for row in range(rows):
            for col in range(cols):
                response = server.get(f"/dzi/{slide_id}_files/{level}/{col}_{row}.png")
                assert response.status_code == 200
                ours = decoded(response.content)
                theirs_image = generator.get_tile(level, (col, row)).convert("RGB")
                height, width = ours.shape[:2]
                # DeepZoomGenerator shrinks with thumbnail(), which keeps the aspect ratio and
                # can come out one pixel short of the DZI tile size OpenSeadragon expects.
                assert abs(theirs_image.width - width) <= 1
                assert abs(theirs_image.height - height) <= 1
                exact = theirs_image.size == (width, height)
                theirs = np.asarray(theirs_image.resize((width, height))).astype(int)
                limit = 2.5 if exact else 6.0
                assert np.abs(ours - theirs).mean() < limit, f"level {level} ({col}, {row})"
    assert server.get(f"/dzi/{slide_id}_files/{generator.level_count}/0_0.jpeg").status_code == 404


def test_native_tiles_are_the_stored_frames(
    server: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    slide_id = slide_ids(server)["jpeg_bot"]
    top = ET.fromstring(server.get(f"/dzi/{slide_id}.dzi").text)
    size = top.find(f"{DZ_NS}Size")
    assert size is not None
    max_level = int(
        np.ceil(np.log2(max(int(size.get("Width", "1")), int(size.get("Height", "1")))))
    )
    inst = fs.level(0).instances[0]
    for number, (_, _, col, row) in enumerate(inst.frame_tiles):
        if col == fs.level(0).tiles_across - 1 or row == fs.level(0).tiles_down - 1:
            continue  # edge frames are padded in DICOM: DZI crops them
        response = server.get(f"/dzi/{slide_id}_files/{max_level}/{col}_{row}.jpeg")
        assert response.content == inst.read_frame(number)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/dzi/nope.dzi", 404),
        ("/dzi/{id}_files/0/9_9.jpeg", 404),
        ("/dzi/{id}_files/0/0_0.tiff", 400),
        ("/dzi/{id}_files/0/zero.jpeg", 400),
        ("/dzi/{id}_files/99/0_0.jpeg", 404),
    ],
)
def test_dzi_errors(server: httpx.Client, path: str, status: int) -> None:
    response = server.get(path.format(id=slide_ids(server)["jpeg_bot"]))
    assert response.status_code == status
    assert "error" in response.json()
