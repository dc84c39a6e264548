"""Per-frame (offset, length, fragment count) tables, one small builder per table kind.

A frame table row locates one frame's bytes in the file:

* ``offset``: absolute offset of the frame's first byte (first fragment's payload, or the
  frame's first pixel byte for native data);
* ``length``: bytes from ``offset`` to the end of the frame's last fragment payload, item
  headers in between included, so a frame is always one contiguous read;
* ``fragments``: number of items the frame spans (0 for native pixel data).

Offset tables in the file are hints: every Basic or Extended Offset Table entry is checked
against the item it points to, and a table that disagrees is reported and replaced by a
walk of the items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tileserver.dicom.pixeldata import Buffer, Fragments
from tileserver.errors import CorruptSlideError

FRAME_DTYPE = np.dtype([("offset", "<u8"), ("length", "<u8"), ("fragments", "<u4")])
FrameArray = npt.NDArray[np.void]


@dataclass
class FrameTable:
    """Frame locations plus what was learnt building them (for the validation report)."""

    rows: FrameArray
    kind: str  # "native" | "bot" | "eot" | "empty"
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def native_table(
    value_offset: int, value_length: int, n_frames: int, frame_length: int, file_size: int
) -> FrameTable:
    """Frames of native (uncompressed) pixel data: fixed-size slices of the value."""
    needed = n_frames * frame_length
    if value_length < needed:
        raise CorruptSlideError(
            f"Pixel Data holds {value_length} bytes, {n_frames} frames need {needed}"
        )
    if value_offset + needed > file_size:
        raise CorruptSlideError("native Pixel Data runs past end of file (truncated)")
    rows = np.zeros(n_frames, dtype=FRAME_DTYPE)
    rows["offset"] = value_offset + np.arange(n_frames, dtype=np.uint64) * np.uint64(frame_length)
    rows["length"] = frame_length
    return FrameTable(rows, "native")


def encapsulated_table(
    frags: Fragments,
    n_frames: int,
    *,
    eot: FrameArray | None,
    end_marker: bytes | None,
    buf: Buffer,
) -> FrameTable:
    """Group fragments into frames using the best trustworthy source."""
    n_frags = len(frags)
    if n_frames <= 0:
        raise CorruptSlideError("Number of Frames is zero")
    if n_frags < n_frames:
        raise CorruptSlideError(f"{n_frags} fragments for {n_frames} frames")
    if len(frags.basic_offset_table) % 4:
        raise CorruptSlideError("Basic Offset Table length is not a multiple of 4")
    bot = np.frombuffer(frags.basic_offset_table, dtype="<u4").astype(np.uint64)
    notes: list[str] = []
    if eot is not None:
        starts = _starts_from_table(frags, eot["offset"], n_frames)
        if starts is not None and _lengths_agree(frags, starts, eot["length"]):
            return FrameTable(_rows(frags, starts), "eot", notes)
        notes.append(
            "Extended Offset Table disagrees with the fragment items; items walked instead"
        )
    if len(bot):
        starts = _starts_from_table(frags, bot, n_frames)
        if starts is not None:
            return FrameTable(_rows(frags, starts), "bot", notes)
        notes.append("Basic Offset Table disagrees with the fragment items; items walked instead")
    kind = "eot" if eot is not None else "bot" if len(bot) else "empty"
    return FrameTable(
        _rows(frags, _starts_without_table(frags, n_frames, end_marker, buf, notes)), kind, notes
    )


def _starts_from_table(
    frags: Fragments, table: npt.NDArray[np.uint64], n_frames: int
) -> npt.NDArray[np.intp] | None:
    """Index of each frame's first fragment, or None if the table does not fit the items."""
    if len(table) != n_frames:
        return None
    relative = frags.payload_offsets - np.uint64(8 + frags.first_item)
    starts = np.searchsorted(relative, table)
    if np.any(starts >= len(relative)):
        return None
    if not np.array_equal(relative[starts], table) or starts[0] != 0:
        return None
    if n_frames > 1 and np.any(np.diff(starts) <= 0):
        return None
    return starts


def _lengths_agree(
    frags: Fragments, starts: npt.NDArray[np.intp], lengths: npt.NDArray[np.uint64]
) -> bool:
    ends = np.append(starts[1:], len(frags))
    payload = np.add.reduceat(frags.payload_lengths, starts) if len(starts) else starts
    single = (ends - starts) == 1
    # Writers differ on whether a multi-fragment frame's length counts item headers, so only
    # single-fragment frames are checked exactly.
    return bool(np.array_equal(payload[single], lengths[single]))


def _starts_without_table(
    frags: Fragments,
    n_frames: int,
    end_marker: bytes | None,
    buf: Buffer,
    notes: list[str],
) -> npt.NDArray[np.intp]:
    n_frags = len(frags)
    if n_frags == n_frames:
        return np.arange(n_frames, dtype=np.intp)
    if n_frames == 1:
        notes.append(f"single frame spread over {n_frags} fragments")
        return np.zeros(1, dtype=np.intp)
    if end_marker is None:
        raise CorruptSlideError(
            f"{n_frags} fragments for {n_frames} frames and no offset table to group them"
        )
    ends = [i for i in range(n_frags) if _ends_with_marker(frags, i, end_marker, buf)]
    if len(ends) != n_frames or ends[-1] != n_frags - 1:
        raise CorruptSlideError(
            f"{n_frags} fragments for {n_frames} frames; end-of-image markers give {len(ends)}"
        )
    notes.append(f"{n_frags} fragments grouped into {n_frames} frames on end-of-image markers")
    return np.asarray([0, *[e + 1 for e in ends[:-1]]], dtype=np.intp)


def _ends_with_marker(frags: Fragments, i: int, marker: bytes, buf: Buffer) -> bool:
    end = int(frags.payload_offsets[i] + frags.payload_lengths[i])
    tail = bytes(buf[max(end - len(marker) - 1, int(frags.payload_offsets[i])) : end])
    # Items have even length, so one trailing pad byte may follow the marker.
    return tail.endswith(marker) or tail.rstrip(b"\x00").endswith(marker)


def _rows(frags: Fragments, starts: npt.NDArray[np.intp]) -> FrameArray:
    ends = np.append(starts[1:], len(frags)) - 1
    rows = np.zeros(len(starts), dtype=FRAME_DTYPE)
    rows["offset"] = frags.payload_offsets[starts]
    rows["length"] = frags.payload_offsets[ends] + frags.payload_lengths[ends] - rows["offset"]
    rows["fragments"] = (ends - starts + 1).astype(np.uint32)
    return rows
