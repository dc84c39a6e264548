"""IIIF Image API 3.0 and 2.1 request parsing and image information, pure.

Status codes the HTTP front should give each error (spec section 4 and 7.3, and what the
``iiif-validator`` package checks):

- ``InvalidRequestError`` -> 400: syntax errors in any parameter, a zero or entirely
  out-of-bounds region, a zero size, an unknown or unsupported quality or format (both
  versions say 400 for these), and in 3.0 a size that needs upscaling without ``^``.
- ``UnsupportedError`` -> 501: a valid ``^`` size that needs upscaling when upscaling is
  switched off (3.0 section 4.2).
- ``LimitExceededError`` -> 400: 3.0 section 4.2 says sizes beyond the server-imposed
  limits (``maxWidth``/``maxHeight``/``maxArea``) "SHOULD result in a 400".

Derived dimensions are rounded up, as OpenSeadragon and ceil-halved pyramids do, so a
computed side is never zero and a tile request lands on the stored level size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from tileserver.errors import (
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    UnsupportedError,
)
from tileserver.geometry import Region, Size
from tileserver.slide import Level

__all__ = [
    "EXTRA_FEATURES_V3",
    "FORMATS",
    "PROTOCOL",
    "QUALITIES",
    "SUPPORTS_V2",
    "IiifRequest",
    "Limits",
    "info_json",
    "is_native_tile",
    "native_levels",
    "parse_request",
    "pyramid_info",
]

PROTOCOL = "http://iiif.io/api/image"
CONTEXTS = {
    2: "http://iiif.io/api/image/2/context.json",
    3: "http://iiif.io/api/image/3/context.json",
}
#: Output formats we encode; every other format in the spec's table is a 400.
FORMATS = ("jpg", "png", "webp")
QUALITIES = ("default", "color", "gray", "bitonal")
#: 3.0 features beyond level 2 that parsing supports (HTTP features are the front's to add).
EXTRA_FEATURES_V3 = ("mirroring", "regionByPct", "rotationArbitrary", "sizeByPct", "sizeUpscaling")
SUPPORTS_V2 = (
    "mirroring",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationArbitrary",
    "rotationBy90s",
    "sizeAboveFull",
    "sizeByConfinedWh",
    "sizeByDistortedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
)

_INT = r"\d{1,9}"
_DECIMAL = r"(?:\d{1,9}(?:\.\d{0,12})?|\.\d{1,12})"
_INTS4 = re.compile(rf"({_INT}),({_INT}),({_INT}),({_INT})")
_PCT4 = re.compile(rf"pct:({_DECIMAL}),({_DECIMAL}),({_DECIMAL}),({_DECIMAL})")
_PCT = re.compile(rf"pct:({_DECIMAL})")
_WH = re.compile(rf"(!)?({_INT})?,({_INT})?")
_ROTATION = re.compile(rf"(!)?({_DECIMAL})")


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-imposed output bounds (``maxWidth``, ``maxHeight``, ``maxArea``); None = none."""

    max_width: int | None = None
    max_height: int | None = None
    max_area: int | None = None


@dataclass(frozen=True, slots=True)
class IiifRequest:
    """One parsed image request: what to cut, how big to make it, how to turn and encode it."""

    region: Region  # full-image pixels, cropped to the image
    size: Size  # output pixels before rotation
    mirror: bool
    rotation: float  # degrees clockwise, 0 <= rotation < 360
    quality: str  # default | color | gray | bitonal
    format: str  # jpg | png | webp


