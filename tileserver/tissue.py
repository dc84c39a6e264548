"""Tissue detection on a low-resolution level: Otsu's threshold on HSV saturation.

Method (sync, pure apart from reading the source level):

1. Source: the coarsest pyramid level whose longer side is at least ``MIN_SIDE`` pixels
   (the finest level when none is that large). When that level has more than
   ``MAX_PIXELS`` pixels (a pyramid without low-resolution levels), the slide is rendered
   down to ``MAX_SIDE`` pixels on the longer side instead.
2. Saturation ``S = (max(R,G,B) - min(R,G,B)) / max(R,G,B)`` per pixel, scaled to 0..255.
   Glass and background are grey-white (low S); stained tissue is pink/purple (high S).
3. Otsu's threshold ``t`` on the 256-bin histogram of S (the cut maximising between-class
   variance), floored at ``MIN_THRESHOLD`` so a blank slide is not split on noise.
4. Mask = ``S > t``: one mask pixel per source-level pixel.

A tile of any level contains tissue when any mask pixel under its footprint is set; the
footprint is mapped to mask pixels rounding outwards, so tiles at the tissue border count.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, PngImagePlugin

from tileserver import compose
from tileserver.geometry import Region
from tileserver.slide import Level, Slide

#: Bump when the method changes: it is part of the cache key.
METHOD = "otsu-hsv-saturation-v1"
MIN_SIDE = 512
MAX_PIXELS = 4096 * 4096
MAX_SIDE = 2048
MIN_THRESHOLD = 20

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class TissueMask:
    """A boolean mask over the whole slide and the level-0 pixels per mask pixel."""

    mask: Mask
    l0_per_mask: tuple[float, float]  # (x, y)
    source_level: int | None  # None when rendered from a finer level
    threshold: int

    def tile_flags(self, level: Level) -> Mask:
        """``[row, col]`` True where a tile of ``level`` covers any tissue."""
        grid = level.grid
        flags = np.zeros((grid.height, grid.width), dtype=bool)
        if not self.mask.any():
            return flags
        # An integral image answers "any tissue in this rectangle" in O(1) per tile.
        summed = np.pad(self.mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        for t_row in range(grid.height):
            for t_col in range(grid.width):
                y0, y1, x0, x1 = self._mask_bounds(level, level.tile_region(t_col, t_row))
                total = summed[y1, x1] - summed[y0, x1] - summed[y1, x0] + summed[y0, x0]
                flags[t_row, t_col] = total > 0
        return flags

    def _mask_bounds(self, level: Level, l_region: Region) -> tuple[int, int, int, int]:
        sx = level.downsample[0] / self.l0_per_mask[0]
        sy = level.downsample[1] / self.l0_per_mask[1]
        h, w = self.mask.shape
        x0 = min(w - 1, max(0, math.floor(l_region.x * sx)))
        y0 = min(h - 1, max(0, math.floor(l_region.y * sy)))
        x1 = max(x0 + 1, min(w, math.ceil(l_region.right * sx)))
        y1 = max(y0 + 1, min(h, math.ceil(l_region.bottom * sy)))
        return y0, y1, x0, x1

    def png(self) -> bytes:
        """The mask as an 8-bit PNG (255 = tissue), method facts in text chunks."""
        info = PngImagePlugin.PngInfo()
        info.add_text("method", METHOD)
        info.add_text("threshold", str(self.threshold))
        info.add_text("l0_per_mask", f"{self.l0_per_mask[0]!r},{self.l0_per_mask[1]!r}")
        info.add_text("source_level", "" if self.source_level is None else str(self.source_level))
        out = io.BytesIO()
        Image.fromarray(self.mask.astype(np.uint8) * 255).save(out, format="PNG", pnginfo=info)
        return out.getvalue()

    @classmethod
    def from_png(cls, data: bytes) -> TissueMask:
        """Inverse of ``png``; raises ``ValueError`` for a PNG ``png`` did not make."""
        image = Image.open(io.BytesIO(data))
        text = getattr(image, "text", {})
        if text.get("method") != METHOD:
            raise ValueError("not a tissue mask of this method")
        sx, sy = (float(v) for v in text["l0_per_mask"].split(","))
        level = text["source_level"]
        return cls(
            np.asarray(image) > 127,
            (sx, sy),
            int(level) if level else None,
            int(text["threshold"]),
        )


def saturation(pixels: compose.Pixels) -> npt.NDArray[np.uint8]:
    """HSV saturation scaled to 0..255 (0 for black)."""
    rgb = pixels[..., :3].astype(np.int32)
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    s = np.where(high > 0, (high - low) * 255 // np.maximum(high, 1), 0)
    return s.astype(np.uint8)


def otsu_threshold(values: npt.NDArray[np.uint8]) -> int:
    """Otsu's threshold of 8-bit values: classes are ``<= t`` and ``> t``."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0
    levels = np.arange(256, dtype=np.float64)
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    sum0 = np.cumsum(hist * levels)
    mean0 = np.divide(sum0, weight0, out=np.zeros(256), where=weight0 > 0)
    mean1 = np.divide(sum0[-1] - sum0, weight1, out=np.zeros(256), where=weight1 > 0)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return int(np.argmax(between))


def mask_of(pixels: compose.Pixels) -> tuple[Mask, int]:
    """Tissue mask of an RGB image and the threshold used."""
    s = saturation(pixels)
    threshold = max(otsu_threshold(s), MIN_THRESHOLD)
    return s > threshold, threshold


def source_level(slide: Slide) -> Level:
    """The level the mask is computed from (see the module docstring)."""
    chosen = slide.levels[0]
    for level in slide.levels:
        if max(level.size.width, level.size.height) >= MIN_SIDE:
            chosen = level
    return chosen


def compute(slide: Slide, tiles: compose.DecodedTiles | None = None) -> TissueMask:
    """The tissue mask of ``slide`` (reads and decodes one low-resolution level)."""
    level = source_level(slide)
    if level.size.area <= MAX_PIXELS:
        region = Region(0, 0, level.size.width, level.size.height)
        pixels = compose.region_pixels(slide, level, region, tiles=tiles)
        mask, threshold = mask_of(pixels)
        return TissueMask(mask, level.downsample, level.index, threshold)
    base = slide.levels[0].size
    out = compose.thumbnail_size(base, MAX_SIDE)
    pixels = compose.render(slide, Region(0, 0, base.width, base.height), out, tiles=tiles)
    mask, threshold = mask_of(pixels)
    scale = (base.width / out.width, base.height / out.height)
    return TissueMask(mask, scale, None, threshold)
