"""Reading stored frames with the standard library alone (the tile locators and the early
path use it before numpy is imported): the packed frame row of the tile tables, a read
from the page cache that never waits on the disk, and the file checks around reads."""

from __future__ import annotations

import os
import struct
from typing import TypeVar

#: One frame row, packed as ``LEVEL_FRAME_DTYPE``: file index, offset, length, fragments.
FRAME_ROW = struct.Struct("<HQQI")

_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


def nowait_available() -> bool:
    """False once the platform or a file system has shown it cannot read without waiting."""
    return bool(_NOWAIT)


def read_nowait(fd: int, length: int, offset: int) -> bytes:
    """``pread`` that raises ``BlockingIOError`` instead of waiting for the disk (also when
    the platform or file system cannot tell: then the caller reads in a thread)."""
    global _NOWAIT
    if not _NOWAIT:
        raise BlockingIOError("RWF_NOWAIT is not available")
    buffer = bytearray(length)
    try:
        count = os.preadv(fd, [buffer], offset, _NOWAIT)
    except OSError as exc:
        if isinstance(exc, BlockingIOError):
            raise
        _NOWAIT = 0  # the file system does not support it: always use the thread
        raise BlockingIOError(str(exc)) from exc
    if count < length:
        # A short read may just mean part of the span is not cached yet.
        raise BlockingIOError("partly cached")
    return bytes(buffer)


def file_unchanged(path: str, size: int, mtime_ns: int) -> bool:
    """Whether ``path`` still has the size and mtime it was indexed with (a ``stat``)."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return (stat.st_size, stat.st_mtime_ns) == (size, mtime_ns)


Key = TypeVar("Key")


def close_all(fds: dict[Key, int]) -> None:
    """Close a reader's descriptors (its finalizer: never under an in-flight read)."""
    for fd in fds.values():
        os.close(fd)
    fds.clear()
