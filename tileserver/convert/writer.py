"""One DICOM instance written with its frames streamed, and a series staged beside its
destination and moved there in one rename.

pydicom writes the header; the Extended Offset Table and its lengths (which precede Pixel
Data) are written as zeros of their final size and patched once every frame is out, so a
level is never held in memory. The layout is the one ``pydicom.encaps.encapsulate_extended``
gives: an empty Basic Offset Table item, one item per frame (odd lengths padded to even),
offsets measured from the first frame item, lengths of the padded frames.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.valuerep import format_number_as_ds

from tileserver.convert.dataset import RATIO_PLACEHOLDER
from tileserver.errors import InvalidRequestError

_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_UNDEFINED = 0xFFFFFFFF
# Explicit VR Little Endian element headers with a 32-bit length (OV and OB).
_OFFSETS_TAG = b"\xe0\x7f\x01\x00OV\x00\x00"
_LENGTHS_TAG = b"\xe0\x7f\x02\x00OV\x00\x00"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00OB\x00\x00"
_RATIO_TAG = b"\x28\x00\x12\x21DS"  # (0028,2112) Lossy Image Compression Ratio


def write_instance(path: Path, dataset: Dataset, frames: Iterable[bytes], count: int) -> int:
    """Write ``dataset`` (file meta included, no Pixel Data) and ``count`` encapsulated
    ``frames`` to ``path``; returns the bytes written. A different number of frames is a
    ``ValueError`` (the header already says how many)."""
    with path.open("w+b") as out:
        pydicom.dcmwrite(out, dataset, enforce_file_format=True)
        offsets_at = _reserve(out, _OFFSETS_TAG, count)
        lengths_at = _reserve(out, _LENGTHS_TAG, count)
        out.write(_PIXEL_DATA_TAG + struct.pack("<I", _UNDEFINED))
        out.write(_ITEM + b"\x00\x00\x00\x00")  # empty Basic Offset Table: the EOT says
        offsets, lengths = _write_items(out, frames)
        if len(offsets) != count:
            raise ValueError(f"{len(offsets)} frames written, {count} announced")
        out.write(_SEQUENCE_END)
        size = out.tell()
        out.seek(offsets_at)
        out.write(struct.pack(f"<{count}Q", *offsets))
        out.seek(lengths_at)
        out.write(struct.pack(f"<{count}Q", *lengths))
        _patch_ratio(out, offsets_at, _ratio(dataset, sum(lengths)))
    return size


def _ratio(dataset: Dataset, stored: int) -> bytes:
    """Lossy Image Compression Ratio: uncompressed over stored bytes, as 16 DS characters."""
    raw = dataset.Rows * dataset.Columns * dataset.SamplesPerPixel * dataset.NumberOfFrames
    text = format_number_as_ds(raw / max(stored, 1))
    return str(text).ljust(len(RATIO_PLACEHOLDER)).encode()


def _patch_ratio(out: BinaryIO, header_end: int, value: bytes) -> None:
    """Replace the header's ratio placeholder (a fixed-length value) with ``value``."""
    out.seek(0)
    header = out.read(header_end)
    element = _RATIO_TAG + struct.pack("<H", len(RATIO_PLACEHOLDER)) + RATIO_PLACEHOLDER.encode()
    at = header.find(element)
    if at >= 0:
        out.seek(at + len(_RATIO_TAG) + 2)
        out.write(value)


def _reserve(out: BinaryIO, header: bytes, count: int) -> int:
    """An OV element of ``count`` zero 64-bit values; returns where its values start."""
    out.write(header + struct.pack("<I", 8 * count))
    at = out.tell()
    out.write(bytes(8 * count))
    return at


def _write_items(out: BinaryIO, frames: Iterable[bytes]) -> tuple[list[int], list[int]]:
    write = out.write
    offsets: list[int] = []
    lengths: list[int] = []
    position = 0
    for frame in frames:
        padding = b"\x00" if len(frame) % 2 else b""
        length = len(frame) + len(padding)
        write(_ITEM + struct.pack("<I", length))
        write(frame)
        write(padding)
        offsets.append(position)
        lengths.append(length)
        position += 8 + length
    return offsets, lengths


def check_destination(output_dir: Path) -> None:
    """``InvalidRequestError`` unless ``output_dir`` is new or an empty directory."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        what = "not a directory" if not output_dir.is_dir() else "not empty"
        raise InvalidRequestError(f"{output_dir}: {what} (give a new or empty directory)")


@contextlib.contextmanager
def staged_directory(output_dir: Path) -> Iterator[Path]:
    """A hidden directory beside ``output_dir`` to write into; renamed to ``output_dir``
    when the block succeeds (replacing it if empty), removed when it fails: an interrupted
    run leaves no half series where a server or a STOW client would find it."""
    output_dir = output_dir.absolute()
    check_destination(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from a server
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
