"""TIFF image file directories read with ranged reads: classic TIFF and BigTIFF, either
byte order. Only the directory entries are read; a tag's value is fetched when asked for
(tile tables are arrays of thousands of entries, ImageDescription can be long), and tile
data is never touched.

Every offset is checked against the source's size, so a truncated file or a corrupt chain
of directories is a ``CorruptSlideError`` naming what points where, never an exception
from deep inside ``struct``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tileserver.errors import CorruptSlideError, NotWsiError
from tileserver.readers.source import ByteSource

#: More directories than any slide has: a chain longer than this is corrupt (a loop the
#: visited set misses cannot exist, but a crafted chain could be very long).
MAX_IFDS = 4096
MAX_ENTRIES = 4096
#: A string tag longer than this is not a description anybody needs.
MAX_TEXT = 1 << 20

#: TIFF field type -> (struct code, byte size) of one value.
_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1),  # BYTE
    2: ("B", 1),  # ASCII
    3: ("H", 2),  # SHORT
    4: ("I", 4),  # LONG
    5: ("I", 4),  # RATIONAL (two LONGs per value)
    6: ("b", 1),
    7: ("B", 1),  # UNDEFINED
    8: ("h", 2),
    9: ("i", 4),
    10: ("i", 4),  # SRATIONAL
    11: ("f", 4),
    12: ("d", 8),
    13: ("I", 4),  # IFD
    16: ("Q", 8),  # LONG8
    17: ("q", 8),
    18: ("Q", 8),  # IFD8
}
_RATIONAL = frozenset({5, 10})


@dataclass(frozen=True, slots=True)
class Header:
    """The file header: byte order ("<" or ">") and whether offsets are 64-bit."""

    order: str
    big: bool

    @property
    def entry_size(self) -> int:
        return 20 if self.big else 12

    @property
    def offset_code(self) -> str:
        return "Q" if self.big else "I"


@dataclass(frozen=True, slots=True)
class Entry:
    tag: int
    type: int
    count: int
    #: The value bytes when they fit in the entry, else None (then ``offset`` points to them).
    inline: bytes | None
    offset: int

    @property
    def nbytes(self) -> int:
        size = _TYPES[self.type][1]
        return self.count * size * (2 if self.type in _RATIONAL else 1)


class Ifd:
    """One image file directory: its entries, and values read on demand."""

    def __init__(self, source: ByteSource, header: Header, offset: int, entries: list[Entry]):
        self.source = source
        self.header = header
        self.offset = offset
        self.entries = {e.tag: e for e in entries}

    def __contains__(self, tag: int) -> bool:
        return tag in self.entries

    def raw(self, tag: int) -> bytes:
        """A tag's value bytes as stored (b"" when the tag is absent)."""
        entry = self.entries.get(tag)
        if entry is None:
            return b""
        if entry.inline is not None:
            return entry.inline[: entry.nbytes]
        return _read(self.source, entry.offset, entry.nbytes, f"tag {tag}")

    def array(self, tag: int) -> npt.NDArray[np.uint64]:
        """An integer tag's values (offsets, byte counts), as uint64."""
        entry = self.entries.get(tag)
        if entry is None:
            return np.zeros(0, dtype=np.uint64)
        code = _TYPES[entry.type][0]
        if entry.type in _RATIONAL or code in "fd":
            raise CorruptSlideError(f"tag {tag} is not an integer array (type {entry.type})")
        dtype = np.dtype(self.header.order + code)
        values = np.frombuffer(self.raw(tag), dtype=dtype, count=entry.count)
        if code in "bhiq" and values.size and values.min() < 0:
            raise CorruptSlideError(f"tag {tag} holds negative values")
        return values.astype(np.uint64)

    def first(self, tag: int, default: int = 0) -> int:
        """The first value of an integer tag."""
        values = self.array(tag) if tag in self.entries else None
        return int(values[0]) if values is not None and values.size else default

    def ints(self, tag: int) -> list[int]:
        return [int(v) for v in self.array(tag)]

    def rational(self, tag: int) -> float | None:
        entry = self.entries.get(tag)
        if entry is None or entry.type not in _RATIONAL or entry.count < 1:
            return None
        code = "i" if entry.type == 10 else "I"
        num, den = struct.unpack(f"{self.header.order}2{code}", self.raw(tag)[:8])
        return num / den if den else None

    def text(self, tag: int) -> str:
        """An ASCII tag's value (up to ``MAX_TEXT`` bytes), NULs dropped."""
        entry = self.entries.get(tag)
        if entry is None or entry.type not in (1, 2, 7):
            return ""
        if entry.count > MAX_TEXT:
            return ""
        return self.raw(tag).split(b"\x00", 1)[0].decode("latin-1")


