"""The catalog in one SQLite file (WAL mode): the default, for the processes of one machine.

One connection per process, serialised by a lock; writers of several processes take turns
through ``BEGIN IMMEDIATE``; the scan lock is an ``flock`` on ``<catalog>.scan-lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tileserver.catalog.store import TABLES, Catalog, Dialect, Location, Roots, Row, Tx
from tileserver.catalog.store import served_view_select as _served_select

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    tag TEXT NOT NULL,
    backend TEXT,
    slide_id TEXT,
    record BLOB,
    status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped')),
    reason TEXT,
    indexed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    path TEXT PRIMARY KEY REFERENCES files(path) ON DELETE CASCADE,
    sop_instance_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    patient_id TEXT,
    patient_name TEXT,
    study_date TEXT,
    accession_number TEXT,
    modality TEXT,
    header BLOB NOT NULL,
    icc_profile BLOB,
    frames BLOB NOT NULL,
    frame_table_kind TEXT NOT NULL,
    positions BLOB,
    z_base REAL NOT NULL,
    notes BLOB NOT NULL,
    dataset_json BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS instances_patient ON instances(patient_id);
CREATE INDEX IF NOT EXISTS instances_sop ON instances(sop_instance_uid);
CREATE INDEX IF NOT EXISTS files_slide ON files(slide_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tile_locators (
    slide_id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    meta BLOB NOT NULL,
    tables BLOB NOT NULL,
    opened_at REAL NOT NULL
);
INSERT OR IGNORE INTO meta VALUES ('generation', 0);
"""
#: Stored as ``PRAGMA user_version`` once ``SCHEMA`` has run: a catalog already set up is
#: opened without a write (several workers start at once). Changes whenever SCHEMA does;
#: never 0, a new database's value. A catalog of another version is an index of another
#: shape: its tables are dropped and the next scan rebuilds them (headers only).
SCHEMA_VERSION = (zlib.crc32(SCHEMA.encode()) & 0x7FFFFFFF) or 1


def _glob_pattern(text: str) -> str:
    """GLOB already means ``*`` and ``?``; only ``[`` opens a class, so it is escaped."""
    return text.replace("[", "[[]")


SQLITE = Dialect("sqlite", "GLOB", _glob_pattern, "GROUP_CONCAT(DISTINCT {})")


class SQLiteCatalog(Catalog):
    """The catalog in a SQLite file; ``path`` is that file."""

    dialect = SQLITE

    def __init__(self, location: Location, roots: Roots | None = None) -> None:
        self.path = Path(location)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, timeout=30, isolation_level=None
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._setup(roots)

    @property
    def name(self) -> str:
        return str(self.path)

    def _setup(self, roots: Roots | None, attempts: int = 50) -> None:
        # Several worker processes open a new catalog at once; switching it to WAL takes
        # an exclusive lock that SQLite's busy timeout does not always wait for.
        for attempt in range(attempts):
            try:
                if self._conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    self._conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once
                    self._create()
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute(
                    f"CREATE TEMP VIEW IF NOT EXISTS served_instances AS {_served_select(roots)}"
                )
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 + 0.01 * attempt)

    def _create(self) -> None:
        """Create the tables, dropping those of another schema version (derived data)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if self._conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                for table in TABLES:
                    self._conn.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            self._conn.execute("COMMIT")

    @contextmanager
    def _untracked(self) -> Iterator[Tx]:
        # A connection of its own: waiting out another process's write must not hold the
        # lock this process's catalog reads take.
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            yield conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            rows: list[Row] = self._conn.execute(sql, params).fetchall()
            return rows

    @contextmanager
    def scan_lock(self, wait: bool = True) -> Iterator[bool]:
        # An flock belongs to the open file: two opens exclude each other even in one
        # process, and the kernel releases it when a scanner dies.
        lock_path = Path(str(self.path) + ".scan-lock")
        with lock_path.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _index_names(self) -> set[str]:
        return {r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
