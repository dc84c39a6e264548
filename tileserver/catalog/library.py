"""Open slides on demand from the catalog, with a bounded cache of open slides.

A process never holds the frame tables of idle slides beyond ``max_open`` slides; each
worker process has its own library over the shared catalog and notices other processes'
writes through the catalog's generation counter.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from tileserver.catalog.scan import ScanReport, scan
from tileserver.catalog.store import Catalog
from tileserver.dicom.instance import IndexedInstance
from tileserver.dicom.series import assemble
from tileserver.errors import NotFoundError
from tileserver.readers.dicom import DicomReader
from tileserver.slide import Slide


class SlideLibrary:
    """Slides by id (Series Instance UID), loaded lazily from a ``Catalog``."""

    def __init__(self, catalog: Catalog, roots: Sequence[str | Path] = (), max_open: int = 64):
        self.catalog = catalog
        self.roots = [Path(r).resolve() for r in roots]
        self.max_open = max_open
        self._open: OrderedDict[str, Slide] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = -1
        self._files: dict[str, list[tuple[str, str, int, int]]] = {}

    def refresh(self) -> ScanReport:
        """Rescan the roots and forget slides whose files changed."""
        report = scan(self.catalog, self.roots)
        self.sync()
        return report

    def sync(self) -> None:
        """Pick up catalog changes made by any process (cheap when nothing changed)."""
        generation = self.catalog.generation()
        if generation == self._generation:
            return
        files = self.catalog.series_files()
        with self._lock:
            for slide_id in list(self._open):
                if files.get(slide_id) != self._files.get(slide_id):
                    # Dropped, not closed: a request may still be reading it; its file
                    # descriptors close when the last reference goes.
                    del self._open[slide_id]
            self._files, self._generation = files, generation

    def ids(self) -> list[str]:
        self.sync()
        return sorted(self._files)

    def get_open(self, slide_id: str) -> Slide | None:
        """The slide if it is already open (no I/O: safe on the event loop), else None."""
        with self._lock:
            slide = self._open.get(slide_id)
            if slide is not None:
                self._open.move_to_end(slide_id)
            return slide

    def get(self, slide_id: str) -> Slide:
        """The open slide ``slide_id``; ``NotFoundError`` for an unknown id."""
        with self._lock:
            slide = self._open.get(slide_id)
            if slide is not None:
                self._open.move_to_end(slide_id)
                return slide
        if slide_id not in self._files:
            self.sync()
            if slide_id not in self._files:
                raise NotFoundError(f"no slide {slide_id!r}")
        slide = self._load(slide_id)
        with self._lock:
            self._open[slide_id] = slide
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        return slide

    def _load(self, slide_id: str) -> Slide:
        instances = self.catalog.instances(slide_id)
        if not instances:
            raise NotFoundError(f"no slide {slide_id!r}")
        layout = assemble(instances)
        files = self._files.get(slide_id) or [(i.path, "", 0, 0) for i in instances]
        relative = _relative_path([(path, root) for path, root, *_ in files])
        warnings = [
            *layout.warnings,
            *(f"{Path(i.path).name}: {w}" for i in layout.instances for w in i.warnings),
        ]
        return Slide(
            id=slide_id,
            name=Path(relative).stem or slide_id,
            reader=DicomReader(layout),
            attributes=dict(instances[0].header.attributes),
            warnings=warnings,
            version=_version(instances),
            path=relative,
        )

    def close(self) -> None:
        with self._lock:
            for slide in self._open.values():
                slide.close()
            self._open.clear()


def _version(instances: Sequence[IndexedInstance]) -> str:
    digest = hashlib.sha256()
    for inst in sorted(instances, key=lambda i: i.path):
        digest.update(f"{inst.path}|{inst.file_size}|{inst.mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _relative_path(files: list[tuple[str, str]]) -> str:
    """A single file's path, or the common directory of several, relative to the root."""
    paths = [Path(p) for p, _ in files]
    root = Path(files[0][1]) if files[0][1] else None
    target = paths[0] if len(paths) == 1 else Path(*_common_parts(paths))
    if root is not None and target.is_relative_to(root):
        relative = target.relative_to(root)
        return str(relative) if str(relative) != "." else root.name
    return target.name


def _common_parts(paths: list[Path]) -> tuple[str, ...]:
    parts = paths[0].parent.parts
    for p in paths[1:]:
        common = 0
        for a, b in zip(parts, p.parent.parts, strict=False):
            if a != b:
                break
            common += 1
        parts = parts[:common]
    return parts
