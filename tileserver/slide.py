"""Format-neutral pyramid model over any ``SlideReader``.

Coordinate frames are prefixed: ``l_`` level pixels, ``l0_`` level-0 pixels, ``t_`` tiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tileserver.errors import InvalidRequestError, NotFoundError
from tileserver.formats import EncodedTile
from tileserver.geometry import Region, Size
from tileserver.readers.base import ReaderLevel, SlideReader


@dataclass(frozen=True, slots=True)
class Level:
    """One pyramid level: size, tile grid and scale relative to level 0."""

    index: int
    size: Size
    tile_size: Size
    downsample: tuple[float, float]  # (x, y) level-0 pixels per level pixel
    mpp: tuple[float, float] | None  # (x, y) micrometres per level pixel
    frames: int = 0  # tiles stored (fewer than the grid for a sparse level)
    media_type: str = ""  # how tiles are stored ("" when unknown), known without a read
    grid: Size = field(init=False, repr=False, compare=False)  # tiles per axis

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", self.size.ceil_div(self.tile_size))

    def tile_region(self, t_col: int, t_row: int) -> Region:
        """The valid (unpadded) area of a tile, in level pixels."""
        x, y = t_col * self.tile_size.width, t_row * self.tile_size.height
        return Region(
            x,
            y,
            min(self.tile_size.width, self.size.width - x),
            min(self.tile_size.height, self.size.height - y),
        )


@dataclass(frozen=True, slots=True)
class AssociatedImage:
    name: str
    size: Size
    tile_size: Size
    media_type: str = ""

    @property
    def grid(self) -> Size:
        return self.size.ceil_div(self.tile_size)


@dataclass
class Slide:
    """A pyramid of tiled levels plus associated images, read through one reader."""

    id: str
    name: str
    reader: SlideReader
    attributes: Mapping[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Changes whenever any source file changes: part of every cache key and ETag.
    version: str = ""
    #: Path relative to the slide root it was found under.
    path: str = ""
    levels: list[Level] = field(init=False)
    associated: dict[str, AssociatedImage] = field(init=False)
    #: The glass colour absent tiles are painted with (``compose.background_of``).
    background: tuple[int, int, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.levels = _levels(self.reader.levels, self.reader.mpp)
        self.associated = {
            name: AssociatedImage(name, a.size, a.tile_size, a.media_type)
            for name, a in self.reader.associated.items()
        }

    @property
    def focal_planes(self) -> tuple[float, ...]:
        return tuple(self.reader.focal_planes)

    @property
    def optical_paths(self) -> tuple[str, ...]:
        return tuple(self.reader.optical_paths)

    @property
    def icc_profile(self) -> bytes | None:
        return self.reader.icc_profile

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self.reader.mpp

    def base_level(self) -> Level:
        """Level 0; ``NotFoundError`` for a slide of associated images only."""
        if not self.levels:
            raise NotFoundError(f"slide {self.id} has no pyramid levels (associated images only)")
        return self.levels[0]

    def level(self, index: int) -> Level:
        if not 0 <= index < len(self.levels):
            raise NotFoundError(f"level {index} does not exist (slide has {len(self.levels)})")
        return self.levels[index]

    def read_tile_bytes(
        self, level: int, t_col: int, t_row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile:
        """Stored bytes and media type of one tile; no decoding."""
        self._check_address(level, t_col, t_row, focal_plane, optical_path)
        return self.reader.read_tile(level, t_col, t_row, focal_plane, optical_path)

    def read_tile_bytes_if_cached(
        self, level: int, t_col: int, t_row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile | None:
        """Like ``read_tile_bytes`` when that cannot wait on the disk, else None (the
        reader has no such read, or the bytes are not in the page cache)."""
        self._check_address(level, t_col, t_row, focal_plane, optical_path)
        return self.reader.read_tile_if_cached(level, t_col, t_row, focal_plane, optical_path)

    def read_tiles(
        self,
        level: int,
        tiles: Sequence[tuple[int, int]],
        focal_plane: int = 0,
        optical_path: int = 0,
    ) -> list[EncodedTile | None]:
        """Stored bytes of each ``(col, row)`` of a level (None: an absent sparse tile),
        nearby frames in one read. Addresses must be valid (checked by the caller)."""
        return self.reader.read_tiles(level, tiles, focal_plane, optical_path)

    def check_plane(self, level: int, focal_plane: int, optical_path: int) -> None:
        """``NotFoundError`` when ``level`` lacks the slide's optical path."""
        self.reader.check_plane(level, focal_plane, optical_path)

    def check_tile(
        self, level: int, t_col: int, t_row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> None:
        """``InvalidRequestError`` (``NotFoundError`` for the level) for a tile address
        outside the slide: before any work is done for it."""
        self._check_address(level, t_col, t_row, focal_plane, optical_path)

    def _check_address(
        self, level: int, t_col: int, t_row: int, focal_plane: int, optical_path: int
    ) -> None:
        grid = self.level(level).grid
        if not (0 <= t_col < grid.width and 0 <= t_row < grid.height):
            raise InvalidRequestError(
                f"tile ({t_col}, {t_row}) outside the {grid.width}x{grid.height} grid "
                f"of level {level}"
            )
        if not 0 <= focal_plane < len(self.focal_planes):
            raise InvalidRequestError(f"focal plane {focal_plane} does not exist")
        if not 0 <= optical_path < max(1, len(self.optical_paths)):
            raise InvalidRequestError(f"optical path {optical_path} does not exist")

    def read_associated_bytes(self, name: str, t_col: int = 0, t_row: int = 0) -> EncodedTile:
        image = self.associated.get(name)
        if image is None:
            raise NotFoundError(f"slide has no {name} image")
        if not (0 <= t_col < image.grid.width and 0 <= t_row < image.grid.height):
            raise InvalidRequestError(f"tile ({t_col}, {t_row}) outside the {name} image")
        return self.reader.read_associated(name, t_col, t_row)

    def close(self) -> None:
        self.reader.close()


def _levels(stored: Sequence[ReaderLevel], mpp: tuple[float, float] | None) -> list[Level]:
    levels: list[Level] = []
    for index, level in enumerate(stored):
        base = levels[0].size if levels else level.size
        downsample = (base.width / level.size.width, base.height / level.size.height)
        level_mpp = (mpp[0] * downsample[0], mpp[1] * downsample[1]) if mpp else None
        levels.append(
            Level(
                index,
                level.size,
                level.tile_size,
                downsample,
                level_mpp,
                level.frames,
                level.media_type,
            )
        )
    return levels
