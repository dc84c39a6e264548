"""Pixels of any rectangle of a slide, composed from decoded stored tiles (sync, thread-safe).

Coordinates: ``l_`` level pixels, ``l0_`` level-0 pixels, ``t_`` tiles.

``tileserver.codec`` (Pillow, the decoders) is imported by the functions that decode or
resize: a server that answers only stored tiles never loads it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tileserver.errors import (
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    TileAbsentError,
)
from tileserver.geometry import Region, Size
from tileserver.slide import Level, Slide

Pixels = npt.NDArray[np.uint8]
BACKGROUND = 255


@dataclass(frozen=True, slots=True)
class Plane:
    """Which focal plane and optical path to read."""

    focal_plane: int = 0
    optical_path: int = 0


DEFAULT_PLANE = Plane()


class DecodedTiles:
    """A small LRU of decoded tiles, bounded by bytes: neighbouring requests share tiles."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], Pixels] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> Pixels | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[object, ...], value: Pixels) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and self._items:
                self._bytes -= self._items.popitem(last=False)[1].nbytes


def as_rgb(pixels: Pixels) -> Pixels:
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]


def tile_pixels(
    slide: Slide,
    level: Level,
    t_col: int,
    t_row: int,
    plane: Plane,
    tiles: DecodedTiles | None = None,
) -> Pixels:
    """RGB pixels of a tile's valid area; absent sparse tiles are background."""
    key = (slide.version, slide.id, level.index, t_col, t_row, plane)
    cached = tiles.get(key) if tiles else None
    if cached is not None:
        return cached
    valid = level.tile_region(t_col, t_row)
    out = np.full((valid.height, valid.width, 3), background_of(slide), dtype=np.uint8)
    try:
        encoded = slide.read_tile_bytes(
            level.index, t_col, t_row, plane.focal_plane, plane.optical_path
        )
    except TileAbsentError:
        encoded = None
    if encoded is not None:
        from tileserver import codec

        decoded = as_rgb(codec.decode(encoded))
        # Frames are padded to full size, or (some converters) encoded smaller at the edges.
        h, w = min(valid.height, decoded.shape[0]), min(valid.width, decoded.shape[1])
        out[:h, :w] = decoded[:h, :w]
    out.setflags(write=False)
    if tiles:
        tiles.put(key, out)
    return out


