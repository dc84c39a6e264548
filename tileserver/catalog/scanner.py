"""Walk slide directories and bring the catalog in line with them, incrementally."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tileserver.catalog.roots import under_root
from tileserver.catalog.store import Catalog, FileRecord
from tileserver.errors import (
    CatalogUnavailableError,
    SlideChangedError,
    SourceUnavailableError,
    TileServerError,
)
from tileserver.readers.base import IndexedFile
from tileserver.readers.registry import index
from tileserver.readers.source import (
    SourceIdentity,
    current_identity,
    list_sources,
    normalize_root,
    open_source,
    root_exists,
)

log = logging.getLogger(__name__)


@dataclass
class ScanReport:
    indexed: list[tuple[str, IndexedFile]] = field(default_factory=list)  # (uri, record)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), new ones
    changed_series: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.indexed or self.removed or self.skipped)


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files under a local ``root`` in a stable order, hidden entries excluded."""
    for uri, _ in list_sources(normalize_root(root)):
        yield Path(uri)


def scan(
    catalog: Catalog,
    roots: Sequence[str | Path],
    *,
    progress: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScanReport:
    """Index new and changed sources under ``roots`` (local folders or object-storage
    prefixes); drop vanished ones. A root that is missing or cannot be listed keeps its
    catalog entries (an unmounted disk or an unreachable bucket must not drop everything)."""
    report = ScanReport()
    known = catalog.files()
    series_of = {f.path: s for s, files in catalog.series_files().items() for f in files}
    for root in map(normalize_root, roots):
        if not root_exists(root):
            log.warning("slide root %s does not exist; its catalog entries are kept", root)
            continue
        seen: set[str] = set()
        try:
            for uri, identity in list_sources(root):
                if should_stop is not None and should_stop():
                    return report
                seen.add(uri)
                if progress is not None:
                    progress(uri)
                _scan_file(catalog, root, uri, identity, known.get(uri), series_of, report)
        except CatalogUnavailableError:
            raise  # not the root's fault: the scan stops, what it committed stays
        except SourceUnavailableError as exc:
            log.warning("slide root %s cannot be listed (%s); its entries are kept", root, exc)
            continue
        # Whatever the catalog has under this root, whichever root first found it.
        gone = [p for p in known if under_root(p, root) and p not in seen]
        report.changed_series.update(series_of[p] for p in gone if p in series_of)
        catalog.remove(gone)
        report.removed.extend(gone)
    return report


def _scan_file(
    catalog: Catalog,
    root: str,
    uri: str,
    listed: SourceIdentity | None,
    known: FileRecord | None,
    series_of: dict[str, str],
    report: ScanReport,
) -> None:
    try:
        identity = listed or current_identity(uri)
    except OSError as exc:
        report.skipped.append((uri, f"cannot stat: {exc.strerror}"))
        return
    if known is not None and known.identity == identity:
        report.unchanged += 1
        return
    if uri in series_of:
        report.changed_series.add(series_of[uri])
    try:
        name, indexed = index_source(identity)
    except TileServerError as exc:
        _skip(catalog, root, identity, str(exc), report)
        return
    except OSError as exc:
        _skip(catalog, root, identity, f"cannot read: {exc.strerror or exc}", report)
        return
    except Exception as exc:  # a parser bug must not stop the scan of every other slide
        log.exception("unexpected error indexing %s", uri)
        _skip(catalog, root, identity, f"internal error: {type(exc).__name__}: {exc}", report)
        return
    catalog.put_indexed(root, identity, name, indexed)
    report.indexed.append((uri, indexed))
    report.changed_series.add(indexed.slide_id)


def index_source(identity: SourceIdentity) -> tuple[str, IndexedFile]:
    """The backend that recognises the source, and what it indexed; a ``SlideError`` (or
    ``OSError``) saying why it cannot be served."""
    source = open_source(identity)
    try:
        return index(source)
    finally:
        source.close()


def _skip(
    catalog: Catalog, root: str, identity: SourceIdentity, reason: str, report: ScanReport
) -> None:
    catalog.put_skipped(root, identity, reason)
    report.skipped.append((identity.uri, reason))
    log.warning("%s not served: %s", identity.uri, reason)


def rescan_file(catalog: Catalog, root: str, path: str) -> ScanReport:
    """Bring one source's catalog entry up to date (after a read found it changed)."""
    report = ScanReport()
    known = catalog.files().get(path)
    try:
        identity = current_identity(path)
    except (OSError, SlideChangedError):
        catalog.remove([path])
        report.removed.append(path)
        return report
    _scan_file(catalog, root, path, identity, known, {}, report)
    return report
