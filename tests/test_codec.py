"""Decoding stored DICOM frames: real slides against pydicom, generated frames round-trip."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels import convert_color_space
from pydicom.uid import RLELossless

from tileserver import codec
from tileserver.errors import CorruptSlideError, UnsupportedError
from tileserver.formats import EncodedTile, PixelFormat

REAL_SLIDES = Path(__file__).resolve().parents[1].parent / "shared" / "real-slides"

RGB = PixelFormat(rows=32, columns=48)
GRAY16 = PixelFormat(32, 48, samples_per_pixel=1, photometric="MONOCHROME2", bits_allocated=16,
                     bits_stored=12)  # fmt: skip


def real_slide(name: str) -> pydicom.Dataset:
    path = REAL_SLIDES / name
    if not path.exists():
        pytest.skip("../shared/real-slides not present")
    return pydicom.dcmread(path)


def pixel_format(ds: pydicom.Dataset) -> PixelFormat:
    return PixelFormat(
        rows=ds.Rows,
        columns=ds.Columns,
        samples_per_pixel=ds.SamplesPerPixel,
        photometric=ds.PhotometricInterpretation,
        bits_allocated=ds.BitsAllocated,
        bits_stored=ds.BitsStored,
        pixel_representation=ds.PixelRepresentation,
        planar_configuration=ds.get("PlanarConfiguration", 0),
    )


def stored_frames(ds: pydicom.Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1))
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    length = pixel_format(ds).native_frame_length
    return [ds.PixelData[i * length : (i + 1) * length] for i in range(count)]


def decode_all(ds: pydicom.Dataset) -> np.ndarray:
    fmt, uid = pixel_format(ds), str(ds.file_meta.TransferSyntaxUID)
    return np.stack([codec.decode(EncodedTile(f, uid, fmt)) for f in stored_frames(ds)])


def frames_array(ds: pydicom.Dataset) -> np.ndarray:
    array = ds.pixel_array
    return array if int(ds.get("NumberOfFrames", 1)) > 1 else array[np.newaxis]


def tile(data: bytes, uid: str, fmt: PixelFormat = RGB) -> EncodedTile:
    return EncodedTile(data, uid, fmt)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A smooth gradient with some noise, so lossy codecs stay close to it."""
    y, x = np.mgrid[0:32, 0:48]
    noise = np.random.default_rng(7).integers(0, 8, (32, 48, 3))
    return np.dstack([x * 5, y * 7, (x + y) * 3]).astype(np.uint8) + noise.astype(np.uint8)


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("gcp-converter-raw.dcm", 0),
        ("gcp-converter-jpeg2000.dcm", 0),
        ("gcp-converter-jpeg.dcm", 1.5),
        ("camelyon-resampled-level.dcm", 1.5),
        ("ezwsi-label.dcm", 1.5),
        ("highdicom-sm_image.dcm", 0),
    ],
)
def test_real_slide_frames_match_pydicom(name: str, tolerance: float) -> None:
    ds = real_slide(name)
    ours, theirs = decode_all(ds).astype(np.int16), frames_array(ds).astype(np.int16)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).mean() <= tolerance


@pytest.mark.parametrize(
    "name", ["highdicom-sm_image_jpegls.dcm", "highdicom-sm_image_jpegls_nobot.dcm"]
)
def test_real_jpegls_frames_match_the_uncompressed_copy(name: str) -> None:
    # pydicom has no JPEG-LS plugin here; highdicom wrote the same image uncompressed.
    ds, raw = real_slide(name), real_slide("highdicom-sm_image.dcm")
    np.testing.assert_array_equal(decode_all(ds), raw.pixel_array)


def test_real_16_bit_grayscale_drops_the_low_bits() -> None:
    ds = real_slide("highdicom-sm_image_grayscale.dcm")
    ours = decode_all(ds)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, frames_array(ds) >> (ds.BitsStored - 8))


def test_real_rle_frames_match_pydicom() -> None:
    ds = real_slide("highdicom-sm_image.dcm")
    expected = ds.pixel_array
    ds.compress(RLELossless)  # pydicom's own RLE encoder, independent of ours
    np.testing.assert_array_equal(decode_all(ds), expected)


