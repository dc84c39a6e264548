"""How a TIFF's stored tiles become ``EncodedTile``s: JPEG tiles spliced with their
tables (no decode), JPEG 2000 codestreams as they are, and everything a browser cannot
show (deflate, LZW, PackBits, Zstandard, uncompressed) inflated to native pixels here,
for ``tileserver.codec.decode`` to read as DICOM's uncompressed frames.

Splicing: TIFF JPEG tiles may be abbreviated (their quantisation and Huffman tables are
in the JPEGTables tag, shared by every tile). A tile becomes a complete JPEG by putting
the tables between its SOI and the rest of its markers, which precede its SOS. Aperio
stores RGB-coded JPEG (PhotometricInterpretation RGB: no colour transform) with component
ids 0, 1, 2 and no JFIF or Adobe marker; every decoder, browsers included, then assumes
YCbCr and shows wrong colours. An Adobe APP14 marker with transform 0 says "RGB" to
libjpeg(-turbo), which browsers use (``tests/test_tiff_backend.py`` checks Chromium).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tileserver.errors import CorruptSlideError, UnsupportedError
from tileserver.formats import EXPLICIT_VR_LITTLE_ENDIAN, JPEG_BASELINE, EncodedTile, PixelFormat

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
#: APP14 "Adobe", version 100, no flags, transform 0: the components are RGB as stored.
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
JPEG_2000 = "1.2.840.10008.1.2.4.91"

#: Compression tag values by how their tiles are served.
JPEG_CODES = frozenset({7})
J2K_CODES = frozenset({33003, 33004, 33005, 34712})
RAW_CODES = {1: "none", 5: "LZW", 8: "deflate", 32946: "deflate", 32773: "PackBits", 50000: "zstd"}
NAMES = {6: "old-style JPEG", 7: "JPEG", 34712: "JPEG 2000", 33003: "Aperio JPEG 2000 YCbCr",
         33005: "Aperio JPEG 2000 RGB", 33004: "Aperio JPEG 2000", 34887: "LERC", 50001: "WebP",
         50002: "JPEG XL", 22610: "JPEG XR", 34892: "lossy JPEG (DNG)"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TileCoding:
    """What a directory's tiles hold, as far as serving them goes."""

    compression: int
    photometric: int  # the TIFF tag value
    samples: int
    predictor: int = 1
    jpeg_tables: bytes = b""

    @property
    def kind(self) -> str:
        """ "jpeg", "j2k" or "raw" (inflated to native pixels by ``encoded``)."""
        if self.compression in JPEG_CODES:
            return "jpeg"
        if self.compression in J2K_CODES:
            return "j2k"
        return "raw"

    @property
    def rgb_jpeg(self) -> bool:
        return self.kind == "jpeg" and self.photometric == 2 and self.samples == 3

    def jpeg_prefix(self) -> bytes | None:
        """What replaces a JPEG tile's SOI (None: the tile is served as stored)."""
        tables = self.jpeg_tables
        if tables.startswith(SOI):
            tables = tables[2:]
        if tables.endswith(EOI):
            tables = tables[:-2]
        if not tables and not self.rgb_jpeg:
            return None
        return SOI + (ADOBE_RGB if self.rgb_jpeg else b"") + tables

    def pixel_format(self, width: int, height: int) -> PixelFormat:
        samples = 1 if self.samples == 1 else 3
        if samples == 1:
            photometric = "MONOCHROME1" if self.photometric == 0 else "MONOCHROME2"
        elif self.compression == 33003 or (self.kind == "j2k" and self.photometric == 6):
            photometric = "YBR_FULL"  # Aperio's YCbCr codestreams carry no colour transform
        else:
            photometric = "RGB"
        return PixelFormat(height, width, samples, photometric)


def check_supported(coding: TileCoding, bits: int, planar: int) -> None:
    """``UnsupportedError`` saying why tiles of this coding cannot be served."""
    code = coding.compression
    if code not in JPEG_CODES | J2K_CODES and code not in RAW_CODES:
        name = NAMES.get(code, "unknown")
        raise UnsupportedError(f"compression {code} ({name}) is not supported")
    if bits != 8:
        raise UnsupportedError(f"{bits} bits per sample (only 8 are supported)")
    if planar == 2 and coding.samples > 1:
        raise UnsupportedError("separate colour planes (PlanarConfiguration 2)")
    allowed = {1: (0, 1), 3: (2, 6), 4: (2,)}.get(coding.samples, ())
    if coding.photometric not in allowed:
        raise UnsupportedError(
            f"PhotometricInterpretation {coding.photometric} with {coding.samples} samples"
        )
    if coding.samples == 4 and coding.kind != "raw":
        raise UnsupportedError(f"RGBA tiles compressed with {NAMES.get(code, code)}")
    if coding.photometric == 6 and coding.kind == "raw":
        raise UnsupportedError("uncompressed YCbCr tiles")
    if coding.predictor not in (1, 2):
        raise UnsupportedError(f"predictor {coding.predictor}")


def splice(prefix: bytes | None, data: bytes) -> bytes:
    """A stored JPEG tile made complete: ``prefix`` instead of its SOI."""
    if prefix is None:
        return data
    # One copy: a memoryview skips the SOI without slicing the tile first.
    return prefix + (memoryview(data)[2:] if data[:2] == SOI else data)


def encoded(coding: TileCoding, prefix: bytes | None, data: bytes, fmt: PixelFormat) -> EncodedTile:
    """A stored tile (or strip) as served: ``fmt`` is its full tile size."""
    kind = coding.kind
    if kind == "jpeg":
        return EncodedTile(splice(prefix, data), JPEG_BASELINE, fmt)
    if kind == "j2k":
        return EncodedTile(data, JPEG_2000, fmt)
    return EncodedTile(inflate(coding, data, fmt), EXPLICIT_VR_LITTLE_ENDIAN, fmt)


def inflate(coding: TileCoding, data: bytes, fmt: PixelFormat) -> bytes:
    """Native pixels of a deflate/LZW/... tile, alpha dropped, padded to ``fmt``'s size
    (a last strip holds fewer rows)."""
    raw = _decompress(coding.compression, data)
    row = fmt.columns * coding.samples
    rows = min(fmt.rows, len(raw) // row) if row else 0
    pixels = np.frombuffer(raw, dtype=np.uint8, count=rows * row)
    pixels = pixels.reshape(rows, fmt.columns, coding.samples)
    if coding.predictor == 2:
        pixels = np.cumsum(pixels, axis=1, dtype=np.uint8)  # horizontal differencing undone
    out = np.zeros((fmt.rows, fmt.columns, fmt.samples_per_pixel), dtype=np.uint8)
    out[:rows] = pixels[..., : fmt.samples_per_pixel]
    return out.tobytes()


def _decompress(compression: int, data: bytes) -> bytes:
    if compression == 1:
        return data
    import imagecodecs

    decoders = {
        5: imagecodecs.lzw_decode,
        8: imagecodecs.zlib_decode,
        32946: imagecodecs.zlib_decode,
        32773: imagecodecs.packbits_decode,
        50000: imagecodecs.zstd_decode,
    }
    try:
        return bytes(decoders[compression](data))
    except Exception as exc:  # codecs raise their own error types
        raise CorruptSlideError(
            f"cannot decompress a {RAW_CODES[compression]} tile: {exc}"
        ) from exc
