"""Slides in S3-compatible object storage (``tileserver/readers/s3.py``) against a real
local S3 server (moto in server mode): indexing with ranged reads, byte-identical tiles,
one GET per cold tile and none for a repeated one, coalesced batches, changed and deleted
objects, and an unreachable bucket answering 503 for its slides only."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import obstore
import pytest
from objectstore import S3Server, restore_env, use_env
from serverproc import ServerProcess
from slidefiles import open_fixture

from fixtures import FixtureSet
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.errors import SlideChangedError, TileAbsentError
from tileserver.readers import s3
from tileserver.slide import Slide

CASES = ["jpeg_bot", "jpeg_eot", "jpeg_multifragment_nobot", "sparse", "multi_focal_optical"]
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "real-slides"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    moto = S3Server(tmp_path_factory.mktemp("s3")).start()
    previous = use_env(moto.env)
    try:
        yield moto
    finally:
        restore_env(previous)
        moto.stop()


@pytest.fixture
def gets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every ranged GET the S3 source makes, as (offset, length); the read cache emptied."""
    calls: list[tuple[int, int]] = []
    real = s3.S3Object._get

    def counted(self: s3.S3Object, offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return real(self, offset, length)

    monkeypatch.setattr(s3.S3Object, "_get", counted)
    monkeypatch.setattr(s3, "RANGES", s3._RangeCache(s3.CACHE_BYTES))
    return calls


def _tiles(slide: Slide) -> Iterator[tuple[int, int, int]]:
    for level in slide.levels:
        for row in range(level.grid.height):
            for col in range(level.grid.width):
                yield level.index, col, row


def _library(tmp_path: Path, *roots: str | Path) -> SlideLibrary:
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), list(roots))
    library.refresh()
    return library


