"""Format backends by name, imported on first use; probing a source picks its backend.

Adding a format is one module in ``readers/`` and one line in ``BACKENDS``: the scanner,
the catalog and every front reach backends only through this registry and the
``FormatBackend`` / ``SlideReader`` protocols (``readers/base.py``).
"""

from __future__ import annotations

import importlib
import threading

from tileserver.errors import SlideError, UnsupportedError
from tileserver.readers.base import FormatBackend, IndexedFile
from tileserver.readers.source import ByteSource

#: Name -> "module:class", in probing order (the first that accepts a source wins).
BACKENDS: dict[str, str] = {
    "dicom": "tileserver.readers.dicom_backend:DicomBackend",
    "tiff": "tileserver.readers.tiff_backend:TiffBackend",
    "openslide": "tileserver.readers.openslide_backend:OpenSlideBackend",
}
#: Bytes a backend sees to decide whether a source is one of its files.
HEAD_BYTES = 4096

_loaded: dict[str, FormatBackend] = {}
_lock = threading.Lock()


class NotASlideError(SlideError):
    """A source no backend recognises."""


def backend(name: str) -> FormatBackend:
    """The backend called ``name`` (imported on first use)."""
    with _lock:
        found = _loaded.get(name)
        if found is None:
            spec = BACKENDS.get(name)
            if spec is None:
                raise UnsupportedError(f"no format backend {name!r}")
            module, _, attribute = spec.partition(":")
            found = _loaded[name] = getattr(importlib.import_module(module), attribute)()
        return found


def candidates(source: ByteSource) -> list[FormatBackend]:
    """The backends that accept ``source``, in probing order; ``NotASlideError`` with every
    backend's reason when none does, or "empty file"."""
    size = source.identity.size
    if size == 0:
        raise NotASlideError("empty file")
    head = source.read(0, min(HEAD_BYTES, size))
    accepting, reasons = [], []
    for name in BACKENDS:
        candidate = backend(name)
        if candidate.accepts(head, source.identity.uri):
            accepting.append(candidate)
        else:
            reasons.append(candidate.reject_reason)
    if not accepting:
        raise NotASlideError("; ".join(reasons))
    return accepting


def index(source: ByteSource) -> tuple[str, IndexedFile]:
    """The first accepting backend's index of ``source`` (a later one is tried when an
    earlier one cannot index it: DICOM the DICOM backend rejects may still open in
    OpenSlide); the first backend's ``SlideError`` when none can."""
    first: SlideError | None = None
    for candidate in candidates(source):
        try:
            return candidate.name, candidate.index(source)
        except SlideError as exc:
            first = first or exc
    assert first is not None
    raise first
