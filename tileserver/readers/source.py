"""Byte sources: where a slide's bytes come from, behind one small protocol.

Every reader, indexer and the early tile path read through a ``ByteSource``: its
identity (what the catalog records, and what tells a changed file from the one that was
indexed), ``read(offset, length)``, and ``read_if_cached``, which answers only when it can
do so without waiting (an event loop may call it). ``LocalFile`` is the local-disk source;
``open_source`` picks the source for a URI by its scheme, importing it on first use, so an
object-storage source is one new module and one line in ``SCHEMES``.

Standard library only: the early tile path (``http/early.py``) reads through this module
before numpy is imported.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from tileserver.errors import CorruptSlideError, SlideChangedError

log = logging.getLogger(__name__)
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


@dataclass(frozen=True, slots=True, order=True)
class SourceIdentity:
    """A source as indexed: its URI, size, and a tag that changes with its content (a
    local file's mtime in nanoseconds; an object's ETag)."""

    uri: str
    size: int
    tag: str


class ByteSource(Protocol):
    """Bytes of one file or object; thread-safe, reads take the offset (no cursor)."""

    @property
    def identity(self) -> SourceIdentity: ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes from ``offset`` of the source as indexed:
        ``SlideChangedError`` when it changed since, ``CorruptSlideError`` when short."""
        ...

    def read_if_cached(self, offset: int, length: int) -> bytes | None:
        """``read`` when it can answer without waiting (an event loop may call it), else
        None; also None when the source cannot tell."""
        ...

    def changed(self) -> bool:
        """Whether the source no longer has its identity (a cheap check, no read)."""
        ...

    def advise(self, offset: int, length: int) -> None:
        """A hint that these bytes are read soon (a walk of many small items)."""
        ...

    def close(self) -> None: ...


def local_identity(path: str) -> SourceIdentity:
    """A local file's identity now (``OSError`` when it cannot be stat'ed)."""
    stat = os.stat(path)
    return SourceIdentity(path, stat.st_size, str(stat.st_mtime_ns))


class LocalFile:
    """A local file through one shared read-only descriptor and ``pread``/``preadv2``.

    The descriptor opens on the first read and closes when the last reference goes, never
    under an in-flight read (a closed descriptor number can be reused by another file).
    Every read first checks, with an ``fstat``, that the file still has its identity:
    offsets are only valid for the file as indexed.
    """

    def __init__(self, identity: SourceIdentity) -> None:
        self._identity = identity
        # Compared with every read's fstat: as numbers, once (a tag is text for any source).
        self._stamp = (identity.size, int(identity.tag) if identity.tag.isdigit() else -1)
        self._fds: list[int] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._fds)

    @classmethod
    def at(cls, path: str) -> LocalFile:
        """The file at ``path`` with the identity it has now."""
        return cls(local_identity(path))

    @property
    def identity(self) -> SourceIdentity:
        return self._identity

    def read(self, offset: int, length: int) -> bytes:
        try:
            fd = self._fd()
            self._check(fd)
            data = os.pread(fd, length, offset)
        except OSError as exc:
            raise CorruptSlideError(f"{self._identity.uri}: {exc.strerror or exc}") from exc
        if len(data) != length:
            raise CorruptSlideError(f"{self._identity.uri} is shorter than its index")
        return data

    def read_if_cached(self, offset: int, length: int) -> bytes | None:
        """From the page cache with ``RWF_NOWAIT``; None before the first ``read`` opened
        the file (opening may wait on the disk), or when any byte is not cached."""
        global _NOWAIT
        if not _NOWAIT or not self._fds:
            return None
        fd = self._fds[0]
        buffer = bytearray(length)
        try:
            if self._changed_fd(fd):
                return None  # ``read`` reports it
            count = os.preadv(fd, [buffer], offset, _NOWAIT)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # the file system cannot tell
                _NOWAIT = 0
            return None
        return bytes(buffer) if count == length else None

    def changed(self) -> bool:
        try:
            stat = os.fstat(self._fds[0]) if self._fds else os.stat(self._identity.uri)
        except OSError:
            return True
        return (stat.st_size, stat.st_mtime_ns) != self._stamp

    def advise(self, offset: int, length: int) -> None:
        with contextlib.suppress(OSError):  # only a hint
            os.posix_fadvise(self._fd(), offset, length, os.POSIX_FADV_WILLNEED)

    def close(self) -> None:
        """Close the descriptor now; only for owners sure no read is in flight."""
        with self._lock:
            _close_all(self._fds)

    def _fd(self) -> int:
        if not self._fds:
            with self._lock:
                if not self._fds:
                    self._fds.append(os.open(self._identity.uri, os.O_RDONLY))
        return self._fds[0]

    def _changed_fd(self, fd: int) -> bool:
        stat = os.fstat(fd)
        return (stat.st_size, stat.st_mtime_ns) != self._stamp

    def _check(self, fd: int) -> None:
        if self._changed_fd(fd):
            raise SlideChangedError(f"{self._identity.uri} changed since it was indexed")


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


