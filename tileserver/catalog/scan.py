"""Walk slide directories and bring the catalog in line with them, incrementally."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tileserver.catalog.store import Catalog, FileRecord
from tileserver.dicom.instance import IndexedInstance, index_instance
from tileserver.errors import TileServerError

log = logging.getLogger(__name__)


@dataclass
class ScanReport:
    indexed: list[IndexedInstance] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), new ones
    changed_series: set[str] = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.indexed or self.removed or self.skipped)


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` in a stable order, hidden entries excluded."""
    if root.is_file():
        yield root
        return
    for directory, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(directory) / name


def scan(
    catalog: Catalog,
    roots: Sequence[str | Path],
    *,
    progress: Callable[[Path], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ScanReport:
    """Index new and changed files under ``roots``; drop vanished ones."""
    report = ScanReport()
    known = catalog.files()
    series_of = {f.path: s for s, files in catalog.series_files().items() for f in files}
    seen: set[str] = set()
    for root in roots:
        root_path = Path(root).resolve()
        if not root_path.exists():
            # An unmounted or mistyped root must not drop everything indexed under it.
            log.warning("slide root %s does not exist; its catalog entries are kept", root_path)
            continue
        for path in iter_files(root_path):
            if should_stop is not None and should_stop():
                return report
            key = str(path)
            seen.add(key)
            if progress is not None:
                progress(path)
            _scan_file(catalog, str(root_path), path, known.get(key), series_of, report)
        gone = [p for p, rec in known.items() if rec.root == str(root_path) and p not in seen]
        report.changed_series.update(series_of[p] for p in gone if p in series_of)
        catalog.remove(gone)
        report.removed.extend(gone)
    return report


def _scan_file(
    catalog: Catalog,
    root: str,
    path: Path,
    known: FileRecord | None,
    series_of: dict[str, str],
    report: ScanReport,
) -> None:
    try:
        stat = path.stat()
    except OSError as exc:
        report.skipped.append((str(path), f"cannot stat: {exc.strerror}"))
        return
    if known is not None and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        report.unchanged += 1
        return
    if str(path) in series_of:
        report.changed_series.add(series_of[str(path)])
    try:
        inst = index_instance(path)
    except TileServerError as exc:
        _skip(catalog, root, path, stat, str(exc), report)
        return
    except OSError as exc:
        _skip(catalog, root, path, stat, f"cannot read: {exc.strerror or exc}", report)
        return
    except Exception as exc:  # a parser bug must not stop the scan of every other slide
        log.exception("unexpected error indexing %s", path)
        _skip(catalog, root, path, stat, f"internal error: {type(exc).__name__}: {exc}", report)
        return
    catalog.put_instance(root, inst)
    report.indexed.append(inst)
    report.changed_series.add(inst.header.series_uid)


def _skip(
    catalog: Catalog, root: str, path: Path, stat: os.stat_result, reason: str, report: ScanReport
) -> None:
    catalog.put_skipped(root, str(path), stat.st_size, stat.st_mtime_ns, reason)
    report.skipped.append((str(path), reason))


def rescan_file(catalog: Catalog, root: str, path: str) -> ScanReport:
    """Bring one file's catalog entry up to date (after a read found it changed)."""
    report = ScanReport()
    known = catalog.files().get(path)
    if not Path(path).exists():
        catalog.remove([path])
        report.removed.append(path)
        return report
    _scan_file(catalog, root, Path(path), known, {}, report)
    return report
