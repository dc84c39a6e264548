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


@dataclass(frozen=True)
class Planned:
    """One output file: its name, header facts and frames."""

    file_name: str
    image: Image
    frames: LevelFrames | AssociatedFrames


def plan(
    slide: Slide, quality: int, lossless: bool, background: tuple[int, int, int]
) -> list[Planned]:
    """Every instance the conversion writes, levels first (Instance Number order)."""
    planned = [
        _level(slide, index, quality, lossless, background) for index in range(len(slide.levels))
    ]
    for name, flavor in ASSOCIATED.items():
        if name in slide.associated:
            number = len(planned) + 1
            planned.append(_associated(slide, name, flavor, number, quality, lossless, background))
    return planned


def skipped_associated(slide: Slide) -> list[str]:
    """Associated images DICOM WSI has no role for (OpenSlide's vendor-named extras)."""
    return sorted(set(slide.associated) - set(ASSOCIATED))


def _level(
    slide: Slide, index: int, quality: int, lossless: bool, background: tuple[int, int, int]
) -> Planned:
    level = slide.levels[index]
    coding = level_coding(slide, index, lossless)
    mpp = level.mpp
    image = Image(
        flavor="VOLUME",
        number=index + 1,
        size=level.size,
        tile_size=level.tile_size,
        coding=coding,
        spacing_mm=(mpp[0] / 1000, mpp[1] / 1000) if mpp else None,
        lossy=coding.lossy or level.media_type == JPEG,
    )
    return Planned(
        f"level-{index}.dcm", image, LevelFrames(slide, index, coding, quality, background)
    )


def _associated(
    slide: Slide,
    name: str,
    flavor: str,
    number: int,
    quality: int,
    lossless: bool,
    background: tuple[int, int, int],
) -> Planned:
    stored = slide.associated[name]
    pixels = associated_pixels(slide, name, background)
    coding = encoded_coding(1 if pixels.ndim == 2 else 3, lossless)
    image = Image(
        flavor=flavor,
        number=number,
        size=stored.size,
        tile_size=Size(stored.size.width, stored.size.height),
        coding=coding,
        spacing_mm=_thumbnail_spacing(slide, stored.size) if flavor == "THUMBNAIL" else None,
        lossy=coding.lossy or stored.media_type == JPEG,
    )
    return Planned(f"{name}.dcm", image, AssociatedFrames(pixels, coding, quality))


def _thumbnail_spacing(slide: Slide, size: Size) -> tuple[float, float] | None:
    """A thumbnail shows the whole of level 0: its pixels are that much larger."""
    if slide.mpp is None or not slide.levels:
        return None
    base = slide.levels[0].size
    return (
        slide.mpp[0] * base.width / size.width / 1000,
        slide.mpp[1] * base.height / size.height / 1000,
    )