def read_header(source: ByteSource) -> tuple[Header, int]:
    """The header and the offset of the first directory."""
    size = source.identity.size
    head = _read(source, 0, min(16, size), "the header")
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        raise NotWsiError("not a TIFF file")
    (magic,) = struct.unpack(f"{order}H", head[2:4])
    if magic == 42:
        return Header(order, False), struct.unpack(f"{order}I", head[4:8])[0]
    if magic == 43 and len(head) >= 16:
        offset_size, _, first = struct.unpack(f"{order}HHQ", head[4:16])
        if offset_size != 8:
            raise CorruptSlideError(f"BigTIFF with {offset_size}-byte offsets")
        return Header(order, True), first
    raise NotWsiError(f"not a TIFF file (version {magic})")


def read_ifd(source: ByteSource, header: Header, offset: int) -> tuple[Ifd, int]:
    """The directory at ``offset`` and the offset of the next one (0: the last)."""
    count_size = 8 if header.big else 2
    raw = _read(source, offset, count_size, f"directory at {offset}")
    (count,) = struct.unpack(header.order + ("Q" if header.big else "H"), raw)
    if not 0 < count <= MAX_ENTRIES:
        raise CorruptSlideError(f"directory at {offset} has {count} entries")
    body_length = count * header.entry_size + (8 if header.big else 4)
    body = _read(source, offset + count_size, body_length, f"directory at {offset}")
    entries = [_entry(body, i * header.entry_size, header) for i in range(count)]
    (next_offset,) = struct.unpack_from(
        header.order + header.offset_code, body, count * header.entry_size
    )
    return Ifd(source, header, offset, [e for e in entries if e is not None]), next_offset


def _entry(body: bytes, at: int, header: Header) -> Entry | None:
    order = header.order
    if header.big:
        tag, kind, count = struct.unpack_from(f"{order}HHQ", body, at)
        field, field_size = body[at + 12 : at + 20], 8
    else:
        tag, kind, count = struct.unpack_from(f"{order}HHI", body, at)
        field, field_size = body[at + 8 : at + 12], 4
    if kind not in _TYPES:
        return None  # a type from a later TIFF revision: not one of the tags we read
    entry = Entry(tag, kind, count, field, 0)
    if entry.nbytes <= field_size:
        return entry
    (pointer,) = struct.unpack(order + header.offset_code, field)
    return Entry(tag, kind, count, None, pointer)


def walk(source: ByteSource) -> tuple[Header, list[Ifd]]:
    """Every directory of the main chain, in file order; loops and overlong chains are
    ``CorruptSlideError``s."""
    header, offset = read_header(source)
    found: list[Ifd] = []
    seen: set[int] = set()
    while offset:
        if offset in seen:
            raise CorruptSlideError(f"directory chain loops back to offset {offset}")
        if len(found) >= MAX_IFDS:
            raise CorruptSlideError(f"more than {MAX_IFDS} directories")
        seen.add(offset)
        ifd, offset = read_ifd(source, header, offset)
        found.append(ifd)
    if not found:
        raise CorruptSlideError("no image file directory")
    return header, found


def sub_ifds(ifd: Ifd, tag: int = 330) -> Iterator[Ifd]:
    """The directories a SubIFDs tag points to (each read alone: pyramid writers give
    every reduced level its own SubIFDs entry)."""
    for offset in ifd.ints(tag):
        yield read_ifd(ifd.source, ifd.header, offset)[0]


def _read(source: ByteSource, offset: int, length: int, what: str) -> bytes:
    size = source.identity.size
    if offset < 0 or length < 0 or offset + length > size:
        raise CorruptSlideError(
            f"truncated or corrupt: {what} lies at {offset}..{offset + length}, "
            f"past the end of the file ({size} bytes)"
        )
    return source.read(offset, length) if length else b""