def test_real_16_bit_rle_frames_match_pydicom() -> None:
    ds = real_slide("highdicom-sm_image_grayscale.dcm")
    expected = ds.pixel_array >> 8
    ds.compress(RLELossless)
    np.testing.assert_array_equal(decode_all(ds), expected)


def test_native_planar_configuration_1(rgb: np.ndarray) -> None:
    planar = rgb.transpose(2, 0, 1).tobytes()
    fmt = PixelFormat(32, 48, planar_configuration=1)
    np.testing.assert_array_equal(codec.decode(tile(planar, "1.2.840.10008.1.2", fmt)), rgb)


def test_native_ybr_full_becomes_rgb(rgb: np.ndarray) -> None:
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    fmt = PixelFormat(32, 48, photometric="YBR_FULL")
    ours = codec.decode(tile(ybr.tobytes(), "1.2.840.10008.1.2.1", fmt)).astype(np.int16)
    assert np.abs(ours - convert_color_space(ybr, "YBR_FULL", "RGB")).max() <= 1


def test_native_ybr_full_422_is_upsampled() -> None:
    quads = np.array([[10, 20, 128, 128], [30, 40, 128, 128]], np.uint8)  # Y Y Cb Cr
    fmt = PixelFormat(1, 4, photometric="YBR_FULL_422")
    pixels = codec.decode(tile(quads.tobytes(), "1.2.840.10008.1.2.1", fmt))
    np.testing.assert_array_equal(pixels[0, :, 0], [10, 20, 30, 40])
    np.testing.assert_array_equal(pixels[0, :, 0], pixels[0, :, 2])


@pytest.mark.parametrize(
    ("photometric", "expected"), [("MONOCHROME2", 0x12), ("MONOCHROME1", 0xED)]
)
def test_native_16_bit_grayscale(photometric: str, expected: int) -> None:
    fmt = PixelFormat(1, 2, samples_per_pixel=1, photometric=photometric, bits_allocated=16,
                      bits_stored=12)  # fmt: skip
    data = np.array([0x123, 0xF123], "<u2").tobytes()  # high nibble of the second is not stored
    np.testing.assert_array_equal(
        codec.decode(tile(data, "1.2.840.10008.1.2.1", fmt)), [[expected] * 2]
    )


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"])
@pytest.mark.parametrize("mct", [True, False])
def test_jpeg2000_lossless_round_trip(rgb: np.ndarray, uid: str, mct: bool) -> None:
    data = imagecodecs.jpeg2k_encode(rgb, level=0, codecformat="J2K", reversible=True, mct=mct)
    fmt = PixelFormat(32, 48, photometric="YBR_RCT" if mct else "RGB")
    np.testing.assert_array_equal(codec.decode(tile(data, uid, fmt)), rgb)


def test_jpeg2000_ict_is_rgb(rgb: np.ndarray) -> None:
    data = imagecodecs.jpeg2k_encode(rgb, level=80, codecformat="J2K", reversible=False)
    pixels = codec.decode(
        tile(data, "1.2.840.10008.1.2.4.91", PixelFormat(32, 48, photometric="YBR_ICT"))
    )
    assert np.abs(pixels.astype(np.int16) - rgb).mean() < 1.5


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"])
def test_htj2k_round_trip(rgb: np.ndarray, uid: str) -> None:
    data = imagecodecs.htj2k_encode(rgb, level=0, reversible=True)
    np.testing.assert_array_equal(codec.decode(tile(data, uid)), rgb)


def test_jpegls_16_bit_round_trip() -> None:
    gray = np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) % 4096
    data = imagecodecs.jpegls_encode(gray)
    pixels = codec.decode(tile(data, "1.2.840.10008.1.2.4.80", GRAY16))
    np.testing.assert_array_equal(pixels, gray >> 4)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"])
