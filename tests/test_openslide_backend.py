"""The OpenSlide backend through every front of a real server, checked against OpenSlide.

The server runs with the DICOM and OpenSlide backends only, so the real Aperio SVS is
served through OpenSlide even when a TIFF passthrough backend would claim it first. Beside
it: the synthetic Hamamatsu VMS (a multi-file slide no other backend reads), a DICOM
fixture, and damaged files that must be skipped with a reason while the rest serves.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image
from serverproc import ServerProcess

import fixtures
from fixtures.openslide_mrxs import openslide_mrxs
from fixtures.openslide_vms import openslide_vms
from tileserver.client import TileClient
from tileserver.client._wire import parse_multipart

SVS = "aperio-cmu1-small-region.svs"
DZ_NS = "{http://schemas.microsoft.com/deepzoom/2008}"
#: ``tileserver serve`` with only these backends registered (no TIFF passthrough).
ONLY_DICOM_AND_OPENSLIDE = (
    "import sys; from tileserver.readers import registry; "
    "[registry.BACKENDS.pop(n) for n in list(registry.BACKENDS) "
    "if n not in ('dicom', 'openslide')]; "
    "from tileserver.cli import main; sys.exit(main())"
)
URL_SAFE = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class Served:
    client: httpx.Client
    root: Path
    ids: dict[str, str]  # slide path -> id


def _bad_files(bad: Path, real_slides: Path) -> None:
    """Damaged and unsupported files, each a slide OpenSlide cannot serve."""
    bad.mkdir(parents=True)
    data = (real_slides / SVS).read_bytes()
    (bad / "truncated.svs").write_bytes(data[: len(data) // 20])
    (bad / "empty.ndpi").write_bytes(b"")
    (bad / "garbage.scn").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    (bad / "notes.txt").write_text("not a slide")
    # An MRXS whose index cannot be read: its folder's files are its parts, not noise.
    (bad / "broken.mrxs").write_bytes(b"not a mirax slide")
    (bad / "broken").mkdir()
    (bad / "broken" / "Slidedat.ini").write_text("[GENERAL]\nSLIDE_VERSION=01.02\n")
    (bad / "broken" / "Data0000.dat").write_bytes(bytes(1024))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, real_slides: Path) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("openslide-server")
    root = workdir / "slides"
    (root / "aperio").mkdir(parents=True)
    shutil.copy(real_slides / SVS, root / "aperio" / SVS)
    openslide_vms(root / "vms")
    openslide_mrxs(root / "mrxs")
    fixtures.CASES["jpeg_bot"](root / "dicom")
    _bad_files(root / "bad", real_slides)
    process = ServerProcess([root], workdir)
    process.args = [sys.executable, "-c", ONLY_DICOM_AND_OPENSLIDE, *process.args[3:]]
    process.start()
    try:
        with httpx.Client(base_url=process.url, timeout=60) as client:
            listing = client.get("/slides").json()["slides"]
            yield Served(client, root, {s["path"]: s["id"] for s in listing})
    finally:
        process.stop()


def _svs_id(served: Served) -> str:
    return served.ids[f"aperio/{SVS}"]


def _vms_id(served: Served) -> str:
    return next(i for p, i in served.ids.items() if p.startswith("vms"))


def _png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


def test_ids_are_url_safe_and_made_from_the_image_not_the_root(
    served: Served, real_slides: Path
) -> None:
    quickhash = openslide.OpenSlide(real_slides / SVS).properties["openslide.quickhash-1"]
    assert _svs_id(served) == f"aperio-{quickhash[:24]}"
    assert all(URL_SAFE.fullmatch(i) for i in served.ids.values())
    assert _vms_id(served).startswith("hamamatsu-")
    assert any(i.startswith("mirax-") for i in served.ids.values())


def test_every_other_slide_serves_and_the_bad_files_are_not_slides(served: Served) -> None:
    mrxs = next(p for p in served.ids if p.startswith("mrxs"))
    assert set(served.ids) == {f"aperio/{SVS}", _vms_path(served), mrxs, "dicom"}
    for slide_id in served.ids.values():
        assert served.client.get(f"/slides/{slide_id}/thumbnail").status_code == 200


def _vms_path(served: Served) -> str:
    return next(p for p in served.ids if p.startswith("vms"))


def test_a_multi_file_slide_is_listed_by_its_main_file(served: Served) -> None:
    assert _vms_path(served) == "vms/slide.vms"


def test_detail_has_mpp_objective_power_and_associated_images(
    served: Served, real_slides: Path
) -> None:
    reference = openslide.OpenSlide(real_slides / SVS)
    detail = served.client.get(f"/slides/{_svs_id(served)}").json()
    assert detail["mpp"] == [0.499, 0.499]
    assert detail["attributes"]["ObjectiveLensPower"] == "20"
    sizes = {a["name"]: (a["width"], a["height"]) for a in detail["associated_images"]}
    assert sizes == {
        "label": reference.associated_images["label"].size,
        "overview": reference.associated_images["macro"].size,
        "thumbnail": reference.associated_images["thumbnail"].size,
    }
    vms = served.client.get(f"/slides/{_vms_id(served)}").json()
    assert vms["mpp"] == [0.5, 0.5] and vms["associated"] == ["overview"]
    mrxs_id = next(i for p, i in served.ids.items() if p.startswith("mrxs"))
    mrxs = served.client.get(f"/slides/{mrxs_id}").json()
    assert mrxs["mpp"] == [0.25, 0.25] and mrxs["attributes"]["ObjectiveLensPower"] == "40"


@pytest.mark.parametrize("name", ["label", "overview", "thumbnail"])
def test_associated_images_equal_openslides(served: Served, real_slides: Path, name: str) -> None:
    reference = openslide.OpenSlide(real_slides / SVS)
    theirs = _rgb(reference.associated_images["macro" if name == "overview" else name])
    response = served.client.get(f"/slides/{_svs_id(served)}/associated/{name}?format=png")
    assert np.array_equal(_png(response), theirs)


def test_every_level0_tile_equals_read_region(served: Served, real_slides: Path) -> None:
    reference = openslide.OpenSlide(real_slides / SVS)
    level = served.client.get(f"/slides/{_svs_id(served)}").json()["levels"][0]
    tw, th = level["tile_width"], level["tile_height"]
    assert (tw, th) == (240, 240)  # the file's own tiles
    worst = 0.0
    for row in range(level["grid"][1]):
        for col in range(level["grid"][0]):
            url = f"/slides/{_svs_id(served)}/tiles/0/{col}/{row}?format=png"
            ours = _png(served.client.get(url))
            height, width = ours.shape[:2]
            theirs = _rgb(reference.read_region((col * tw, row * th), 0, (width, height)))
            assert (width, height) == (min(tw, 2220 - col * tw), min(th, 2967 - row * th))
            worst = max(worst, float(np.abs(ours - theirs).mean()))
    assert worst <= 2  # lossless path: in practice 0


def test_stored_tiles_are_raw_rgb_of_read_region(served: Served, real_slides: Path) -> None:
    reference = openslide.OpenSlide(real_slides / SVS)
    response = served.client.get(f"/slides/{_svs_id(served)}/tiles/0/3/4")
    assert response.headers["content-type"] == "application/octet-stream"
    theirs = np.asarray(reference.read_region((720, 960), 0, (240, 240)))[:, :, :3]
    assert response.content == theirs.tobytes()


@pytest.mark.parametrize("main", ["vms/slide.vms", "mrxs/slide.mrxs"])
def test_every_multi_file_slide_tile_at_every_level_equals_read_region(
    served: Served, main: str
) -> None:
    reference = openslide.OpenSlide(served.root / main)
    slide_id = next(i for p, i in served.ids.items() if p.startswith(main.split("/")[0]))
    detail = served.client.get(f"/slides/{slide_id}").json()
    assert len(detail["levels"]) == reference.level_count
    for index, level in enumerate(detail["levels"]):
        tw, th = level["tile_width"], level["tile_height"]
        downsample = reference.level_downsamples[index]
        for row in range(level["grid"][1]):
            for col in range(level["grid"][0]):
                url = f"/slides/{slide_id}/tiles/{index}/{col}/{row}?format=png"
                ours = _png(served.client.get(url))
                l0 = (round(col * tw * downsample), round(row * th * downsample))
                size = (ours.shape[1], ours.shape[0])
                theirs = _rgb(reference.read_region(l0, index, size))
                assert np.array_equal(ours, theirs), f"level {index} ({col}, {row})"


def test_region_equals_read_region(served: Served, real_slides: Path) -> None:
    reference = openslide.OpenSlide(real_slides / SVS)
    query = "x=333&y=517&width=700&height=450&format=png"
    ours = _png(served.client.get(f"/slides/{_svs_id(served)}/region?{query}"))
    assert np.array_equal(ours, _rgb(reference.read_region((333, 517), 0, (700, 450))))


@pytest.mark.parametrize("which", ["svs", "vms"])
def test_every_dzi_tile_matches_openslides_deepzoom(
    served: Served, real_slides: Path, which: str
) -> None:
    """Native DZI levels equal OpenSlide's exactly. Reduced levels are resampled by
    different filters (the service's resize; PIL's bicubic ``thumbnail`` in
    DeepZoomGenerator, which can also come out a pixel short, as in test_dzi_http): mean
    |diff| <= 4 where both sides are at least 8 px; below that only sizes compare."""
    slide_id, path = (
        (_svs_id(served), real_slides / SVS)
        if which == "svs"
        else (_vms_id(served), served.root / "vms" / "slide.vms")
    )
    descriptor = ET.fromstring(served.client.get(f"/dzi/{slide_id}.dzi").text)
    tile_size = int(descriptor.get("TileSize", "0"))
    reference = openslide.OpenSlide(path)
    generator = DeepZoomGenerator(reference, tile_size, 0, limit_bounds=False)
    native = {generator.level_count - 1 - round(np.log2(d)) for d in reference.level_downsamples}
    for level in range(generator.level_count):
        width, height = generator.level_dimensions[level]
        limit = 0.0 if level in native else 4.0 if min(width, height) >= 8 else None
        cols, rows = generator.level_tiles[level]
        for row in range(rows):
            for col in range(cols):
                url = f"/dzi/{slide_id}_files/{level}/{col}_{row}.png"
                ours = _png(served.client.get(url))
                theirs_image = generator.get_tile(level, (col, row))
                assert abs(theirs_image.width - ours.shape[1]) <= 1
                assert abs(theirs_image.height - ours.shape[0]) <= 1
                if limit is None:
                    continue
                theirs = _rgb(theirs_image.resize((ours.shape[1], ours.shape[0])))
                assert np.abs(ours - theirs).mean() <= limit, f"level {level} ({col}, {row})"


def test_iiif_info_and_a_region(served: Served, real_slides: Path) -> None:
    slide_id = _svs_id(served)
    info = served.client.get(f"/iiif/3/{slide_id}/info.json").json()
    assert (info["width"], info["height"]) == (2220, 2967)
    reference = openslide.OpenSlide(real_slides / SVS)
    ours = _png(served.client.get(f"/iiif/3/{slide_id}/480,240,512,300/max/0/default.png"))
    assert np.array_equal(ours, _rgb(reference.read_region((480, 240), 0, (512, 300))))
    small = _png(served.client.get(f"/iiif/3/{slide_id}/full/555,/0/default.png"))
    theirs = _rgb(reference.get_thumbnail((555, 742)).resize((small.shape[1], small.shape[0])))
    assert small.shape[1] == 555 and np.abs(small - theirs).mean() < 4


def test_batch_tissue_and_client(served: Served, real_slides: Path) -> None:
    slide_id = _svs_id(served)
    reference = openslide.OpenSlide(real_slides / SVS)
    tiles = [[0, 0, 0], [0, 5, 7], [0, 9, 12]]
    response = served.client.post(
        f"/slides/{slide_id}/tiles:batch", json={"tiles": tiles, "format": "raw"}
    )
    parts = parse_multipart(response.headers["content-type"], response.content)
    for (_, col, row), part in zip(tiles, parts, strict=True):
        width, height = min(240, 2220 - col * 240), min(240, 2967 - row * 240)
        theirs = np.asarray(reference.read_region((col * 240, row * 240), 0, (width, height)))
        assert part.data == theirs[:, :, :3].tobytes()
    tissue = served.client.get(f"/slides/{slide_id}/tissue")
    assert tissue.status_code == 200 and tissue.headers["content-type"] == "image/png"
    with TileClient(str(served.client.base_url)) as client:
        pixels = client.tile(slide_id, 0, 5, 7)
    assert np.array_equal(pixels, _rgb(reference.read_region((1200, 1680), 0, (240, 240))))


def test_bad_files_get_a_clear_reason_in_index(served: Served, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            ONLY_DICOM_AND_OPENSLIDE,
            "index",
            str(served.root / "bad"),
            "--catalog",
            str(tmp_path / "catalog.sqlite"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    reasons = {
        Path(s["path"]).relative_to(served.root / "bad").as_posix(): s["reason"]
        for s in report["skipped"]
    }
    assert report["slides"] == []
    assert "truncated or damaged" in reasons["truncated.svs"]
    assert reasons["empty.ndpi"] == "empty file"
    assert "OpenSlide" in reasons["garbage.scn"]
    assert reasons["broken.mrxs"].startswith("OpenSlide cannot open it: ")
    for part in ("broken/Slidedat.ini", "broken/Data0000.dat"):
        assert reasons[part].startswith(f"part of the slide {served.root / 'bad' / 'broken.mrxs'}")
    assert "not a DICOM file" in reasons["notes.txt"]
