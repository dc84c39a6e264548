"""Assemble the instances of one series into pyramid levels and associated images.

Each level becomes two arrays, the two maps a tile read needs:

* ``tile_map[optical_path, focal_plane, row, col]`` -> level frame number (-1 = absent);
* ``frames[level frame number]`` -> (file, offset, length, fragments).

Instances of a level may be concatenation parts, or separate files per optical path or
focal plane; all of them land in the same two arrays.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tileserver.dicom.header import InstanceHeader
from tileserver.dicom.instance import IndexedInstance
from tileserver.dicom.tiling import POSITION_DTYPE, PositionArray, full_positions
from tileserver.geometry import Size

LEVEL_FRAME_DTYPE = np.dtype(
    [("file", "<u2"), ("offset", "<u8"), ("length", "<u8"), ("fragments", "<u4")]
)
ASSOCIATED_ROLES = {"LABEL": "label", "OVERVIEW": "overview", "THUMBNAIL": "thumbnail"}


@dataclass
class FrameGrid:
    """One tiled image (a pyramid level or an associated image) and where its frames are."""

    size: Size
    tile_size: Size
    files: list[str]
    headers: list[InstanceHeader]  # one per file: transfer syntax and pixel format
    tile_map: npt.NDArray[np.int32]  # [path, plane, row, col]
    frames: npt.NDArray[np.void]
    optical_paths: tuple[str, ...]
    focal_planes: tuple[float, ...]

    @property
    def grid(self) -> Size:
        return self.size.ceil_div(self.tile_size)

    @property
    def absent_tiles(self) -> int:
        return int(np.count_nonzero(self.tile_map < 0))


@dataclass
class SeriesLayout:
    series_uid: str
    levels: list[FrameGrid]
    associated: dict[str, FrameGrid]
    instances: list[IndexedInstance]
    warnings: list[str] = field(default_factory=list)


def assemble(instances: Iterable[IndexedInstance]) -> SeriesLayout:
    """Build the layout of one series; duplicates and oddities become warnings."""
    unique, warnings = _deduplicate(instances)
    if not unique:
        raise ValueError("no instances to assemble")
    roles = _roles(unique, warnings)
    volumes = [i for i in unique if roles[i.header.sop_instance_uid] == "VOLUME"]
    by_size: dict[Size, list[IndexedInstance]] = defaultdict(list)
    for inst in volumes:
        by_size[inst.header.total_size].append(inst)
    levels = [_grid(by_size[s], warnings) for s in sorted(by_size, key=lambda s: -s.area)]
    associated: dict[str, FrameGrid] = {}
    for inst in unique:
        name = ASSOCIATED_ROLES.get(roles[inst.header.sop_instance_uid])
        if name is None:
            continue
        if name in associated:
            warnings.append(f"second {name} image {inst.path} ignored")
            continue
        associated[name] = _grid([inst], warnings)
    return SeriesLayout(unique[0].header.series_uid, levels, associated, unique, warnings)


def _deduplicate(instances: Iterable[IndexedInstance]) -> tuple[list[IndexedInstance], list[str]]:
    seen: dict[str, IndexedInstance] = {}
    warnings: list[str] = []
    for inst in sorted(instances, key=lambda i: i.path):
        uid = inst.header.sop_instance_uid
        if uid in seen:
            warnings.append(
                f"duplicate SOP Instance UID {uid}: {inst.path} ignored, {seen[uid].path} kept"
            )
            continue
        seen[uid] = inst
    return list(seen.values()), warnings


def _roles(instances: Sequence[IndexedInstance], warnings: list[str]) -> dict[str, str]:
    """Role per SOP Instance UID; a missing Image Type falls back to comparing sizes."""
    largest = max(instances, key=lambda i: i.header.total_size.area).header.total_size
    tiled_sizes = {i.header.total_size for i in instances if i.header.number_of_frames > 1}
    roles = {}
    for inst in instances:
        role = inst.header.role
        if role is None:
            role = _role_from_size(inst.header.total_size, largest)
            single = inst.header.number_of_frames == 1
            if role == "VOLUME" and single and inst.header.total_size in tiled_sizes:
                role = "THUMBNAIL"  # a one-frame copy of a tiled level's size is no level
            warnings.append(f"{inst.path}: no Image Type, taken as {role} from its size")
        roles[inst.header.sop_instance_uid] = role
    return roles


def _role_from_size(size: Size, largest: Size) -> str:
    aspect, largest_aspect = size.width / size.height, largest.width / largest.height
    if abs(aspect - largest_aspect) <= 0.05 * largest_aspect:
        return "VOLUME"
    return "LABEL" if aspect < 1.5 else "OVERVIEW"


def _grid(instances: list[IndexedInstance], warnings: list[str]) -> FrameGrid:
    tile_size = instances[0].header.tile_size
    kept = [i for i in instances if i.header.tile_size == tile_size]
    for inst in instances:
        if inst not in kept:
            warnings.append(
                f"{inst.path}: tile size {inst.header.tile_size} differs from "
                f"{tile_size} in the same level; ignored"
            )
    parts = [(inst, _positions(inst)) for inst in kept]
    paths = tuple(dict.fromkeys(p for inst, _ in parts for p in inst.header.optical_paths))
    planes = tuple(sorted({float(z) for _, pos in parts for z in pos["z"]})) or (0.0,)
    size = kept[0].header.total_size
    grid = size.ceil_div(tile_size)
    tile_map = np.full((len(paths), len(planes), grid.height, grid.width), -1, dtype=np.int32)
    frames = np.zeros(sum(len(i.frames) for i in kept), dtype=LEVEL_FRAME_DTYPE)
    start = 0
    for file_index, (inst, pos) in enumerate(parts):
        n = len(inst.frames)
        for key in ("offset", "length", "fragments"):
            frames[key][start : start + n] = inst.frames.rows[key]
        frames["file"][start : start + n] = file_index
        _place(tile_map, pos, start, inst.header, paths, planes, grid, warnings)
        start += n
    return FrameGrid(
        size,
        tile_size,
        [i.path for i in kept],
        [i.header for i in kept],
        tile_map,
        frames,
        paths,
        planes,
    )


def _positions(inst: IndexedInstance) -> PositionArray:
    if inst.positions is not None:
        return inst.positions
    concat = inst.header.concatenation
    offset = concat.frame_offset if concat else 0
    return full_positions(inst.header, len(inst.frames), offset, inst.z_base)


def _place(
    tile_map: npt.NDArray[np.int32],
    pos: PositionArray,
    start: int,
    header: InstanceHeader,
    paths: tuple[str, ...],
    planes: tuple[float, ...],
    grid: Size,
    warnings: list[str],
) -> None:
    path_lookup = np.asarray([paths.index(p) for p in header.optical_paths], dtype=np.intp)
    path_idx = path_lookup[pos["path"]]
    plane_idx = np.searchsorted(np.asarray(planes, dtype=np.float32), pos["z"])
    cols, rows = pos["col"], pos["row"]
    inside = (cols >= 0) & (cols < grid.width) & (rows >= 0) & (rows < grid.height)
    if not np.all(inside):
        warnings.append(f"{int(np.count_nonzero(~inside))} frames outside the image ignored")
    frame_numbers = np.arange(start, start + len(pos), dtype=np.int32)[inside]
    target = (path_idx[inside], plane_idx[inside], rows[inside], cols[inside])
    taken = tile_map[target] >= 0
    if np.any(taken):
        warnings.append(f"{int(np.count_nonzero(taken))} frames repeat a tile position; first kept")
    free = ~taken
    tile_map[tuple(t[free] for t in target)] = frame_numbers[free]


__all__ = ["LEVEL_FRAME_DTYPE", "POSITION_DTYPE", "FrameGrid", "SeriesLayout", "assemble"]