#: URI scheme -> "module:factory" of its source (a factory takes a ``SourceIdentity``);
#: a URI without a scheme is a local path.
SCHEMES: dict[str, str] = {
    "": "tileserver.readers.source:LocalFile",
    "s3": "tileserver.readers.s3:S3Object",
}


def scheme_of(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    return head if sep and head.isalnum() else ""


def open_source(identity: SourceIdentity) -> ByteSource:
    """The source of ``identity``'s URI, by its scheme (``UnsupportedError``-free: an
    unknown scheme is a ``CorruptSlideError`` of that slide alone)."""
    spec = SCHEMES.get(scheme_of(identity.uri))
    if spec is None:
        raise CorruptSlideError(f"{identity.uri}: no byte source for this scheme")
    module, _, name = spec.partition(":")
    factory = getattr(importlib.import_module(module), name)
    source: ByteSource = factory(identity)
    return source


def _module(scheme: str, uri: str) -> Any:
    spec = SCHEMES.get(scheme)
    if spec is None:
        raise CorruptSlideError(f"{uri}: no byte source for this scheme")
    return importlib.import_module(spec.partition(":")[0])


def normalize_root(root: str | os.PathLike[str]) -> str:
    """A slide root as the catalog compares it: an absolute local path, or a URI without a
    trailing slash."""
    text = os.fspath(root)
    if scheme_of(text):
        return text.rstrip("/")
    return os.path.realpath(text)


def root_exists(root: str) -> bool:
    """Whether a local root exists (an object-storage root is checked by listing it)."""
    return bool(scheme_of(root)) or os.path.exists(root)


def list_sources(root: str) -> Iterator[tuple[str, SourceIdentity | None]]:
    """Every source under ``root`` in a stable order, hidden names excluded, with its
    identity where listing gives it (None: ask ``current_identity``)."""
    scheme = scheme_of(root)
    if scheme:
        for identity in _module(scheme, root).list_sources(root):
            yield identity.uri, identity
        return
    if os.path.isfile(root):
        yield root, None
        return
    inside = _Inside(root)
    for directory, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and inside(os.path.join(directory, d))
        )
        for name in sorted(files):
            path = os.path.join(directory, name)
            if not name.startswith(".") and inside(path):
                yield path, None


class _Inside:
    """Whether a path found under a root really lies in it: a symbolic link may point
    anywhere, and a slide root must not become a window onto the rest of the disk."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def __call__(self, path: str) -> bool:
        if not os.path.islink(path):
            return True
        target = os.path.realpath(path)
        if target == self.root or target.startswith(self.root.rstrip("/") + "/"):
            return True
        log.warning("%s links outside its slide root %s: not served", path, self.root)
        return False


def current_identity(uri: str) -> SourceIdentity:
    """What a local path is now; other schemes ask their source module (``identity_now``)."""
    scheme = scheme_of(uri)
    if scheme == "":
        return local_identity(uri)
    identity: SourceIdentity = _module(scheme, uri).identity_now(uri)
    return identity


class SourceStream(io.RawIOBase):
    """A ``ByteSource`` as a seekable binary file (for parsers such as pydicom's);
    wrap it in ``io.BufferedReader`` to read in large ranges."""

    def __init__(self, source: ByteSource) -> None:
        super().__init__()
        self.source = source
        self._pos = 0

    @property
    def name(self) -> str:
        return self.source.identity.uri

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.source.identity.size}
        self._pos = max(0, base[whence] + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self.source.identity.size - self._pos))
        if count:
            view[:count] = self.source.read(self._pos, count)
            self._pos += count
        return count
