"""Open slides on demand from the catalog, with a bounded cache of open slides.

A process never holds the frame tables of idle slides beyond ``max_open`` slides; each
worker process has its own library over the shared catalog and notices other processes'
writes through the catalog's generation counter.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tileserver.catalog.roots import under_root
from tileserver.catalog.scanner import ScanReport, rescan_file, scan
from tileserver.catalog.store import Catalog, SeriesFile
from tileserver.errors import CorruptSlideError, NotFoundError
from tileserver.readers.base import SlideReader, StoredFile
from tileserver.readers.registry import backend
from tileserver.readers.source import SourceIdentity, current_identity, normalize_root
from tileserver.slide import Slide

log = logging.getLogger(__name__)

#: How old a check of a slide's files the tile fast path accepts (``get_open``).
CHANGE_CHECK_SECONDS = 1.0


class SlideLibrary:
    """Slides by id, loaded lazily from a ``Catalog`` and opened by their format backend.

    Only sources under this library's roots are served, even when the catalog holds more
    (several servers or ``tileserver index`` runs may share one catalog).
    """

    def __init__(self, catalog: Catalog, roots: Sequence[str | Path] = (), max_open: int = 64):
        self.catalog = catalog
        self.roots = [normalize_root(r) for r in roots]
        self.max_open = max_open
        self._open: OrderedDict[str, Slide] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = -1
        self._files: dict[str, list[SeriesFile]] = {}
        self._changed: set[str] = set()  # files a read found rewritten since indexing
        self._checked: dict[str, float] = {}  # slide id -> monotonic time of its last check
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tile-locator")

    @property
    def _root_names(self) -> list[str] | None:
        return list(self.roots) if self.roots else None

    def refresh(self) -> ScanReport:
        """Rescan the roots and forget slides whose files changed."""
        report = scan(self.catalog, self.roots)
        self.sync()
        return report

    def sync(self) -> None:
        """Pick up catalog changes made by any process (cheap when nothing changed)."""
        self._reindex_changed()
        generation = self.catalog.generation()
        if generation == self._generation:
            return
        files = self.catalog.series_files(self._root_names)
        with self._lock:
            for slide_id, slide in list(self._open.items()):
                if slide.version != content_version(files.get(slide_id, [])):
                    # Dropped, not closed: a request may still be reading it; its file
                    # descriptors close when the last reference goes.
                    del self._open[slide_id]
            self._files, self._generation = files, generation

    def ids(self) -> list[str]:
        self.sync()
        return sorted(self._files)

    def get_open(self, slide_id: str, max_age: float = 0.0) -> Slide | None:
        """The slide if it is open and its files unchanged, else None; no catalog access,
        safe on the event loop.

        The files are checked (an ``fstat`` of open descriptors, a ``stat`` of the others)
        unless this slide's last check is less than ``max_age`` seconds old: the tile fast
        path passes ``CHANGE_CHECK_SECONDS``, as it runs on every tile request and its
        reads ``fstat`` the file anyway, which catches a rewrite in place at once.
        """
        slide = self._open.get(slide_id)
        if slide is None:
            return None
        now = time.monotonic()
        if max_age > 0 and now - self._checked.get(slide_id, -max_age) < max_age:
            return slide
        with self._lock:
            if self._open.get(slide_id) is not slide:
                return None
            self._open.move_to_end(slide_id)
        changed = slide.reader.changed_sources()
        if not changed:
            self._checked[slide_id] = now
            return slide
        with self._lock:  # rewritten in place: re-index before serving it again
            self._changed.update(changed)
            self._checked.pop(slide_id, None)
            if self._open.get(slide_id) is slide:
                del self._open[slide_id]
        return None

    def version_of(self, slide_id: str) -> str:
        """The content version the catalog has for ``slide_id`` (no slide is opened)."""
        return content_version(self._files.get(slide_id, []))

    def get(self, slide_id: str, keep: bool = True) -> Slide:
        """The open slide ``slide_id``; ``NotFoundError`` for an unknown id.

        ``keep=False`` loads without adding to the open set (one-off reads such as a
        listing must not evict the slides viewers are using)."""
        if self._changed:
            self.sync()
        slide = self.get_open(slide_id)
        if slide is not None:
            return slide
        for _ in range(3):
            self.sync()
            if slide_id not in self._files:
                raise NotFoundError(f"no slide {slide_id!r}")
            stale = [f.path for f in self._files[slide_id] if not _unchanged(f.identity)]
            if stale:  # changed since the last scan: index those files before loading
                with self._lock:
                    self._changed.update(stale)
                continue
            slide = self._load(slide_id)
            with self._lock:
                # A scan may have changed the files while this load read the catalog:
                # keep the slide only if it is the current version.
                current = slide.version == content_version(self._files.get(slide_id, []))
                if current and not keep:
                    return slide
                if current:
                    self._open[slide_id] = slide
                    self._checked[slide_id] = time.monotonic()  # _load saw the files
                    while len(self._open) > self.max_open:
                        self._checked.pop(self._open.popitem(last=False)[0], None)
                    return slide
        assert slide is not None
        return slide  # still changing under us: serve this consistent snapshot, uncached

    def _load(self, slide_id: str) -> Slide:
        files = self.catalog.stored_files(slide_id, self._root_names)
        if not files:
            raise NotFoundError(f"no slide {slide_id!r}")
        names = {f.backend for f in files}
        if len(names) != 1:
            raise CorruptSlideError(f"slide {slide_id} mixes formats: {sorted(map(str, names))}")
        opened = backend(files[0].backend).open(files, self._file_changed)
        identities = [f.identity for f in files]
        version = content_version(SeriesFile(i, "") for i in identities)
        self._save_locator(slide_id, opened.reader, version, identities)
        named = [f for f in files if f.identity.uri == opened.main] or files
        relative = self._relative_path(named)
        return Slide(
            id=slide_id,
            name=Path(relative).stem or slide_id,
            reader=opened.reader,
            attributes=opened.attributes,
            warnings=[*opened.warnings, *self._skipped_beside(files)],
            version=version,
            path=relative,
        )

    def _skipped_beside(self, files: list[StoredFile]) -> list[str]:
        """Files in the slide's folders that could not be indexed (a truncated level file
        leaves the slide without that level: this says so on the slide's own page)."""
        folders = {f.identity.uri.rpartition("/")[0] for f in files}
        return [
            f"{record.path.rpartition('/')[2]} in this slide's folder is not served: "
            f"{record.reason}"
            for record in self.catalog.skipped(self._root_names)
            if record.path.rpartition("/")[0] in folders
        ]

    def _relative_path(self, files: Sequence[StoredFile]) -> str:
        """The slide's path under the outermost served root holding it (the root it was
        first found under when this library serves no root of it)."""
        first = files[0]
        roots = [r for r in self.roots if under_root(first.identity.uri, r)]
        root = min(roots, key=len) if roots else first.root
        return _relative_path([(f.identity.uri, root) for f in files])

    def _save_locator(
        self, slide_id: str, reader: SlideReader, version: str, series: list[SourceIdentity]
    ) -> None:
        """For the early tile path of the next start (``http/early.py``), built and written
        in the background: neither may hold up the request that opened the slide."""

        def save() -> None:
            try:
                locator = reader.tile_locator(version, series)
                if locator is not None:
                    self.catalog.put_locator(slide_id, locator)
            except Exception:  # costs only the early path of the next start
                log.warning("tile locator of %s not saved", slide_id, exc_info=True)

        with contextlib.suppress(RuntimeError):  # closed: the process is stopping
            self._writer.submit(save)

    def flush_locators(self) -> None:
        """Wait until the tile locators queued so far are written."""
        with contextlib.suppress(RuntimeError):  # closed
            self._writer.submit(lambda: None).result()

    def _file_changed(self, path: str) -> None:
        with self._lock:
            self._changed.add(path)

    def _reindex_changed(self) -> None:
        with self._lock:
            changed, self._changed = self._changed, set()
        roots = {f.path: f.root for files in self._files.values() for f in files}
        for path in changed:
            rescan_file(self.catalog, roots.get(path, str(Path(path).parent)), path)

    def close(self) -> None:
        self._writer.shutdown(wait=True)  # pending locators are written before the catalog closes
        with self._lock:
            for slide in self._open.values():
                slide.close()
            self._open.clear()


def _unchanged(identity: SourceIdentity) -> bool:
    try:
        return current_identity(identity.uri) == identity
    except (OSError, CorruptSlideError):
        return False


def content_version(files: Iterable[SeriesFile]) -> str:
    """Changes whenever any source's URI, size or tag does: part of cache keys and ETags."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        i = f.identity
        digest.update(f"{i.uri}|{i.size}|{i.tag}\n".encode())
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
