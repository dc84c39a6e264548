"""Which cataloged sources a server serves: those under its roots, by path prefix.

Standard library only: the early tile path (``http/early.py``) runs the same filter on the
catalog before numpy is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def under_root(uri: str, root: str) -> bool:
    """Whether ``uri`` is ``root`` itself or lies under it (a path prefix, not a string one)."""
    return uri == root or uri.startswith(root.rstrip("/") + "/")


def _root_condition(root: str) -> tuple[str, tuple[Any, ...]]:
    # Under ``root/``: a range of byte order ("0" follows "/"), answered from the path
    # index (SQLite and PostgreSQL's "C" collation both compare bytes).
    stem = root.rstrip("/")
    return "(f.path = ? OR (f.path >= ? AND f.path < ?))", (root, stem + "/", stem + "0")


def under_roots(
    sql: str, roots: Sequence[str] | None, params: tuple[Any, ...] = ()
) -> tuple[str, tuple[Any, ...]]:
    """Restrict a query over ``files f`` to sources under ``roots`` (None: all), by prefix."""
    if roots is None:
        return sql, params
    glue = " AND " if " WHERE " in sql else " WHERE "
    if not roots:
        return f"{sql}{glue}FALSE", params
    parts = [_root_condition(r) for r in roots]
    condition = " OR ".join(p[0] for p in parts)
    return f"{sql}{glue}({condition})", (*params, *(v for p in parts for v in p[1]))
