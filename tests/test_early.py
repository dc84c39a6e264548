"""The early tile path (``tileserver/http/early.py``): stored tiles served from the catalog's
tile locators while the app is still being built, on real uvicorn and granian processes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serverproc import free_port, stop_process
from slidefiles import open_fixture, written_frame

import fixtures
from fixtures import FixtureSet
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.compose import DEFAULT_PLANE
from tileserver.errors import TileAbsentError
from tileserver.http.early import EarlyTiles
from tileserver.http.stored import TILE_CACHE_CONTROL, TILES_ROUTE, tile_etag
from tileserver.readers.dicom import DicomReader
from tileserver.readers.locator import TileLocator
from tileserver.readers.source import SourceIdentity

CASE = "jpeg_bot"
TESTS = Path(__file__).parent


@pytest.mark.parametrize("case", sorted(fixtures.CASES))
def test_locator_reads_what_the_reader_reads(fixture_dir: dict[str, FixtureSet], case: str) -> None:
    """Through encode/decode, every tile of the first plane and path reads as the full
    reader reads it; absent tiles and multi-fragment frames are left to the app (None)."""
    slide = open_fixture(fixture_dir[case])
    reader = slide.reader
    assert isinstance(reader, DicomReader)
    series = [SourceIdentity("/slides/b.dcm", 2, "20"), SourceIdentity("/slides/a.dcm", 1, "10")]
    locator = TileLocator.decode(*reader.tile_locator("v1", series).encode())
    assert locator.version == "v1" and locator.series == sorted(series)
    assert len(locator.levels) == len(slide.levels)
    read = 0
    for level in slide.levels:
        for row in range(level.grid.height):
            for col in range(level.grid.width):
                ours = locator.read(level.index, col, row)
                try:
                    theirs = reader.read_tile(level.index, col, row)
                except TileAbsentError:
                    assert ours is None
                    continue
                frame = reader.frame_number(level.index, col, row)
                assert frame is not None
                fragments = reader._row(reader.layout.levels[level.index], frame)[3]
                if fragments > 1:  # joined by the full reader only
                    assert ours is None
                    continue
                assert ours == (theirs.data, theirs.media_type), (level.index, col, row)
                read += 1
        assert locator.read(level.index, level.grid.width, 0) is None  # past the grid
    multi_fragment = fixture_dir[case].level(0).fragments_per_frame > 1
    assert (read == 0) == multi_fragment


def test_locator_rejects_tables_that_do_not_fit(fixture_dir: dict[str, FixtureSet]) -> None:
    reader = open_fixture(fixture_dir[CASE]).reader
    assert isinstance(reader, DicomReader)
    meta, tables = reader.tile_locator("v1", []).encode()
    for bad_meta, bad_tables in ((meta, tables[:-1]), (b"{}", tables), (b"[", tables)):
        with pytest.raises(ValueError):
            TileLocator.decode(bad_meta, bad_tables)


def build_catalog(slides: Path, catalog_path: Path) -> dict[str, str]:
    """Index ``slides`` and open every slide once, as a server did before a restart; the
    slides' versions by id."""
    catalog = Catalog(catalog_path, [slides])
    library = SlideLibrary(catalog, [slides])
    library.refresh()
    versions = {slide_id: library.get(slide_id).version for slide_id in library.ids()}
    library.close()  # waits for the locators to be written
    catalog.close()
    return versions


@pytest.fixture
def indexed(tmp_path: Path, fixture_dir: dict[str, FixtureSet]) -> tuple[Path, Path, str]:
    """(slide root, catalog, version) for a copy of the jpeg_bot case."""
    root = tmp_path / "slides"
    shutil.copytree(fixture_dir[CASE].directory, root / CASE)
    catalog = tmp_path / "catalog.sqlite"
    versions = build_catalog(root, catalog)
    return root, catalog, versions[fixture_dir[CASE].series_uid]


def test_catalog_keeps_the_locator_of_each_opened_slide(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet]
) -> None:
    root, catalog_path, version = indexed
    catalog = Catalog(catalog_path, [root])
    rows = catalog.query("SELECT slide_id, version, meta, tables FROM tile_locators")
    assert [(r[0], r[1]) for r in rows] == [(fixture_dir[CASE].series_uid, version)]
    locator = TileLocator.decode(rows[0][2], rows[0][3])
    assert locator.read(0, 1, 1) == (written_frame(fixture_dir[CASE], 1, 1), "image/jpeg")
    catalog.remove(list(catalog.files()))  # the slide's files are gone: so is its locator
    assert catalog.query("SELECT count(*) FROM tile_locators")[0][0] == 0
    catalog.close()


