"""``tileserver.client`` against a real ``tileserver serve`` process."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from serverproc import serving_cases

from fixtures import FixtureSet, tissue_mask
from tileserver import compose
from tileserver.client import (
    AsyncTileClient,
    ServerError,
    TileAddress,
    TileClient,
    TileClientError,
    TileDataset,
)
from tileserver.client import aio as aio_module
from tileserver.client._wire import parse_multipart
from tileserver.dicom import assemble, index_instance
from tileserver.geometry import Region
from tileserver.readers.dicom import DicomReader
from tileserver.slide import Slide

CASES = ("jpeg_bot", "sparse", "native_explicit")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("server")
    with serving_cases(fixture_dir, CASES, workdir) as process:
        yield process.url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[TileClient]:
    with TileClient(server, retries=1, max_connections=4) as c:
        yield c


@pytest.fixture(scope="module")
def local() -> Iterator[dict[str, Slide]]:
    """The same slides opened in-process: the server's own read path, for comparison."""
    opened: dict[str, Slide] = {}
    yield opened
    for slide in opened.values():
        slide.close()


def open_local(local: dict[str, Slide], fs: FixtureSet) -> Slide:
    if fs.name not in local:
        layout = assemble([index_instance(p) for p in sorted(fs.directory.iterdir())])
        local[fs.name] = Slide(layout.series_uid, fs.name, DicomReader(layout))
    return local[fs.name]


