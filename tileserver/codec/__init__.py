"""Pixels <-> bytes: DICOM frame decoding, output encoding, lossless JPEG crop. No I/O."""

from __future__ import annotations

from tileserver.codec._jpeg import jpeg_size
from tileserver.codec._turbo import crop_jpeg
from tileserver.codec.decode import can_decode, decode
from tileserver.codec.encode import encode, resize, to_srgb

__all__ = ["can_decode", "crop_jpeg", "decode", "encode", "jpeg_size", "resize", "to_srgb"]
