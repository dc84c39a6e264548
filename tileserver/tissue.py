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
        if not self.mask.any():
            return np.zeros((grid.height, grid.width), dtype=bool)
        # An integral image answers "any tissue in this rectangle" with four lookups; the
        # footprints' mask bounds are separable (x by column, y by row), so all tiles at once.
        h, w = self.mask.shape
        summed = np.zeros((h + 1, w + 1), dtype=np.int32)  # at most MAX_PIXELS: fits
        inner = summed[1:, 1:]
        np.cumsum(self.mask, axis=1, dtype=np.int32, out=inner)  # rows first: contiguous
        np.cumsum(inner, axis=0, out=inner)
        x0, x1 = _mask_bounds(
            level.size.width, level.tile_size.width, level.downsample[0] / self.l0_per_mask[0], w
        )
        y0, y1 = _mask_bounds(
            level.size.height, level.tile_size.height, level.downsample[1] / self.l0_per_mask[1], h
        )
        total = (
            summed[np.ix_(y1, x1)]
            - summed[np.ix_(y0, x1)]
            - summed[np.ix_(y1, x0)]
            + summed[np.ix_(y0, x0)]
        )
        flags: Mask = total > 0
        return flags

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


def _mask_bounds(
    l_size: int, l_tile: int, mask_per_l: float, m_size: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Per tile along one axis: the mask pixels ``[start, stop)`` under its valid area,
    rounded outwards, at least one pixel, clipped to the mask."""
    l_start = np.arange(0, l_size, l_tile, dtype=np.int64)
    l_stop = np.minimum(l_start + l_tile, l_size)
    start = np.clip(np.floor(l_start * mask_per_l), 0, m_size - 1).astype(np.intp)
    stop = np.minimum(m_size, np.ceil(l_stop * mask_per_l)).astype(np.intp)
    return start, np.maximum(start + 1, stop)


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


def facts_json(mask: TissueMask, level: Level) -> bytes:
    """The mask's facts and ``level``'s tile flags, as the tissue endpoint's JSON."""
    import orjson

    flags = mask.tile_flags(level)
    height, width = mask.mask.shape
    return orjson.dumps(
        {
            "method": METHOD,
            "threshold": mask.threshold,
            "source_level": mask.source_level,
            "width": width,
            "height": height,
            "l0_per_mask": list(mask.l0_per_mask),
            "tissue_fraction": float(mask.mask.mean()),
            "level": level.index,
            "grid": [level.grid.width, level.grid.height],
            "tiles_with_tissue": int(flags.sum()),
            "flags": flags.astype(np.uint8),
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
