"""Frame tables from hand-built encapsulated Pixel Data: every offset-table kind and failure."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from tileserver.dicom.frame_table import FRAME_DTYPE, encapsulated_table, native_table
from tileserver.dicom.pixeldata import (
    FileView,
    read_pixel_data_element,
    strip_item_headers,
    walk_fragments,
)
from tileserver.errors import CorruptSlideError

EOI = b"\xff\xd9"
PIXEL_DATA_OB = struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF)


def item(payload: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(payload)) + payload


def encapsulate(fragments: list[bytes], bot: list[int] | None = None) -> bytes:
    table = b"".join(struct.pack("<I", o) for o in bot or [])
    body = b"".join(item(f) for f in fragments)
    return PIXEL_DATA_OB + item(table) + body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def frame(i: int, size: int = 10) -> bytes:
    """A fake codestream: SOI, distinct filler, EOI (even length)."""
    return b"\xff\xd8" + bytes([i + 1]) * size + EOI


def build(
    fragments: list[bytes],
    n_frames: int,
    bot: list[int] | None = None,
    eot: np.ndarray | None = None,
    end_marker: bytes | None = EOI,
):
    buf = encapsulate(fragments, bot)
    element = read_pixel_data_element(buf, 0, implicit_vr=False)
    assert element.length is None
    frags = walk_fragments(buf, element.value_offset)
    return buf, encapsulated_table(frags, n_frames, eot=eot, end_marker=end_marker, buf=buf)


def frame_bytes(buf: bytes, row: np.void) -> bytes:
    offset, length, fragments = int(row["offset"]), int(row["length"]), int(row["fragments"])
    if fragments > 1:
        return strip_item_headers(buf[offset - 8 : offset + length])
    return buf[offset : offset + length]


def offsets_of(fragments: list[bytes]) -> list[int]:
    offsets, pos = [], 0
    for f in fragments:
        offsets.append(pos)
        pos += 8 + len(f)
    return offsets


def test_empty_bot_one_fragment_per_frame() -> None:
    frames = [frame(i) for i in range(5)]
    buf, table = build(frames, 5)
    assert table.kind == "empty"
    assert [frame_bytes(buf, r) for r in table.rows] == frames
    assert set(table.rows["fragments"]) == {1}


def test_filled_bot_is_used() -> None:
    frames = [frame(i, size=4 + 2 * i) for i in range(4)]
    buf, table = build(frames, 4, bot=offsets_of(frames))
    assert table.kind == "bot" and table.notes == []
    assert [frame_bytes(buf, r) for r in table.rows] == frames


def test_bot_groups_multi_fragment_frames() -> None:
    whole = [frame(i, size=20) for i in range(3)]
    fragments = [part for f in whole for part in (f[:8], f[8:16], f[16:])]
    starts = offsets_of(fragments)[::3]
    buf, table = build(fragments, 3, bot=starts)
    assert table.kind == "bot"
    assert list(table.rows["fragments"]) == [3, 3, 3]
    assert [frame_bytes(buf, r) for r in table.rows] == whole


def test_empty_bot_splits_on_end_of_image_marker() -> None:
    whole = [frame(i, size=20) for i in range(3)]
    fragments = [part for f in whole for part in (f[:10], f[10:])]
    buf, table = build(fragments, 3)
    assert table.kind == "empty"
    assert any("end-of-image" in note for note in table.notes)
    assert [frame_bytes(buf, r) for r in table.rows] == whole


def test_marker_followed_by_pad_byte_still_ends_a_frame() -> None:
    whole = [frame(i, size=21) + b"\x00" for i in range(2)]  # odd codestream, padded to even
    fragments = [part for f in whole for part in (f[:12], f[12:])]
    buf, table = build(fragments, 2)
    assert [frame_bytes(buf, r) for r in table.rows] == whole


def test_wrong_bot_is_reported_and_items_walked() -> None:
    frames = [frame(i) for i in range(4)]
    bot = offsets_of(frames)
    bot[2] += 2  # points inside a fragment, as some writers do
    buf, table = build(frames, 4, bot=bot)
    assert any("Basic Offset Table disagrees" in n for n in table.notes)
    assert [frame_bytes(buf, r) for r in table.rows] == frames


def test_extended_offset_table_is_used_when_consistent() -> None:
    frames = [frame(i, size=6 + 2 * i) for i in range(3)]
    eot = np.zeros(3, dtype=FRAME_DTYPE)
    eot["offset"] = offsets_of(frames)
    eot["length"] = [len(f) for f in frames]
    buf, table = build(frames, 3, eot=eot)
    assert table.kind == "eot" and table.notes == []
    assert [frame_bytes(buf, r) for r in table.rows] == frames


def test_extended_offset_table_with_wrong_length_falls_back() -> None:
    frames = [frame(i) for i in range(3)]
    eot = np.zeros(3, dtype=FRAME_DTYPE)
    eot["offset"] = offsets_of(frames)
    eot["length"] = [len(f) for f in frames]
    eot["length"][1] += 4
    buf, table = build(frames, 3, eot=eot)
    assert any("Extended Offset Table disagrees" in n for n in table.notes)
    assert [frame_bytes(buf, r) for r in table.rows] == frames


def test_fewer_fragments_than_frames_is_corrupt() -> None:
    with pytest.raises(CorruptSlideError, match="2 fragments for 3 frames"):
        build([frame(0), frame(1)], 3)


def test_more_fragments_without_markers_is_corrupt() -> None:
    fragments = [b"\x01\x02\x03\x04"] * 4
    with pytest.raises(CorruptSlideError, match="end-of-image markers"):
        build(fragments, 3)


def test_single_frame_over_several_fragments() -> None:
    whole = frame(0, size=30)
    fragments = [whole[:10], whole[10:20], whole[20:]]
    buf, table = build(fragments, 1)
    assert frame_bytes(buf, table.rows[0]) == whole


def test_truncated_fragment_is_corrupt() -> None:
    buf = encapsulate([frame(0), frame(1)])[:-20]
    element = read_pixel_data_element(buf, 0, implicit_vr=False)
    with pytest.raises(CorruptSlideError, match="truncated"):
        walk_fragments(buf, element.value_offset)


def test_missing_delimiter_at_end_of_file_is_accepted() -> None:
    buf = encapsulate([frame(0), frame(1)])[:-8]
    frags = walk_fragments(buf, read_pixel_data_element(buf, 0, False).value_offset)
    assert len(frags) == 2 and not frags.delimited


def test_unexpected_tag_inside_pixel_data_is_corrupt() -> None:
    buf = encapsulate([frame(0)])
    bad = buf.replace(struct.pack("<HH", 0xFFFE, 0xE0DD), struct.pack("<HH", 0x0008, 0x0016))
    with pytest.raises(CorruptSlideError, match="unexpected tag"):
        walk_fragments(bad, read_pixel_data_element(bad, 0, False).value_offset)


def test_not_pixel_data_tag_is_corrupt() -> None:
    with pytest.raises(CorruptSlideError, match="expected Pixel Data"):
        read_pixel_data_element(b"\x08\x00\x16\x00" + b"\x00" * 12, 0, False)


def test_implicit_vr_header() -> None:
    buf = struct.pack("<HHI", 0x7FE0, 0x0010, 48) + bytes(48)
    element = read_pixel_data_element(buf, 0, implicit_vr=True)
    assert (element.value_offset, element.length) == (8, 48)


def test_native_table_slices_fixed_size_frames() -> None:
    table = native_table(100, 4 * 48, 4, 48, file_size=100 + 4 * 48)
    assert table.kind == "native"
    assert list(table.rows["offset"]) == [100, 148, 196, 244]
    assert set(table.rows["length"]) == {48} and set(table.rows["fragments"]) == {0}


def test_native_table_shorter_than_frames_is_corrupt() -> None:
    with pytest.raises(CorruptSlideError, match="frames need"):
        native_table(100, 100, 4, 48, file_size=10_000)


def test_native_table_past_end_of_file_is_corrupt() -> None:
    with pytest.raises(CorruptSlideError, match="past end of file"):
        native_table(100, 192, 4, 48, file_size=200)


def test_file_truncated_during_the_walk_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "pixels.bin"
    path.write_bytes(encapsulate([frame(i, size=4000) for i in range(8)]))
    with path.open("rb") as f:
        view = FileView.of_fd(f.fileno(), path.stat().st_size)
        element = read_pixel_data_element(view, 0, implicit_vr=False)
        os.truncate(path, 5000)  # another process rewrites the file under us
        with pytest.raises(CorruptSlideError, match="truncated"):
            walk_fragments(view, element.value_offset)


def test_basic_offset_table_of_odd_length_is_corrupt() -> None:
    buf = (
        PIXEL_DATA_OB
        + item(b"\x00\x00\x00")
        + item(frame(0))
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    frags = walk_fragments(buf, read_pixel_data_element(buf, 0, False).value_offset)
    with pytest.raises(CorruptSlideError, match="multiple of 4"):
        encapsulated_table(frags, 1, eot=None, end_marker=EOI, buf=buf)