def test_jpeg_lossless_round_trip(rgb: np.ndarray, uid: str) -> None:
    data = imagecodecs.jpeg8_encode(rgb, lossless=True, colorspace="RGB", outcolorspace="RGB")
    np.testing.assert_array_equal(codec.decode(tile(data, uid)), rgb)


def test_jpeg_lossless_12_bit_round_trip() -> None:
    gray = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 3) % 4096
    data = imagecodecs.ljpeg_encode(gray, bitspersample=12)
    pixels = codec.decode(tile(data, "1.2.840.10008.1.2.4.70", GRAY16))
    np.testing.assert_array_equal(pixels, gray >> 4)


def test_rgb_coded_jpeg_is_not_colour_converted(rgb: np.ndarray) -> None:
    # libjpeg writes an Adobe APP14 marker with transform 0 and component ids R, G, B.
    data = imagecodecs.jpeg8_encode(rgb, level=95, colorspace="RGB", outcolorspace="RGB")
    assert b"Adobe" in data
    pixels = codec.decode(tile(data, "1.2.840.10008.1.2.4.50"))
    assert np.abs(pixels.astype(np.int16) - rgb).mean() < 1.5


def test_jpeg_edge_frame_smaller_than_rows_and_columns(rgb: np.ndarray) -> None:
    data = codec.encode(rgb[:20, :30], "jpeg")
    assert codec.decode(tile(data, "1.2.840.10008.1.2.4.50")).shape == (20, 30, 3)


def test_grayscale_jpeg_for_a_colour_pixel_format_is_rgb(rgb: np.ndarray) -> None:
    data = codec.encode(rgb[:, :, 1], "jpeg")
    assert codec.decode(tile(data, "1.2.840.10008.1.2.4.50")).shape == (32, 48, 3)


def rle_segment(plane: bytes) -> bytes:
    """PackBits as PS3.5 G.3.1: runs of 3+ as replicate runs, the rest as literal runs."""
    out, i = bytearray(), 0
    while i < len(plane):
        run = 1
        while i + run < len(plane) and run < 128 and plane[i + run] == plane[i]:
            run += 1
        if run >= 3:
            out += bytes((257 - run, plane[i]))
        else:
            out += bytes((run - 1,)) + plane[i : i + run]
        i += run
    return bytes(out + b"\x00" * (len(out) % 2))


def rle_frame(planes: list[bytes]) -> bytes:
    segments = [rle_segment(p) for p in planes]
    offsets = np.cumsum([64] + [len(s) for s in segments[:-1]])
    header = np.zeros(16, "<u4")
    header[0], header[1 : 1 + len(segments)] = len(segments), offsets
    return header.tobytes() + b"".join(segments)


def test_rle_round_trip(rgb: np.ndarray) -> None:
    data = rle_frame([rgb[:, :, s].tobytes() for s in range(3)])
    np.testing.assert_array_equal(codec.decode(tile(data, "1.2.840.10008.1.2.5")), rgb)


def test_rle_16_bit_round_trip() -> None:
    gray = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 7) % 4096
    data = rle_frame(
        [(gray >> 8).astype(np.uint8).tobytes(), (gray & 255).astype(np.uint8).tobytes()]
    )
    np.testing.assert_array_equal(
        codec.decode(tile(data, "1.2.840.10008.1.2.5", GRAY16)), gray >> 4
    )


@pytest.mark.parametrize(
    "uid",
    [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.5",
    ],
)
@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff\xdbnot really", bytes(range(256)) * 4])
def test_garbage_raises_corrupt_slide_error(uid: str, data: bytes) -> None:
    with pytest.raises(CorruptSlideError):
        codec.decode(tile(data, uid))


def test_unknown_transfer_syntax_is_unsupported() -> None:
    assert not codec.can_decode("1.2.840.10008.1.2.4.100")
    with pytest.raises(UnsupportedError):
        codec.decode(tile(b"", "1.2.840.10008.1.2.4.100"))


def test_every_known_transfer_syntax_can_be_decoded() -> None:
    from tileserver.formats import TRANSFER_SYNTAXES

    assert [uid for uid in TRANSFER_SYNTAXES if not codec.can_decode(uid)] == []
