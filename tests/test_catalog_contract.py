"""One catalog suite, run on SQLite and on PostgreSQL (a private cluster, ``pgserver.py``).

What every backend must do alike: store, skip and remove sources; hand them back under
roots that are path prefixes; bump the generation on every write (and only then); keep
the tile locators of the slides opened last; let one scanner at a time hold the scan lock
(and free it when that scanner dies); resume an interrupted scan without re-reading what
was committed. QIDO's parity across the two is ``test_catalog_qido.py``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import catalogs
import numpy as np
import orjson
import pgserver
import pytest
from catalogs import OpenCatalog, copy_tree
from serverproc import eventually

import fixtures
from fixtures import FixtureSet
from tileserver.catalog import Catalog, SlideLibrary, scan
from tileserver.catalog.scanner import index_source
from tileserver.errors import CatalogUnavailableError
from tileserver.http.errors import status_for
from tileserver.readers.base import IndexedFile
from tileserver.readers.locator import TileLocator
from tileserver.readers.source import SourceIdentity, current_identity

# The fixtures these tests take by name.
pg_cluster, pg_database = pgserver.pg_cluster, pgserver.pg_database
location, open_catalog = catalogs.location, catalogs.open_catalog
CASES = ("jpeg_bot", "sparse")


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureSet]:
    sets: dict[str, FixtureSet] = fixtures.generate_all(tmp_path_factory.mktemp("cases"), CASES)
    return sets


@pytest.fixture
def tree(tmp_path: Path, cases: dict[str, FixtureSet]) -> Path:
    return copy_tree([cases[c].directory for c in CASES], tmp_path / "slides")


def source_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if p.is_file())


def record_file(uri: str, slide_id: str, record: bytes) -> tuple[SourceIdentity, IndexedFile]:
    """A non-DICOM source as a backend with its own record bytes would index it."""
    identity = SourceIdentity(uri, len(record), "tag-" + record.hex())
    return identity, IndexedFile(slide_id, None, record)


def put_record(catalog: Catalog, uri: str, slide_id: str, record: bytes = b"r") -> None:
    identity, indexed = record_file(uri, slide_id, record)
    catalog.put_indexed("/", identity, "tiff", indexed)


def test_an_indexed_source_comes_back_as_it_was_put(open_catalog: OpenCatalog, tree: Path) -> None:
    catalog = open_catalog()
    path = str(source_files(tree / "jpeg_bot")[0])
    identity = current_identity(path)
    backend, indexed = index_source(identity)
    catalog.put_indexed(str(tree), identity, backend, indexed)
    (stored,) = catalog.stored_files(indexed.slide_id)
    assert (stored.identity, stored.root, stored.backend) == (identity, str(tree), backend)
    assert stored.instance is not None and indexed.instance is not None
    assert stored.instance.header == indexed.instance.header
    assert np.array_equal(stored.instance.frames.rows, indexed.instance.frames.rows)
    assert stored.instance.frames.notes == indexed.instance.frames.notes
    assert catalog.files()[path].status == "indexed"
    assert catalog.series_uids() == [indexed.slide_id]


def test_record_bytes_and_skips_and_removal(open_catalog: OpenCatalog) -> None:
    catalog = open_catalog()
    identity, indexed = record_file("/s/a.svs", "slide-a", bytes(range(256)) * 3)
    catalog.put_indexed("/s", identity, "openslide", indexed)
    (stored,) = catalog.stored_files("slide-a")
    assert (stored.record, stored.instance, stored.backend) == (indexed.record, None, "openslide")
    catalog.put_skipped("/s", SourceIdentity("/s/b.txt", 3, "t"), "not a slide")
    assert [(f.path, f.reason) for f in catalog.skipped()] == [("/s/b.txt", "not a slide")]
    catalog.put_skipped("/s", identity, "unreadable now")  # replaces the indexed entry
    assert catalog.stored_files("slide-a") == [] and catalog.series_files() == {}
    catalog.remove(["/s/a.svs", "/s/b.txt"])
    assert catalog.files() == {}


def test_removing_a_dicom_source_removes_its_instance(
    open_catalog: OpenCatalog, tree: Path
) -> None:
    catalog = open_catalog()
    scan(catalog, [tree])
    paths = list(catalog.files())
    catalog.remove(paths[:1])
    rows = catalog.query("SELECT path FROM instances WHERE path = ?", (paths[0],))
    assert rows == [] and paths[0] not in catalog.files()


def test_roots_are_path_prefixes_not_string_prefixes(open_catalog: OpenCatalog) -> None:
    catalog = open_catalog()
    odd = "/x/it's 50%_off?"  # quotes and LIKE/placeholder characters stay plain text
    for uri in ("/a", "/a/x.svs", "/a/b/y.svs", "/ab/x.svs", "/a%/z.svs", f"{odd}/w.svs"):
        put_record(catalog, uri, "s" + uri.replace("/", "-"))
    served = {f.path for files in catalog.series_files(["/a"]).values() for f in files}
    assert served == {"/a", "/a/x.svs", "/a/b/y.svs"}
    assert set(catalog.files(["/a/"])) == {"/a/x.svs", "/a/b/y.svs"}
    assert set(catalog.files([odd])) == {f"{odd}/w.svs"}
    assert catalog.stored_files("s-ab-x.svs", ["/a"]) == []
    assert [f.identity.uri for f in catalog.stored_files("s-ab-x.svs", ["/ab"])] == ["/ab/x.svs"]
    assert catalog.series_files([]) == {} and len(catalog.files(None)) == 6


def test_every_write_bumps_the_generation_and_nothing_else_does(
    open_catalog: OpenCatalog,
) -> None:
    writer, reader = open_catalog(), open_catalog()  # two processes' handles
    start = reader.generation()
    identity, indexed = record_file("/s/a.svs", "a", b"1")
    writer.put_indexed("/s", identity, "tiff", indexed)
    writer.put_skipped("/s", SourceIdentity("/s/b", 1, "t"), "no")
    writer.remove(["/s/b"])
    writer.remove([])  # nothing to remove: no write
    assert reader.generation() == start + 3
    writer.put_locator("a", TileLocator("v1", [identity], [], []))
    reader.files(), reader.series_files(), reader.stored_files("a")
    assert reader.generation() == start + 3


def test_a_failed_transaction_writes_nothing(open_catalog: OpenCatalog) -> None:
    catalog = open_catalog()
    start = catalog.generation()
    with pytest.raises(RuntimeError), catalog.transaction() as tx:
        tx.execute(
            "INSERT INTO files VALUES (?, '/', 1, 't', NULL, NULL, NULL, 'skipped', 'x', 0)",
            ("/half",),
        )
        raise RuntimeError("interrupted mid-source")
    assert catalog.files() == {} and catalog.generation() == start


def test_concurrent_writers_of_one_source_leave_one_whole_entry(open_catalog: OpenCatalog) -> None:
    """Servers on several hosts may re-index the same changed source at once."""
    handles = [open_catalog() for _ in range(3)]
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(15):
                identity, indexed = record_file("/s/one.svs", "one", bytes([n, i]))
                handles[n].put_indexed("/s", identity, "tiff", indexed)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(handles[0].files()) == 1 and len(handles[0].stored_files("one")) == 1
    assert handles[0].generation() == 45


def locator(slide: str, version: str = "v1") -> TileLocator:
    return TileLocator(version, [SourceIdentity(f"/s/{slide}", 1, "t")], [], [])


def locator_rows(catalog: Catalog) -> dict[str, str]:
    rows = catalog.query("SELECT slide_id, version FROM tile_locators")
    return {r[0]: r[1] for r in rows}


def test_locators_kept_are_those_of_the_slides_opened_last(open_catalog: OpenCatalog) -> None:
    catalog = open_catalog()
    for slide in ("s0", "s1", "s2"):
        catalog.put_locator(slide, locator(slide), keep=3)
    catalog.put_locator("s0", locator("s0"), keep=3)  # opened again: the newest now
    catalog.put_locator("s3", locator("s3"), keep=3)
    assert set(locator_rows(catalog)) == {"s0", "s2", "s3"}
    catalog.put_locator("s2", locator("s2", "v2"), keep=3)  # another version: rewritten
    assert locator_rows(catalog)["s2"] == "v2"
    meta, tables = catalog.query("SELECT meta, tables FROM tile_locators WHERE slide_id = 's2'")[0]
    assert (bytes(meta), bytes(tables)) == locator("s2", "v2").encode()


def test_removing_a_slides_sources_drops_its_locator(open_catalog: OpenCatalog) -> None:
    catalog = open_catalog()
    for slide in ("a", "b"):
        put_record(catalog, f"/s/{slide}", slide)
        catalog.put_locator(slide, locator(slide))
    catalog.remove(["/s/a"])
    assert set(locator_rows(catalog)) == {"b"}


def test_another_handle_sees_new_slides_through_the_generation(
    open_catalog: OpenCatalog, tree: Path
) -> None:
    scanner, server = open_catalog(), open_catalog([str(tree)])
    library = SlideLibrary(server, [tree])
    try:
        assert library.ids() == []
        scan(scanner, [tree / "jpeg_bot"])
        (slide_id,) = library.ids()
        assert library.get(slide_id).reader.levels
        scan(scanner, [tree])
        assert len(library.ids()) == 2
    finally:
        library.close()


# -- one scanner at a time -------------------------------------------------------------------


def test_the_scan_lock_excludes_a_second_scanner(open_catalog: OpenCatalog) -> None:
    first, second = open_catalog(), open_catalog()
    got_it = threading.Event()

    def wait_for_lock() -> None:
        with second.scan_lock(wait=True) as held:
            assert held
            got_it.set()

    with first.scan_lock(wait=False) as held:
        assert held
        with second.scan_lock(wait=False) as also:
            assert not also
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        assert not got_it.wait(0.5)  # still held by the first scanner
    waiter.join(30)
    assert got_it.is_set()
    with second.scan_lock(wait=False) as held:
        assert held


#: A scanner in its own process: it holds the scan lock and stops, killable, in the middle
#: of the transaction of its source number argv[3] (after argv[3] - 1 were committed).
SCANNER = """
import contextlib, sys
from tileserver.catalog import Catalog, scan

