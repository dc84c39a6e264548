"""Media types, DICOM transfer syntaxes and the encoded-tile value type."""

from __future__ import annotations

from dataclasses import dataclass

JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"
JP2 = "image/jp2"
JPHC = "image/jphc"
JLS = "image/jls"
DICOM_RLE = "image/dicom-rle"
OCTET_STREAM = "application/octet-stream"
NPY = "application/x-npy"

#: Output formats a client may ask for by name, and their media types.
OUTPUT_FORMATS: dict[str, str] = {"jpeg": JPEG, "jpg": JPEG, "png": PNG, "webp": WEBP}

#: JPEG, JPEG 2000 and JPEG-LS codestreams all end with this marker.
END_OF_IMAGE = b"\xff\xd9"


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    uid: str
    name: str
    media_type: str
    encapsulated: bool
    lossy: bool
    implicit_vr: bool = False
    #: Codestream end marker, used to split frames over fragments when no table says how.
    end_marker: bytes | None = None


_SYNTAXES = (
    TransferSyntax(
        "1.2.840.10008.1.2",
        "Implicit VR Little Endian",
        OCTET_STREAM,
        False,
        False,
        implicit_vr=True,
    ),
    TransferSyntax("1.2.840.10008.1.2.1", "Explicit VR Little Endian", OCTET_STREAM, False, False),
    TransferSyntax(
        "1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian", OCTET_STREAM, False, False
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.50", "JPEG Baseline", JPEG, True, True, end_marker=END_OF_IMAGE
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.51", "JPEG Extended", JPEG, True, True, end_marker=END_OF_IMAGE
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.57", "JPEG Lossless", JPEG, True, False, end_marker=END_OF_IMAGE
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.70", "JPEG Lossless SV1", JPEG, True, False, end_marker=END_OF_IMAGE
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", JLS, True, False, end_marker=END_OF_IMAGE
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", JLS, True, True, end_marker=END_OF_IMAGE
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless", JP2, True, False, end_marker=END_OF_IMAGE
    ),
    TransferSyntax("1.2.840.10008.1.2.4.91", "JPEG 2000", JP2, True, True, end_marker=END_OF_IMAGE),
    TransferSyntax(
        "1.2.840.10008.1.2.4.201", "HTJ2K Lossless", JPHC, True, False, end_marker=END_OF_IMAGE
    ),
    TransferSyntax(
        "1.2.840.10008.1.2.4.202", "HTJ2K Lossless RPCL", JPHC, True, False, end_marker=END_OF_IMAGE
    ),
    TransferSyntax("1.2.840.10008.1.2.4.203", "HTJ2K", JPHC, True, True, end_marker=END_OF_IMAGE),
    TransferSyntax("1.2.840.10008.1.2.5", "RLE Lossless", DICOM_RLE, True, False),
)

TRANSFER_SYNTAXES: dict[str, TransferSyntax] = {ts.uid: ts for ts in _SYNTAXES}
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def transfer_syntax(uid: str) -> TransferSyntax:
    """The known transfer syntax ``uid``; raises ``KeyError`` for an unknown one."""
    return TRANSFER_SYNTAXES[uid]


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """What a decoder needs to know about one frame besides its bytes."""

    rows: int
    columns: int
    samples_per_pixel: int = 3
    photometric: str = "RGB"
    bits_allocated: int = 8
    bits_stored: int = 8
    pixel_representation: int = 0
    planar_configuration: int = 0

    @property
    def native_frame_length(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * (self.bits_allocated // 8)


@dataclass(frozen=True, slots=True)
class EncodedTile:
    """Stored bytes of one frame, exactly as in the file, with how to read them."""

    data: bytes
    transfer_syntax: str
    pixel_format: PixelFormat

    @property
    def media_type(self) -> str:
        return transfer_syntax(self.transfer_syntax).media_type
