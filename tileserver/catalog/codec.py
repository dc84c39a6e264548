"""Serialise an ``IndexedInstance`` to catalog columns and back (JSON + .npy blobs, no pickle)."""

from __future__ import annotations

import io
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from tileserver.dicom.frame_table import FrameTable
from tileserver.dicom.header import Concatenation, InstanceHeader
from tileserver.dicom.instance import IndexedInstance
from tileserver.formats import PixelFormat
from tileserver.geometry import Size


def dump_array(array: npt.NDArray[Any] | None) -> bytes | None:
    if array is None:
        return None
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_array(blob: bytes | None) -> npt.NDArray[Any] | None:
    if blob is None:
        return None
    return np.load(io.BytesIO(blob), allow_pickle=False)  # type: ignore[no-any-return]


def dump_header(header: InstanceHeader) -> bytes:
    fields = asdict(header)
    fields.pop("icc_profile")
    return orjson.dumps(fields)


def load_header(blob: bytes, icc_profile: bytes | None) -> InstanceHeader:
    fields = orjson.loads(blob)
    concat = fields.pop("concatenation")
    mpp = fields.pop("mpp")
    for key in ("image_type", "optical_paths", "warnings"):
        fields[key] = tuple(fields[key])
    return InstanceHeader(
        **{k: v for k, v in fields.items() if k not in ("pixel_format", "total_size")},
        pixel_format=PixelFormat(**fields["pixel_format"]),
        total_size=Size(**fields["total_size"]),
        mpp=tuple(mpp) if mpp else None,
        icc_profile=icc_profile,
        concatenation=Concatenation(**concat) if concat else None,
    )


def instance_row(inst: IndexedInstance) -> dict[str, Any]:
    """Column values for the ``instances`` table."""
    h = inst.header
    return {
        "path": inst.path,
        "sop_instance_uid": h.sop_instance_uid,
        "series_uid": h.series_uid,
        "study_uid": h.study_uid,
        "header": dump_header(h),
        "icc_profile": h.icc_profile,
        "frames": dump_array(inst.frames.rows),
        "frame_table_kind": inst.frames.kind,
        "positions": dump_array(inst.positions),
        "z_base": inst.z_base,
        "notes": orjson.dumps(inst.frames.notes),
        "dataset_json": inst.dataset_json,
    }


def instance_from_row(row: Any, size: int) -> IndexedInstance:
    header = load_header(row["header"], row["icc_profile"])
    frames = load_array(row["frames"])
    assert frames is not None
    table = FrameTable(frames, row["frame_table_kind"], list(orjson.loads(row["notes"])))
    return IndexedInstance(
        row["path"],
        size,
        header,
        table,
        load_array(row["positions"]),
        float(row["z_base"]),
    )
