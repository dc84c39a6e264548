"""Stored DICOM frame bytes to 8-bit pixels, one decoder per transfer syntax family."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tileserver.codec import _pixels
from tileserver.codec._jpeg import jpeg_header
from tileserver.codec._pixels import Pixels, Samples
from tileserver.errors import CorruptSlideError, TileServerError, UnsupportedError
from tileserver.formats import EncodedTile, PixelFormat

_YBR = frozenset({"YBR_FULL", "YBR_FULL_422"})


@dataclass(frozen=True, slots=True)
class Decoder:
    """How to turn one transfer syntax's frame bytes into samples."""

    name: str
    decode: Callable[[bytes, PixelFormat], Samples]
    probe: Callable[[], bool]
    #: The codec itself returns RGB for YCbCr input (JPEG's colour transform).
    converts_ybr: bool = False


def _imagecodecs_has(codec: str) -> Callable[[], bool]:
    def probe() -> bool:
        import imagecodecs

        return bool(getattr(imagecodecs, codec).available)

    return probe


def _simplejpeg_importable() -> bool:
    import simplejpeg  # noqa: F401

    return True


def _as_samples(decoded: Any) -> Samples:
    samples: Samples = np.asarray(decoded)
    return samples


def _decode_jpeg(data: bytes, fmt: PixelFormat) -> Samples:
    # libjpeg-turbo decides from the APP14/JFIF markers and component ids whether the
    # scan is YCbCr, so RGB-coded frames come out unconverted.
    import simplejpeg

    header = jpeg_header(data)
    if header is not None and header.precision > 8:
        return _decode_jpeg_fallback(data)
    colorspace = "GRAY" if header is not None and header.components == 1 else "RGB"
    try:
        return _as_samples(simplejpeg.decode_jpeg(data, colorspace=colorspace))
    except ValueError:
        return _decode_jpeg_fallback(data)  # simplejpeg is strict about recoverable damage


def _decode_jpeg_fallback(data: bytes) -> Samples:
    import imagecodecs

    return _as_samples(imagecodecs.jpeg8_decode(data))


def _decode_ljpeg(data: bytes, fmt: PixelFormat) -> Samples:
    import imagecodecs

    return _as_samples(imagecodecs.ljpeg_decode(data))


def _decode_jpegls(data: bytes, fmt: PixelFormat) -> Samples:
    import imagecodecs

    return _as_samples(imagecodecs.jpegls_decode(data))


def _decode_j2k(data: bytes, fmt: PixelFormat) -> Samples:
    # OpenJPEG undoes the codestream's multiple-component transform, so YBR_ICT and
    # YBR_RCT frames come out as RGB.
    import imagecodecs

    return _as_samples(imagecodecs.jpeg2k_decode(data))


def _decode_htj2k(data: bytes, fmt: PixelFormat) -> Samples:
    import imagecodecs

    if imagecodecs.HTJ2K.available:
        return _as_samples(imagecodecs.htj2k_decode(data))
    return _as_samples(imagecodecs.jpeg2k_decode(data))


def _htj2k_probe() -> bool:
    return _imagecodecs_has("HTJ2K")() or _imagecodecs_has("JPEG2K")()


_NATIVE = Decoder("native", _pixels.native_samples, lambda: True)
_JPEG = Decoder("JPEG", _decode_jpeg, _simplejpeg_importable, converts_ybr=True)
_LJPEG = Decoder("JPEG Lossless", _decode_ljpeg, _imagecodecs_has("LJPEG"))
_JPEGLS = Decoder("JPEG-LS", _decode_jpegls, _imagecodecs_has("JPEGLS"))
_J2K = Decoder("JPEG 2000", _decode_j2k, _imagecodecs_has("JPEG2K"))
_HTJ2K = Decoder("HTJ2K", _decode_htj2k, _htj2k_probe)
_RLE = Decoder("RLE Lossless", _pixels.rle_samples, _imagecodecs_has("PACKBITS"))

#: Transfer syntax UID -> decoder. A deflated dataset's frames are native once inflated.
DECODERS: dict[str, Decoder] = {
    "1.2.840.10008.1.2": _NATIVE,
    "1.2.840.10008.1.2.1": _NATIVE,
    "1.2.840.10008.1.2.1.99": _NATIVE,
    "1.2.840.10008.1.2.4.50": _JPEG,
    "1.2.840.10008.1.2.4.51": _JPEG,
    "1.2.840.10008.1.2.4.57": _LJPEG,
    "1.2.840.10008.1.2.4.70": _LJPEG,
    "1.2.840.10008.1.2.4.80": _JPEGLS,
    "1.2.840.10008.1.2.4.81": _JPEGLS,
    "1.2.840.10008.1.2.4.90": _J2K,
    "1.2.840.10008.1.2.4.91": _J2K,
    "1.2.840.10008.1.2.4.201": _HTJ2K,
    "1.2.840.10008.1.2.4.202": _HTJ2K,
    "1.2.840.10008.1.2.4.203": _HTJ2K,
    "1.2.840.10008.1.2.5": _RLE,
}


@functools.cache
def _available(decoder: Decoder) -> bool:
    try:
        return decoder.probe()
    except (ImportError, AttributeError):
        return False


def can_decode(transfer_syntax: str) -> bool:
    """Whether frames in ``transfer_syntax`` can be decoded with the installed packages."""
    decoder = DECODERS.get(transfer_syntax)
    return decoder is not None and _available(decoder)


def _decoder_for(transfer_syntax: str) -> Decoder:
    decoder = DECODERS.get(transfer_syntax)
    if decoder is None:
        raise UnsupportedError(f"no decoder for transfer syntax {transfer_syntax}")
    if not _available(decoder):
        raise UnsupportedError(f"the {decoder.name} decoder is not installed")
    return decoder


def decode(tile: EncodedTile) -> Pixels:
    """A stored frame as uint8 pixels: (H, W, 3) RGB, or (H, W) for monochrome.

    The size is what the codestream holds, which may be smaller than rows x columns.
    """
    decoder = _decoder_for(tile.transfer_syntax)
    try:
        samples = decoder.decode(tile.data, tile.pixel_format)
    except TileServerError:
        raise
    except Exception as exc:  # codecs raise anything from ValueError to their own types
        raise CorruptSlideError(f"cannot decode {decoder.name} frame: {exc}") from exc
    return _finish(samples, tile.pixel_format, decoder)


def _finish(samples: Samples, fmt: PixelFormat, decoder: Decoder) -> Pixels:
    pixels = _pixels.match_samples(_pixels.to_uint8(samples, fmt), fmt.samples_per_pixel)
    if fmt.photometric in _YBR and not decoder.converts_ybr and pixels.ndim == 3:
        return _pixels.ybr_full_to_rgb(pixels)
    if fmt.photometric == "MONOCHROME1":
        return np.subtract(255, pixels, dtype=np.uint8)
    return pixels
