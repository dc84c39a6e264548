"""Format backends by name, imported on first use; ``probe`` picks the one for a source.

Adding a format is one module in ``readers/`` and one line in ``BACKENDS``: the scanner,
the catalog and every front reach backends only through this registry and the
``FormatBackend`` / ``SlideReader`` protocols (``readers/base.py``).
"""

from __future__ import annotations

import importlib
import threading

from tileserver.errors import SlideError, UnsupportedError
from tileserver.readers.base import FormatBackend
from tileserver.readers.source import ByteSource

#: Name -> "module:class", in probing order (the first that accepts a source wins).
BACKENDS: dict[str, str] = {
    "dicom": "tileserver.readers.dicom_backend:DicomBackend",
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


def probe(source: ByteSource) -> FormatBackend:
    """The first backend that accepts ``source``; ``NotASlideError`` with every backend's
    reason when none does, or "empty file"."""
    size = source.identity.size
    if size == 0:
        raise NotASlideError("empty file")
    head = source.read(0, min(HEAD_BYTES, size))
    reasons = []
    for name in BACKENDS:
        candidate = backend(name)
        if candidate.accepts(head, source.identity.uri):
            return candidate
        reasons.append(candidate.reject_reason)
    raise NotASlideError("; ".join(reasons))
