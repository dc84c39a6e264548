"""Deep Zoom (DZI) pyramid arithmetic, computed exactly as OpenSeadragon and OpenSlide do.

Coordinate frames are prefixed: ``z_`` DZI-level pixels, ``l0_`` level-0 pixels, ``t_`` tiles.
DZI level 0 is 1x1 pixel; the last level is the full image; each level is the ceil-half of
the next. Pure arithmetic: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tileserver.errors import InvalidRequestError, NotFoundError
from tileserver.geometry import Region, Size
from tileserver.slide import Level

__all__ = [
    "DZI_NAMESPACE",
    "DeepZoom",
    "DziPlan",
    "frame_aligned",
    "native_level_for",
    "parse_tile_name",
]

DZI_NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"

_TILE_NAME = re.compile(r"(\d{1,9})_(\d{1,9})\.([a-z0-9]{1,8})")
_FORMAT = re.compile(r"[a-z0-9]{1,8}")


@dataclass(frozen=True, slots=True)
class DeepZoom:
    """The Deep Zoom pyramid of a ``width`` x ``height`` image."""

    width: int
    height: int
    tile_size: int
    overlap: int = 0
    #: DZI level sizes, smallest (1x1) first.
    z_sizes: tuple[Size, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise InvalidRequestError(f"image size {self.width}x{self.height} is empty")
        if self.tile_size < 1:
            raise InvalidRequestError(f"tile size {self.tile_size} must be positive")
        if self.overlap < 0:
            raise InvalidRequestError(f"overlap {self.overlap} must not be negative")
        object.__setattr__(self, "z_sizes", _ceil_halvings(Size(self.width, self.height)))

    @property
    def level_count(self) -> int:
        return len(self.z_sizes)

    @property
    def max_level(self) -> int:
        return len(self.z_sizes) - 1

    def z_size(self, level: int) -> Size:
        """Pixel size of one DZI level."""
        self._check_level(level)
        return self.z_sizes[level]

    def tiles(self, level: int) -> Size:
        """Columns and rows of tiles at one DZI level."""
        return self.z_size(level).ceil_div(Size(self.tile_size, self.tile_size))

    def scale(self, level: int) -> float:
        """Level-0 pixels per DZI-level pixel."""
        self._check_level(level)
        return float(2 ** (self.max_level - level))

    def tile_region(self, level: int, t_col: int, t_row: int) -> Region:
        """The pixels one tile covers in its DZI level, overlap included, cropped at edges."""
        grid = self.tiles(level)
        if not (0 <= t_col < grid.width and 0 <= t_row < grid.height):
            raise NotFoundError(
                f"tile ({t_col}, {t_row}) outside the {grid.width}x{grid.height} grid "
                f"of DZI level {level}"
            )
        z_size = self.z_sizes[level]
        z_x, z_w = self._span(t_col, grid.width, z_size.width)
        z_y, z_h = self._span(t_row, grid.height, z_size.height)
        return Region(z_x, z_y, z_w, z_h)

    def l0_region(self, level: int, t_col: int, t_row: int) -> tuple[float, float, float, float]:
        """``(x, y, w, h)`` of one tile in level-0 pixels, clipped to the image."""
        z = self.tile_region(level, t_col, t_row)
        scale = self.scale(level)
        l0_x, l0_y = z.x * scale, z.y * scale
        l0_w = min(z.width * scale, self.width - l0_x)
        l0_h = min(z.height * scale, self.height - l0_y)
        return (l0_x, l0_y, l0_w, l0_h)

    def xml(self, format: str) -> str:
        """The ``.dzi`` descriptor; ``format`` is the tile file extension, e.g. ``jpeg``."""
        if not _FORMAT.fullmatch(format):
            raise InvalidRequestError(f"bad DZI tile format {format!r}")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="{DZI_NAMESPACE}" TileSize="{self.tile_size}" '
            f'Overlap="{self.overlap}" Format="{format}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )

    def _span(self, t: int, t_count: int, z_limit: int) -> tuple[int, int]:
        # Overlap reaches into the previous tile unless first, into the next unless last.
        before = self.overlap if t > 0 else 0
        after = self.overlap if t < t_count - 1 else 0
        z_start = t * self.tile_size
        z_length = min(self.tile_size, z_limit - z_start)
        return z_start - before, min(z_length + before + after, z_limit - z_start + before)

    def _check_level(self, level: int) -> None:
        if not 0 <= level < len(self.z_sizes):
            raise NotFoundError(
                f"DZI level {level} does not exist (pyramid has {len(self.z_sizes)})"
            )


def _ceil_halvings(size: Size) -> tuple[Size, ...]:
    sizes = [size]
    while sizes[-1].width > 1 or sizes[-1].height > 1:
        last = sizes[-1]
        sizes.append(Size(-(-last.width // 2), -(-last.height // 2)))
    return tuple(reversed(sizes))


def native_level_for(dzi: DeepZoom, dzi_level: int, levels: Sequence[Level]) -> int | None:
    """Index of the slide level whose size is exactly this DZI level's size, if any.

    DZI levels are ceil-halvings of level 0, so ceil-halved slide levels match and
    floor-halved ones (1 px short on an odd axis) deliberately do not: their edge tiles
    would miss a row or column the DZI tile promises.
    """
    z_size = dzi.z_size(dzi_level)
    for level in levels:
        if level.size == z_size:
            return level.index
    return None


def frame_aligned(dzi: DeepZoom, level: Level) -> bool:
    """Whether DZI tiles on this (native) level are exactly the level's stored frames."""
    return dzi.overlap == 0 and level.tile_size == Size(dzi.tile_size, dzi.tile_size)


def parse_tile_name(name: str) -> tuple[int, int, str]:
    """``"3_4.jpeg"`` -> ``(3, 4, "jpeg")``: column, row and format of a DZI tile URL."""
    match = _TILE_NAME.fullmatch(name)
    if match is None:
        raise InvalidRequestError(f"bad DZI tile name {name!r} (want COL_ROW.FORMAT)")
    return int(match[1]), int(match[2]), match[3]


class DziPlan:
    """A slide's Deep Zoom layout, decided once per slide version: which DZI levels are
    stored levels whose frames are the tiles (served as stored), and the level-0 region and
    output size of every other tile (composed). The one place that decides; the DZI route
    and the stored-tile chain both ask it."""

    #: Cache keys of composed tiles remembered per plan (``keys``), ~250 bytes each.
    KEY_LIMIT = 65536

    def __init__(self, levels: Sequence[Level]) -> None:
        base = levels[0]
        self.zoom = DeepZoom(base.size.width, base.size.height, base.tile_size.width, 0)
        self.native: dict[int, int] = {}
        for z_level in range(self.zoom.level_count):
            level = native_level_for(self.zoom, z_level, levels)
            if level is not None and frame_aligned(self.zoom, levels[level]):
                self.native[z_level] = level
        #: (DZI level, col, row, format) -> the cache key a composed tile is stored under.
        self.keys: dict[tuple[int, int, int, str], str] = {}

    def composed(self, z_level: int, col: int, row: int) -> tuple[Region, Size]:
        """Level-0 region and output size of a DZI tile composed from stored levels."""
        x, y, w, h = self.zoom.l0_region(z_level, col, row)
        z_region = self.zoom.tile_region(z_level, col, row)
        return (
            Region(int(x), int(y), max(1, round(w)), max(1, round(h))),
            Size(z_region.width, z_region.height),
        )

    def remember(self, address: tuple[int, int, int, str], key: str) -> None:
        if len(self.keys) >= self.KEY_LIMIT:
            self.keys.clear()
        self.keys[address] = key
