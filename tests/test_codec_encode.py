"""Encoding output tiles, lossless JPEG crops, colour management and resizing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageCms
from pydicom.encaps import generate_frames

from tileserver import codec
from tileserver.codec import _turbo
from tileserver.errors import CorruptSlideError, InvalidRequestError, UnsupportedError
from tileserver.formats import EncodedTile, PixelFormat

REAL_SLIDES = Path(__file__).resolve().parents[1].parent / "shared" / "real-slides"
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def real_slide(name: str) -> pydicom.Dataset:
    path = REAL_SLIDES / name
    if not path.exists():
        pytest.skip("../shared/real-slides not present")
    return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    y, x = np.mgrid[0:40, 0:56]
    return np.dstack([x * 4, y * 6, (x + y) * 2]).astype(np.uint8)


@pytest.fixture(scope="module")
def real_jpeg_frame() -> bytes:
    ds = real_slide("gcp-converter-jpeg.dcm")
    return list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))[3]


def as_jpeg_tile(data: bytes) -> EncodedTile:
    return EncodedTile(data, "1.2.840.10008.1.2.4.50", PixelFormat(256, 256))


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "png", "webp"])
@pytest.mark.parametrize("channels", [3, 1])
def test_encoded_tile_decodes_back_with_its_icc_profile(
    rgb: np.ndarray, fmt: str, channels: int
) -> None:
    pixels = rgb if channels == 3 else rgb[:, :, 0]
    image = Image.open(io.BytesIO(codec.encode(pixels, fmt, icc_profile=SRGB)))
    assert image.info.get("icc_profile") == SRGB
    # WebP has no grayscale mode, so such tiles come back as RGB.
    decoded = np.asarray(image.convert("RGB" if channels == 3 else "L")).astype(np.int16)
    assert decoded.shape == pixels.shape
    assert np.abs(decoded - pixels).mean() < 2


def test_png_is_lossless(rgb: np.ndarray) -> None:
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(codec.encode(rgb, "png")))), rgb)


def test_large_icc_profile_spans_several_jpeg_segments(rgb: np.ndarray) -> None:
    profile = bytes(range(256)) * 600  # 153,600 bytes: three APP2 segments
    data = codec.encode(rgb, "jpeg", icc_profile=profile)
    assert Image.open(io.BytesIO(data)).info["icc_profile"] == profile


def test_encode_rejects_unknown_format_and_bad_input(rgb: np.ndarray) -> None:
    with pytest.raises(UnsupportedError):
        codec.encode(rgb, "gif")
    with pytest.raises(InvalidRequestError):
        codec.encode(rgb.astype(np.uint16), "png")
    with pytest.raises(InvalidRequestError):
        codec.encode(rgb, "jpeg", quality=0)


def test_jpeg_size_reads_the_frame_header(rgb: np.ndarray, real_jpeg_frame: bytes) -> None:
    assert codec.jpeg_size(codec.encode(rgb, "jpeg")) == (56, 40)
    assert codec.jpeg_size(real_jpeg_frame) == (256, 256)
    assert codec.jpeg_size(b"\xff\xd8\xff\xe0") is None
    assert codec.jpeg_size(b"not a jpeg") is None


@pytest.mark.parametrize(("width", "height"), [(189, 203), (255, 255), (16, 8), (100, 256), (1, 1)])
def test_crop_jpeg_keeps_the_top_left_pixels(
    real_jpeg_frame: bytes, width: int, height: int
) -> None:
    if not _turbo.crop_available():
        pytest.skip("libturbojpeg not installed")
    cropped = codec.crop_jpeg(real_jpeg_frame, width, height)
    assert cropped is not None and codec.jpeg_size(cropped) == (width, height)
    ours = codec.decode(as_jpeg_tile(cropped)).astype(np.int16)
    full = codec.decode(as_jpeg_tile(real_jpeg_frame)).astype(np.int16)[:height, :width]
    # Coefficients are copied, so all but the last row and column are exact; those two
    # lose the chroma neighbour that fancy 4:2:0 upsampling reads beyond an even edge.
    np.testing.assert_array_equal(ours[:-1, :-1], full[:-1, :-1])
    assert np.abs(ours - full).max() <= 8


def test_crop_jpeg_declines_what_it_cannot_do(real_jpeg_frame: bytes) -> None:
    assert codec.crop_jpeg(real_jpeg_frame, 300, 10) is None
    assert codec.crop_jpeg(real_jpeg_frame, 0, 10) is None
    assert codec.crop_jpeg(b"garbage", 10, 10) is None
    assert codec.crop_jpeg(real_jpeg_frame, 256, 256) == real_jpeg_frame


def test_to_srgb_from_srgb_is_almost_identity(rgb: np.ndarray) -> None:
    assert np.abs(codec.to_srgb(rgb, SRGB).astype(np.int16) - rgb).max() <= 2


def test_to_srgb_with_a_real_slide_profile() -> None:
    ds = real_slide("highdicom-sm_image.dcm")
    pixels = ds.pixel_array[0]
    converted = codec.to_srgb(pixels, ds.OpticalPathSequence[0].ICCProfile)
    assert converted.shape == pixels.shape and converted.dtype == np.uint8


def test_to_srgb_rejects_a_corrupt_profile(rgb: np.ndarray) -> None:
    with pytest.raises(CorruptSlideError):
        codec.to_srgb(rgb, b"not an icc profile")


def test_to_srgb_leaves_grayscale_alone(rgb: np.ndarray) -> None:
    gray = rgb[:, :, 0]
    assert codec.to_srgb(gray, SRGB) is gray


def test_resize_downsamples_to_the_requested_size(rgb: np.ndarray) -> None:
    small = codec.resize(rgb, 14, 10)
    assert small.shape == (10, 14, 3) and small.dtype == np.uint8
    assert abs(int(small.mean()) - int(rgb.mean())) <= 2
    assert codec.resize(rgb[:, :, 0], 7, 5).shape == (5, 7)


def test_resize_rejects_an_empty_size(rgb: np.ndarray) -> None:
    with pytest.raises(InvalidRequestError):
        codec.resize(rgb, 0, 10)


def test_public_api_is_frozen() -> None:
    assert codec.__all__ == [
        "can_decode", "crop_jpeg", "decode", "encode", "jpeg_size", "resize", "to_srgb",
    ]  # fmt: skip
