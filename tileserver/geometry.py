"""Frozen value types for sizes, points, regions and tile addresses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise ValueError(f"negative size {self.width}x{self.height}")

    @property
    def area(self) -> int:
        return self.width * self.height

    def ceil_div(self, other: Size) -> Size:
        """How many ``other``-sized tiles cover this size."""
        return Size(-(-self.width // other.width), -(-self.height // other.height))


@dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle in some pixel frame: origin plus size."""

    x: int
    y: int
    width: int
    height: int

    @property
    def size(self) -> Size:
        return Size(self.width, self.height)

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def intersect(self, other: Region) -> Region | None:
        x, y = max(self.x, other.x), max(self.y, other.y)
        right, bottom = min(self.right, other.right), min(self.bottom, other.bottom)
        if right <= x or bottom <= y:
            return None
        return Region(x, y, right - x, bottom - y)


@dataclass(frozen=True, slots=True)
class TileAddress:
    """One stored tile: level index (0 = full resolution), column, row, focal plane, path."""

    level: int
    col: int
    row: int
    focal_plane: int = 0
    optical_path: int = 0