def region_pixels(
    slide: Slide,
    level: Level,
    l_region: Region,
    plane: Plane = DEFAULT_PLANE,
    tiles: DecodedTiles | None = None,
) -> Pixels:
    """Pixels of ``l_region`` at ``level``; parts outside the image are background."""
    if l_region.width <= 0 or l_region.height <= 0:
        raise InvalidRequestError("region must have a positive width and height")
    out = np.full((l_region.height, l_region.width, 3), background_of(slide), dtype=np.uint8)
    inside = l_region.intersect(Region(0, 0, level.size.width, level.size.height))
    if inside is None:
        return out
    tw, th = level.tile_size.width, level.tile_size.height
    for t_row in range(inside.y // th, (inside.bottom - 1) // th + 1):
        for t_col in range(inside.x // tw, (inside.right - 1) // tw + 1):
            tile = tile_pixels(slide, level, t_col, t_row, plane, tiles)
            part = inside.intersect(level.tile_region(t_col, t_row))
            if part is None:
                continue
            src_x, src_y = part.x - t_col * tw, part.y - t_row * th
            dst_x, dst_y = part.x - l_region.x, part.y - l_region.y
            out[dst_y : dst_y + part.height, dst_x : dst_x + part.width] = tile[
                src_y : src_y + part.height, src_x : src_x + part.width
            ]
    return out


def best_level(slide: Slide, downsample: float) -> Level:
    """The smallest level whose downsample does not exceed ``downsample`` (finest enough)."""
    chosen = slide.levels[0]
    for level in slide.levels:
        # 1% slack: floor-halved pyramids (1001 -> 500 px) still count as a 2x level.
        if max(level.downsample) <= downsample * 1.01:
            chosen = level
    return chosen


def render(
    slide: Slide,
    l0_region: Region,
    out_size: Size,
    plane: Plane = DEFAULT_PLANE,
    tiles: DecodedTiles | None = None,
    max_read_pixels: int | None = None,
) -> Pixels:
    """``l0_region`` of the slide scaled to ``out_size`` from the best level."""
    if out_size.width <= 0 or out_size.height <= 0:
        raise InvalidRequestError("output size must be positive")
    downsample = min(l0_region.width / out_size.width, l0_region.height / out_size.height)
    level = best_level(slide, downsample)
    dx, dy = level.downsample
    l_x, l_y = int(l0_region.x // dx), int(l0_region.y // dy)
    l_region = Region(
        l_x,
        l_y,
        max(1, math.ceil(l0_region.right / dx) - l_x),
        max(1, math.ceil(l0_region.bottom / dy) - l_y),
    )
    if max_read_pixels is not None and l_region.size.area > max_read_pixels:
        raise LimitExceededError(
            f"request would read {l_region.size.area} pixels (limit {max_read_pixels})"
        )
    pixels = region_pixels(slide, level, l_region, plane, tiles)
    if (l_region.width, l_region.height) == (out_size.width, out_size.height):
        return pixels
    from tileserver import codec

    return codec.resize(pixels, out_size.width, out_size.height)


def thumbnail_size(size: Size, max_side: int) -> Size:
    scale = min(1.0, max_side / max(size.width, size.height))
    return Size(max(1, round(size.width * scale)), max(1, round(size.height * scale)))


def associated_pixels(slide: Slide, name: str) -> Pixels:
    """The whole associated image (label, overview, thumbnail), composed from its tiles."""
    image = slide.associated.get(name)
    if image is None:
        raise NotFoundError(f"slide has no {name} image")
    from tileserver import codec

    out = np.full((image.size.height, image.size.width, 3), BACKGROUND, dtype=np.uint8)
    tw, th = image.tile_size.width, image.tile_size.height
    for t_row in range(image.grid.height):
        for t_col in range(image.grid.width):
            try:
                decoded = as_rgb(codec.decode(slide.read_associated_bytes(name, t_col, t_row)))
            except TileAbsentError:
                continue
            part = out[t_row * th : (t_row + 1) * th, t_col * tw : (t_col + 1) * tw]
            h, w = min(part.shape[0], decoded.shape[0]), min(part.shape[1], decoded.shape[1])
            part[:h, :w] = decoded[:h, :w]
    return out


def background_of(slide: Slide) -> tuple[int, int, int]:
    """The slide's glass colour, which absent tiles and areas outside the image are painted
    with: the median colour along the image border of its smallest level (first plane and
    path), computed once per opened slide; white when that level stores nothing there."""
    found = slide.background
    if found is None:
        found = slide.background = _border_colour(slide)
    return found


def _border_colour(slide: Slide) -> tuple[int, int, int]:
    from tileserver import codec

    if not slide.levels:
        return (BACKGROUND, BACKGROUND, BACKGROUND)
    level = slide.levels[-1]
    samples = []
    for t_col, t_row in _border_tiles(level.grid):
        try:
            tile = as_rgb(codec.decode(slide.read_tile_bytes(level.index, t_col, t_row)))
        except TileAbsentError:
            continue
        valid = level.tile_region(t_col, t_row)
        tile = tile[: valid.height, : valid.width]
        samples.extend(_border_pixels(tile, _edges(t_col, t_row, level.grid)))
    if not samples:
        return (BACKGROUND, BACKGROUND, BACKGROUND)
    r, g, b = (int(v) for v in np.median(np.concatenate(samples), axis=0))
    return (r, g, b)


#: Border tiles decoded at most to find the glass colour (a pyramid whose smallest level is
#: large, a single-level slide say, must not decode its whole rim on first use).
BORDER_SAMPLES = 32


def _border_tiles(grid: Size) -> list[tuple[int, int]]:
    """The tiles along the image border, clockwise, at most ``BORDER_SAMPLES`` of them
    evenly spread (the four corners always among them)."""
    cols, rows = grid.width, grid.height
    ring = [(c, 0) for c in range(cols)]
    ring += [(cols - 1, r) for r in range(1, rows)]
    ring += [(c, rows - 1) for c in range(cols - 2, -1, -1)] if rows > 1 else []
    ring += [(0, r) for r in range(rows - 2, 0, -1)] if cols > 1 else []
    ring = list(dict.fromkeys(ring))
    if len(ring) <= BORDER_SAMPLES:
        return ring
    corners = {(0, 0), (cols - 1, 0), (0, rows - 1), (cols - 1, rows - 1)}
    step = len(ring) / BORDER_SAMPLES
    picked = {ring[int(i * step)] for i in range(BORDER_SAMPLES)} | corners
    return [t for t in ring if t in picked]


def _edges(t_col: int, t_row: int, grid: Size) -> set[str]:
    edges = set()
    if t_row == 0:
        edges.add("top")
    if t_row == grid.height - 1:
        edges.add("bottom")
    if t_col == 0:
        edges.add("left")
    if t_col == grid.width - 1:
        edges.add("right")
    return edges


def _border_pixels(tile: Pixels, edges: set[str]) -> list[Pixels]:
    """The tile's pixels along the image border (2 px deep)."""
    parts = {
        "top": tile[:2].reshape(-1, 3),
        "bottom": tile[-2:].reshape(-1, 3),
        "left": tile[:, :2].reshape(-1, 3),
        "right": tile[:, -2:].reshape(-1, 3),
    }
    return [parts[edge] for edge in sorted(edges)]