def test_the_catalog_keeps_the_locators_of_the_slides_opened_last(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet]
) -> None:
    root, catalog_path, _ = indexed
    reader = open_fixture(fixture_dir[CASE]).reader
    assert isinstance(reader, DicomReader)
    locator = reader.tile_locator("v1", [])
    catalog = Catalog(catalog_path, [root])
    for slide_id in ("a", "b", "a", "c"):  # "a" opened again before "c": "b" goes
        catalog.put_locator(slide_id, locator, keep=2)
    kept = catalog.query("SELECT slide_id FROM tile_locators ORDER BY opened_at")
    assert [r[0] for r in kept] == ["a", "c"]
    catalog.close()


def test_a_catalog_of_another_schema_is_rebuilt_by_the_next_scan(
    indexed: tuple[Path, Path, str],
) -> None:
    """The catalog is an index: one set up by another schema version is emptied rather
    than read with the wrong shape, and the next scan fills it again."""
    root, catalog_path, _ = indexed
    catalog = Catalog(catalog_path, [root])
    assert catalog.query("SELECT count(*) FROM tile_locators")[0][0] == 1
    catalog.query("PRAGMA user_version = 1")
    catalog.close()
    catalog = Catalog(catalog_path, [root])
    assert catalog.query("SELECT count(*) FROM tile_locators")[0][0] == 0
    assert catalog.series_uids() == []
    library = SlideLibrary(catalog, [root])
    library.refresh()
    assert catalog.series_uids() and library.ids() == catalog.series_uids()
    library.close()
    catalog.close()


def test_an_outdated_locator_is_replaced_when_the_slide_opens(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet]
) -> None:
    """A locator written by an older tileserver (another format) does not stay behind."""
    root, catalog_path, _ = indexed
    slide_id = fixture_dir[CASE].series_uid
    catalog = Catalog(catalog_path, [root])
    with catalog.transaction() as conn:
        conn.execute("UPDATE tile_locators SET meta = ?", (b'{"format": 0}',))
    early = EarlyTiles(catalog_path, [str(root)])
    assert early.answer(f"/slides/{slide_id}/tiles/0/0/0") is None  # cannot be decoded
    library = SlideLibrary(catalog, [root])
    library.get(slide_id)
    library.close()
    row = catalog.query("SELECT meta, tables FROM tile_locators")[0]
    assert TileLocator.decode(row[0], row[1]).read(0, 0, 0) is not None
    catalog.close()


def test_early_tiles_answer_with_the_apps_bytes_and_etag(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet]
) -> None:
    root, catalog, version = indexed
    fs = fixture_dir[CASE]
    early = EarlyTiles(catalog, [str(root)])
    found = early.answer(f"/slides/{fs.series_uid}/tiles/0/2/1")
    assert found is not None
    assert found.body == written_frame(fs, 2, 1)
    assert found.media_type == "image/jpeg"
    assert found.etag == tile_etag(version, 0, 2, 1, DEFAULT_PLANE, None)
    for path in (
        f"/slides/{fs.series_uid}/tiles/0/999/0",  # past the grid
        f"/slides/{fs.series_uid}/tiles/9/0/0",  # no such level
        "/slides/1.2.3/tiles/0/0/0",  # no such slide
        f"/slides/{fs.series_uid}/region",  # not a tile URL
    ):
        assert early.answer(path) is None, path


def test_early_tiles_serve_only_the_served_roots(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet], tmp_path: Path
) -> None:
    _, catalog, _ = indexed
    early = EarlyTiles(catalog, [str(tmp_path / "elsewhere")])
    assert early.answer(f"/slides/{fixture_dir[CASE].series_uid}/tiles/0/0/0") is None


def test_early_tiles_decline_a_rewritten_file(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet]
) -> None:
    root, catalog, _ = indexed
    path = f"/slides/{fixture_dir[CASE].series_uid}/tiles/0/0/0"
    early = EarlyTiles(catalog, [str(root)])
    assert early.answer(path) is not None
    for file in (root / CASE).iterdir():
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert early.answer(path) is None  # the read checks the file it is about to read
    assert EarlyTiles(catalog, [str(root)]).answer(path) is None


def test_early_tiles_decline_a_slide_whose_files_changed_in_the_catalog(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet]
) -> None:
    """A rescan that changed the slide's files (a level added, say) changes its version:
    the locator written before no longer describes the slide."""
    root, catalog_path, _ = indexed
    catalog = Catalog(catalog_path, [root])
    with catalog.transaction() as conn:
        conn.execute("UPDATE files SET size = size + 1")
    catalog.close()
    early = EarlyTiles(catalog_path, [str(root)])
    assert early.answer(f"/slides/{fixture_dir[CASE].series_uid}/tiles/0/0/0") is None


