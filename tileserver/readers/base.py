"""The protocol every slide backend implements: sync, thread-safe, returns values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tileserver.formats import EncodedTile
from tileserver.geometry import Size


@dataclass(frozen=True, slots=True)
class ReaderLevel:
    """One tiled image as stored: full size and tile size."""

    size: Size
    tile_size: Size
    #: Tiles actually stored (a sparse image may store fewer than its grid holds).
    frames: int


class SlideReader(Protocol):
    """Stored tiles of one slide; levels are ordered from full resolution down."""

    @property
    def levels(self) -> Sequence[ReaderLevel]: ...

    @property
    def associated(self) -> Mapping[str, ReaderLevel]: ...

    @property
    def mpp(self) -> tuple[float, float] | None: ...

    @property
    def focal_planes(self) -> Sequence[float]: ...

    @property
    def optical_paths(self) -> Sequence[str]: ...

    @property
    def icc_profile(self) -> bytes | None: ...

    @property
    def transfer_syntax(self) -> str | None:
        """How full-resolution tiles are stored (a DICOM transfer syntax UID), if known."""
        ...

    @property
    def size_bytes(self) -> int:
        """Bytes of every source file together."""
        ...

    def read_tile(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile:
        """Stored bytes of one tile; ``TileAbsentError`` for a tile a sparse image lacks."""
        ...

    def read_tile_if_cached(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile | None:
        """``read_tile`` when that cannot wait on the disk, else None (always None for a
        reader that cannot tell): an event loop may call it. Addresses are not checked."""
        ...

    def read_associated(self, name: str, col: int = 0, row: int = 0) -> EncodedTile: ...

    def close(self) -> None: ...
