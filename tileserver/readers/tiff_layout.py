"""The pyramid of one tiled TIFF: which directories are levels and which are associated
images, each with its frame table (one row per tile, as DICOM's: file, offset, length,
fragments=1; length 0 for a tile not stored), plus mpp and what the slide page shows.

Layouts: Aperio SVS (levels are the tiled directories of the main chain; the second
directory, in strips, is the thumbnail; label and macro are named in their
ImageDescription), pyramids whose reduced levels are SubIFDs of the first directory
(OME-TIFF, libvips: one level per SubIFD), and generic tiled TIFF (the first directory,
then each smaller tiled directory of the main chain). Vendor formats that need their own
logic (NDPI, Leica SCN, Ventana BIF, Philips) are refused so that OpenSlide reads them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tileserver.dicom.series import LEVEL_FRAME_DTYPE
from tileserver.errors import CorruptSlideError, SlideError, UnsupportedError
from tileserver.geometry import Size
from tileserver.readers.source import ByteSource
from tileserver.readers.tiffcodec import TileCoding, check_supported
from tileserver.readers.tiffparse import Ifd, sub_ifds, walk

_NO_LIMIT = 2**32 - 1
_UNITS_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


class UnsupportedTiffError(SlideError):
    """A well-formed TIFF this backend does not serve (another backend may)."""


@dataclass(frozen=True, eq=False)
class TiffImage:
    """One directory as served: a pyramid level, or an associated image (strips are its
    tiles: full width, RowsPerStrip high)."""

    size: Size
    tile_size: Size
    coding: TileCoding
    frames: npt.NDArray[np.void]  # LEVEL_FRAME_DTYPE, row-major over the grid

    @property
    def grid(self) -> Size:
        return self.size.ceil_div(self.tile_size)

    @property
    def stored(self) -> int:
        return int(np.count_nonzero(self.frames["length"]))


@dataclass(eq=False)
class TiffLayout:
    kind: str
    levels: list[TiffImage]
    associated: dict[str, TiffImage]
    mpp: tuple[float, float] | None
    attributes: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    icc_profile: bytes | None = None


def read_layout(source: ByteSource) -> tuple[str, TiffLayout]:
    """(slide id, layout) of one TIFF; a ``SlideError`` saying why it cannot be served."""
    _, ifds = walk(source)
    base = ifds[0]
    _refuse_vendor_formats(base)
    if not _tiled(base):
        raise UnsupportedTiffError(
            "the full-resolution image is stored in strips, not tiles: not served as a "
            "tiled pyramid"
        )
    description = base.text(270)
    kind = _kind(base, description)
    warnings: list[str] = []
    pyramid = [base, *sub_ifds(base)] if 330 in base else [base, *filter(_tiled, ifds[1:])]
    if 330 in base and len(ifds) > 1:
        warnings.append(f"{len(ifds) - 1} further image(s) in the main chain not served")
    levels = _levels(pyramid, source.identity.size, warnings)
    associated = (
        _aperio_associated(ifds, source.identity.size, warnings) if kind == "Aperio SVS" else {}
    )
    layout = TiffLayout(
        kind, levels, associated, _mpp(base, description), _attributes(kind, description)
    )
    layout.warnings = warnings
    icc = base.raw(34675)
    layout.icc_profile = icc or None
    return _slide_id(source.identity.size, pyramid, levels[0]), layout


def _tiled(ifd: Ifd) -> bool:
    return 322 in ifd and 323 in ifd and 324 in ifd


def _kind(base: Ifd, description: str) -> str:
    if description.startswith("Aperio"):
        return "Aperio SVS"
    if "<OME" in description:
        return "OME-TIFF"
    return "pyramidal TIFF" if 330 in base else "tiled TIFF"


def _refuse_vendor_formats(base: Ifd) -> None:
    description = base.text(270)
    software = base.text(305)
    vendor = None
    if 65420 in base:
        vendor = "Hamamatsu NDPI"
    elif description.startswith("<?xml") and "leica" in description[:4096].lower():
        vendor = "Leica SCN"
    elif b"iScan" in base.raw(700)[:65536]:
        vendor = "Ventana BIF"
    elif software.startswith("Philips"):
        vendor = "Philips TIFF"
    if vendor is not None:
        raise UnsupportedTiffError(f"a {vendor} file: its layout needs OpenSlide")


def _levels(pyramid: list[Ifd], file_size: int, warnings: list[str]) -> list[TiffImage]:
    levels: list[TiffImage] = []
    for number, ifd in enumerate(pyramid):
        where = f"level {len(levels)} (directory {number})"
        if levels and not _tiled(ifd):
            warnings.append(f"{where}: stored in strips, not served")
            continue
        size = Size(ifd.first(256), ifd.first(257))
        if levels and (
            size.width >= levels[-1].size.width or size.height >= levels[-1].size.height
        ):
            warnings.append(f"directory {number} ({size.width}x{size.height}) is no reduced level")
            continue
        try:
            levels.append(image_of(ifd, file_size, tiled=True))
        except UnsupportedError as exc:
            if not levels:
                raise UnsupportedTiffError(f"{where}: {exc}") from exc
            warnings.append(f"{where}: {exc}; not served")
        except CorruptSlideError as exc:
            raise CorruptSlideError(f"{where}: {exc}") from exc
    return levels


def image_of(ifd: Ifd, file_size: int, tiled: bool) -> TiffImage:
    """A directory's image and frame table; ``UnsupportedError`` for codings not served,
    ``CorruptSlideError`` for tables that do not fit the image or the file."""
    size = Size(ifd.first(256), ifd.first(257))
    if size.width <= 0 or size.height <= 0:
        raise CorruptSlideError(f"image of {size.width}x{size.height} pixels")
    if ifd.first(32997, 1) > 1:
        raise UnsupportedError("a volume (ImageDepth > 1)")
    samples = ifd.first(277, 1)
    coding = TileCoding(
        compression=ifd.first(259, 1),
        photometric=ifd.first(262, 2 if samples >= 3 else 1),
        samples=samples,
        predictor=ifd.first(317, 1),
        jpeg_tables=ifd.raw(347),
    )
    check_supported(coding, max(ifd.ints(258) or [1]), ifd.first(284, 1))
    if tiled:
        tile = Size(ifd.first(322), ifd.first(323))
        offsets, counts = ifd.array(324), ifd.array(325)
    else:
        tile = Size(size.width, min(size.height, ifd.first(278, _NO_LIMIT) or size.height))
        offsets, counts = ifd.array(273), ifd.array(279)
    if tile.width <= 0 or tile.height <= 0:
        raise CorruptSlideError(f"tiles of {tile.width}x{tile.height} pixels")
    expected = size.ceil_div(tile).area
    if len(offsets) != expected or len(counts) != expected:
        raise CorruptSlideError(
            f"{len(offsets)} offsets and {len(counts)} byte counts for {expected} tiles"
        )
    _check_within(offsets, counts, file_size)
    frames = np.zeros(expected, dtype=LEVEL_FRAME_DTYPE)
    frames["offset"], frames["length"], frames["fragments"] = offsets, counts, 1
    return TiffImage(size, tile, coding, frames)


def _check_within(
    offsets: npt.NDArray[np.uint64], counts: npt.NDArray[np.uint64], size: int
) -> None:
    stored = counts > 0
    if not stored.any():
        return
    end = int((offsets[stored] + counts[stored]).max())
    if end > size:
        raise CorruptSlideError(
            f"truncated: tile data runs to byte {end}, past the end of the file ({size} bytes)"
        )


def _aperio_associated(
    ifds: list[Ifd], file_size: int, warnings: list[str]
) -> dict[str, TiffImage]:
    """Aperio's thumbnail (the second directory, in strips), label and macro (named by the
    second line of their ImageDescription)."""
    found: dict[str, TiffImage] = {}
    for number, ifd in enumerate(ifds[1:], start=1):
        if _tiled(ifd):
            continue
        words = ifd.text(270).splitlines()[1:2]
        name = words[0].split(" ", 1)[0] if words else ""
        role = {"label": "label", "macro": "overview"}.get(name)
        if role is None and number == 1:
            role = "thumbnail"
        if role is None or role in found:
            continue
        try:
            found[role] = image_of(ifd, file_size, tiled=False)
        except (UnsupportedError, CorruptSlideError) as exc:
            warnings.append(f"{role} image (directory {number}): {exc}; not served")
    return found


def _mpp(base: Ifd, description: str) -> tuple[float, float] | None:
    aperio = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
    if aperio is not None:
        return _plausible(float(aperio.group(1)), float(aperio.group(1)))
    if "<OME" in description:
        x, y = _ome_size(description, "X"), _ome_size(description, "Y")
        return _plausible(x, y) if x is not None and y is not None else None
    unit = {2: 25400.0, 3: 10000.0}.get(base.first(296, 2))
    xres, yres = base.rational(282), base.rational(283)
    if unit is None or not xres or not yres:
        return None
    return _plausible(unit / xres, unit / yres)


def _ome_size(description: str, axis: str) -> float | None:
    # The first Pixels element is the image the first directory holds.
    pixels = re.search(r"<(?:\w+:)?Pixels\s[^>]*>", description)
    if pixels is None:
        return None
    value = re.search(rf'PhysicalSize{axis}="([^"]+)"', pixels.group(0))
    unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', pixels.group(0))
    if value is None:
        return None
    scale = _UNITS_UM.get(unit.group(1) if unit else "µm")
    try:
        return float(value.group(1)) * scale if scale else None
    except ValueError:
        return None


def _plausible(x: float, y: float) -> tuple[float, float] | None:
    return (x, y) if 0 < x < 1000 and 0 < y < 1000 else None


def _attributes(kind: str, description: str) -> dict[str, str]:
    attributes = {"Format": kind}
    power = re.search(r"\|\s*AppMag\s*=\s*([0-9.]+)", description)
    if power is not None:
        attributes["ObjectivePower"] = power.group(1)
    return attributes


def _slide_id(file_size: int, pyramid: list[Ifd], base: TiffImage) -> str:
    """Stable over copies of a file and over servers' roots: a digest of its size, the
    pyramid's directory entries and where level 0's tiles lie."""
    digest = hashlib.sha256(str(file_size).encode())
    for ifd in pyramid:
        for entry in sorted(ifd.entries.values(), key=lambda e: e.tag):
            digest.update(
                repr((entry.tag, entry.type, entry.count, entry.inline, entry.offset)).encode()
            )
    digest.update(base.frames.tobytes())
    return f"tiff-{digest.hexdigest()[:24]}"