@pytest.mark.parametrize("case", CASES)
def test_every_stored_tile_from_a_bucket_equals_the_files_frame(
    server: S3Server, tmp_path: Path, fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    bucket = f"tiles-{case.replace('_', '-')}"
    server.create_bucket(bucket)
    server.upload(bucket, fixture_dir[case].directory, "slides/case")
    library = _library(tmp_path, f"s3://{bucket}/slides")
    (slide_id,) = library.ids()
    remote, local = library.get(slide_id), open_fixture(fixture_dir[case])
    assert remote.path == "case" and [lv.size for lv in remote.levels] == [
        lv.size for lv in local.levels
    ]
    for plane in range(len(local.focal_planes)):
        for level, col, row in _tiles(local):
            try:
                expected = local.read_tile_bytes(level, col, row, plane).data
            except TileAbsentError:
                with pytest.raises(TileAbsentError):
                    remote.read_tile_bytes(level, col, row, plane)
                continue
            assert remote.read_tile_bytes(level, col, row, plane).data == expected
    library.close()


def test_real_slides_from_a_bucket(server: S3Server, tmp_path: Path) -> None:
    if not REAL.is_dir():
        pytest.skip(f"real slides not found at {REAL}")
    tree = tmp_path / "real"
    tree.mkdir()
    for path in sorted(REAL.glob("*.dcm")):
        shutil.copy(path, tree / path.name)
    server.create_bucket("real")
    server.upload("real", tree, "wsi")
    remote = _library(tmp_path / "remote", "s3://real/wsi")
    local = _library(tmp_path / "local", tree)
    assert remote.ids() == local.ids() and remote.ids()
    for slide_id in local.ids():
        ours, theirs = remote.get(slide_id), local.get(slide_id)
        for level, col, row in _tiles(theirs):
            try:
                expected = theirs.read_tile_bytes(level, col, row).data
            except TileAbsentError:
                continue
            assert ours.read_tile_bytes(level, col, row).data == expected


def test_indexing_reads_ranges_of_increasing_size_never_a_whole_object(
    server: S3Server,
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    gets: list[tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small windows so the fixture objects are many windows long: a walk over items with
    no offset table reads windows that grow, and no single GET holds a whole object."""
    from tileserver.readers import dicom_backend

    monkeypatch.setattr(s3, "FIRST_WINDOW", 1024)
    monkeypatch.setattr(s3, "MAX_WINDOW", 8192)
    monkeypatch.setattr(dicom_backend, "HEADER_CHUNK", 2048)
    case = fixture_dir["jpeg_multifragment_nobot"]
    server.create_bucket("ranges")
    server.upload("ranges", case.directory, "s")
    library = _library(tmp_path, "s3://ranges/s")
    assert library.ids() == [case.series_uid]
    smallest = min(p.stat().st_size for p in case.directory.iterdir())
    assert gets and max(length for _, length in gets) <= 8192 < smallest
    windows = [length for _, length in gets if length > 2048]
    assert windows and max(windows) > min(windows)  # they grew


def test_a_cold_tile_is_one_get_and_a_repeated_one_none(
    server: S3Server,
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    gets: list[tuple[int, int]],
) -> None:
    server.create_bucket("cold")
    server.upload("cold", fixture_dir["jpeg_bot"].directory, "s")
    library = _library(tmp_path, "s3://cold/s")
    slide = library.get(library.ids()[0])
    gets.clear()
    first = slide.read_tile_bytes(0, 1, 1)
    assert len(gets) == 1 and gets[0][1] == len(first.data)
    assert slide.read_tile_bytes(0, 1, 1).data == first.data
    cached = slide.read_tile_bytes_if_cached(0, 1, 1)
    assert cached is not None and cached.data == first.data
    assert len(gets) == 1


def test_adjacent_frames_of_a_batch_are_one_get(
    server: S3Server,
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    gets: list[tuple[int, int]],
) -> None:
    server.create_bucket("batch")
    server.upload("batch", fixture_dir["jpeg_bot"].directory, "s")
    library = _library(tmp_path, "s3://batch/s")
    slide = library.get(library.ids()[0])
    gets.clear()
    tiles = [(0, 0), (1, 0), (2, 0), (3, 0)]
    read = slide.read_tiles(0, tiles)
    assert len(gets) == 1
    local = open_fixture(fixture_dir["jpeg_bot"])
    assert [t.data for t in read if t] == [local.read_tile_bytes(0, c, r).data for c, r in tiles]


def test_a_changed_object_is_reindexed_and_a_deleted_one_dropped(
    server: S3Server,
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.create_bucket("changes")
    uris = server.upload("changes", fixture_dir["jpeg_bot"].directory, "s")
    library = _library(tmp_path, "s3://changes/s")
    slide = library.get(library.ids()[0])
    store = server.store("changes")
    key = next(u for u in uris if u.endswith("/level0.dcm")).removeprefix("s3://changes/")
    data = bytes(obstore.get(store, key).bytes())
    obstore.put(store, key, data + b"\0\0")  # rewritten: a new ETag
    monkeypatch.setattr(s3, "RANGES", s3._RangeCache(s3.CACHE_BYTES))
    with pytest.raises(SlideChangedError):
        slide.read_tile_bytes(0, 0, 0)
    fresh = library.get(slide.id)
    assert fresh.version != slide.version and fresh.read_tile_bytes(0, 0, 0).data
    for uri in uris:
        obstore.delete(store, uri.removeprefix("s3://changes/"))
    library.refresh()
    assert library.ids() == []


def test_an_unreachable_bucket_answers_503_for_its_slides_only(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    moto = S3Server(tmp_path).start()
    try:
        moto.create_bucket("fragile")
        moto.upload("fragile", fixture_dir["jpeg_bot"].directory, "s")
        local = tmp_path / "local"
        shutil.copytree(fixture_dir["j2k_lossless"].directory, local / "j2k")
        env = {**moto.env, "TILESERVER_S3_CACHE_BYTES": "0"}
        process = ServerProcess(
            [local], tmp_path, env=env, extra_args=["--slides", "s3://fragile/s"]
        )
        process.start()
        try:
            remote_id = fixture_dir["jpeg_bot"].series_uid
            local_id = fixture_dir["j2k_lossless"].series_uid
            with httpx.Client(base_url=process.url, timeout=60) as client:
                assert client.get(f"/slides/{remote_id}/tiles/0/0/0").status_code == 200
                moto.stop()
                down = client.get(f"/slides/{remote_id}/tiles/0/1/0")
                assert down.status_code == 503 and "unavailable" in down.json()["error"]
                assert client.get(f"/slides/{local_id}/tiles/0/0/0").status_code == 200
                listed = {s["id"] for s in client.get("/slides").json()["slides"]}
                assert local_id in listed
        finally:
            process.stop()
    finally:
        moto.stop()


@pytest.mark.redis
def test_a_tile_fetched_by_one_server_costs_no_get_on_another(
    server: S3Server,
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    gets: list[tuple[int, int]],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Object reads are shared through Redis: a second process (here: the process-wide
    read cache emptied, a new library) finds the bytes there; with Redis unreachable the
    read is an ordinary GET."""
    server.create_bucket("shared")
    server.upload("shared", fixture_dir["jpeg_bot"].directory, "s")
    monkeypatch.setattr(s3, "SHARED", s3.SharedRanges(redis_url))
    first = _library(tmp_path / "a", "s3://shared/s")
    expected = first.get(first.ids()[0]).read_tile_bytes(0, 1, 0).data
    gets.clear()
    monkeypatch.setattr(s3, "RANGES", s3._RangeCache(s3.CACHE_BYTES))  # "another process"
    second = _library(tmp_path / "b", "s3://shared/s")
    gets.clear()
    assert second.get(second.ids()[0]).read_tile_bytes(0, 1, 0).data == expected
    assert gets == [] and s3.SHARED is not None and s3.SHARED.hits >= 1
    monkeypatch.setattr(s3, "SHARED", s3.SharedRanges("redis://127.0.0.1:1/0"))
    monkeypatch.setattr(s3, "RANGES", s3._RangeCache(s3.CACHE_BYTES))
    third = _library(tmp_path / "c", "s3://shared/s")
    gets.clear()
    assert third.get(third.ids()[0]).read_tile_bytes(0, 1, 0).data == expected
    assert len(gets) == 1  # Redis down: one GET, no error
