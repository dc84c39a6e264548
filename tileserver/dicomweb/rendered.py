"""Rendered and thumbnail images of instances and frames (PS3.18 rendered resources)."""

from __future__ import annotations

from dataclasses import dataclass

from tileserver import codec, compose
from tileserver.compose import Pixels
from tileserver.dicomweb.instances import FrameSource
from tileserver.errors import InvalidRequestError, LimitExceededError
from tileserver.geometry import Region, Size


@dataclass(frozen=True)
class RenderOptions:
    fmt: str  # jpeg, png, webp
    quality: int
    viewport: Size | None
    icc: str  # no, yes, srgb


def parse_viewport(raw: str | None) -> Size | None:
    """``viewport=w,h`` (either may be empty) -> the box the image is fitted into."""
    if raw is None or raw == "":
        return None
    parts = raw.split(",")
    if len(parts) != 2:
        raise InvalidRequestError("viewport must be width,height (cropping is not supported)")
    try:
        # PS3.18 says integers; some viewers compute them (280.00000000000006): round.
        w, h = (round(float(p)) if p.strip() else 0 for p in parts)
    except (ValueError, OverflowError):
        raise InvalidRequestError(f"viewport values must be numbers, not {raw!r}") from None
    if w < 0 or h < 0 or (w == 0 and h == 0):
        raise InvalidRequestError("viewport must be positive")
    return Size(w or 1 << 30, h or 1 << 30)


def fitted(size: Size, viewport: Size | None) -> Size:
    """``size`` scaled to fit inside ``viewport``, never up; aspect ratio kept."""
    if viewport is None:
        return size
    scale = min(1.0, viewport.width / size.width, viewport.height / size.height)
    return Size(max(1, round(size.width * scale)), max(1, round(size.height * scale)))


def render_instance(source: FrameSource, options: RenderOptions, max_pixels: int) -> bytes:
    """The whole image of an instance (associated image, or a pyramid level) fitted."""
    name = source.is_associated
    out = fitted(source.frames.size, options.viewport)
    _check(out, max_pixels)
    if name is not None:
        pixels = _resize(compose.associated_pixels(source.slide, name), out)
    else:
        full = source.slide.levels[0].size
        pixels = compose.render(
            source.slide, Region(0, 0, full.width, full.height), out, max_read_pixels=4 * max_pixels
        )
    return _encode(pixels, options, source)


def render_frame(source: FrameSource, number: int, options: RenderOptions) -> bytes:
    pixels = compose.as_rgb(codec.decode(source.read(number)))
    size = Size(pixels.shape[1], pixels.shape[0])
    return _encode(_resize(pixels, fitted(size, options.viewport)), options, source)


def _resize(pixels: Pixels, out: Size) -> Pixels:
    if (pixels.shape[1], pixels.shape[0]) == (out.width, out.height):
        return pixels
    return codec.resize(pixels, out.width, out.height)


def _check(size: Size, max_pixels: int) -> None:
    if size.area > max_pixels:
        raise LimitExceededError(
            f"{size.width}x{size.height} exceeds {max_pixels} output pixels; pass a viewport"
        )


def _encode(pixels: Pixels, options: RenderOptions, source: FrameSource) -> bytes:
    icc = source.slide.icc_profile if options.icc in ("yes", "srgb") else None
    if icc is not None and options.icc == "srgb":
        pixels, icc = codec.to_srgb(pixels, icc), None
    return codec.encode(pixels, options.fmt, quality=options.quality, icc_profile=icc)
