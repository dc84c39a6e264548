"""One frame's bytes from the page cache without waiting on the disk, and the packed frame
row the tile tables hold (standard library only: the tile locators share the row format)."""

from __future__ import annotations

import os
import struct

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
