"""Where each frame sits: (tile column, tile row, optical path, focal plane z) per frame.

TILED_FULL frames are in a fixed order, so positions follow from arithmetic:
frame = ((optical_path * n_focal_planes + focal_plane) * tiles_down + row) * tiles_across + col.
TILED_SPARSE frames (and instances with no Dimension Organization Type) carry their position
in the Per-Frame Functional Groups, or in the Shared group for single-frame instances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tileserver.dicom.header import InstanceHeader
from tileserver.errors import CorruptSlideError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

POSITION_DTYPE = np.dtype([("col", "<i4"), ("row", "<i4"), ("path", "<u2"), ("z", "<f4")])
PositionArray = npt.NDArray[np.void]


def full_positions(
    header: InstanceHeader, n_frames: int, frame_offset: int = 0, z_base: float = 0.0
) -> PositionArray:
    """Positions of frames ``frame_offset .. frame_offset + n_frames`` of a TILED_FULL image."""
    grid = header.total_size.ceil_div(header.tile_size)
    index = np.arange(frame_offset, frame_offset + n_frames, dtype=np.int64)
    col = index % grid.width
    row = (index // grid.width) % grid.height
    plane = (index // (grid.width * grid.height)) % header.focal_planes
    path = index // (grid.width * grid.height * header.focal_planes)
    if n_frames and int(path[-1]) >= len(header.optical_paths):
        raise CorruptSlideError(
            f"{frame_offset + n_frames} frames exceed a {grid.width}x{grid.height} grid of "
            f"{header.focal_planes} focal planes and {len(header.optical_paths)} optical paths"
        )
    positions = np.zeros(n_frames, dtype=POSITION_DTYPE)
    positions["col"], positions["row"], positions["path"] = col, row, path
    positions["z"] = z_base + plane * header.focal_plane_spacing
    return positions


def sparse_positions(ds: Dataset, header: InstanceHeader, notes: list[str]) -> PositionArray:
    """Positions read from Plane Position (Slide) in the per-frame or shared groups."""
    n_frames = header.number_of_frames
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    if per_frame is not None and len(per_frame) != n_frames:
        raise CorruptSlideError(
            f"{len(per_frame)} per-frame functional groups for {n_frames} frames"
        )
    positions = np.zeros(n_frames, dtype=POSITION_DTYPE)
    tile_w, tile_h = header.tile_size.width, header.tile_size.height
    unaligned = 0
    for i in range(n_frames):
        group = per_frame[i] if per_frame is not None else None
        plane = _macro(group, shared, "PlanePositionSlideSequence")
        if plane is None:
            raise CorruptSlideError(f"frame {i + 1} has no Plane Position (Slide)")
        x = int(plane.ColumnPositionInTotalImagePixelMatrix) - 1
        y = int(plane.RowPositionInTotalImagePixelMatrix) - 1
        unaligned += bool(x % tile_w or y % tile_h)
        path_item = _macro(group, shared, "OpticalPathIdentificationSequence")
        path_id = str(path_item.OpticalPathIdentifier) if path_item is not None else None
        positions[i] = (
            x // tile_w,
            y // tile_h,
            _path_index(header, path_id),
            float(plane.get("ZOffsetInSlideCoordinateSystem", 0.0) or 0.0) * 1000.0,
        )
    if unaligned:
        notes.append(f"{unaligned} sparse frames not aligned to the tile grid; snapped to it")
    return positions


def shared_z_offset(ds: Dataset) -> float:
    """Z of the first focal plane of a TILED_FULL image, in micrometres (0 when unknown)."""
    plane = _macro(
        None, _first(ds.get("SharedFunctionalGroupsSequence")), "PlanePositionSlideSequence"
    )
    if plane is None:
        return 0.0
    return float(plane.get("ZOffsetInSlideCoordinateSystem", 0.0) or 0.0) * 1000.0


def _path_index(header: InstanceHeader, path_id: str | None) -> int:
    if path_id is None or path_id not in header.optical_paths:
        return 0
    return header.optical_paths.index(path_id)


def _first(seq: Any) -> Any:
    return seq[0] if seq else None


def _macro(group: Any, shared: Any, keyword: str) -> Any:
    for source in (group, shared):
        if source is not None and keyword in source and len(source.get(keyword)):
            return source.get(keyword)[0]
    return None
