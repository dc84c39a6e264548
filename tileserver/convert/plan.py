"""What goes where: one instance per pyramid level, then label, overview and thumbnail
where the input has them, each with its coding, geometry and frame source."""

from __future__ import annotations

from dataclasses import dataclass

from tileserver.convert.coding import encoded_coding
from tileserver.convert.dataset import Image
from tileserver.convert.frames import (
    AssociatedFrames,
    LevelFrames,
    associated_pixels,
    level_coding,
)
from tileserver.formats import JPEG
from tileserver.geometry import Size
from tileserver.slide import Slide

#: Associated images converted, by served name -> Image Type value 3.
ASSOCIATED = {"label": "LABEL", "overview": "OVERVIEW", "thumbnail": "THUMBNAIL"}
#: DICOM wants a Pixel Spacing for label and overview too, which no scanner records: it
#: is estimated from a standard 75 x 25 mm slide, whose whole length an overview shows
#: and whose 25 mm end a label shows (across their longer sides).
ESTIMATED_SPAN_MM = {"OVERVIEW": 75.0, "LABEL": 25.0}


@dataclass(frozen=True)
class Options:
    quality: int
    lossless: bool
    #: Level-0 (x, y) micrometres per pixel written as Pixel Spacing.
    mpp: tuple[float, float]
    background: tuple[int, int, int]


@dataclass(frozen=True)
class Planned:
    """One output file: its name, header facts and frames."""

    file_name: str
    image: Image
    frames: LevelFrames | AssociatedFrames


def plan(slide: Slide, options: Options) -> list[Planned]:
    """Every instance the conversion writes, levels first (Instance Number order)."""
    planned = [_level(slide, index, options) for index in range(len(slide.levels))]
    for name, flavor in ASSOCIATED.items():
        if name in slide.associated:
            planned.append(_associated(slide, name, flavor, len(planned) + 1, options))
    return planned


def skipped_associated(slide: Slide) -> list[str]:
    """Associated images DICOM WSI has no role for (OpenSlide's vendor-named extras)."""
    return sorted(set(slide.associated) - set(ASSOCIATED))


def _level(slide: Slide, index: int, options: Options) -> Planned:
    level = slide.levels[index]
    coding = level_coding(slide, index, options.lossless)
    image = Image(
        flavor="VOLUME",
        number=index + 1,
        size=level.size,
        tile_size=level.tile_size,
        coding=coding,
        spacing_mm=_spacing(slide, level.size, options.mpp),
        lossy=coding.lossy or level.media_type == JPEG,
    )
    frames = LevelFrames(slide, index, coding, options.quality, options.background)
    return Planned(f"level-{index}.dcm", image, frames)


def _associated(slide: Slide, name: str, flavor: str, number: int, options: Options) -> Planned:
    stored = slide.associated[name]
    pixels = associated_pixels(slide, name, options.background)
    coding = encoded_coding(1 if pixels.ndim == 2 else 3, options.lossless)
    image = Image(
        flavor=flavor,
        number=number,
        size=stored.size,
        tile_size=stored.size,
        coding=coding,
        spacing_mm=_associated_spacing(slide, flavor, stored.size, options.mpp),
        lossy=coding.lossy or stored.media_type == JPEG,
    )
    return Planned(f"{name}.dcm", image, AssociatedFrames(pixels, coding, options.quality))


def _associated_spacing(
    slide: Slide, flavor: str, size: Size, mpp: tuple[float, float]
) -> tuple[float, float]:
    if flavor == "THUMBNAIL":  # all of level 0
        return _spacing(slide, size, mpp)
    side = ESTIMATED_SPAN_MM[flavor] / max(size.width, size.height)
    return side, side


def _spacing(slide: Slide, size: Size, mpp: tuple[float, float]) -> tuple[float, float]:
    """(x, y) millimetres per pixel of an image showing all of level 0 at ``size``."""
    base = slide.levels[0].size
    return (
        mpp[0] * base.width / size.width / 1000,
        mpp[1] * base.height / size.height / 1000,
    )