def test_early_tiles_on_a_catalog_from_before_locators(
    indexed: tuple[Path, Path, str],
    fixture_dir: dict[str, FixtureSet],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first start after an upgrade: no locator table yet, so the app answers; no error."""
    root, catalog_path, _ = indexed
    with sqlite3.connect(catalog_path) as conn:
        conn.execute("DROP TABLE tile_locators")
    early = EarlyTiles(catalog_path, [str(root)])
    assert early.answer(f"/slides/{fixture_dir[CASE].series_uid}/tiles/0/0/0") is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_early_tiles_without_a_catalog(tmp_path: Path) -> None:
    early = EarlyTiles(tmp_path / "none.sqlite", [])
    assert early.answer("/slides/1.2.3/tiles/0/0/0") is None
    assert not (tmp_path / "none.sqlite").exists()  # read-only: nothing created


# -- real servers, with the app's build held ------------------------------------------------


def held_server_argv(server: str, port: int) -> list[str]:
    if server == "failing":
        argv = [sys.executable, "-m", "uvicorn", "--factory", "early_targets:failing_asgi"]
        return [*argv, "--port", str(port), "--log-level", "warning"]
    if server == "granian":
        granian = str(Path(sys.executable).parent / "granian")
        argv = [granian, "--interface", "rsgi", "--factory", "--workers", "1"]
        return [*argv, "--port", str(port), "--log-level", "warning", "early_targets:held_rsgi"]
    argv = [sys.executable, "-m", "uvicorn", "--factory", "early_targets:held_asgi"]
    return [*argv, "--port", str(port), "--log-level", "warning"]


class HeldServer:
    """A server over the indexed copy whose app build waits until ``gate`` exists."""

    def __init__(
        self, server: str, indexed: tuple[Path, Path, str], work: Path, **env: str
    ) -> None:
        root, catalog, _ = indexed
        self.port, self.gate, self.log = free_port(), work / "gate", work / "server.log"
        self.env = {
            **os.environ,
            "EARLY_TEST_GATE": str(self.gate),
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "TILESERVER_SLIDES": str(root),
            "TILESERVER_CATALOG": str(catalog),
            "TILESERVER_RESCAN_INTERVAL": "0",
            **env,
        }
        self.argv = held_server_argv(server, self.port)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> httpx.Client:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        wait_listening(self.port, self.process, self.log)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.gate.touch()
        assert self.process is not None
        stop_process(self.process, timeout=30)


@pytest.fixture(params=["uvicorn", "granian"])
def held(
    request: pytest.FixtureRequest, indexed: tuple[Path, Path, str], tmp_path: Path
) -> Iterator[tuple[httpx.Client, Path]]:
    """A server whose app build waits for a gate file; (client, gate)."""
    server = HeldServer(request.param, indexed, tmp_path)
    with server as client:
        yield client, server.gate


def wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server not listening")


def test_stored_tiles_are_served_before_the_app_is_built(
    held: tuple[httpx.Client, Path],
    indexed: tuple[Path, Path, str],
    fixture_dir: dict[str, FixtureSet],
) -> None:
    client, gate = held
    _, _, version = indexed
    fs = fixture_dir[CASE]
    url = f"/slides/{fs.series_uid}/tiles/0/1/1"
    early = client.get(url, headers={"Origin": "https://viewer.example"})
    assert early.status_code == 200
    assert early.content == written_frame(fs, 1, 1)
    assert early.headers["content-type"] == "image/jpeg"
    assert int(early.headers["content-length"]) == len(early.content)
    assert early.headers["etag"] == tile_etag(version, 0, 1, 1, DEFAULT_PLANE, None)
    assert early.headers["cache-control"] == TILE_CACHE_CONTROL
    assert early.headers["access-control-allow-origin"] == "*"
    assert 'desc="early"' in early.headers["server-timing"]
    assert client.get("/healthz").status_code == 200  # alive at once
    starting = client.get("/readyz")
    assert starting.status_code == 503 and starting.json()["status"] == "starting"
    with ThreadPoolExecutor(4) as pool:
        # A query string, HEAD, If-None-Match and any other route wait for the app.
        queried = pool.submit(client.get, url, params={"z": 0})
        head = pool.submit(client.head, url)
        conditional = pool.submit(client.get, url, headers={"If-None-Match": early.headers["etag"]})
        listing = pool.submit(client.get, "/slides")
        pending = (queried, head, conditional, listing)
        time.sleep(0.5)
        assert not any(f.done() for f in pending)
        gate.touch()
        assert [s["id"] for s in listing.result().json()["slides"]] == [fs.series_uid]
        assert queried.result().content == early.content
        assert queried.result().headers["etag"] == early.headers["etag"]
        assert head.result().status_code == 200 and head.result().content == b""
        assert int(head.result().headers["content-length"]) == len(early.content)
        assert conditional.result().status_code == 304
    late = client.get(url)  # now the app's own fast path
    assert late.content == early.content and late.headers["etag"] == early.headers["etag"]
    assert "early" not in late.headers["server-timing"]
    metrics = client.get("/metrics").text
    counted = f'tileserver_requests_total{{route="{TILES_ROUTE}",method="GET",status="200"}} 3'
    assert counted in metrics  # the early answer is counted with the app's two GETs


def test_a_rewritten_file_waits_for_the_app(
    held: tuple[httpx.Client, Path],
    indexed: tuple[Path, Path, str],
    fixture_dir: dict[str, FixtureSet],
) -> None:
    client, gate = held
    root = indexed[0]
    fs = fixture_dir[CASE]
    for file in (root / CASE).iterdir():
        stat = file.stat()
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    url = f"/slides/{fs.series_uid}/tiles/0/1/1"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.get, url)
        time.sleep(0.5)
        assert not pending.done()
        gate.touch()
        response = pending.result()
    assert response.status_code == 200 and response.content == written_frame(fs, 1, 1)
    assert "early" not in response.headers["server-timing"]


def test_early_tiles_follow_a_restricted_cors_policy(
    indexed: tuple[Path, Path, str], fixture_dir: dict[str, FixtureSet], tmp_path: Path
) -> None:
    allowed = "https://viewer.example"
    url = f"/slides/{fixture_dir[CASE].series_uid}/tiles/0/0/0"
    with HeldServer("uvicorn", indexed, tmp_path, TILESERVER_CORS_ORIGINS=allowed) as client:
        granted = client.get(url, headers={"Origin": allowed})
        refused = client.get(url, headers={"Origin": "https://elsewhere.example"})
    assert 'desc="early"' in granted.headers["server-timing"]
    assert granted.headers["access-control-allow-origin"] == allowed
    assert "access-control-allow-origin" not in refused.headers
    assert granted.headers["vary"] == refused.headers["vary"] == "Origin"


def test_a_stop_while_the_app_builds_never_starts_it(
    indexed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The app's startup (catalog, initial scan) is skipped when the server stops first:
    no scan takes the catalog's scan lock."""
    catalog = indexed[1]
    server = HeldServer("uvicorn", indexed, tmp_path)
    with server:
        assert server.process is not None
        server.process.terminate()
        time.sleep(0.3)
        server.gate.touch()
        # uvicorn shuts down, then re-raises the signal it caught
        assert server.process.wait(timeout=30) == -signal.SIGTERM
    assert not Path(f"{catalog}.scan-lock").exists()


def test_requests_waiting_for_an_app_that_fails_get_a_503(
    indexed: tuple[Path, Path, str], tmp_path: Path
) -> None:
    server = HeldServer("failing", indexed, tmp_path)
    with server as client, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.get, "/slides")
        time.sleep(0.3)
        server.gate.touch()
        response = waiting.result()
        assert server.process is not None
        status = server.process.wait(timeout=30)
    assert response.status_code == 503
    assert "broken on purpose" in response.json()["error"]
    assert response.headers["access-control-allow-origin"] == "*"
    assert status == 3


#: How each server ends when its app cannot start: uvicorn with its own failed-startup status
#: (with several workers its supervisor stops, and exits 0 itself); granian with 1.
FAILED_START_STATUS = [("uvicorn", 1, 3), ("uvicorn", 2, 0), ("granian", 1, 1)]


@pytest.mark.parametrize(("server", "workers", "status"), FAILED_START_STATUS)
def test_serve_stops_when_the_app_cannot_start(
    tmp_path: Path, server: str, workers: int, status: int
) -> None:
    """The early path answers at once, but a start that fails still stops ``serve``, also
    with several workers (no restart loop), and says why: here the catalog's directory is a
    file."""
    (tmp_path / "slides").mkdir()
    (tmp_path / "not-a-dir").write_text("")
    argv = [sys.executable, "-m", "tileserver.cli", "serve", "--slides", str(tmp_path / "slides")]
    argv += ["--catalog", str(tmp_path / "not-a-dir" / "catalog.sqlite"), "--port", "0"]
    argv += ["--server", server, "--workers", str(workers)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == status, done.stderr[-2000:]
    assert "tileserver failed to start" in done.stderr
    assert "not-a-dir" in done.stderr
