"""Sample layouts and colour spaces: native and RLE frames, YBR to RGB, 8-bit scaling."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from tileserver.errors import CorruptSlideError, UnsupportedError
from tileserver.formats import PixelFormat

Pixels = NDArray[np.uint8]
Samples = NDArray[np.generic]

#: PS3.3 C.7.6.3.1.2: full-range YCbCr (ITU-R BT.601 coefficients) to RGB.
_YBR_TO_RGB = np.array(
    [[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float32
)
_YBR_OFFSET = np.array([0.0, 128.0, 128.0], dtype=np.float32)


def native_samples(data: bytes, fmt: PixelFormat) -> Samples:
    """One uncompressed frame as (rows, columns[, samples])."""
    if fmt.bits_allocated not in (8, 16):
        raise UnsupportedError(f"{fmt.bits_allocated}-bit native pixels are not supported")
    if fmt.photometric == "YBR_FULL_422":
        return _native_ybr_422(data, fmt)
    dtype = np.dtype(_native_dtype(fmt))
    count = fmt.rows * fmt.columns * fmt.samples_per_pixel
    flat = np.frombuffer(_require(data, count * dtype.itemsize), dtype, count)
    if fmt.samples_per_pixel == 1:
        return flat.reshape(fmt.rows, fmt.columns)
    if fmt.planar_configuration == 1:
        return flat.reshape(fmt.samples_per_pixel, fmt.rows, fmt.columns).transpose(1, 2, 0)
    return flat.reshape(fmt.rows, fmt.columns, fmt.samples_per_pixel)


def _native_dtype(fmt: PixelFormat) -> str:
    if fmt.bits_allocated == 8:
        return "u1"
    return "<i2" if fmt.pixel_representation else "<u2"


def _native_ybr_422(data: bytes, fmt: PixelFormat) -> Samples:
    # Each pair of pixels is stored as Y Y Cb Cr (PS3.3 C.7.6.3.1.2).
    if fmt.bits_allocated != 8 or fmt.columns % 2:
        raise UnsupportedError("native YBR_FULL_422 needs 8-bit samples and even columns")
    count = fmt.rows * fmt.columns * 2
    quads = np.frombuffer(_require(data, count), np.uint8, count).reshape(-1, 4)
    chroma = np.repeat(quads[:, 2:], 2, axis=0)
    return np.column_stack((quads[:, :2].reshape(-1), chroma)).reshape(fmt.rows, fmt.columns, 3)


def _require(data: bytes, length: int) -> bytes:
    if len(data) < length:
        raise CorruptSlideError(f"native frame has {len(data)} bytes, expected {length}")
    return data


def rle_samples(data: bytes, fmt: PixelFormat) -> Samples:
    """One RLE Lossless frame (PS3.5 Annex G) as (rows, columns[, samples])."""
    import imagecodecs

    planes_per_sample = fmt.bits_allocated // 8
    offsets = _rle_offsets(data, fmt.samples_per_pixel * planes_per_sample)
    pixels = fmt.rows * fmt.columns
    planes = [_rle_plane(imagecodecs.packbits_decode(data[a:b]), pixels) for a, b in offsets]
    stacked = np.stack(planes).reshape(fmt.samples_per_pixel, planes_per_sample, pixels)
    # Byte planes run from most to least significant.
    values: Samples = stacked[:, 0]
    if planes_per_sample == 2:
        values = (stacked[:, 0].astype(np.uint16) << 8) | stacked[:, 1]
    image = values.reshape(fmt.samples_per_pixel, fmt.rows, fmt.columns)
    return image[0] if fmt.samples_per_pixel == 1 else image.transpose(1, 2, 0)


def _rle_offsets(data: bytes, segments: int) -> list[tuple[int, int]]:
    if segments not in (1, 2, 3, 6) or len(data) < 64:
        raise CorruptSlideError("RLE frame is too short or has an unsupported layout")
    header = np.frombuffer(data, "<u4", 16)
    if int(header[0]) != segments:
        raise CorruptSlideError(f"RLE frame has {header[0]} segments, expected {segments}")
    starts = [int(offset) for offset in header[1 : 1 + segments]]
    if starts[0] != 64 or starts != sorted(starts) or starts[-1] > len(data):
        raise CorruptSlideError("RLE segment offsets are out of order or out of range")
    return list(pairwise([*starts, len(data)]))


def _rle_plane(decoded: bytes | bytearray, pixels: int) -> NDArray[np.uint8]:
    if len(decoded) < pixels:
        raise CorruptSlideError(f"RLE segment decodes to {len(decoded)} bytes, expected {pixels}")
    return np.frombuffer(decoded, np.uint8, pixels)


def to_uint8(samples: Samples, fmt: PixelFormat) -> Pixels:
    """8-bit samples; deeper ones lose their ``bits_stored - 8`` low bits, alike on every tile."""
    if samples.dtype == np.uint8:
        return samples.astype(np.uint8, copy=False)
    values = samples.astype(np.int64)
    if samples.dtype.kind == "i":
        values += 1 << (fmt.bits_stored - 1)  # signed -> offset binary, so black stays lowest
    else:
        values &= (1 << fmt.bits_stored) - 1  # high bits may hold unrelated (overlay) data
    shift = max(fmt.bits_stored - 8, 0)
    scaled: Pixels = np.clip(values >> shift, 0, 255).astype(np.uint8)
    return scaled


def ybr_full_to_rgb(ybr: Pixels) -> Pixels:
    """Full-range YCbCr (``YBR_FULL``) pixels to RGB."""
    rgb = (ybr.astype(np.float32) - _YBR_OFFSET) @ _YBR_TO_RGB.T
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def match_samples(pixels: Pixels, samples_per_pixel: int) -> Pixels:
    """(H, W) for one sample per pixel, (H, W, 3) for three, whatever the codec returned."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2 and samples_per_pixel == 3:
        return np.repeat(pixels[:, :, np.newaxis], 3, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        return pixels[:, :, :3]
    return pixels
