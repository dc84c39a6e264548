"""The persistent catalog: SQLite in WAL mode, one row per source, frame tables as .npy blobs.

A source (a local file; an object later) is keyed by its URI and identified by its size and
tag (``readers/source.py``): an unchanged source is never re-read, a changed one is
re-indexed, a vanished one dropped. Each row names the format backend that indexed it and
the slide it belongs to; a DICOM instance also gets an ``instances`` row (what QIDO searches
and the DICOM backend opens), other backends keep their own record bytes. Each source's rows
are written in one transaction, so a reader never sees a half-written entry and an
interrupted scan resumes where it stopped.

Which sources a server serves is decided by its roots, as path prefixes (``under_roots``):
not by the root a source was first found under, so servers started on a folder and on its
parent share one catalog without losing slides.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tileserver.catalog.codec import instance_from_row, instance_row
from tileserver.catalog.roots import under_roots
from tileserver.readers.base import IndexedFile, StoredFile
from tileserver.readers.locator import TileLocator
from tileserver.readers.source import SourceIdentity

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
#: Tile locators kept (``put_locator``): those of the slides opened last.
LOCATORS_KEPT = 1024
#: Stored as ``PRAGMA user_version`` once ``SCHEMA`` has run: a catalog already set up is
#: opened without a write (several workers start at once). Changes whenever SCHEMA does;
#: never 0, a new database's value. A catalog of another version is an index of another
#: shape: its tables are dropped and the next scan rebuilds them (headers only).
SCHEMA_VERSION = (zlib.crc32(SCHEMA.encode()) & 0x7FFFFFFF) or 1
#: What ``instance_from_row`` reads: not the DICOM JSON, which can be many times the size
#: of the rest (per-frame groups of a sparse image) and only DICOMweb needs.
_INSTANCE_COLUMNS = (
    "i.path, i.header, i.icc_profile, i.frames, i.frame_table_kind, i.positions, i.z_base, i.notes"
)

_SEARCH_COLUMNS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "study_date": "StudyDate",
    "accession_number": "AccessionNumber",
    "modality": "Modality",
}


_TABLES = ("tile_locators", "instances", "files", "meta")


@dataclass(frozen=True)
class SeriesFile:
    """One indexed source of a slide, with the identity that versions the slide."""

    identity: SourceIdentity
    root: str

    @property
    def path(self) -> str:
        return self.identity.uri


@dataclass(frozen=True)
class FileRecord:
    identity: SourceIdentity
    root: str
    status: str
    reason: str | None
    backend: str | None = None

    @property
    def path(self) -> str:
        return self.identity.uri


class Catalog:
    """Thread-safe handle on one catalog database; each process opens its own."""

    def __init__(self, path: str | Path, roots: Sequence[str | Path] | None = None) -> None:
        """Open (creating) the catalog; ``roots`` limits the ``served_instances`` view."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, timeout=30, isolation_level=None
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._setup(roots)

    def _setup(self, roots: Sequence[str | Path] | None, attempts: int = 50) -> None:
        # Several worker processes open a new catalog at once; switching it to WAL takes
        # an exclusive lock that SQLite's busy timeout does not always wait for.
        for attempt in range(attempts):
            try:
                if self._conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                    self._conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once
                    self._create()
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute(_served_view(roots))
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
                for table in _TABLES:
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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read-only query (rows by column name); for search fronts such as QIDO."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- writing -------------------------------------------------------------------------

    def put_indexed(
        self, root: str, identity: SourceIdentity, backend: str, indexed: IndexedFile
    ) -> None:
        """Store an indexed source, replacing whatever the catalog had for its URI."""
        with self.transaction() as conn:
            self._put_file(conn, identity, root, "indexed", None, backend, indexed)
            if indexed.instance is not None:
                row = instance_row(indexed.instance)
                attrs = indexed.instance.header.attributes
                row.update({col: attrs.get(key) for col, key in _SEARCH_COLUMNS.items()})
                row["path"] = identity.uri
                columns = ", ".join(row)
                marks = ", ".join(f":{c}" for c in row)
                conn.execute(f"INSERT INTO instances ({columns}) VALUES ({marks})", row)

    def put_skipped(self, root: str, identity: SourceIdentity, reason: str) -> None:
        with self.transaction() as conn:
            self._put_file(conn, identity, root, "skipped", reason, None, None)

    def remove(self, paths: list[str]) -> None:
        if not paths:
            return
        with self.transaction() as conn:
            conn.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
            conn.execute(
                "DELETE FROM tile_locators WHERE slide_id NOT IN (SELECT series_uid FROM instances)"
            )

    def put_locator(self, slide_id: str, locator: TileLocator, keep: int = LOCATORS_KEPT) -> None:
        """Keep where a slide's stored tiles lie, for the early tile path of the next start
        (``http/early.py``), for the ``keep`` slides opened last: a locator is about as
        large as the slide's frame tables. Rewritten only when its description differs.
        Not a catalog change: the generation stays, so no process re-reads its slides."""
        meta, tables = locator.encode()
        # A connection of its own: waiting out another process's write must not hold the
        # lock this process's catalog reads take. ``meta`` describes ``tables`` completely
        # (they change only with the files it lists or with the locator's format).
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            row = conn.execute(
                "SELECT meta FROM tile_locators WHERE slide_id = ?", (slide_id,)
            ).fetchone()
            if row is not None and row[0] == meta:
                conn.execute(
                    "UPDATE tile_locators SET opened_at = ? WHERE slide_id = ?",
                    (time.time(), slide_id),
                )
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO tile_locators VALUES (?, ?, ?, ?, ?)",
                    (slide_id, locator.version, meta, tables, time.time()),
                )
            conn.execute(
                "DELETE FROM tile_locators WHERE slide_id NOT IN "
                "(SELECT slide_id FROM tile_locators ORDER BY opened_at DESC LIMIT ?)",
                (keep,),
            )

    @staticmethod
    def _put_file(
        conn: sqlite3.Connection,
        identity: SourceIdentity,
        root: str,
        status: str,
        reason: str | None,
        backend: str | None,
        indexed: IndexedFile | None,
    ) -> None:
        conn.execute("DELETE FROM files WHERE path = ?", (identity.uri,))
        slide_id = indexed.slide_id if indexed is not None else None
        record = indexed.record if indexed is not None else None
        conn.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                identity.uri,
                root,
                identity.size,
                identity.tag,
                backend,
                slide_id,
                record,
                status,
                reason,
                time.time(),
            ),
        )

    # -- reading -------------------------------------------------------------------------

    def generation(self) -> int:
        """A counter bumped by every write: cheap to poll for changes made by other processes."""
        return int(self.query("SELECT value FROM meta WHERE key = 'generation'")[0][0])

    def files(self, roots: Sequence[str] | None = None) -> dict[str, FileRecord]:
        """Every cataloged source (only those under ``roots`` when given), by URI."""
        sql, params = under_roots("SELECT * FROM files f", roots)
        return {r["path"]: _file_record(r) for r in self.query(sql, params)}

    def skipped(self, roots: Sequence[str] | None = None) -> list[FileRecord]:
        return [f for f in self.files(roots).values() if f.status == "skipped"]

    def series_uids(self) -> list[str]:
        rows = self.query("SELECT DISTINCT series_uid FROM instances ORDER BY series_uid")
        return [r[0] for r in rows]

    def series_files(self, roots: Sequence[str] | None = None) -> dict[str, list[SeriesFile]]:
        """Every indexed source per slide (only those under ``roots`` when given)."""
        sql, params = under_roots(
            "SELECT f.slide_id, f.path, f.root, f.size, f.tag FROM files f "
            "WHERE f.status = 'indexed'",
            roots,
        )
        result: dict[str, list[SeriesFile]] = {}
        for r in self.query(sql + " ORDER BY f.path", params):
            identity = SourceIdentity(r[1], int(r[3]), str(r[4]))
            result.setdefault(r[0], []).append(SeriesFile(identity, r[2]))
        return result

    def stored_files(self, slide_id: str, roots: Sequence[str] | None = None) -> list[StoredFile]:
        """A slide's sources with their records, as its backend opens them."""
        sql, params = under_roots(
            f"SELECT f.path AS uri, f.root, f.size, f.tag, f.backend, f.record, "
            f"i.path IS NOT NULL AS dicom, {_INSTANCE_COLUMNS} "
            "FROM files f LEFT JOIN instances i USING (path) "
            "WHERE f.slide_id = ? AND f.status = 'indexed'",
            roots,
            (slide_id,),
        )
        stored = []
        for r in self.query(sql + " ORDER BY f.path", params):
            identity = SourceIdentity(r["uri"], int(r["size"]), str(r["tag"]))
            instance = instance_from_row(r, identity.size) if r["dicom"] else None
            stored.append(StoredFile(identity, r["root"], r["backend"], instance, r["record"]))
        return stored


def _file_record(r: sqlite3.Row) -> FileRecord:
    identity = SourceIdentity(r["path"], int(r["size"]), str(r["tag"]))
    return FileRecord(identity, r["root"], r["status"], r["reason"], r["backend"])


def _served_view(roots: Sequence[str | Path] | None) -> str:
    """``served_instances``: the instances under this process's roots (all without roots).

    Several servers or ``tileserver index`` runs may share one catalog; search fronts read
    this view so each server answers only for its own slide directories.
    """
    where = ""
    if roots:  # a temporary view cannot take parameters: the roots are inlined, quoted
        conditions = []
        for root in roots:
            name = str(Path(root).resolve())
            prefix = name.rstrip("/") + "/"
            quoted, quoted_prefix = _quote(name), _quote(prefix)
            conditions.append(
                f"(f.path = {quoted} OR substr(f.path, 1, {len(prefix)}) = {quoted_prefix})"
            )
        where = " WHERE " + " OR ".join(conditions)
    return (
        "CREATE TEMP VIEW IF NOT EXISTS served_instances AS SELECT i.* FROM instances i "
        f"JOIN files f USING (path){where}"
    )


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
