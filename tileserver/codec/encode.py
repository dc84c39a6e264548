"""8-bit pixels to JPEG, PNG or WebP bytes, plus the pixel operations rendering needs."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageCms

from tileserver.codec._jpeg import with_icc_profile
from tileserver.codec._pixels import Pixels
from tileserver.errors import CorruptSlideError, InvalidRequestError, UnsupportedError
from tileserver.formats import JPEG, OUTPUT_FORMATS, PNG, WEBP

#: zlib level for PNG: tiles are small and latency matters more than bytes.
PNG_COMPRESS_LEVEL = 2


def _image_array(pixels: Pixels) -> Pixels:
    if pixels.dtype != np.uint8:
        raise InvalidRequestError(f"can only encode uint8 pixels, not {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3):
        return np.ascontiguousarray(pixels)
    raise InvalidRequestError(f"can only encode grayscale or RGB pixels, not {pixels.shape}")


def _encode_jpeg(pixels: Pixels, quality: int, icc_profile: bytes | None) -> bytes:
    import simplejpeg

    if pixels.ndim == 2:
        data = simplejpeg.encode_jpeg(pixels[:, :, np.newaxis], quality, colorspace="GRAY")
    else:
        data = simplejpeg.encode_jpeg(pixels, quality, colorspace="RGB", colorsubsampling="420")
    jpeg = bytes(data)
    return jpeg if icc_profile is None else with_icc_profile(jpeg, icc_profile)


def _encode_pil(pixels: Pixels, image_format: str, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=image_format, **options)
    return out.getvalue()


def _encode_png(pixels: Pixels, quality: int, icc_profile: bytes | None) -> bytes:
    return _encode_pil(pixels, "PNG", compress_level=PNG_COMPRESS_LEVEL, icc_profile=icc_profile)


def _encode_webp(pixels: Pixels, quality: int, icc_profile: bytes | None) -> bytes:
    return _encode_pil(pixels, "WEBP", quality=quality, icc_profile=icc_profile)


_ENCODERS: dict[str, Callable[[Pixels, int, bytes | None], bytes]] = {
    JPEG: _encode_jpeg,
    PNG: _encode_png,
    WEBP: _encode_webp,
}


def encode(
    pixels: Pixels, fmt: str, *, quality: int = 90, icc_profile: bytes | None = None
) -> bytes:
    """``pixels`` ((H, W) or (H, W, 3) uint8) as ``fmt`` ("jpeg", "png", "webp") bytes."""
    encoder = _ENCODERS.get(OUTPUT_FORMATS.get(fmt.lower(), ""))
    if encoder is None:
        raise UnsupportedError(f"cannot encode {fmt!r}; choose one of {sorted(OUTPUT_FORMATS)}")
    if not 1 <= quality <= 100:
        raise InvalidRequestError(f"quality must be 1-100, not {quality}")
    return encoder(_image_array(pixels), quality, icc_profile or None)


def resize(pixels: Pixels, width: int, height: int) -> Pixels:
    """``pixels`` resampled to ``width`` x ``height`` with a Lanczos filter."""
    if width <= 0 or height <= 0:
        raise InvalidRequestError(f"cannot resize to {width}x{height}")
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    image = Image.fromarray(_image_array(pixels))
    # A 2x reduction (the common composed-tile case) box-filters by 2 first (as pyramid
    # builders and JPEG DCT scaling do; ~10x faster than Lanczos), then Lanczos for the
    # rest; larger reductions keep more of the Lanczos (reducing_gap 3) for less aliasing.
    factor = min(pixels.shape[1] / width, pixels.shape[0] / height)
    gap = 1.0 if 2 <= factor < 3 and min(width, height) >= 64 else 3.0
    resized = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=gap)
    return np.asarray(resized)


@functools.lru_cache(maxsize=16)
def _srgb_transform(icc_profile: bytes) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    # NOCACHE: lcms2 keeps a one-pixel cache in the transform, which threads would share.
    return ImageCms.buildTransform(
        source, target, "RGB", "RGB", ImageCms.Intent.PERCEPTUAL, flags=ImageCms.Flags.NOCACHE
    )


def to_srgb(pixels: Pixels, icc_profile: bytes) -> Pixels:
    """RGB ``pixels`` converted from ``icc_profile``'s colour space to sRGB; grayscale as is."""
    image = _image_array(pixels)
    if image.ndim == 2:
        return pixels
    try:
        transform = _srgb_transform(icc_profile)
        converted = transform.apply(Image.fromarray(image))
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        raise CorruptSlideError(f"cannot apply the slide's ICC profile: {exc}") from exc
    return np.asarray(converted)
