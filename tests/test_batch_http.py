"""The batch tile endpoint and the tissue endpoint over a real socket."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from serverproc import ServerProcess

from fixtures import FixtureSet, tissue_mask
from tileserver.client._wire import parse_multipart
from tileserver.http.batch import MAX_BATCH

CASES = ("jpeg_bot", "sparse", "jpeg_multifragment_bot", "native_explicit")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slides")
    for case in CASES:
        shutil.copytree(fixture_dir[case].directory, root / case)
    process = ServerProcess([root], tmp_path_factory.mktemp("server")).start()
    try:
        yield process.url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def all_tiles(fs: FixtureSet, level: int) -> list[list[int]]:
    info = fs.level(level)
    return [[level, c, r] for r in range(info.tiles_down) for c in range(info.tiles_across)]


def batch(client: httpx.Client, fs: FixtureSet, tiles: list[list[int]], fmt: str) -> httpx.Response:
    return client.post(f"/slides/{fs.series_uid}/tiles:batch", json={"tiles": tiles, "format": fmt})


@pytest.mark.parametrize("case", CASES)
def test_raw_parts_are_the_stored_tiles(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    fs = fixture_dir[case]
    tiles = all_tiles(fs, 0)[::-1] + all_tiles(fs, 1)
    response = batch(client, fs, tiles, "raw")
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=")
    parts = parse_multipart(response.headers["content-type"], response.content)
    assert [list(p.address) for p in parts] == tiles
    for part in parts:
        single = client.get(f"/slides/{fs.series_uid}/tiles/{'/'.join(map(str, part.address))}")
        if part.absent:
            assert single.status_code == 200 and part.data == b""  # rendered as background
        else:
            assert part.data == single.content
            assert part.media_type == single.headers["content-type"]


def test_raw_marks_absent_sparse_tiles(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["sparse"]
    absent = sorted([0, c, r] for _, _, c, r in fs.level(0).absent_tiles)
    parts = parse_multipart(*_multipart(batch(client, fs, absent, "raw")))
    assert [p.absent for p in parts] == [True] * len(absent)


def _multipart(response: httpx.Response) -> tuple[str, bytes]:
    return response.headers["content-type"], response.content


@pytest.mark.parametrize("case", CASES)
def test_npy_stack_equals_the_servers_own_tile_reads(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    fs = fixture_dir[case]
    tiles = all_tiles(fs, 0)
    response = batch(client, fs, tiles, "npy")
    stack = np.load(io.BytesIO(response.content))
    tw, th = fs.level(0).tile_width, fs.level(0).tile_height
    assert stack.shape == (len(tiles), th, tw, 3) and stack.dtype == np.uint8
    for (level, col, row), pixels in zip(tiles, stack, strict=True):
        png = client.get(f"/slides/{fs.series_uid}/tiles/{level}/{col}/{row}?format=png")
        valid = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
        h, w = valid.shape[:2]
        assert np.array_equal(pixels[:h, :w], valid)
        assert (pixels[h:] == 255).all() and (pixels[:, w:] == 255).all()


def test_batch_bounds_and_validation(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    assert batch(client, fs, [[0, 0, 0]] * (MAX_BATCH + 1), "raw").status_code == 400
    assert batch(client, fs, [[0, 0, 0]] * MAX_BATCH, "npy").status_code == 200
    assert batch(client, fs, [[0, 99, 0]], "raw").status_code == 400
    assert batch(client, fs, [[7, 0, 0]], "raw").status_code == 400
    assert batch(client, fs, [[0, 0]], "raw").status_code == 400
    assert batch(client, fs, [[0, 0, 0]], "tiff").status_code == 400
    bad_json = client.post(f"/slides/{fs.series_uid}/tiles:batch", content=b"{")
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    assert client.post("/slides/nope/tiles:batch", json={"tiles": []}).status_code == 404


def test_empty_batch(client: httpx.Client, fixture_dir: dict[str, FixtureSet]) -> None:
    fs = fixture_dir["jpeg_bot"]
    assert parse_multipart(*_multipart(batch(client, fs, [], "raw"))) == []


def test_tissue_png_is_a_mask_close_to_the_truth(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    response = client.get(f"/slides/{fs.series_uid}/tissue")
    assert response.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(response.content))) > 127
    truth = tissue_mask(mask.shape[1], mask.shape[0])
    assert (mask & truth).sum() / (mask | truth).sum() > 0.85
    assert client.get(f"/slides/{fs.series_uid}/tissue").content == response.content


@pytest.mark.parametrize("level", [0, 1])
def test_tissue_json_flags_tiles_with_tissue(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet], level: int
) -> None:
    fs = fixture_dir["sparse"]
    info = fs.level(level)
    body = client.get(f"/slides/{fs.series_uid}/tissue?format=json&level={level}").json()
    assert body["grid"] == [info.tiles_across, info.tiles_down] and body["level"] == level
    flags = np.array(body["flags"], dtype=bool)
    coverage = tile_coverage(fs, level)
    assert not flags[coverage == 0].any()  # no background tile is flagged
    assert flags[coverage >= 0.02].all()  # every tile with real tissue is
    assert body["tiles_with_tissue"] == int(flags.sum())


def tile_coverage(fs: FixtureSet, level: int) -> np.ndarray:
    """Fraction of each tile's valid area inside the exact tissue mask."""
    info = fs.level(level)
    truth = tissue_mask(info.width, info.height)
    out = np.zeros((info.tiles_down, info.tiles_across))
    for r in range(info.tiles_down):
        for c in range(info.tiles_across):
            tile = truth[
                r * info.tile_height : (r + 1) * info.tile_height,
                c * info.tile_width : (c + 1) * info.tile_width,
            ]
            out[r, c] = tile.mean()
    return out


def test_tissue_rejects_bad_parameters(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    assert client.get(f"/slides/{sid}/tissue?format=gif").status_code == 400
    assert client.get(f"/slides/{sid}/tissue?format=json&level=9").status_code == 404
    assert client.get("/slides/nope/tissue").status_code == 404
