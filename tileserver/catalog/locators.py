"""The early tile path's catalog reads (``http/early.py``), before numpy is loaded.

Standard library only for a SQLite catalog (a read-only connection); psycopg, which loads
no numpy, for a PostgreSQL one (one connection of its own, opened on first use). Either
way a failed read raises ``CatalogReadError`` and the app answers instead.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from tileserver.catalog.roots import under_roots

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT = 5


def is_database_url(location: str | os.PathLike[str]) -> bool:
    """Whether a ``--catalog`` value names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


class CatalogReadError(Exception):
    """The catalog could not be read (none yet, one without locators, a lost server)."""


class LocatorRows:
    """A slide's tile locator blobs and the sources the catalog lists for it; not
    thread-safe (``EarlyTiles`` reads under its lock)."""

    def __init__(self, location: str | os.PathLike[str], roots: list[str]) -> None:
        self.location = location
        self.roots = roots
        self._conn: Any = None

    def locator(self, slide_id: str) -> tuple[bytes, bytes] | None:
        """``(meta, tables)`` of the slide's locator, or None."""
        rows = self._read("SELECT meta, tables FROM tile_locators WHERE slide_id = ?", (slide_id,))
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    def sources(self, slide_id: str) -> list[tuple[str, int, str]]:
        """The slide's indexed sources under the roots, as (uri, size, tag), sorted."""
        sql, params = under_roots(
            "SELECT f.path, f.size, f.tag FROM files f "
            "WHERE f.slide_id = ? AND f.status = 'indexed'",
            self.roots or None,
            (slide_id,),
        )
        return sorted((str(p), int(s), str(t)) for p, s, t in self._read(sql, params))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        if not is_database_url(self.location):
            try:
                return self._sqlite().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise CatalogReadError(str(exc)) from exc
        import psycopg

        try:
            return list(self._postgres().execute(to_format(sql), params).fetchall())
        except psycopg.Error as exc:
            self.close()  # reconnect on the next read: the server may be back
            raise CatalogReadError(str(exc)) from exc

    def _sqlite(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = Path(self.location).resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        conn: sqlite3.Connection = self._conn
        return conn

    def _postgres(self) -> Any:
        import psycopg

        if self._conn is None:
            self._conn = psycopg.connect(
                str(self.location), autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        return self._conn


def to_format(sql: str) -> str:
    """The catalog's ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")