catalog = Catalog(sys.argv[1])
stop_in, done = int(sys.argv[3]), [0]
plain = catalog.transaction

@contextlib.contextmanager
def transaction():
    with plain() as tx:
        yield tx
        done[0] += 1
        if done[0] == stop_in:
            print("in transaction", flush=True)
            sys.stdin.readline()  # killed here

catalog.transaction = transaction
with catalog.scan_lock() as held:
    print("scanning", flush=True)
    scan(catalog, [sys.argv[2]])
"""


def test_a_killed_scan_resumes_and_frees_the_scan_lock(
    open_catalog: OpenCatalog, location: str, tree: Path
) -> None:
    total, committed = len(source_files(tree)), 4
    catalog = open_catalog()
    command = [sys.executable, "-c", SCANNER, location, str(tree), str(committed + 1)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    with subprocess.Popen(command, **pipes) as scanner:  # type: ignore[call-overload]
        try:
            assert scanner.stdout.readline() == "scanning\n"
            assert scanner.stdout.readline() == "in transaction\n"
            with catalog.scan_lock(wait=False) as held:
                assert not held  # the scanner holds it
        finally:
            scanner.kill()
    assert len(catalog.files()) == committed  # the source in flight was rolled back
    with catalog.scan_lock(wait=True) as held:  # a dead scanner holds no lock
        assert held
        report = scan(catalog, [tree])
    assert (report.unchanged, len(report.indexed)) == (committed, total - committed)
    assert_same_catalog(catalog, tree)


def test_a_stopped_scan_resumes_where_it_stopped(open_catalog: OpenCatalog, tree: Path) -> None:
    catalog, seen = open_catalog(), []
    report = scan(catalog, [tree], progress=seen.append, should_stop=lambda: len(seen) == 3)
    assert len(report.indexed) == 3 and len(catalog.files()) == 3
    resumed = scan(catalog, [tree])
    assert resumed.unchanged == 3 and len(resumed.indexed) == len(source_files(tree)) - 3
    assert_same_catalog(catalog, tree)


def assert_same_catalog(catalog: Catalog, tree: Path) -> None:
    """``catalog`` holds what one uninterrupted scan of ``tree`` writes (a SQLite one is
    the reference for either backend)."""
    reference = Catalog(tree.parent / "reference.sqlite")
    try:
        scan(reference, [tree])
        assert catalog.series_files() == reference.series_files()
        count = "SELECT count(*) FROM instances"
        assert catalog.query(count)[0][0] == reference.query(count)[0][0]
    finally:
        reference.close()


def test_a_catalog_of_another_schema_version_is_rebuilt(
    open_catalog: OpenCatalog, location: str
) -> None:
    catalog = open_catalog()
    put_record(catalog, "/s/a", "a")
    with catalog.transaction() as tx:
        if location.startswith("postgresql://"):
            tx.execute("UPDATE meta SET value = 1 WHERE key = 'schema_version'")
        else:
            tx.execute("PRAGMA user_version = 1")
    catalog.close()
    assert open_catalog().files() == {}


def test_tileserver_index_fills_the_catalog_and_resumes(
    location: str, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tileserver.cli import main

    def index() -> dict[str, int]:
        assert main(["index", str(tree), "--catalog", location, "--json"]) == 0
        files: dict[str, int] = orjson.loads(capsys.readouterr().out)["files"]
        return files

    total = len(source_files(tree))
    assert index() == {"indexed": total, "unchanged": 0, "removed": 0}
    assert index() == {"indexed": 0, "unchanged": total, "removed": 0}


def answers(catalog: Catalog) -> bool:
    try:
        catalog.generation()
    except CatalogUnavailableError:
        return False
    return True


def test_a_lost_postgresql_server_is_a_503_error_until_it_is_back() -> None:
    """A catalog server that goes away answers ``CatalogUnavailableError`` (a 503, as
    unreachable storage does), and the same handle works again once it is back."""
    with pgserver.running_cluster() as cluster:  # its own: stopping it spares the others
        catalog = Catalog(cluster.create_database())
        try:
            put_record(catalog, "/s/a", "a")
            cluster.stop("fast")  # keeps what was committed
            with pytest.raises(CatalogUnavailableError):
                catalog.generation()
            with pytest.raises(CatalogUnavailableError):
                put_record(catalog, "/s/b", "b")
            cluster.start()
            assert eventually(lambda: answers(catalog), timeout=60)  # the pool reconnects
            assert catalog.generation() == 1 and list(catalog.files()) == ["/s/a"]
            put_record(catalog, "/s/b", "b")
            assert catalog.generation() == 2
        finally:
            catalog.close()
    assert status_for(CatalogUnavailableError("down")) == 503
