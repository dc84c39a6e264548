"""Index one DICOM file: header facts, frame table and frame positions, no pixel decoding."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from tileserver.dicom.dicomjson import dataset_json
from tileserver.dicom.frame_table import (
    FRAME_DTYPE,
    FrameArray,
    FrameTable,
    encapsulated_table,
    native_table,
)
from tileserver.dicom.header import InstanceHeader, parse_header, read_header
from tileserver.dicom.pixeldata import FileView, read_pixel_data_element, walk_fragments
from tileserver.dicom.tiling import (
    PositionArray,
    full_positions,
    shared_z_offset,
    sparse_positions,
)
from tileserver.errors import CorruptSlideError, SlideError, UnsupportedError
from tileserver.formats import TRANSFER_SYNTAXES, TransferSyntax

if TYPE_CHECKING:  # pydicom loads only when a file is indexed (header.read_header)
    from pydicom.dataset import Dataset

#: Codestream starts by media type, for a cheap sanity check of the first frame.
_SIGNATURES = {
    "image/jpeg": (b"\xff\xd8",),
    "image/jp2": (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP"),
    "image/jphc": (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP"),
    "image/jls": (b"\xff\xd8",),
}

_PHOTOMETRIC = {
    "image/jpeg": {"YBR_FULL_422", "YBR_FULL", "RGB", "MONOCHROME2", "MONOCHROME1"},
    "image/jls": {"RGB", "MONOCHROME2", "MONOCHROME1"},
    "application/octet-stream": {"RGB", "YBR_FULL", "MONOCHROME2", "MONOCHROME1"},
    "image/dicom-rle": {"RGB", "YBR_FULL", "MONOCHROME2", "MONOCHROME1"},
}
_J2K_LOSSLESS_PHOTOMETRIC = {"YBR_RCT", "RGB", "MONOCHROME2", "MONOCHROME1"}
_J2K_LOSSY_PHOTOMETRIC = {"YBR_ICT", "RGB", "MONOCHROME2", "MONOCHROME1"}


@dataclass(frozen=True)
class IndexedInstance:
    """Everything the catalog stores about one file (its identity is the byte source's)."""

    path: str  # the source's URI: an absolute path for a local file
    file_size: int
    header: InstanceHeader
    frames: FrameTable
    positions: PositionArray | None  # None for TILED_FULL: positions follow from the order
    z_base: float
    #: The header as DICOM JSON (orjson bytes), for DICOMweb metadata and QIDO.
    dataset_json: bytes = b"{}"

    @property
    def warnings(self) -> list[str]:
        return [*self.header.warnings, *self.frames.notes]


def index_instance(path: str | Path) -> IndexedInstance:
    """Index the local file ``path`` (the scanner reads through byte sources instead:
    ``readers/dicom_backend.py``); raises a ``SlideError`` saying why not."""
    path = Path(path)
    with path.open("rb") as fp:
        return index_stream(fp, FileView.of_fd(fp.fileno(), os.fstat(fp.fileno()).st_size))


def index_stream(fp: BinaryIO, view: FileView, uri: str | None = None) -> IndexedInstance:
    """Index one DICOM file read through ``fp`` (its header) and ``view`` (positional reads
    of Pixel Data items); raises a ``SlideError`` (or ``UnsupportedError``) saying why not."""
    size = len(view)
    if size == 0:
        raise SlideError("empty file")
    # pydicom's complaints about odd values become validation notes, not warnings.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, tag_offset = read_header(fp)
        header = parse_header(ds)
        syntax = _syntax(header.transfer_syntax)
        frames = _frame_table(view, ds, header, syntax, tag_offset, size)
        _check_consistency(view, header, syntax, frames)
        positions = None
        if header.dimension_organization != "TILED_FULL":
            positions = sparse_positions(ds, header, frames.notes)
        else:  # the frame count must fit the grid, or the slide could never be assembled
            concat = header.concatenation
            full_positions(header, len(frames), concat.frame_offset if concat else 0)
        z_base = shared_z_offset(ds)
        header_json = dataset_json(ds)
    frames.notes.extend(sorted({f"DICOM: {w.message}" for w in caught}))
    path = uri if uri is not None else str(getattr(fp, "name", ""))
    return IndexedInstance(path, size, header, frames, positions, z_base, header_json)


def _syntax(uid: str) -> TransferSyntax:
    syntax = TRANSFER_SYNTAXES.get(uid)
    if syntax is None or uid == "1.2.840.10008.1.2.1.99":
        raise UnsupportedError(f"transfer syntax {uid} is not supported")
    return syntax


def _frame_table(
    mm: FileView,
    ds: Dataset,
    header: InstanceHeader,
    syntax: TransferSyntax,
    tag_offset: int,
    file_size: int,
) -> FrameTable:
    element = read_pixel_data_element(mm, tag_offset, syntax.implicit_vr)
    n_frames = header.number_of_frames
    if not syntax.encapsulated:
        if element.length is None:
            raise CorruptSlideError("native Pixel Data with undefined length")
        return native_table(
            element.value_offset,
            element.length,
            n_frames,
            header.pixel_format.native_frame_length,
            file_size,
        )
    if element.length is not None:
        raise CorruptSlideError(f"{syntax.name} Pixel Data must have undefined length")
    frags = walk_fragments(mm, element.value_offset)
    return encapsulated_table(
        frags, n_frames, eot=_extended_offset_table(ds), end_marker=syntax.end_marker, buf=mm
    )


def _extended_offset_table(ds: Dataset) -> FrameArray | None:
    if "ExtendedOffsetTable" not in ds:
        return None
    raw_offsets = bytes(ds.ExtendedOffsetTable)
    raw_lengths = bytes(ds.get("ExtendedOffsetTableLengths", b""))
    if len(raw_offsets) % 8 or len(raw_lengths) % 8:
        raise CorruptSlideError("Extended Offset Table length is not a multiple of 8")
    offsets = np.frombuffer(raw_offsets, dtype="<u8")
    lengths = np.frombuffer(raw_lengths, dtype="<u8")
    if len(lengths) != len(offsets):
        lengths = np.full(len(offsets), np.iinfo(np.uint64).max, dtype=np.uint64)
    table = np.zeros(len(offsets), dtype=FRAME_DTYPE)
    table["offset"], table["length"] = offsets, lengths
    return table


def _check_consistency(
    mm: FileView, header: InstanceHeader, syntax: TransferSyntax, frames: FrameTable
) -> None:
    """Add transfer syntax / photometric mismatches to the validation notes."""
    photometric = header.pixel_format.photometric
    allowed = _PHOTOMETRIC.get(syntax.media_type)
    if syntax.media_type in ("image/jp2", "image/jphc"):
        allowed = _J2K_LOSSY_PHOTOMETRIC if syntax.lossy else _J2K_LOSSLESS_PHOTOMETRIC
    if allowed is not None and photometric not in allowed:
        frames.notes.append(f"photometric {photometric} is not valid with {syntax.name}")
    signatures = _SIGNATURES.get(syntax.media_type)
    if signatures and len(frames):
        start = int(frames.rows["offset"][0])
        head = bytes(mm[start : start + 8])
        if not any(head.startswith(sig) for sig in signatures):
            frames.notes.append(f"first frame does not start like a {syntax.name} codestream")
        elif head.startswith(b"\x00\x00\x00\x0cjP"):
            frames.notes.append("frames are JP2 files, not bare JPEG 2000 codestreams")
