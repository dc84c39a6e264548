"""How the frames of one output instance are coded, what a stored JPEG tile already is,
and the encoders that make frames of a coding from pixels.

A stored JPEG tile is kept as it is when its form matches its instance's coding: baseline,
8-bit, full tile size, the same components and colour space. The colour space is decided
as libjpeg decides it (a JFIF marker means YCbCr; else an Adobe marker's transform; else
component ids 'R', 'G', 'B' mean RGB): Aperio's RGB-coded tiles, which the TIFF backend
gives an Adobe transform-0 marker, are RGB; YCbCr tiles are YBR_FULL_422 when chroma is
subsampled (DICOM's term for JPEG 4:2:2 and 4:2:0 alike) and YBR_FULL when not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tileserver.formats import JPEG_BASELINE

Pixels = NDArray[np.uint8]

JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
_SOF_BASELINE = 0xC0
_SOF_OTHER = frozenset({0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_SOS = 0xDA
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_RGB_IDS = (0x52, 0x47, 0x42)
#: Luma sampling factors (chroma at 1x1) -> simplejpeg's subsampling name.
_SUBSAMPLING = {(1, 1): "444", (2, 1): "422", (2, 2): "420"}


@dataclass(frozen=True, slots=True)
class Coding:
    """How every frame of one output instance is encoded."""

    transfer_syntax: str
    photometric: str
    samples: int
    #: JPEG chroma subsampling of encoded frames ("444", "422", "420").
    subsampling: str = "420"

    @property
    def lossy(self) -> bool:
        return self.transfer_syntax == JPEG_BASELINE


@dataclass(frozen=True, slots=True)
class JpegForm:
    """What a stored JPEG tile is, read from its markers (no decode)."""

    width: int
    height: int
    baseline: bool
    coding: Coding | None  # None: a form no instance coding describes (kept nowhere)


def encoded_coding(samples: int, lossless: bool) -> Coding:
    """The coding of frames this converter encodes: JPEG 4:2:0 (YBR_FULL_422), or JPEG 2000
    lossless with the reversible colour transform (YBR_RCT)."""
    if lossless:
        return Coding(JPEG_2000_LOSSLESS, "YBR_RCT" if samples == 3 else "MONOCHROME2", samples)
    return Coding(JPEG_BASELINE, "YBR_FULL_422" if samples == 3 else "MONOCHROME2", samples)


def jpeg_form(data: bytes) -> JpegForm | None:
    """The form of a JPEG codestream, or None when its header cannot be read."""
    jfif, adobe, frame, baseline = False, None, None, False
    for marker, payload in _segments(data):
        if marker == 0xE0 and payload.startswith(b"JFIF\x00"):
            jfif = True
        elif marker == 0xEE and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe = payload[11]
        elif marker == _SOF_BASELINE or marker in _SOF_OTHER:
            frame, baseline = payload, marker == _SOF_BASELINE and payload[:1] == b"\x08"
    if frame is None or len(frame) < 6:
        return None
    height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
    count = frame[5]
    components = [frame[6 + 3 * i : 9 + 3 * i] for i in range(count)]
    if any(len(c) < 3 for c in components):
        return None
    return JpegForm(width, height, baseline, _coding(components, jfif, adobe))


def _coding(components: list[bytes], jfif: bool, adobe: int | None) -> Coding | None:
    if len(components) == 1:
        return Coding(JPEG_BASELINE, "MONOCHROME2", 1)
    if len(components) != 3:
        return None
    ids = tuple(c[0] for c in components)
    samplings = [(c[1] >> 4, c[1] & 15) for c in components]
    rgb = not jfif and (adobe == 0 if adobe is not None else ids == _RGB_IDS)
    if rgb:
        same = len(set(samplings)) == 1
        return Coding(JPEG_BASELINE, "RGB", 3, "444") if same else None
    subsampling = _SUBSAMPLING.get(samplings[0]) if samplings[1:] == [(1, 1)] * 2 else None
    if subsampling is None:
        return None
    photometric = "YBR_FULL" if subsampling == "444" else "YBR_FULL_422"
    return Coding(JPEG_BASELINE, photometric, 3, subsampling)


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, payload) of each segment before the first scan."""
    found: list[tuple[int, bytes]] = []
    pos = 2 if data[:2] == b"\xff\xd8" else len(data)
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF or marker in _STANDALONE:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == _SOS:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        found.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    return found


def encode(pixels: Pixels, coding: Coding, quality: int) -> bytes:
    """``pixels`` ((H, W) or (H, W, 3) uint8, as ``coding.samples`` says) as one frame."""
    if coding.transfer_syntax == JPEG_2000_LOSSLESS:
        import imagecodecs

        mct = coding.samples == 3
        return bytes(
            imagecodecs.jpeg2k_encode(pixels, level=0, codecformat="j2k", reversible=True, mct=mct)
        )
    if coding.photometric == "RGB":
        import imagecodecs

        # libjpeg with RGB in and out: no colour transform, and an Adobe transform-0 marker.
        return bytes(
            imagecodecs.jpeg8_encode(
                pixels, level=quality, colorspace="RGB", outcolorspace="RGB", subsampling="444"
            )
        )
    import simplejpeg

    if coding.samples == 1:
        return bytes(simplejpeg.encode_jpeg(pixels[:, :, np.newaxis], quality, colorspace="GRAY"))
    sub = coding.subsampling
    return bytes(simplejpeg.encode_jpeg(pixels, quality, colorspace="RGB", colorsubsampling=sub))
