"""Locate instances in the catalog and read what WADO-RS serves from them.

Frames come from the slide's reader (``instance_frames``: one source read each,
fragments joined);
a frame the client wants in another form is decoded and re-encoded here. Everything is
sync and thread-safe: the HTTP front iterates these in worker threads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from tileserver import codec
from tileserver.catalog import Catalog
from tileserver.catalog.codec import load_header
from tileserver.dicom.header import InstanceHeader
from tileserver.dicom.pixeldata import FileView, read_pixel_data_element
from tileserver.dicomweb.accept import Offer
from tileserver.errors import InvalidRequestError, NotFoundError
from tileserver.formats import TRANSFER_SYNTAXES, EncodedTile
from tileserver.grants import may_see
from tileserver.slide import Slide

FILE_CHUNK = 1 << 20


@dataclass(frozen=True)
class InstanceRef:
    """One stored instance: where it is and its parsed header."""

    path: str
    study_uid: str
    series_uid: str
    header: InstanceHeader

    @property
    def sop_instance_uid(self) -> str:
        return self.header.sop_instance_uid


_COLUMNS = "path, study_uid, series_uid, header, icc_profile"


def _refs(catalog: Catalog, where: str, params: tuple[str, ...]) -> list[InstanceRef]:
    rows = catalog.query(
        f"SELECT {_COLUMNS} FROM served_instances WHERE {where} ORDER BY series_uid, path", params
    )
    seen: dict[str, InstanceRef] = {}
    for r in rows:
        if not may_see(r["study_uid"]):
            continue  # hidden from this request's grant: as if it did not exist
        header = load_header(r["header"], r["icc_profile"])
        seen.setdefault(
            header.sop_instance_uid, InstanceRef(r["path"], r[1], r[2], header)
        )  # duplicate files of one instance: the first path, as the slide assembly does
    return list(seen.values())


def find_instances(catalog: Catalog, study: str, series: str | None = None) -> list[InstanceRef]:
    """Instances of a study (or one series of it); ``NotFoundError`` when there are none."""
    if series is None:
        refs = _refs(catalog, "study_uid = ?", (study,))
    else:
        refs = _refs(catalog, "series_uid = ? AND study_uid = ?", (series, study))
    if not refs:
        what = f"series {series} in study {study}" if series else f"study {study}"
        raise NotFoundError(f"no {what}")
    return refs


def find_instance(catalog: Catalog, study: str, series: str, sop: str) -> InstanceRef:
    refs = _refs(
        catalog, "sop_instance_uid = ? AND series_uid = ? AND study_uid = ?", (sop, series, study)
    )
    if not refs:
        raise NotFoundError(f"no instance {sop} in series {series} of study {study}")
    return refs[0]


# ASCII digits only (str.isdigit also takes "²"), and few enough for any real instance.
_FRAME_NUMBER = re.compile(r"[0-9]{1,9}")


def parse_frame_list(text: str) -> list[int]:
    """``"1,3,5"`` -> [1, 3, 5]; 400 for anything but positive integers below 10**9."""
    numbers = []
    for item in text.split(","):
        item = item.strip()
        if _FRAME_NUMBER.fullmatch(item) is None or int(item) < 1:
            raise InvalidRequestError(f"frame numbers are positive integers, not {item[:20]!r}")
        numbers.append(int(item))
    return numbers


class FrameSource:
    """Frames of one instance within its slide, located once by the slide's reader."""

    def __init__(self, slide: Slide, ref: InstanceRef) -> None:
        self.slide, self.ref = slide, ref
        self.frames = slide.reader.instance_frames(ref.sop_instance_uid)
        self.count = self.frames.count

    @property
    def is_associated(self) -> str | None:
        """The associated image name (label, overview, thumbnail) this instance is, if any."""
        return self.frames.associated

    @property
    def level_index(self) -> int | None:
        return self.frames.level_index

    def check(self, numbers: Sequence[int]) -> None:
        bad = [n for n in numbers if n > self.count]
        if bad:
            raise NotFoundError(f"frame {bad[0]} outside 1..{self.count}")

    def read(self, number: int) -> EncodedTile:
        self.check([number])
        return self.frames.read(number)


def deliver(tile: EncodedTile, offer: Offer, quality: int) -> bytes:
    """A frame's bytes as ``offer`` says: stored, or decoded and re-encoded."""
    if offer.transcode is None:
        return tile.data
    pixels = codec.decode(tile)
    if offer.transcode == "jpeg":
        return codec.encode(pixels, "jpeg", quality=quality)
    fmt = tile.pixel_format
    shape = (fmt.rows, fmt.columns, 3) if fmt.samples_per_pixel == 3 else (fmt.rows, fmt.columns)
    out = np.zeros(shape, dtype=np.uint8)
    if pixels.ndim == 3 and len(shape) == 2:
        pixels = pixels[:, :, 0]
    h, w = min(shape[0], pixels.shape[0]), min(shape[1], pixels.shape[1])
    out[:h, :w] = pixels[:h, :w]
    return out.tobytes()


def is_eight_bit(header: InstanceHeader) -> bool:
    return header.pixel_format.bits_allocated == 8


# -- files and bulk data ------------------------------------------------------------------


def iter_file(path: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    """The bytes of ``path`` from ``start`` in chunks of at most ``FILE_CHUNK``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size if length is None else start + length
        pos = start
        while pos < end:
            data = os.pread(fd, min(FILE_CHUNK, end - pos), pos)
            if not data:
                break
            yield data
            pos += len(data)
    finally:
        os.close(fd)


_TAG = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass(frozen=True)
class BulkValue:
    """A bulk value: either bytes (header elements) or a span of the file (Pixel Data)."""

    data: bytes | None
    path: str
    offset: int
    length: int


def bulk_value(ref: InstanceRef, tag: str) -> BulkValue:
    """The value of element ``tag`` (the first at any depth), as its BulkDataURI promised."""
    if _TAG.fullmatch(tag) is None:  # int(tag, 16) also takes "-1", "0x10", "1_0"
        raise NotFoundError(f"no bulk data {tag[:20]!r}")
    number = int(tag, 16)
    if number == 0x7FE00010:
        return _pixel_data_span(ref)
    ds = pydicom.dcmread(ref.path, stop_before_pixels=True)
    value = _find(ds, number)
    if value is None:
        raise NotFoundError(f"instance has no element {tag}")
    return BulkValue(value, ref.path, 0, len(value))


def _find(ds: Dataset, tag: int) -> bytes | None:
    if tag in ds:
        value = ds[tag].value
        return bytes(value) if isinstance(value, bytes | bytearray) else None
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found = _find(item, tag)
                if found is not None:
                    return found
    return None


def _pixel_data_span(ref: InstanceRef) -> BulkValue:
    syntax = TRANSFER_SYNTAXES[ref.header.transfer_syntax]
    with open(ref.path, "rb") as fp:
        pydicom.dcmread(fp, stop_before_pixels=True)
        tag_offset = fp.tell()
        size = os.fstat(fp.fileno()).st_size
        view = FileView.of_fd(fp.fileno(), size)
        element = read_pixel_data_element(view, tag_offset, syntax.implicit_vr)
    length = element.length if element.length is not None else size - element.value_offset
    return BulkValue(None, ref.path, element.value_offset, length)


def file_size(path: str) -> int:
    return Path(path).stat().st_size