def test_client_imports_no_server_module() -> None:
    code = (
        "import sys, tileserver.client\n"
        "bad = [m for m in sys.modules if m.startswith(('tileserver.', 'starlette', 'uvicorn'))"
        " and not m.startswith('tileserver.client')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_slides_and_slide(client: TileClient, fixture_dir: dict[str, FixtureSet]) -> None:
    ids = {s.id for s in client.slides()}
    assert {fixture_dir[c].series_uid for c in CASES} <= ids
    fs = fixture_dir["jpeg_bot"]
    info = client.slide(fs.series_uid)
    assert [(lv.width, lv.height) for lv in info.levels] == [
        (lv.width, lv.height) for lv in fs.levels
    ]
    assert info.mpp == pytest.approx((fs.level(0).pixel_spacing_mm * 1000,) * 2)


@pytest.mark.parametrize("case", CASES)
def test_tiles_equal_the_servers_own_reads(
    client: TileClient, local: dict[str, Slide], fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    fs = fixture_dir[case]
    slide = open_local(local, fs)
    for level in slide.levels:
        for row in range(level.grid.height):
            for col in range(level.grid.width):
                expected = compose.tile_pixels(slide, level, col, row, compose.DEFAULT_PLANE)
                assert np.array_equal(client.tile(fs.series_uid, level.index, col, row), expected)


@pytest.mark.parametrize("case", CASES)
def test_regions_equal_the_servers_own_reads(
    client: TileClient, local: dict[str, Slide], fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    fs = fixture_dir[case]
    slide = open_local(local, fs)
    for level, region in ((0, Region(100, 50, 300, 200)), (1, Region(-10, 20, 400, 90))):
        got = client.region(fs.series_uid, level=level, **_kw(region))
        expected = compose.region_pixels(slide, slide.levels[level], region)
        assert np.array_equal(got, expected)


def _kw(region: Region) -> dict[str, int]:
    return {"x": region.x, "y": region.y, "width": region.width, "height": region.height}


def test_region_at_mpp_reads_the_matching_level(
    client: TileClient, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    mpp1 = fs.level(1).pixel_spacing_mm * 1000
    at_level1 = client.region_at_mpp(fs.series_uid, mpp=mpp1, x=200, y=100, width=120, height=80)
    direct = client.region(fs.series_uid, level=1, x=100, y=50, width=120, height=80)
    assert np.array_equal(at_level1, direct)
    between = client.region_at_mpp(fs.series_uid, mpp=mpp1 * 1.5, x=0, y=0, width=50, height=40)
    assert between.shape == (40, 50, 3)


def test_errors_are_not_retried_and_say_why(client: TileClient) -> None:
    with pytest.raises(ServerError) as error:
        client.tile("no-such-slide", 0, 0, 0)
    assert error.value.status_code == 404


def tile_coverage(fs: FixtureSet, level: int) -> dict[TileAddress, float]:
    info = fs.level(level)
    truth = tissue_mask(info.width, info.height)
    th, tw = info.tile_height, info.tile_width
    return {
        TileAddress(level, c, r): float(truth[r * th : (r + 1) * th, c * tw : (c + 1) * tw].mean())
        for r in range(info.tiles_down)
        for c in range(info.tiles_across)
    }


@pytest.mark.parametrize("case", ["jpeg_bot", "sparse"])
def test_iter_tiles_skips_background_tiles(
    client: TileClient, local: dict[str, Slide], fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    fs = fixture_dir[case]
    slide = open_local(local, fs)
    batches = list(client.iter_tiles(fs.series_uid, level=0, batch_size=3, concurrency=2))
    got = [address for batch in batches for address, _ in batch]
    coverage = tile_coverage(fs, 0)
    assert all(len(b) == 3 for b in batches[:-1])
    assert got == sorted(got, key=lambda a: (a.row, a.col))
    assert all(coverage[a] > 0 for a in got)  # no background tile
    assert {a for a, f in coverage.items() if f >= 0.02} <= set(got)  # all real tissue
    assert len(got) < len(coverage)  # the fixture has background to skip
    level = slide.levels[0]
    for address, pixels in (item for batch in batches for item in batch):
        valid = compose.tile_pixels(slide, level, address.col, address.row, compose.DEFAULT_PLANE)
        h, w = valid.shape[:2]
        assert pixels.shape == (level.tile_size.height, level.tile_size.width, 3)
        assert np.array_equal(pixels[:h, :w], valid)


def test_iter_tiles_without_tissue_filter_covers_the_grid(
    client: TileClient, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["native_explicit"]
    got = [
        a
        for batch in client.iter_tiles(fs.series_uid, level=1, batch_size=4, tissue_only=False)
        for a, _ in batch
    ]
    info = fs.level(1)
    assert got == [
        TileAddress(1, c, r) for r in range(info.tiles_down) for c in range(info.tiles_across)
    ]


def test_async_client_matches_the_sync_client(
    server: str, client: TileClient, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]

    async def read() -> tuple[list[str], np.ndarray, np.ndarray, list[TileAddress]]:
        async with AsyncTileClient(server) as aclient:
            ids = [s.id for s in await aclient.slides()]
            tile = await aclient.tile(fs.series_uid, 1, 1, 1)
            region = await aclient.region_at_mpp(
                fs.series_uid, mpp=1.0, x=10, y=10, width=64, height=48
            )
            got = [a async for b in aclient.iter_tiles(fs.series_uid, batch_size=5) for a, _ in b]
            return ids, tile, region, got

    ids, tile, region, got = asyncio.run(read())
    assert ids == [s.id for s in client.slides()]
    assert np.array_equal(tile, client.tile(fs.series_uid, 1, 1, 1))
    expected = client.region_at_mpp(fs.series_uid, mpp=1.0, x=10, y=10, width=64, height=48)
    assert np.array_equal(region, expected)
    assert got == [a for b in client.iter_tiles(fs.series_uid, batch_size=5) for a, _ in b]


def test_dataset_is_map_style_and_pickles(
    client: TileClient, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    dataset = TileDataset(client, fs.series_uid, level=0, tissue_only=True)
    assert len(dataset) == len(client.tile_addresses(fs.series_uid, 0, tissue_only=True))
    copy = pickle.loads(pickle.dumps(dataset))  # what a DataLoader worker receives
    try:
        first = dataset[0]
        assert first.shape == (256, 256, 3) and first.dtype == np.uint8
        assert np.array_equal(copy[0], first)
        items = copy.__getitems__([1, 0])
        assert np.array_equal(items[1], first)
    finally:
        copy.client.close()


@pytest.mark.parametrize("concurrency", [0, -1])
def test_iter_tiles_refuses_no_concurrency_at_the_call(
    server: str, client: TileClient, fixture_dir: dict[str, FixtureSet], concurrency: int
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    with pytest.raises(ValueError, match="concurrency"):
        client.iter_tiles(sid, concurrency=concurrency)

    async def call() -> None:
        async with AsyncTileClient(server) as aclient:
            aclient.iter_tiles(sid, concurrency=concurrency)

    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(call())
    batches = list(client.iter_tiles(sid, batch_size=4, concurrency=1, tissue_only=False))
    assert sum(len(b) for b in batches) == len(client.tile_addresses(sid, 0))


def test_async_client_decodes_npy_off_the_event_loop(
    server: str, fixture_dir: dict[str, FixtureSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    threads: list[int] = []
    real = aio_module.decode_npy

    def spy(data: bytes) -> np.ndarray:
        threads.append(threading.get_ident())
        return real(data)

    monkeypatch.setattr(aio_module, "decode_npy", spy)

    async def read() -> int:
        async with AsyncTileClient(server) as aclient:
            await aclient.region(sid, level=1, x=0, y=0, width=32, height=32)
            await aclient.read_tiles(sid, [TileAddress(0, 0, 0)])
        return threading.get_ident()

    loop_thread = asyncio.run(read())
    assert len(threads) == 2 and loop_thread not in threads


def test_a_raw_batch_cut_short_raises_instead_of_dropping_tiles(
    client: TileClient, fixture_dir: dict[str, FixtureSet]
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    addresses = [TileAddress(0, c, 0) for c in range(3)]
    body = {"tiles": [list(a) for a in addresses], "format": "raw"}
    response = client.request("POST", f"/slides/{sid}/tiles:batch", json=body)
    content_type, content = response.headers["content-type"], response.content
    assert len(parse_multipart(content_type, content)) == 3
    closing = content.rindex(b"--" + content_type.split("boundary=")[1].encode())
    part_ends = [closing, *(i for i in range(len(content)) if content.startswith(b"\r\n--", i))]
    for cut in sorted(set(part_ends)):  # after a whole part, before the next delimiter
        with pytest.raises(TileClientError, match="truncated"):
            parse_multipart(content_type, content[:cut])
