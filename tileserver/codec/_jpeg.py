"""JPEG marker arithmetic: frame header fields and ICC profile segments, no decoding."""

from __future__ import annotations

from dataclasses import dataclass

from tileserver.errors import UnsupportedError

_SOI = b"\xff\xd8"
_SOS = 0xDA
_APP0 = 0xE0
#: Start-of-frame markers (every SOFn except DHT 0xC4, JPG 0xC8 and DAC 0xCC).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
#: Markers with no length field.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

_ICC_TAG = b"ICC_PROFILE\x00"
#: Payload of one APP2 segment: the 16-bit length counts itself, the tag and two index bytes.
_ICC_CHUNK = 0xFFFF - 2 - len(_ICC_TAG) - 2


@dataclass(frozen=True, slots=True)
class JpegHeader:
    width: int
    height: int
    components: int
    precision: int


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, length) of each marker segment before the first scan."""
    found: list[tuple[int, int, int]] = []
    pos = 2 if data.startswith(_SOI) else len(data)
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        found.append((marker, pos, length))
        if marker == _SOS:
            break
        pos += 2 + length
    return found


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of a JPEG codestream, or ``None`` when there is none to read."""
    for marker, pos, _length in _segments(data):
        if marker in _SOF_MARKERS and pos + 10 <= len(data):
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            if width and height:
                return JpegHeader(width, height, data[pos + 9], data[pos + 4])
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's frame header without decoding it."""
    header = jpeg_header(data)
    return None if header is None else (header.width, header.height)


def with_icc_profile(jpeg: bytes, icc_profile: bytes) -> bytes:
    """``jpeg`` with ``icc_profile`` inserted as APP2 segments after SOI and any JFIF APP0."""
    chunks = [icc_profile[i : i + _ICC_CHUNK] for i in range(0, len(icc_profile), _ICC_CHUNK)]
    if not chunks or len(chunks) > 255:
        raise UnsupportedError(f"cannot embed an ICC profile of {len(icc_profile)} bytes in JPEG")
    segments = b"".join(
        b"\xff\xe2"
        + (2 + len(_ICC_TAG) + 2 + len(chunk)).to_bytes(2, "big")
        + _ICC_TAG
        + bytes((number, len(chunks)))
        + chunk
        for number, chunk in enumerate(chunks, start=1)
    )
    at = _after_app0(jpeg)
    return jpeg[:at] + segments + jpeg[at:]


def _after_app0(jpeg: bytes) -> int:
    first = _segments(jpeg)[:1]
    if first and first[0][0] == _APP0 and first[0][1] == 2:
        return 2 + 2 + first[0][2]
    return 2
