"""Locate the Pixel Data element and walk its encapsulated items, without decoding.

Everything here reads through a sliceable buffer: ``bytes`` in tests, a ``FileView`` over
a file descriptor in production, so a walk over a 100,000-frame level reads only item
headers. (No ``mmap``: a file truncated while it is being walked must give a short read
and a ``CorruptSlideError``, not a SIGBUS that kills the server.)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tileserver.errors import CorruptSlideError


class FileView:
    """Read-only, sliceable view of a file or object through a positional read (no shared
    cursor): ``read(offset, length)`` returns exactly ``length`` bytes.

    Kernel readahead does not recognise a walk of 8-byte item headers spaced a tile apart
    as sequential, so a cold walk would wait on the disk once per item. While reads move
    forward in small strides (small tiles), the view asks for the next few MiB ahead of
    time (``advise``); with large strides it reads only what it is asked.
    """

    PREFETCH = 8 << 20
    SMALL_STRIDE = 256 << 10

    def __init__(
        self,
        read: Callable[[int, int], bytes],
        size: int,
        advise: Callable[[int, int], None] | None = None,
    ) -> None:
        self.read, self.size, self.advise = read, size, advise
        self._last = 0
        self._stride = float(self.SMALL_STRIDE)
        self._horizon = 0

    @classmethod
    def of_fd(cls, fd: int, size: int) -> FileView:
        """A view of an open local file."""
        return cls(lambda offset, length: os.pread(fd, length, offset), size, None)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, span: slice) -> bytes:
        start, stop, _ = span.indices(self.size)
        if self.advise is not None:
            self._prefetch(start, stop)
        return self.read(start, max(0, stop - start))

    def _prefetch(self, start: int, stop: int) -> None:
        stride, self._last = start - self._last, start
        self._stride = 0.9 * self._stride + 0.1 * abs(stride)
        if stop > self._horizon and self._stride < self.SMALL_STRIDE and self.advise:
            self.advise(start, self.PREFETCH)
            self._horizon = start + self.PREFETCH


#: Anything sliceable to bytes: the file's bytes, or a ``FileView`` of it.
Buffer = bytes | bytearray | memoryview | FileView

_TAG_LE = struct.Struct("<HH")
_ITEM_HEADER = struct.Struct("<HHI")
_EXPLICIT_LONG = struct.Struct("<HH2s2xI")
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = (0x7FE0, 0x0010)
_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)


@dataclass(frozen=True, slots=True)
class PixelDataElement:
    """Where the value of Pixel Data starts and how long it is (``None`` = encapsulated)."""

    value_offset: int
    length: int | None


@dataclass(frozen=True, slots=True)
class Fragments:
    """The items of an encapsulated Pixel Data value.

    ``payload_offsets`` are absolute file offsets of each fragment's bytes (after its
    8-byte item header); ``first_item`` is the file offset of the first fragment's item
    tag, the origin of Basic and Extended Offset Table offsets.
    """

    basic_offset_table: bytes
    first_item: int
    payload_offsets: npt.NDArray[np.uint64]
    payload_lengths: npt.NDArray[np.uint64]
    delimited: bool

    def __len__(self) -> int:
        return len(self.payload_offsets)


def read_pixel_data_element(buf: Buffer, tag_offset: int, implicit_vr: bool) -> PixelDataElement:
    """Parse the Pixel Data element header that starts at ``tag_offset``."""
    if tag_offset + 8 > len(buf):
        raise CorruptSlideError("no Pixel Data element before end of file")
    if _TAG_LE.unpack(buf[tag_offset : tag_offset + 4]) != _PIXEL_DATA:
        raise CorruptSlideError(f"expected Pixel Data at byte {tag_offset}")
    if implicit_vr:
        (length,) = struct.unpack("<I", buf[tag_offset + 4 : tag_offset + 8])
        value_offset = tag_offset + 8
    else:
        if tag_offset + 12 > len(buf):
            raise CorruptSlideError("Pixel Data header truncated")
        _, _, vr, length = _EXPLICIT_LONG.unpack(buf[tag_offset : tag_offset + 12])
        if vr not in (b"OB", b"OW", b"UN"):
            raise CorruptSlideError(f"Pixel Data has unexpected VR {vr!r}")
        value_offset = tag_offset + 12
    return PixelDataElement(value_offset, None if length == _UNDEFINED else length)


def walk_fragments(buf: Buffer, value_offset: int) -> Fragments:
    """Walk every item of an encapsulated Pixel Data value once.

    Raises ``CorruptSlideError`` when an item runs past the end of the file or a tag
    other than an item or the sequence delimiter appears.
    """
    size = len(buf)
    bot_offset, bot_length = _read_item(buf, value_offset, size)
    pos = bot_offset + bot_length
    first_item = pos
    offsets: list[int] = []
    lengths: list[int] = []
    unpack = _ITEM_HEADER.unpack
    delimited = False
    while pos + 8 <= size:
        header = buf[pos : pos + 8]
        if len(header) < 8:
            raise CorruptSlideError(f"file shorter than expected at byte {pos} (truncated)")
        group, element, length = unpack(header)
        if (group, element) == _SEQUENCE_DELIMITER:
            delimited = True
            break
        if (group, element) != _ITEM:
            raise CorruptSlideError(f"unexpected tag ({group:04X},{element:04X}) at byte {pos}")
        if length == _UNDEFINED or pos + 8 + length > size:
            raise CorruptSlideError(f"fragment at byte {pos} runs past end of file (truncated)")
        offsets.append(pos + 8)
        lengths.append(length)
        pos += 8 + length
    if not delimited and pos != size:
        raise CorruptSlideError(
            "encapsulated Pixel Data ends without a sequence delimiter (truncated)"
        )
    return Fragments(
        basic_offset_table=bytes(buf[bot_offset : bot_offset + bot_length]),
        first_item=first_item,
        payload_offsets=np.asarray(offsets, dtype=np.uint64),
        payload_lengths=np.asarray(lengths, dtype=np.uint64),
        delimited=delimited,
    )


def _read_item(buf: Buffer, pos: int, size: int) -> tuple[int, int]:
    if pos + 8 > size:
        raise CorruptSlideError("encapsulated Pixel Data truncated before its offset table")
    group, element, length = _ITEM_HEADER.unpack(buf[pos : pos + 8])
    if (group, element) != _ITEM:
        raise CorruptSlideError("encapsulated Pixel Data does not start with an offset-table item")
    if pos + 8 + length > size:
        raise CorruptSlideError("Basic Offset Table runs past end of file (truncated)")
    return pos + 8, length


def strip_item_headers(span: bytes) -> bytes:
    """Join the payloads of consecutive items; ``span`` starts at the first item header."""
    parts = []
    pos = 0
    while pos + 8 <= len(span):
        _, _, length = _ITEM_HEADER.unpack(span[pos : pos + 8])
        parts.append(span[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return b"".join(parts)
