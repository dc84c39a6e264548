"""The batch tile endpoint and the tissue endpoint over a real socket."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from serverproc import ServerProcess, serving_cases
from slidefiles import written_frame

from fixtures import FixtureSet, tissue_mask
from fixtures.attributes import SeriesContext
from fixtures.cases import _focal_planes
from fixtures.common import base_spec, build, tissue
from fixtures.dicomwsi import InstanceSpec
from tileserver.client._wire import parse_multipart
from tileserver.http.batch import MAX_BATCH, MAX_BODY

CASES = ("jpeg_bot", "sparse", "jpeg_multifragment_bot", "native_explicit")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("server")
    with serving_cases(fixture_dir, CASES, workdir) as process:
        yield process.url


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
    glass = client.get(f"/slides/{fs.series_uid}").json()["background"]
    tw, th = fs.level(0).tile_width, fs.level(0).tile_height
    assert stack.shape == (len(tiles), th, tw, 3) and stack.dtype == np.uint8
    for (level, col, row), pixels in zip(tiles, stack, strict=True):
        png = client.get(f"/slides/{fs.series_uid}/tiles/{level}/{col}/{row}?format=png")
        valid = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
        h, w = valid.shape[:2]
        assert np.array_equal(pixels[:h, :w], valid)
        assert (pixels[h:] == glass).all() and (pixels[:, w:] == glass).all()


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


def test_a_large_raw_batch_streams_every_part(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    tiles = (all_tiles(fs, 0) * MAX_BATCH)[:MAX_BATCH]
    parts = parse_multipart(*_multipart(batch(client, fs, tiles, "raw")))
    assert [list(p.address) for p in parts] == tiles
    written = {(c, r): written_frame(fs, c, r) for _, c, r in all_tiles(fs, 0)}
    assert all(p.data == written[(p.address[1], p.address[2])] for p in parts)


# -- files rewritten under a running server ---------------------------------------------------


def test_a_file_rewritten_mid_stream_aborts_the_batch_instead_of_serving_stale_offsets(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["native_explicit"]  # uncompressed: 1024 parts are far more than buffers
    level0 = tmp_path / "slides" / fs.name / fs.level(0).paths[0].name
    with (
        serving_cases(fixture_dir, [fs.name], tmp_path) as process,
        httpx.Client(base_url=process.url, timeout=30) as http,
    ):
        url = f"/slides/{fs.series_uid}/tiles:batch"
        tiles = (all_tiles(fs, 0) * MAX_BATCH)[:MAX_BATCH]
        stored = {
            tuple(p.address): p.data
            for p in parse_multipart(
                *_multipart(http.post(url, json={"tiles": all_tiles(fs, 0), "format": "raw"}))
            )
        }
        with http.stream("POST", url, json={"tiles": tiles, "format": "raw"}) as response:
            pieces = response.iter_raw(64 * 1024)
            received = [next(pieces)]
            rewritten = pydicom.dcmread(level0)
            rewritten.ImageComments = "X" * 500  # same pixels, frames 500 bytes further on
            rewritten.save_as(level0)
            with pytest.raises(httpx.HTTPError):  # the server aborts the stream
                received.extend(pieces)
                parts = parse_multipart(response.headers["content-type"], b"".join(received))
                assert all(p.data == stored[tuple(p.address)] for p in parts), "stale bytes"
        again = http.post(url, json={"tiles": [[0, 1, 1]], "format": "raw"})  # re-indexed
        assert parse_multipart(*_multipart(again))[0].data == stored[(0, 1, 1)]


# -- request body limit ------------------------------------------------------------------------


def test_an_oversized_body_is_refused_even_with_few_tiles(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    url = f"/slides/{fs.series_uid}/tiles:batch"
    body = b'{"tiles": [[0, 0, 0]], "pad": "' + b"x" * (2 * MAX_BODY) + b'"}'
    declared = client.post(url, content=body)
    assert declared.status_code == 400 and "bytes" in declared.json()["error"]
    chunked = client.post(url, content=iter([body[:1000], body[1000:]]))  # no Content-Length
    assert chunked.status_code == 400 and "bytes" in chunked.json()["error"]
    assert client.post(url, content=body[: MAX_BODY // 2] + b'"}').status_code == 200


# -- focal planes and optical paths that differ per level --------------------------------------


def _per_level(
    name: str, planes: dict, level1: list[tuple[int, int]]
) -> Callable[[Path], FixtureSet]:
    """Level 0 holds every ``(path, z)`` plane, one file each; level 1 only ``level1``, in
    that file order (so a level's path indexes need not be the slide's)."""

    def split(spec: InstanceSpec) -> list[InstanceSpec]:
        if spec.level == 0:  # one file per optical path
            groups = [[k for k in sorted(spec.planes) if k[0] == p] for p in sorted(paths)]
        else:
            groups = [[k] for k in level1]
        return [
            replace(spec, planes={k: spec.planes[k] for k in keys}, instance_number=i + 1)
            for i, keys in enumerate(groups)
        ]

    paths = sorted({p for p, _ in planes})

    def builder(directory: Path) -> FixtureSet:
        zs = tuple(sorted({1.5 * z for _, z in planes}))
        ctx = SeriesContext(name, name, optical_paths=tuple(map(str, paths)), focal_planes_um=zs)
        spec = replace(base_spec(tile=128), planes=planes)
        return build(name, directory, name, spec, levels=2, split=split, ctx=ctx, associated=())

    return builder


def _plane_cases() -> dict[str, Callable[[Path], FixtureSet]]:
    pixels = tissue(600, 450)
    tinted = np.ascontiguousarray(np.roll(pixels, 1, axis=2))
    focal = dict(enumerate(_focal_planes(pixels, (2.0, 0.0, 1.0))))
    return {
        "focal_l1": _per_level("focal_l1", {(0, z): p for z, p in focal.items()}, [(0, 1)]),
        "paths_swapped": _per_level(
            "paths_swapped", {(0, 0): pixels, (1, 0): tinted}, [(1, 0), (0, 0)]
        ),
        "path_missing": _per_level("path_missing", {(0, 0): pixels, (1, 0): tinted}, [(0, 0)]),
    }


@pytest.fixture(scope="module")
def plane_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    root = tmp_path_factory.mktemp("plane-slides")
    sets = {}
    for name, builder in _plane_cases().items():
        (root / name).mkdir()
        sets[name] = builder(root / name)
    process = ServerProcess([root], tmp_path_factory.mktemp("plane-server")).start()
    try:
        yield process.url, sets
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("case", "z", "path"),
    [
        ("focal_l1", 0, 0),
        ("focal_l1", 1, 0),
        ("focal_l1", 2, 0),
        ("paths_swapped", 0, 0),
        ("paths_swapped", 0, 1),
        ("path_missing", 0, 0),
    ],
)
def test_batch_maps_planes_and_paths_per_level_like_single_tiles(
    plane_server: tuple[str, dict], case: str, z: int, path: int
) -> None:
    url, sets = plane_server
    fs = sets[case]
    tiles = [[level, c, r] for level in (0, 1) for c, r in [(0, 0), (1, 1)]]
    with httpx.Client(base_url=url, timeout=30) as http:
        body = {"tiles": tiles, "format": "raw", "z": z, "path": path}
        response = http.post(f"/slides/{fs.series_uid}/tiles:batch", json=body)
        assert response.status_code == 200, response.text
        for part in parse_multipart(*_multipart(response)):
            level, col, row = part.address
            single = http.get(
                f"/slides/{fs.series_uid}/tiles/{level}/{col}/{row}?z={z}&path={path}"
            )
            assert single.status_code == 200 and part.data == single.content


def test_batch_for_an_optical_path_a_level_lacks_is_404(plane_server: tuple[str, dict]) -> None:
    url, sets = plane_server
    fs = sets["path_missing"]
    with httpx.Client(base_url=url, timeout=30) as http:
        batch_url = f"/slides/{fs.series_uid}/tiles:batch"
        assert http.post(batch_url, json={"tiles": [[0, 0, 0]], "path": 1}).status_code == 200
        lacking = http.post(batch_url, json={"tiles": [[0, 0, 0], [1, 0, 0]], "path": 1})
        assert lacking.status_code == 404 and "optical path" in lacking.json()["error"]
        assert http.get(f"/slides/{fs.series_uid}/tiles/1/0/0?path=1").status_code == 404
