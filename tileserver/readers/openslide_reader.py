"""Tiles of any slide OpenSlide opens, rendered by ``read_region`` as raw RGB.

A tile is handed on as uncompressed RGB with the Explicit VR Little Endian transfer
syntax (``codec.decode`` reads it with a reshape): exact pixels, no encode here and no
decode later. Every image a client sees is derived (JPEG/PNG/WebP, DZI, IIIF, regions),
and the service encodes and caches those once, as it does for DICOM's uncompressed frames;
a lossless PNG or a JPEG made here would cost an encode and a decode per tile and, for
JPEG, a second generation of loss.

Reads check the slide's files first: a file changed since it was indexed closes the
handle, reports the file (``on_changed``) and raises ``SlideChangedError``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tileserver.errors import CorruptSlideError, NotFoundError, SlideChangedError
from tileserver.formats import EXPLICIT_VR_LITTLE_ENDIAN, OCTET_STREAM, EncodedTile, PixelFormat
from tileserver.geometry import Size
from tileserver.readers.base import ReaderDefaults, ReaderLevel
from tileserver.readers.openslide_pool import HandlePool
from tileserver.readers.source import SourceIdentity

RECORD_VERSION = 1


@dataclass(frozen=True)
class OpenSlideLevel:
    size: Size
    tile_size: Size
    downsample: float  # OpenSlide's own: what ``read_region`` converts level-0 positions by


@dataclass(frozen=True)
class SlideRecord:
    """What the catalog keeps of a slide's main file: enough to list and serve the slide
    without opening it."""

    vendor: str
    levels: tuple[OpenSlideLevel, ...]
    #: Served name -> (width, height, OpenSlide's name).
    associated: Mapping[str, tuple[int, int, str]]
    mpp: tuple[float, float] | None
    background: tuple[int, int, int]
    attributes: Mapping[str, str]
    #: The other files of a multi-file slide (MRXS folder, VMS images) as indexed.
    parts: tuple[SourceIdentity, ...] = ()
    icc_profile: bytes | None = None

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": RECORD_VERSION,
                "role": "slide",
                "vendor": self.vendor,
                "levels": [_level_row(lv) for lv in self.levels],
                "associated": {k: list(v) for k, v in self.associated.items()},
                "mpp": list(self.mpp) if self.mpp else None,
                "background": list(self.background),
                "attributes": dict(self.attributes),
                "parts": [[p.uri, p.size, p.tag] for p in self.parts],
                "icc": base64.b64encode(self.icc_profile).decode() if self.icc_profile else None,
            }
        ).encode()

    @classmethod
    def decode(cls, data: dict[str, Any]) -> SlideRecord:
        levels = tuple(
            OpenSlideLevel(Size(w, h), Size(tw, th), float(ds))
            for w, h, tw, th, ds in data["levels"]
        )
        mpp = data["mpp"]
        return cls(
            vendor=data["vendor"],
            levels=levels,
            associated={k: (int(w), int(h), str(n)) for k, (w, h, n) in data["associated"].items()},
            mpp=(float(mpp[0]), float(mpp[1])) if mpp else None,
            background=_rgb(data["background"]),
            attributes=dict(data["attributes"]),
            parts=tuple(SourceIdentity(u, int(s), str(t)) for u, s, t in data["parts"]),
            icc_profile=base64.b64decode(data["icc"]) if data["icc"] else None,
        )


def part_record(main: str) -> bytes:
    """The record of a file that is part of the slide whose main file is ``main``."""
    return json.dumps({"v": RECORD_VERSION, "role": "part", "main": main}).encode()


def parse_record(data: bytes | None) -> dict[str, Any]:
    """A stored record as JSON; ``CorruptSlideError`` for one this version cannot read."""
    try:
        parsed = json.loads(data or b"")
    except ValueError as exc:
        raise CorruptSlideError(f"unreadable OpenSlide record: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("v") != RECORD_VERSION:
        raise CorruptSlideError("OpenSlide record of another version: re-index the slide")
    return parsed


class OpenSlideReader(ReaderDefaults):
    """One slide through the process's OpenSlide handle pool."""

    def __init__(
        self,
        main: SourceIdentity,
        record: SlideRecord,
        files: Sequence[SourceIdentity],
        pool: HandlePool,
        on_changed: Callable[[str], None] | None = None,
    ) -> None:
        """``files``: every source of the slide (``main`` among them), as indexed."""
        self.main = main
        self.record = record
        self._files = tuple(files)
        self._pool = pool
        self._key = (main.uri, self._files)
        self._on_changed = on_changed
        self._levels = [
            ReaderLevel(lv.size, lv.tile_size, lv.size.ceil_div(lv.tile_size).area, OCTET_STREAM)
            for lv in record.levels
        ]
        self._associated = {
            name: ReaderLevel(Size(w, h), Size(w, h), 1, OCTET_STREAM)
            for name, (w, h, _) in record.associated.items()
        }

    @property
    def levels(self) -> Sequence[ReaderLevel]:
        return self._levels

    @property
    def associated(self) -> Mapping[str, ReaderLevel]:
        return self._associated

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self.record.mpp

    @property
    def icc_profile(self) -> bytes | None:
        return self.record.icc_profile

    @property
    def transfer_syntax(self) -> str | None:
        return EXPLICIT_VR_LITTLE_ENDIAN

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self._files)

    def read_tile(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile:
        stored = self.record.levels[level]
        tw, th = stored.tile_size.width, stored.tile_size.height
        x, y = col * tw, row * th
        width, height = min(tw, stored.size.width - x), min(th, stored.size.height - y)
        if width <= 0 or height <= 0:
            raise NotFoundError(f"tile ({col}, {row}) is outside level {level}")
        l0 = (round(x * stored.downsample), round(y * stored.downsample))
        image = self._read(lambda h: h.read_region(l0, level, (width, height)))
        return self._raw(image)

    def read_tile_if_cached(
        self, level: int, col: int, row: int, focal_plane: int = 0, optical_path: int = 0
    ) -> EncodedTile | None:
        return None  # every tile is a decode: never on the event loop

    def read_associated(self, name: str, col: int = 0, row: int = 0) -> EncodedTile:
        found = self.record.associated.get(name)
        if found is None:
            raise NotFoundError(f"no {name} image")
        return self._raw(self._read(lambda h: h.associated_images[found[2]]))

    def changed_sources(self) -> list[str]:
        return [f.uri for f in self._files if _changed(f)]

    def close(self) -> None:
        self._pool.discard(self._key)

    def _read(self, render: Callable[[Any], Any]) -> Any:
        """``render(handle)`` after checking the files, with OpenSlide's errors as ours."""
        import openslide

        changed = self.changed_sources()
        if changed:
            self._pool.discard(self._key)
            for uri in changed:
                if self._on_changed is not None:
                    self._on_changed(uri)
            raise SlideChangedError(f"{', '.join(changed)} changed since indexed")
        try:
            with self._pool.borrow(self._key, self.main.uri) as handle:
                return render(handle)
        except (openslide.OpenSlideError, OSError) as exc:
            self._pool.discard(self._key)  # an OpenSlide handle is unusable after an error
            raise CorruptSlideError(f"{self.main.uri}: OpenSlide: {exc}") from exc

    def _raw(self, image: Any) -> EncodedTile:
        pixels = flatten(np.asarray(image), self.record.background)
        height, width = pixels.shape[:2]
        return EncodedTile(pixels.tobytes(), EXPLICIT_VR_LITTLE_ENDIAN, PixelFormat(height, width))


def flatten(rgba: np.ndarray[Any, Any], background: tuple[int, int, int]) -> np.ndarray[Any, Any]:
    """RGB of an RGBA image over ``background``: OpenSlide leaves unscanned areas
    transparent (an opaque image is returned as is, without blending)."""
    if rgba.ndim == 3 and rgba.shape[2] == 3:
        return rgba
    rgb, alpha = rgba[:, :, :3], rgba[:, :, 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    weight = alpha[:, :, None].astype(np.uint16)
    bg = np.asarray(background, dtype=np.uint16)
    blended = (rgb.astype(np.uint16) * weight + bg * (255 - weight) + 127) // 255
    return blended.astype(np.uint8)


def _level_row(level: OpenSlideLevel) -> list[float]:
    size, tile = level.size, level.tile_size
    return [size.width, size.height, tile.width, tile.height, level.downsample]


def _rgb(values: Sequence[int]) -> tuple[int, int, int]:
    red, green, blue = (int(v) for v in values)
    return red, green, blue


def _changed(identity: SourceIdentity) -> bool:
    try:
        stat = os.stat(identity.uri)
    except OSError:
        return True
    return stat.st_size != identity.size or str(stat.st_mtime_ns) != identity.tag
