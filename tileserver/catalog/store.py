"""The persistent catalog: SQLite in WAL mode, one row per file, frame tables as .npy blobs.

A file is keyed by path and identified by (size, mtime_ns): an unchanged file is never
re-read, a changed one is re-indexed, a vanished one dropped. Each file's rows are written in
one transaction, so a reader never sees a half-written entry and an interrupted scan resumes
where it stopped.
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
from tileserver.dicom.instance import IndexedInstance
from tileserver.readers.locator import TileLocator

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
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
CREATE INDEX IF NOT EXISTS files_root ON files(root);
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
#: never 0, a new database's value.
SCHEMA_VERSION = (zlib.crc32(SCHEMA.encode()) & 0x7FFFFFFF) or 1
#: What ``instance_from_row`` reads: not the DICOM JSON, which can be many times the size
#: of the rest (per-frame groups of a sparse image) and only DICOMweb needs.
_INSTANCE_COLUMNS = (
    "i.path, i.header, i.icc_profile, i.frames, i.frame_table_kind, i.positions, i.z_base, "
    "i.notes, f.size, f.mtime_ns"
)

_SEARCH_COLUMNS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "study_date": "StudyDate",
    "accession_number": "AccessionNumber",
    "modality": "Modality",
}


@dataclass(frozen=True)
class SeriesFile:
    """One indexed file of a series, with the identity that versions the slide."""

    path: str
    root: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileRecord:
    path: str
    root: str
    size: int
    mtime_ns: int
    status: str
    reason: str | None


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
                    # Derived data, rebuilt as slides open: dropped rather than migrated.
                    self._conn.execute("DROP TABLE IF EXISTS tile_locators")
                    self._conn.executescript(SCHEMA)
                    self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("PRAGMA foreign_keys=ON")
                self._conn.execute(_served_view(roots))
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 + 0.01 * attempt)

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

    def put_instance(self, root: str, inst: IndexedInstance) -> None:
        """Store an indexed file, replacing whatever the catalog had for its path."""
        row = instance_row(inst)
        attrs = inst.header.attributes
        row.update({col: attrs.get(key) for col, key in _SEARCH_COLUMNS.items()})
        with self.transaction() as conn:
            self._put_file(conn, inst.path, root, inst.file_size, inst.mtime_ns, "indexed", None)
            columns = ", ".join(row)
            marks = ", ".join(f":{c}" for c in row)
            conn.execute(f"INSERT INTO instances ({columns}) VALUES ({marks})", row)

    def put_skipped(self, root: str, path: str, size: int, mtime_ns: int, reason: str) -> None:
        with self.transaction() as conn:
            self._put_file(conn, path, root, size, mtime_ns, "skipped", reason)

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
        path: str,
        root: str,
        size: int,
        mtime_ns: int,
        status: str,
        reason: str | None,
    ) -> None:
        conn.execute("DELETE FROM files WHERE path = ?", (path,))
        conn.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
            (path, root, size, mtime_ns, status, reason, time.time()),
        )

    # -- reading -------------------------------------------------------------------------

    def generation(self) -> int:
        """A counter bumped by every write: cheap to poll for changes made by other processes."""
        return int(self.query("SELECT value FROM meta WHERE key = 'generation'")[0][0])

    def files(self, root: str | None = None) -> dict[str, FileRecord]:
        params: tuple[str, ...]
        sql, params = "SELECT * FROM files", ()
        if root is not None:
            sql, params = "SELECT * FROM files WHERE root = ?", (root,)
        return {
            r["path"]: FileRecord(
                r["path"], r["root"], r["size"], r["mtime_ns"], r["status"], r["reason"]
            )
            for r in self.query(sql, params)
        }

    def skipped(self) -> list[FileRecord]:
        return [f for f in self.files().values() if f.status == "skipped"]

    def series_uids(self) -> list[str]:
        rows = self.query("SELECT DISTINCT series_uid FROM instances ORDER BY series_uid")
        return [r[0] for r in rows]

    def series_files(self, roots: Sequence[str] | None = None) -> dict[str, list[SeriesFile]]:
        """Every indexed file per series (only files under ``roots`` when given)."""
        sql = (
            "SELECT i.series_uid, f.path, f.root, f.size, f.mtime_ns "
            "FROM instances i JOIN files f USING (path)"
        )
        sql, params = _under_roots(sql, roots)
        result: dict[str, list[SeriesFile]] = {}
        for r in self.query(sql + " ORDER BY f.path", params):
            result.setdefault(r[0], []).append(SeriesFile(r[1], r[2], r[3], r[4]))
        return result

    def instances(
        self, series_uid: str, roots: Sequence[str] | None = None
    ) -> list[IndexedInstance]:
        sql, params = _under_roots(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances i JOIN files f USING (path) "
            "WHERE i.series_uid = ?",
            roots,
            (series_uid,),
        )
        rows = self.query(sql + " ORDER BY i.path", params)
        return [instance_from_row(r, r["size"], r["mtime_ns"]) for r in rows]


def _under_roots(
    sql: str, roots: Sequence[str] | None, params: tuple[Any, ...] = ()
) -> tuple[str, tuple[Any, ...]]:
    """Restrict a query over ``files f`` to files found under ``roots`` (None: all)."""
    if roots is None:
        return sql, params
    glue = " AND " if " WHERE " in sql else " WHERE "
    marks = ", ".join("?" for _ in roots) or "NULL"
    return f"{sql}{glue}f.root IN ({marks})", (*params, *roots)


def _served_view(roots: Sequence[str | Path] | None) -> str:
    """``served_instances``: the instances under this process's roots (all without roots).

    Several servers or ``tileserver index`` runs may share one catalog; search fronts read
    this view so each server answers only for its own slide directories.
    """
    where = ""
    if roots:
        quoted = ", ".join("'" + str(Path(r).resolve()).replace("'", "''") + "'" for r in roots)
        where = f" WHERE f.root IN ({quoted})"
    return (
        "CREATE TEMP VIEW IF NOT EXISTS served_instances AS SELECT i.* FROM instances i "
        f"JOIN files f USING (path){where}"
    )
