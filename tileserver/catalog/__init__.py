"""Persistent index of slides: SQLite store, incremental scanner, lazily opened slides."""

from tileserver.catalog.library import SlideLibrary
from tileserver.catalog.scan import ScanReport, scan
from tileserver.catalog.store import Catalog

__all__ = ["Catalog", "ScanReport", "SlideLibrary", "scan"]
