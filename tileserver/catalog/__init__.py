"""Persistent index of slides: a SQLite or PostgreSQL store, incremental scanner, lazily opened
slides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tileserver.catalog.library import SlideLibrary
    from tileserver.catalog.scanner import ScanReport, scan
    from tileserver.catalog.store import Catalog

__all__ = ["Catalog", "ScanReport", "SlideLibrary", "scan"]
_HOMES = {
    "Catalog": "store",
    "ScanReport": "scanner",
    "SlideLibrary": "library",
    "scan": "scanner",
}


def __getattr__(name: str) -> Any:
    # Resolved on first use: the early tile path imports catalog.roots (standard library
    # only) before numpy is loaded.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"tileserver.catalog.{home}"), name)