def parse_request(
    version: int,
    region: str,
    size: str,
    rotation: str,
    quality_format: str,
    image: Size,
    max_area: int | None = None,
    *,
    limits: Limits | None = None,
    upscaling: bool = True,
) -> IiifRequest:
    """Parse the four path parameters of a version 2 or 3 image request for an ``image``."""
    _check_version(version)
    bounds = limits or Limits()
    if max_area is not None:
        bounds = Limits(bounds.max_width, bounds.max_height, max_area)
    r = _region(region, image)
    out = _size(version, size, r.size, bounds, upscaling)
    _check_limits(out, bounds)
    mirror, degrees = _rotation(rotation)
    quality, fmt = _quality_format(version, quality_format)
    return IiifRequest(r, out, mirror, degrees, quality, fmt)


def _check_version(version: int) -> None:
    if version not in CONTEXTS:
        raise NotFoundError(f"IIIF Image API version {version} is not served (2 or 3)")


# -- region -------------------------------------------------------------------------------


def _region(spec: str, image: Size) -> Region:
    whole = Region(0, 0, image.width, image.height)
    if spec == "full":
        return whole
    if spec == "square":
        side = min(image.width, image.height)
        return Region((image.width - side) // 2, (image.height - side) // 2, side, side)
    if match := _PCT4.fullmatch(spec):
        asked = _pct_region([Fraction(g) for g in match.groups()], image)
    elif match := _INTS4.fullmatch(spec):
        asked = Region(*(int(g) for g in match.groups()))
    else:
        raise InvalidRequestError(f"bad region {spec!r}")
    if asked.width == 0 or asked.height == 0:
        raise InvalidRequestError(f"region {spec!r} is empty")
    cropped = asked.intersect(whole)
    if cropped is None:
        raise InvalidRequestError(f"region {spec!r} lies outside the {_wh(image)} image")
    return cropped


def _pct_region(pct: list[Fraction], image: Size) -> Region:
    x, y, w, h = pct
    # Round both edges, so regions that abut in percent abut in pixels; keep >= 1 px.
    left, right = _edges(x, w, image.width)
    top, bottom = _edges(y, h, image.height)
    return Region(left, top, right - left, bottom - top)


def _edges(start: Fraction, length: Fraction, extent: int) -> tuple[int, int]:
    first = _round(start * extent / 100)
    last = _round((start + length) * extent / 100)
    return first, max(last, first + 1) if length > 0 else first


def _round(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


# -- size ---------------------------------------------------------------------------------


def _size(version: int, spec: str, region: Size, limits: Limits, upscaling: bool) -> Size:
    caret = version == 3 and spec.startswith("^")
    body = spec[1:] if caret else spec
    out = _size_form(version == 2, body, region, limits, caret)
    if out is None:
        raise InvalidRequestError(f"bad size {spec!r} for IIIF {version}")
    if out.width == 0 or out.height == 0:
        raise InvalidRequestError(f"size {spec!r} is empty")
    grows = out.width > region.width or out.height > region.height
    if grows and version == 3 and not caret and body != "max":
        raise InvalidRequestError(
            f"size {spec!r} upscales the {_wh(region)} region; IIIF 3 needs '^' for that"
        )
    if grows and not upscaling:
        raise UnsupportedError(f"size {spec!r} needs upscaling, which is switched off")
    return out


def _size_form(v2: bool, body: str, region: Size, limits: Limits, caret: bool) -> Size | None:
    if v2 and body == "full":
        return region
    if body == "max":
        return _fit(region, limits, grow=caret)
    return _size_common(body, region)


def _size_common(body: str, region: Size) -> Size | None:
    if match := _PCT.fullmatch(body):
        percent = Fraction(match[1])
        return Size(_ceil(region.width * percent / 100), _ceil(region.height * percent / 100))
    match = _WH.fullmatch(body)
    if match is None:
        return None
    confined, w, h = match[1] is not None, match[2], match[3]
    if confined:
        return _confine(region, int(w), int(h)) if w and h else None
    if w and h:
        return Size(int(w), int(h))
    if w:
        return Size(int(w), _ceil(Fraction(int(w) * region.height, region.width)))
    if h:
        return Size(_ceil(Fraction(int(h) * region.width, region.height)), int(h))
    return None


def _confine(region: Size, w: int, h: int) -> Size:
    # The binding side is exact; the other rounds up, which cannot pass the box.
    if w * region.height <= h * region.width:
        return Size(w, _ceil(Fraction(w * region.height, region.width)))
    return Size(_ceil(Fraction(h * region.width, region.height)), h)


def _fit(region: Size, limits: Limits, grow: bool = False) -> Size:
    """The largest size of the region's shape within the limits; grows only if ``grow``.

    With no limits at all, the largest size is the region itself (``^max`` == ``max``).
    """
    scales = []
    if limits.max_width is not None:
        scales.append(Fraction(limits.max_width, region.width))
    if limits.max_height is not None:
        scales.append(Fraction(limits.max_height, region.height))
    if limits.max_area is not None:
        scales.append(Fraction(math.sqrt(limits.max_area / region.area)))
    scale = min(scales, default=Fraction(1))
    if not grow:
        scale = min(scale, Fraction(1))
    if scale == 1:
        return region
    out = Size(max(1, math.floor(region.width * scale)), max(1, math.floor(region.height * scale)))
    while limits.max_area is not None and out.area > limits.max_area and out.width > 1:
        # Guards float error in the square root: shrink until the area fits.
        out = Size(out.width - 1, max(1, out.height * (out.width - 1) // out.width))
    return out


def _ceil(value: Fraction | int) -> int:
    return math.ceil(value)


def _check_limits(out: Size, limits: Limits) -> None:
    if limits.max_width is not None and out.width > limits.max_width:
        raise LimitExceededError(f"width {out.width} exceeds maxWidth {limits.max_width}")
    if limits.max_height is not None and out.height > limits.max_height:
        raise LimitExceededError(f"height {out.height} exceeds maxHeight {limits.max_height}")
    if limits.max_area is not None and out.area > limits.max_area:
        raise LimitExceededError(f"{_wh(out)} exceeds maxArea {limits.max_area}")


# -- rotation, quality, format ------------------------------------------------------------


def _rotation(spec: str) -> tuple[bool, float]:
    match = _ROTATION.fullmatch(spec)
    if match is None:
        raise InvalidRequestError(f"bad rotation {spec!r}")
    degrees = Fraction(match[2])
    if degrees > 360:
        raise InvalidRequestError(f"rotation {spec!r} is above 360")
    return match[1] is not None, float(degrees % 360)


def _quality_format(version: int, spec: str) -> tuple[str, str]:
    quality, dot, fmt = spec.rpartition(".")
    if not dot:
        raise InvalidRequestError(f"{spec!r} has no format extension")
    if version == 2 and quality == "native":
        quality = "default"
    if quality not in QUALITIES:
        raise InvalidRequestError(f"unknown quality {quality!r}")
    if fmt not in FORMATS:
        raise InvalidRequestError(f"unsupported format {fmt!r} (have {', '.join(FORMATS)})")
    return quality, fmt


def _wh(size: Size) -> str:
    return f"{size.width}x{size.height}"


# -- pyramid and image information --------------------------------------------------------


def native_levels(levels: Sequence[Level]) -> dict[int, Level]:
    """Levels that are level 0 halved k times (floor or ceil), keyed by scale factor 2**k."""
    if not levels:
        return {}
    base = levels[0].size
    natives: dict[int, Level] = {}
    for level in levels:
        if level.size.width == 0 or level.size.height == 0:
            continue
        factor = 2 ** max(0, round(math.log2(base.width / level.size.width)))
        if factor not in natives and _halves(base, level.size, factor):
            natives[factor] = level
    return natives


def _halves(base: Size, size: Size, factor: int) -> bool:
    return size.width in (base.width // factor, -(-base.width // factor)) and size.height in (
        base.height // factor,
        -(-base.height // factor),
    )


def pyramid_info(levels: Sequence[Level]) -> tuple[Size, list[int], list[Size]]:
    """``(tile_size, scale_factors, sizes)`` for ``info_json`` from the stored pyramid.

    Scale factors are those native levels stored with level 0's frame size; sizes are the
    stored sizes of every native level, smallest first, so OpenSeadragon adopts them as its
    level sizes and its tile requests match stored frames exactly.
    """
    natives = native_levels(levels)
    tile = levels[0].tile_size
    factors = sorted(f for f, level in natives.items() if level.tile_size == tile)
    sizes = sorted((level.size for level in natives.values()), key=lambda s: s.width)
    return tile, factors, sizes


def info_json(
    version: int,
    base_id: str,
    image: Size,
    tile_size: Size,
    scale_factors: list[int],
    sizes: list[Size],
    max_area: int | None = None,
    extra: dict[str, Any] | None = None,
    *,
    upscaling: bool = True,
) -> dict[str, Any]:
    """The image information document (info.json) of a level 2 service."""
    _check_version(version)
    listed = [s for s in sizes if max_area is None or s.area <= max_area]
    tiles = [{"width": tile_size.width, "height": tile_size.height, "scaleFactors": scale_factors}]
    doc = _info_v3(base_id, upscaling) if version == 3 else _info_v2(base_id, upscaling, max_area)
    doc.update(width=image.width, height=image.height)
    if version == 3 and max_area is not None:
        doc["maxArea"] = max_area
    doc["sizes"] = [{"width": s.width, "height": s.height} for s in listed]
    doc["tiles"] = tiles
    for key, value in (extra or {}).items():
        if isinstance(value, list) and isinstance(doc.get(key), list):
            doc[key] = doc[key] + [v for v in value if v not in doc[key]]
        else:
            doc[key] = value
    return doc


def _info_v3(base_id: str, upscaling: bool) -> dict[str, Any]:
    features = [f for f in EXTRA_FEATURES_V3 if upscaling or f != "sizeUpscaling"]
    return {
        "@context": CONTEXTS[3],
        "id": base_id,
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": "level2",
        "extraFormats": ["webp"],
        "extraQualities": ["gray", "bitonal"],
        "extraFeatures": features,
    }


def _info_v2(base_id: str, upscaling: bool, max_area: int | None) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "formats": list(FORMATS),
        "qualities": list(QUALITIES),
        "supports": [f for f in SUPPORTS_V2 if upscaling or f != "sizeAboveFull"],
    }
    if max_area is not None:
        profile["maxArea"] = max_area
    return {
        "@context": CONTEXTS[2],
        "@id": base_id,
        "protocol": PROTOCOL,
        "profile": ["http://iiif.io/api/image/2/level2.json", profile],
    }


def is_native_tile(req: IiifRequest, levels: Sequence[Level]) -> tuple[int, int, int] | None:
    """``(level, col, row)`` when the request is exactly one stored frame, unscaled.

    True when the region is one frame's valid area at a native level (in level-0 pixels,
    clipped to the image), the output size is that area's stored size, and nothing is
    rotated, mirrored or recoloured. Edge frames are stored padded: a caller serving
    stored bytes must crop them to ``levels[level].tile_region(col, row)``.
    """
    if req.rotation or req.mirror or req.quality not in ("default", "color") or not levels:
        return None
    image = levels[0].size
    for factor, level in native_levels(levels).items():
        span_w, span_h = level.tile_size.width * factor, level.tile_size.height * factor
        col, x_off = divmod(req.region.x, span_w)
        row, y_off = divmod(req.region.y, span_h)
        if x_off or y_off or col >= level.grid.width or row >= level.grid.height:
            continue
        expected = Region(
            req.region.x,
            req.region.y,
            min(span_w, image.width - req.region.x),
            min(span_h, image.height - req.region.y),
        )
        if req.region == expected and req.size == level.tile_region(col, row).size:
            return level.index, col, row
    return None
