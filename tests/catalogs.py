"""Catalog locations for the shared catalog suite: a SQLite file, or a database on the
session's private PostgreSQL cluster (``pgserver.py``), emptied before each use."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tileserver.catalog import Catalog
from tileserver.catalog.store import TABLES

BACKENDS = ("sqlite", "postgresql")


def empty_database(url: str) -> None:
    """Drop the catalog's tables: the next ``Catalog`` creates them anew."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)} CASCADE")  # type: ignore[arg-type]


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new, empty catalog lives: a file path or a ``postgresql://`` URL."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.sqlite")
    url: str = request.getfixturevalue("pg_database")
    empty_database(url)
    return url


OpenCatalog = Callable[..., Catalog]


@pytest.fixture
def open_catalog(location: str) -> Iterator[OpenCatalog]:
    """Open handles on ``location`` (each as another process would), closed afterwards."""
    opened: list[Catalog] = []

    def open_(roots: list[str] | None = None) -> Catalog:
        catalog = Catalog(location, roots)
        opened.append(catalog)
        return catalog

    yield open_
    for catalog in opened:
        catalog.close()


def copy_tree(sources: list[Path], tree: Path) -> Path:
    """The fixture cases' directories side by side under ``tree``."""
    for source in sources:
        shutil.copytree(source, tree / source.name)
    return tree
