"""TIFF slides over a real server: the real Aperio slide against OpenSlide (tiles, associated
images, mpp, DZI, IIIF), the IIIF validator, and which JPEG a browser shows right (Chromium
draws a spliced RGB-coded tile; the same tile without the Adobe marker comes out wrong).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from serverproc import ServerProcess

from fixtures.vendor import SVS_MPP, VendorSlide, svs_iiif, svs_jpeg, tiled_deflate
from tileserver import codec
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.readers import tiffparse
from tileserver.readers.source import LocalFile
from tileserver.readers.tiff_backend import TiffBackend
from tileserver.readers.tiffcodec import ADOBE_RGB

SVS_NAME = "aperio-cmu1-small-region.svs"
VALIDATOR = Path(sys.executable).parent / "iiif-validate.py"
#: Validator tests that do not depend on the image's content (the real slide is no grid).
CONTENT_FREE = ("info_json", "id_basic", "id_error_random", "id_error_unescaped",
                "region_error_random", "size_error_random", "rot_error_random",
                "quality_error_random", "format_error_random", "jsonld", "cors")  # fmt: skip


def slide_id(path: Path) -> str:
    return TiffBackend().index(LocalFile.at(str(path))).slide_id


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.fixture(scope="module")
def svs(real_slides: Path) -> Path:
    path = real_slides / SVS_NAME
    if not path.exists():
        pytest.skip(f"{SVS_NAME} not in ../shared/real-slides")
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, VendorSlide]:
    root = tmp_path_factory.mktemp("tiff-cases")
    made = {}
    for write in (svs_jpeg, svs_iiif, tiled_deflate):
        (root / write.__name__).mkdir()
        made[write.__name__] = write(root / write.__name__)
    return made


@pytest.fixture(scope="module")
def server(
    svs: Path, cases: dict[str, VendorSlide], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tiff-served")
    shutil.copy(svs, root / SVS_NAME)  # a link out of the root would not be served
    for name, case in cases.items():
        shutil.copytree(case.directory, root / name)
    process = ServerProcess([root], tmp_path_factory.mktemp("tiff-server")).start()
    try:
        yield process
    finally:
        process.stop()


def test_every_level0_tile_equals_openslide(svs: Path, tmp_path: Path) -> None:
    import openslide

    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [svs.parent])
    library.refresh()
    slide = library.get(slide_id(svs))
    level = slide.levels[0]
    worst = 0.0
    with openslide.OpenSlide(str(svs)) as reference:
        for row in range(level.grid.height):
            for col in range(level.grid.width):
                area = level.tile_region(col, row)
                ours = codec.decode(slide.read_tile_bytes(0, col, row))
                theirs = reference.read_region((area.x, area.y), 0, (area.width, area.height))
                got = ours[: area.height, : area.width]
                worst = max(worst, mean_diff(got, np.asarray(theirs.convert("RGB"))))
    library.close()
    assert level.grid.area == 130
    assert worst <= 2


def test_slide_page_reports_mpp_power_and_associated_images(
    server: ServerProcess, svs: Path
) -> None:
    detail = httpx.get(f"{server.url}/slides/{slide_id(svs)}").json()
    assert detail["mpp"] == pytest.approx([0.499, 0.499])
    assert detail["attributes"]["ObjectivePower"] == "20"
    assert sorted(detail["associated"]) == ["label", "overview", "thumbnail"]
    assert detail["levels"][0]["width"] == 2220 and detail["levels"][0]["height"] == 2967


@pytest.mark.parametrize(
    ("ours", "theirs"), [("label", "label"), ("overview", "macro"), ("thumbnail", "thumbnail")]
)
def test_associated_images_equal_openslides(
    server: ServerProcess, svs: Path, ours: str, theirs: str
) -> None:
    import openslide

    response = httpx.get(f"{server.url}/slides/{slide_id(svs)}/associated/{ours}?format=png")
    assert response.status_code == 200
    with openslide.OpenSlide(str(svs)) as reference:
        expected = np.asarray(reference.associated_images[theirs].convert("RGB"))
    got = pixels(response.content)
    assert got.shape == expected.shape
    assert mean_diff(got, expected) <= 2


def test_dzi_native_tiles_are_the_spliced_stored_tiles(server: ServerProcess, svs: Path) -> None:
    import openslide

    sid = slide_id(svs)
    dzi = httpx.get(f"{server.url}/dzi/{sid}.dzi").text
    assert 'TileSize="240"' in dzi and 'Width="2220"' in dzi
    top = 12  # ceil(log2(2967))
    tile = httpx.get(f"{server.url}/dzi/{sid}_files/{top}/2_3.jpeg")
    stored = httpx.get(f"{server.url}/slides/{sid}/tiles/0/2/3")
    assert tile.status_code == stored.status_code == 200
    assert tile.content == stored.content and ADOBE_RGB in stored.content
    with openslide.OpenSlide(str(svs)) as reference:
        expected = np.asarray(reference.read_region((480, 720), 0, (240, 240)).convert("RGB"))
    assert mean_diff(pixels(tile.content), expected) <= 2
    small = httpx.get(f"{server.url}/dzi/{sid}_files/{top - 3}/0_0.jpeg")
    assert small.status_code == 200
    assert pixels(small.content).shape[:2] == (240, 240)


def test_iiif_region_matches_openslide(server: ServerProcess, svs: Path) -> None:
    import openslide

    sid = slide_id(svs)
    info = httpx.get(f"{server.url}/iiif/3/{sid}/info.json").json()
    assert (info["width"], info["height"]) == (2220, 2967)
    got = pixels(httpx.get(f"{server.url}/iiif/3/{sid}/300,500,400,400/max/0/default.png").content)
    with openslide.OpenSlide(str(svs)) as reference:
        expected = np.asarray(reference.read_region((300, 500), 0, (400, 400)).convert("RGB"))
    assert mean_diff(got, expected) <= 2


def _validate(server: ServerProcess, identifier: str, version: str, *options: str) -> str:
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), "--server", f"127.0.0.1:{server.port}",
         "--prefix", f"iiif/{version[0]}", "--identifier", identifier,
         f"--version={version}", *options],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert " 0 failures)" in output, output[-4000:]
    return output


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_iiif_validator_level_2_on_an_svs_of_its_grid(
    server: ServerProcess, cases: dict[str, VendorSlide], version: str
) -> None:
    _validate(server, slide_id(cases["svs_iiif"].path), version, "--level", "2")


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_iiif_validator_on_the_real_svs(server: ServerProcess, svs: Path, version: str) -> None:
    tests = [arg for name in CONTENT_FREE for arg in ("--test", name)]
    _validate(server, slide_id(svs), version, *tests)


def test_deflate_tiles_are_transcoded_over_http(
    server: ServerProcess, cases: dict[str, VendorSlide]
) -> None:
    case = cases["tiled_deflate"]
    sid = slide_id(case.path)
    stored = httpx.get(f"{server.url}/slides/{sid}/tiles/0/1/2")
    assert stored.headers["content-type"] == "application/octet-stream"
    jpeg = httpx.get(f"{server.url}/slides/{sid}/tiles/0/1/2?format=jpeg")
    assert jpeg.headers["content-type"] == "image/jpeg"
    expected = case.levels[0][256:384, 128:256]
    assert mean_diff(pixels(jpeg.content), expected) <= 3


# -- which JPEG a browser shows right -------------------------------------------------------

DRAW = """async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    canvas.getContext('2d').drawImage(img, 0, 0);
    return canvas.toDataURL('image/png');
}"""


def chromium_pixels(page: Any, src: str) -> np.ndarray:
    url = page.evaluate(DRAW, src)
    return pixels(base64.b64decode(re.sub("^data:image/png;base64,", "", url)))


def tifffile_tile(path: Path, col: int, row: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        full = page.asarray()
        th, tw = page.tilelength, page.tilewidth
    return full[row * th : (row + 1) * th, col * tw : (col + 1) * tw]


@pytest.mark.browser
@pytest.mark.parametrize("which", ["svs_jpeg", "real"])
def test_chromium_shows_spliced_rgb_jpeg_tiles_right(
    browser: Any, server: ServerProcess, cases: dict[str, VendorSlide], svs: Path, which: str
) -> None:
    path = svs if which == "real" else cases["svs_jpeg"].path
    page = browser.new_page()
    page.goto(f"{server.url}/healthz")
    shown = chromium_pixels(page, f"/slides/{slide_id(path)}/tiles/0/1/1")
    expected = tifffile_tile(path, 1, 1)
    assert shown.shape == expected.shape
    assert mean_diff(shown, expected) <= 2
    # The control: the same tile spliced without the Adobe marker is read as YCbCr.
    unmarked = _spliced_without_marker(path, 1, 1)
    wrong = chromium_pixels(page, "data:image/jpeg;base64," + base64.b64encode(unmarked).decode())
    page.close()
    assert mean_diff(wrong, expected) > 10


def _spliced_without_marker(path: Path, col: int, row: int) -> bytes:
    source = LocalFile.at(str(path))
    _, ifds = tiffparse.walk(source)
    base = ifds[0]
    index = row * -(-base.first(256) // base.first(322)) + col
    data = source.read(int(base.array(324)[index]), int(base.array(325)[index]))
    return b"\xff\xd8" + base.raw(347)[2:-2] + data[2:]


def test_svs_fixture_mpp_over_http(server: ServerProcess, cases: dict[str, VendorSlide]) -> None:
    detail = httpx.get(f"{server.url}/slides/{slide_id(cases['svs_jpeg'].path)}").json()
    assert detail["mpp"] == pytest.approx([SVS_MPP, SVS_MPP])
