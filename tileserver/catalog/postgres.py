"""The catalog in PostgreSQL: one catalog for many servers on many hosts (``cloud`` extra).

psycopg 3 with a connection pool. The tables are SQLite's, with BYTEA blobs and text in
the "C" collation (byte order, as SQLite compares: paging through QIDO results and path
prefixes agree on both). Writers take turns on the generation row, which each write
transaction bumps first; the one scanner holds a session advisory lock, which PostgreSQL
releases when its connection ends, so a scanner that dies frees it. Schema versions are
kept as SQLite keeps them: a ``meta`` row, and another version's tables are rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from tileserver.catalog import locators
from tileserver.catalog.store import TABLES, Catalog, Dialect, Location, Roots, Row, Tx
from tileserver.catalog.store import served_view_select as _served_select
from tileserver.errors import CatalogUnavailableError

SCHEMA = """
CREATE TABLE files (
    path TEXT COLLATE "C" PRIMARY KEY,
    root TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    tag TEXT NOT NULL,
    backend TEXT,
    slide_id TEXT COLLATE "C",
    record BYTEA,
    status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped')),
    reason TEXT,
    indexed_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE instances (
    path TEXT COLLATE "C" PRIMARY KEY REFERENCES files(path) ON DELETE CASCADE,
    sop_instance_uid TEXT COLLATE "C" NOT NULL,
    series_uid TEXT COLLATE "C" NOT NULL,
    study_uid TEXT COLLATE "C" NOT NULL,
    patient_id TEXT COLLATE "C",
    patient_name TEXT COLLATE "C",
    study_date TEXT COLLATE "C",
    accession_number TEXT COLLATE "C",
    modality TEXT COLLATE "C",
    header BYTEA NOT NULL,
    icc_profile BYTEA,
    frames BYTEA NOT NULL,
    frame_table_kind TEXT NOT NULL,
    positions BYTEA,
    z_base DOUBLE PRECISION NOT NULL,
    notes BYTEA NOT NULL,
    dataset_json BYTEA NOT NULL
);
CREATE INDEX instances_series ON instances(series_uid);
CREATE INDEX instances_study ON instances(study_uid);
CREATE INDEX instances_patient ON instances(patient_id);
CREATE INDEX instances_sop ON instances(sop_instance_uid);
CREATE INDEX files_slide ON files(slide_id);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE tile_locators (
    slide_id TEXT COLLATE "C" PRIMARY KEY,
    version TEXT NOT NULL,
    meta BYTEA NOT NULL,
    tables BYTEA NOT NULL,
    opened_at DOUBLE PRECISION NOT NULL
);
"""
#: The ``meta`` row ``schema_version`` holds this; another value means rebuild.
SCHEMA_VERSION = (zlib.crc32(SCHEMA.encode()) & 0x7FFFFFFF) or 1
#: Advisory lock keys (one namespace per database): schema setup, and the one scanner.
SETUP_LOCK = 0x7E5E_0001
SCAN_LOCK = 0x7E5E_0002
#: Connections per process: reads from the worker threads, the scanner's lock, writes.
POOL_MAX = 8
CONNECT_TIMEOUT = 10
#: How long a request waits for a pooled connection before its answer is a 503.
POOL_TIMEOUT = 5.0
#: What a lost or unreachable server raises.
_LOST = (psycopg.OperationalError, PoolTimeout)


def _like_pattern(text: str) -> str:
    """A DICOM wildcard pattern for LIKE, whose default escape character is ``\\``."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


POSTGRES = Dialect("postgresql", "LIKE", _like_pattern, "string_agg(DISTINCT {}, ',')")


to_format = functools.lru_cache(maxsize=1024)(locators.to_format)


class PgRow:
    """A row by position or column name, as ``sqlite3.Row`` (the first of equal names)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index, self._values = index, values

    def __getitem__(self, key: int | str, /) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def pg_rows(cursor: Any) -> RowMaker[PgRow]:
    index: dict[str, int] = {}
    for position, column in enumerate(cursor.description or ()):
        index.setdefault(column.name, position)
    return functools.partial(PgRow, index)


class _PgTx:
    """A transaction's connection taking the catalog's ``?`` SQL."""

    def __init__(self, conn: psycopg.Connection[PgRow]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        return self._conn.execute(to_format(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        with self._conn.cursor() as cursor:
            cursor.executemany(to_format(sql), parameters)


class PostgresCatalog(Catalog):
    """The catalog in a PostgreSQL database; ``url`` is its ``postgresql://`` URL."""

    dialect = POSTGRES

    def __init__(self, location: Location, roots: Roots | None = None) -> None:
        self.url = str(location)
        self._view = f"CREATE OR REPLACE TEMP VIEW served_instances AS {_served_select(roots)}"
        with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT) as conn:
            _setup(conn)
        self._pool: ConnectionPool[psycopg.Connection[PgRow]] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=POOL_MAX,
            kwargs={"autocommit": True, "row_factory": pg_rows, "connect_timeout": CONNECT_TIMEOUT},
            configure=self._configure,
            timeout=POOL_TIMEOUT,
            open=False,
            name="tileserver-catalog",
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        self._indexes_seen: set[str] = set()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = (f"{parts.username}@" if parts.username else "") + host
        netloc += f":{parts.port}" if parts.port else ""
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # Each session gets the view of this process's roots (a view takes no parameters).
        conn.execute(self._view)

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[PgRow]]:
        """A pooled connection; a lost server is ``CatalogUnavailableError`` (a 503), and
        the pool's dead connections are dropped so the next call connects anew."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except _LOST as exc:
            self._pool.check()
            raise CatalogUnavailableError(f"catalog {self.name} unavailable: {exc}") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        # Once more after a failure: a restarted server leaves the pool's idle connections
        # dead, and the first failure has dropped them.
        for attempt in range(2):
            try:
                with self._connection() as conn:
                    return list[Row](conn.execute(to_format(sql), params).fetchall())
            except CatalogUnavailableError as exc:
                if attempt or isinstance(exc.__cause__, PoolTimeout):  # no server: no retry
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._connection() as conn, conn.transaction():
            # First, not last: the row lock makes writers of every host take turns, as
            # SQLite's BEGIN IMMEDIATE does (a source replaced by two at once stays whole).
            conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            yield _PgTx(conn)

    @contextmanager
    def _untracked(self) -> Iterator[Tx]:
        with self._connection() as conn, conn.transaction():
            yield _PgTx(conn)

    @contextmanager
    def scan_lock(self, wait: bool = True) -> Iterator[bool]:
        # A session lock on a connection held for the whole scan: a pooled connection
        # must not go back to the pool still holding it.
        with self._connection() as conn:
            if wait:
                conn.execute("SELECT pg_advisory_lock(%s)", (SCAN_LOCK,))
                got = True
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (SCAN_LOCK,)).fetchone()
                got = bool(row is not None and row[0])
            try:
                yield got
            finally:
                if got:
                    with contextlib.suppress(psycopg.Error):  # a lost session holds no lock
                        conn.execute("SELECT pg_advisory_unlock(%s)", (SCAN_LOCK,))

    def _index_names(self) -> set[str]:
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        return {r[0] for r in self.query(sql)}


def _setup(conn: psycopg.Connection[Any]) -> None:
    """Create the tables, dropping those of another schema version (derived data); many
    servers may start at once, so one at a time under an advisory lock."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SETUP_LOCK,))
        if _schema_version(conn) == SCHEMA_VERSION:
            return
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO meta VALUES ('schema_version', %s), ('generation', 0)", (SCHEMA_VERSION,)
        )


def _schema_version(conn: psycopg.Connection[Any]) -> int | None:
    exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if exists is None or not exists[0]:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])
