"""The protocol every slide backend implements: sync, thread-safe, returns values.

A backend has two halves: a ``FormatBackend`` (``readers/registry.py`` finds it by probing
a source) that indexes one file or object into a catalog record, and the ``SlideReader``
it opens over the records of one slide. ``ReaderDefaults`` gives a reader the optional
parts it does not specialise (batched reads, tile locators, DICOM instance frames).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tileserver.errors import NotFoundError, TileAbsentError
from tileserver.formats import EncodedTile
from tileserver.geometry import Size
from tileserver.readers.source import ByteSource, SourceIdentity

if TYPE_CHECKING:
    from tileserver.dicom.instance import IndexedInstance
    from tileserver.readers.locator import TileLocator


@dataclass(frozen=True, slots=True)
class ReaderLevel:
    """One tiled image as stored: full size and tile size."""

    size: Size
    tile_size: Size
    #: Tiles actually stored (a sparse image may store fewer than its grid holds).
    frames: int
    #: How its tiles are stored ("" when unknown): a read-free answer to "is a stored
    #: tile already a JPEG?" (a cached derived tile must cost no source read).
    media_type: str = ""


class InstanceFrames(Protocol):
    """The frames of one DICOM instance within its slide (WADO-RS reads them)."""

    @property
    def count(self) -> int: ...

    @property
    def size(self) -> Size:
        """The whole image the instance is part of (its level, or the associated image)."""
        ...

    @property
    def level_index(self) -> int | None: ...

    @property
    def associated(self) -> str | None: ...

    def read(self, number: int) -> EncodedTile:
        """Frame ``number`` (1-based, as in DICOM), stored bytes joined."""
        ...


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
        """Bytes of every source together."""
        ...

    def read_tile(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile:
        """Stored bytes of one tile; ``TileAbsentError`` for a tile a sparse image lacks."""
        ...

    def read_tile_if_cached(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile | None:
        """``read_tile`` when that cannot wait (``ByteSource.read_if_cached``), else None:
        an event loop may call it. Addresses are not checked."""
        ...

    def read_tiles(
        self, level: int, tiles: Sequence[tuple[int, int]], focal_plane: int, optical_path: int
    ) -> list[EncodedTile | None]:
        """Stored bytes of each ``(col, row)`` of a level (None: absent), in few reads."""
        ...

    def check_plane(self, level: int, focal_plane: int, optical_path: int) -> None:
        """``NotFoundError`` when ``level`` lacks that optical path (a DICOM level may hold
        fewer paths than level 0)."""
        ...

    def read_associated(self, name: str, col: int = 0, row: int = 0) -> EncodedTile: ...

    def changed_sources(self) -> list[str]:
        """URIs of sources that no longer have the identity they were indexed with."""
        ...

    def tile_locator(self, version: str, series: Sequence[SourceIdentity]) -> TileLocator | None:
        """Where the stored tiles of the first plane lie, for the early tile path of the
        next start (``readers/locator.py``); None when they do not lie in byte ranges."""
        ...

    def instance_frames(self, sop_instance_uid: str) -> InstanceFrames:
        """The frames of one DICOM instance of this slide; ``NotFoundError`` otherwise."""
        ...

    def close(self) -> None: ...


class ReaderDefaults:
    """The optional parts of ``SlideReader`` for backends that do not specialise them: one
    focal plane and one (unnamed) optical path, one read per tile, no tile locators, no
    DICOM instances."""

    @property
    def focal_planes(self) -> Sequence[float]:
        return (0.0,)

    @property
    def optical_paths(self) -> Sequence[str]:
        return ()

    def read_tiles(
        self, level: int, tiles: Sequence[tuple[int, int]], focal_plane: int, optical_path: int
    ) -> list[EncodedTile | None]:
        reader: SlideReader = self  # type: ignore[assignment]
        out: list[EncodedTile | None] = []
        for col, row in tiles:
            try:
                out.append(reader.read_tile(level, col, row, focal_plane, optical_path))
            except TileAbsentError:
                out.append(None)
        return out

    def check_plane(self, level: int, focal_plane: int, optical_path: int) -> None:
        return None

    def changed_sources(self) -> list[str]:
        return []

    def tile_locator(self, version: str, series: Sequence[SourceIdentity]) -> TileLocator | None:
        return None

    def instance_frames(self, sop_instance_uid: str) -> InstanceFrames:
        raise NotFoundError(f"no DICOM instance {sop_instance_uid} in this slide")


@dataclass(frozen=True)
class IndexedFile:
    """What a backend's ``index`` found in one source: the slide it belongs to and the
    record the catalog keeps for it (a DICOM instance, or the backend's own bytes)."""

    slide_id: str
    instance: IndexedInstance | None = None
    record: bytes | None = None


@dataclass(frozen=True)
class StoredFile:
    """One cataloged source of a slide, as the catalog hands it back to its backend."""

    identity: SourceIdentity
    root: str
    backend: str
    instance: IndexedInstance | None = None
    record: bytes | None = None


@dataclass
class OpenedSlide:
    """A backend's reader over a slide's sources, with what the slide's page shows."""

    reader: SlideReader
    attributes: Mapping[str, str]
    warnings: list[str]
    #: The source that names the slide (a multi-file slide's main file); None: the
    #: slide is named by its sources' common folder (a DICOM series) or its only file.
    main: str | None = None


class FormatBackend(Protocol):
    """One family of slide files: recognise, index, open (``readers/registry.py``)."""

    name: str
    #: Why a source this backend does not accept is not one of its files.
    reject_reason: str

    def accepts(self, head: bytes, uri: str) -> bool:
        """Whether a source starting with ``head`` (up to ``HEAD_BYTES``) is one of ours."""
        ...

    def index(self, source: ByteSource) -> IndexedFile:
        """Index one source; a ``SlideError`` saying why it cannot be served."""
        ...

    def open(self, files: Sequence[StoredFile], on_changed: Callable[[str], None]) -> OpenedSlide:
        """A reader over one slide's cataloged files; ``on_changed(uri)`` when a read finds
        a source rewritten since it was indexed."""
        ...
