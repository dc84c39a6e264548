"""The persistent catalog: one interface over SQLite (one machine) or PostgreSQL (many).

A source (a local file or an object) is keyed by its URI and identified by its size and
tag (``readers/source.py``): an unchanged source is never re-read, a changed one is
re-indexed, a vanished one dropped. Each row names the format backend that indexed it and
the slide it belongs to; a DICOM instance also gets an ``instances`` row (what QIDO searches
and the DICOM backend opens), other backends keep their own record bytes. Each source's rows
are written in one transaction, so a reader never sees a half-written entry and an
interrupted scan resumes where it stopped. Every write transaction bumps the catalog's
generation, which other processes (on any host) poll to notice changes.

``Catalog(location)`` opens the backend the location names: a ``postgresql://`` URL
(``catalog/postgres.py``) or a file path (``catalog/sqlite.py``). SQL given to ``query`` and
to a transaction's ``execute`` is written once for both: ``?`` placeholders (turned into
``%s`` for PostgreSQL, so the catalog's SQL has no ``?`` or ``%`` of its own) and what both
databases read alike; what must differ is in ``Dialect``.

Which sources a server serves is decided by its roots, as path prefixes (``under_roots``):
not by the root a source was first found under, so servers started on a folder and on its
parent share one catalog without losing slides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from tileserver.catalog.codec import instance_from_row, instance_row
from tileserver.catalog.locators import is_database_url
from tileserver.catalog.roots import under_roots
from tileserver.readers.base import IndexedFile, StoredFile
from tileserver.readers.locator import TileLocator
from tileserver.readers.source import SourceIdentity, normalize_root

#: Tile locators kept (``put_locator``): those of the slides opened last.
LOCATORS_KEPT = 1024
#: The catalog's tables, dropped together when a catalog of another schema version opens.
TABLES = ("tile_locators", "instances", "files", "meta")
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

Location = str | os.PathLike[str]
Roots = Sequence[str | os.PathLike[str]]


class Row(Protocol):
    """A result row by column position or name (``sqlite3.Row`` and its PostgreSQL twin)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """The connection a write transaction runs on (``?`` placeholders on every backend)."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """What a search front must write differently per database."""

    name: str
    #: The case-sensitive wildcard operator (``column MATCH ?``).
    match: str
    #: A DICOM wildcard pattern (``*`` any run, ``?`` one character) as ``match``'s operand.
    pattern: Callable[[str], str]
    #: An aggregate of the distinct values of ``{}`` joined by commas.
    list_agg: str


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


def _backend_class(location: Location) -> type[Catalog]:
    if is_database_url(location):
        from tileserver.catalog.postgres import PostgresCatalog

        return PostgresCatalog
    from tileserver.catalog.sqlite import SQLiteCatalog

    return SQLiteCatalog


class Catalog:
    """Thread-safe handle on one catalog; each process opens its own.

    ``Catalog(location, roots)`` returns the backend ``location`` names; ``roots`` limits
    the ``served_instances`` view that search fronts read."""

    dialect: ClassVar[Dialect]

    def __new__(cls, location: Location, roots: Roots | None = None) -> Catalog:
        return super().__new__(_backend_class(location) if cls is Catalog else cls)

    # -- what each backend provides --------------------------------------------------------

    @property
    def name(self) -> str:
        """The catalog's location for messages (no password)."""
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read-only query (rows by column name); for search fronts such as QIDO."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction that bumps the generation; rolled back on an exception."""
        raise NotImplementedError

    def _untracked(self) -> AbstractContextManager[Tx]:
        """A write transaction that leaves the generation alone (bookkeeping, not content)."""
        raise NotImplementedError

    def scan_lock(self, wait: bool = True) -> AbstractContextManager[bool]:
        """Held by the one process (on any host) that scans; yields whether it was got
        (always True with ``wait``, which blocks until the scanner before is done)."""
        raise NotImplementedError

    def _index_names(self) -> set[str]:
        """Names of the indexes the catalog's tables have."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- writing -------------------------------------------------------------------------

    def put_indexed(
        self, root: str, identity: SourceIdentity, backend: str, indexed: IndexedFile
    ) -> None:
        """Store an indexed source, replacing whatever the catalog had for its URI."""
        with self.transaction() as tx:
            _put_file(tx, identity, root, "indexed", None, backend, indexed)
            if indexed.instance is not None:
                row = instance_row(indexed.instance)
                attrs = indexed.instance.header.attributes
                row.update({col: attrs.get(key) for col, key in _SEARCH_COLUMNS.items()})
                row["path"] = identity.uri
                marks = ", ".join("?" * len(row))
                tx.execute(
                    f"INSERT INTO instances ({', '.join(row)}) VALUES ({marks})", [*row.values()]
                )

    def put_skipped(self, root: str, identity: SourceIdentity, reason: str) -> None:
        with self.transaction() as tx:
            _put_file(tx, identity, root, "skipped", reason, None, None)

    def remove(self, paths: list[str]) -> None:
        if not paths:
            return
        with self.transaction() as tx:
            tx.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in paths])
            tx.execute(
                "DELETE FROM tile_locators WHERE slide_id NOT IN "
                "(SELECT slide_id FROM files WHERE slide_id IS NOT NULL)"
            )

    def put_locator(self, slide_id: str, locator: TileLocator, keep: int = LOCATORS_KEPT) -> None:
        """Keep where a slide's stored tiles lie, for the early tile path of the next start
        (``http/early.py``), for the ``keep`` slides opened last: a locator is about as
        large as the slide's frame tables. Rewritten only when its description differs.
        Not a catalog change: the generation stays, so no process re-reads its slides."""
        meta, tables = locator.encode()
        now = time.time()
        with self._untracked() as tx:
            # ``meta`` describes ``tables`` completely (they change only with the files
            # it lists or with the locator's format): an unchanged one is only touched.
            row = tx.execute(
                "SELECT meta FROM tile_locators WHERE slide_id = ?", (slide_id,)
            ).fetchone()
            if row is not None and bytes(row[0]) == meta:
                tx.execute(
                    "UPDATE tile_locators SET opened_at = ? WHERE slide_id = ?", (now, slide_id)
                )
            else:
                tx.execute(
                    "INSERT INTO tile_locators VALUES (?, ?, ?, ?, ?) ON CONFLICT (slide_id) "
                    "DO UPDATE SET version = excluded.version, meta = excluded.meta, "
                    "tables = excluded.tables, opened_at = excluded.opened_at",
                    (slide_id, locator.version, meta, tables, now),
                )
            tx.execute(
                "DELETE FROM tile_locators WHERE slide_id NOT IN "
                "(SELECT slide_id FROM tile_locators ORDER BY opened_at DESC LIMIT ?)",
                (keep,),
            )

    def ensure_indexes(self, indexes: Mapping[str, str]) -> None:
        """Create the indexes (name -> ``table(columns)``) a search front needs, in one
        write only when some are missing (a catalog already set up is opened without one)."""
        missing = [name for name in indexes if name not in self._index_names()]
        if missing:
            with self.transaction() as tx:
                for name in missing:
                    tx.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {indexes[name]}")

    # -- reading -------------------------------------------------------------------------

    def generation(self) -> int:
        """A counter bumped by every write: cheap to poll for changes made by other processes."""
        return int(self.query("SELECT value FROM meta WHERE key = 'generation'")[0][0])

    def files(self, roots: Sequence[str] | None = None) -> dict[str, FileRecord]:
        """Every cataloged source (only those under ``roots`` when given), by URI."""
        sql, params = under_roots(
            "SELECT f.path, f.root, f.size, f.tag, f.status, f.reason, f.backend FROM files f",
            roots,
        )
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
            "FROM files f LEFT JOIN instances i ON i.path = f.path "
            "WHERE f.slide_id = ? AND f.status = 'indexed'",
            roots,
            (slide_id,),
        )
        stored = []
        for r in self.query(sql + " ORDER BY f.path", params):
            identity = SourceIdentity(r["uri"], int(r["size"]), str(r["tag"]))
            instance = instance_from_row(r, identity.size) if r["dicom"] else None
            record = None if r["record"] is None else bytes(r["record"])
            stored.append(StoredFile(identity, r["root"], r["backend"], instance, record))
        return stored


def _put_file(
    tx: Tx,
    identity: SourceIdentity,
    root: str,
    status: str,
    reason: str | None,
    backend: str | None,
    indexed: IndexedFile | None,
) -> None:
    tx.execute("DELETE FROM files WHERE path = ?", (identity.uri,))
    slide_id = indexed.slide_id if indexed is not None else None
    record = indexed.record if indexed is not None else None
    values = (identity.uri, root, identity.size, identity.tag, backend, slide_id, record)
    tx.execute(
        "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*values, status, reason, time.time()),
    )


def _file_record(r: Row) -> FileRecord:
    identity = SourceIdentity(r["path"], int(r["size"]), str(r["tag"]))
    return FileRecord(identity, r["root"], r["status"], r["reason"], r["backend"])


def served_view_select(roots: Roots | None) -> str:
    """The ``served_instances`` query: the instances under this process's roots (all
    without roots). Several servers or ``tileserver index`` runs may share one catalog;
    search fronts read this view so each server answers only for its own slide roots."""
    where = ""
    if roots:  # a view cannot take parameters: the roots are inlined, quoted
        conditions = []
        for root in roots:
            name = normalize_root(root)
            # Under ``name/``: a range of byte order ("0" follows "/"), which both
            # databases answer from the path index and estimate well.
            stem = name.rstrip("/")
            low, high = _quote(stem + "/"), _quote(stem + "0")
            conditions.append(f"(f.path = {_quote(name)} OR (f.path >= {low} AND f.path < {high}))")
        where = " WHERE " + " OR ".join(conditions)
    return f"SELECT i.* FROM instances i JOIN files f ON f.path = i.path{where}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
