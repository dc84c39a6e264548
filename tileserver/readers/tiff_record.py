"""A TIFF slide's catalog record (its layout as an ``.npz`` of plain arrays, no pickle) and
its ``tileserver validate`` report."""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from tileserver.dicom.series import LEVEL_FRAME_DTYPE
from tileserver.errors import CorruptSlideError
from tileserver.geometry import Size
from tileserver.readers.tiff_layout import TiffImage, TiffLayout
from tileserver.readers.tiffcodec import TileCoding

#: Changes with what ``dump`` writes (a catalog record of another format is re-indexed).
RECORD_FORMAT = 1


def dump(layout: TiffLayout) -> bytes:
    """The catalog record: a description and each image's frame table and JPEG tables
    (an ``.npz`` of plain arrays, no pickle)."""
    images = [("", image) for image in layout.levels] + list(layout.associated.items())
    meta = {
        "format": RECORD_FORMAT,
        "kind": layout.kind,
        "images": [[role, *_image_fields(image)] for role, image in images],
        "mpp": layout.mpp,
        "attributes": layout.attributes,
        "warnings": layout.warnings,
    }
    arrays: dict[str, npt.NDArray[Any]] = {"meta": _bytes_array(orjson.dumps(meta))}
    for number, (_, image) in enumerate(images):
        arrays[f"frames{number}"] = image.frames
        arrays[f"tables{number}"] = _bytes_array(image.coding.jpeg_tables)
    if layout.icc_profile:
        arrays["icc"] = _bytes_array(layout.icc_profile)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
    return buffer.getvalue()


def _bytes_array(data: bytes) -> npt.NDArray[np.uint8]:
    return np.frombuffer(data, dtype=np.uint8)


def _image_fields(image: TiffImage) -> list[int]:
    c = image.coding
    return [image.size.width, image.size.height, image.tile_size.width, image.tile_size.height,
            c.compression, c.photometric, c.samples, c.predictor]  # fmt: skip


def load(record: bytes) -> TiffLayout:
    """``dump``'s inverse; ``CorruptSlideError`` for a record this release cannot read."""
    try:
        with np.load(io.BytesIO(record), allow_pickle=False) as arrays:
            meta = orjson.loads(arrays["meta"].tobytes())
            if meta["format"] != RECORD_FORMAT:
                raise ValueError(f"record format {meta['format']}")
            layout = TiffLayout(meta["kind"], [], {}, None, dict(meta["attributes"]))
            for number, fields in enumerate(meta["images"]):
                role, image = _load_image(fields, arrays, number)
                if role:
                    layout.associated[role] = image
                else:
                    layout.levels.append(image)
            layout.icc_profile = arrays["icc"].tobytes() if "icc" in arrays else None
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise CorruptSlideError(f"unreadable TIFF catalog record ({exc}): re-index it") from exc
    layout.mpp = (float(meta["mpp"][0]), float(meta["mpp"][1])) if meta["mpp"] else None
    layout.warnings = list(meta["warnings"])
    return layout


def _load_image(fields: list[Any], arrays: Any, number: int) -> tuple[str, TiffImage]:
    role, width, height, tile_width, tile_height, compression, photometric, samples, predictor = (
        fields
    )
    tables = arrays[f"tables{number}"].tobytes()
    coding = TileCoding(compression, photometric, samples, predictor, tables)
    frames = arrays[f"frames{number}"]
    if frames.dtype != LEVEL_FRAME_DTYPE:
        raise ValueError(f"frame table of dtype {frames.dtype}")
    image = TiffImage(Size(width, height), Size(tile_width, tile_height), coding, frames)
    return str(role), image


def describe(layout: TiffLayout, slide_id: str, path: str) -> dict[str, Any]:
    """A ``tileserver validate`` report of one TIFF slide, in the shape
    ``report.validate`` gives a DICOM series (one file, one plane, no concatenations)."""
    return {
        "id": slide_id,
        "name": PurePosixPath(path).stem,
        "path": path,
        "format": layout.kind,
        "mpp": layout.mpp,
        "files": [_file_report(layout, path)],
        "levels": [_grid(image) for image in layout.levels],
        "associated": {name: _grid(image) for name, image in layout.associated.items()},
        "concatenations": [],
        "icc_profile": layout.icc_profile is not None,
        "warnings": list(layout.warnings),
    }


def _grid(image: TiffImage) -> dict[str, Any]:
    return {
        "width": image.size.width,
        "height": image.size.height,
        "tile_width": image.tile_size.width,
        "tile_height": image.tile_size.height,
        "frames": image.stored,
        "absent_tiles": image.grid.area - image.stored,
        "compression": image.coding.compression,
        "optical_paths": [],
        "focal_planes": [0.0],
        "files": 1,
    }


def _file_report(layout: TiffLayout, path: str) -> dict[str, Any]:
    base = layout.levels[0].coding
    return {
        "path": path,
        "sop_instance_uid": None,
        "role": layout.kind,
        "transfer_syntax": f"TIFF compression {base.compression}",
        "photometric": f"TIFF photometric {base.photometric}",
        "dimension_organization": None,
        "frames": sum(image.stored for image in layout.levels),
        "offset_table": "TileOffsets/TileByteCounts",
        "fragments_per_frame": {"min": 1, "max": 1},
        "icc_profile": layout.icc_profile is not None,
        "warnings": [],
    }
