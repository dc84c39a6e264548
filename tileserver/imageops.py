"""Pixel operations of the IIIF image pipeline: mirror, rotate, recolour (pure, numpy/PIL)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Pixels = npt.NDArray[np.uint8]
_RIGHT_ANGLES = {90.0: -1, 180.0: 2, 270.0: 1}  # np.rot90 turns counter-clockwise


def mirror(pixels: Pixels) -> Pixels:
    return np.ascontiguousarray(pixels[:, ::-1])


def rotate(pixels: Pixels, degrees: float, background: int = 255) -> Pixels:
    """Rotate clockwise; right angles are exact, other angles expand onto ``background``."""
    if degrees % 360 == 0:
        return pixels
    if degrees in _RIGHT_ANGLES:
        return np.ascontiguousarray(np.rot90(pixels, _RIGHT_ANGLES[degrees]))
    from PIL import Image  # only for odd angles: Pillow is slow to import

    image = Image.fromarray(pixels)
    fill: int | tuple[int, ...] = background if pixels.ndim == 2 else (background,) * 3
    turned = image.rotate(-degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)
    return np.asarray(turned, dtype=np.uint8)


def gray(pixels: Pixels) -> Pixels:
    """ITU-R BT.601 luma."""
    if pixels.ndim == 2:
        return pixels
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    luma: npt.NDArray[np.float32] = pixels[..., :3].astype(np.float32) @ weights
    out: Pixels = np.clip(luma + 0.5, 0, 255).astype(np.uint8)
    return out


def bitonal(pixels: Pixels, threshold: int = 128) -> Pixels:
    return np.where(gray(pixels) >= threshold, 255, 0).astype(np.uint8)


def recolour(pixels: Pixels, quality: str) -> Pixels:
    if quality == "gray":
        return gray(pixels)
    if quality == "bitonal":
        return bitonal(pixels)
    return pixels
