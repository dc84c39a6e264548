"""Write large synthetic DICOM VL WSI levels fast: a few real JPEG tiles reused for every frame.

The header comes from pydicom; the encapsulated Pixel Data is streamed by hand (item header
plus reused tile bytes), so a 100,000-frame, ~1.5 GB level takes seconds to write.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, JPEGBaseline8Bit, generate_uid

VL_WSI = UID("1.2.840.10008.5.1.4.1.1.77.1.6")
#: Bumped whenever the file layout changes, so cached files are rewritten.
FORMAT_VERSION = 1

_PIXEL_DATA_HEADER = struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF)
_ITEM = struct.Struct("<HHI")
_SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
_CHUNK_FRAMES = 2048


@dataclass(frozen=True)
class SyntheticLevel:
    """A written level: where it is and which tile every frame holds (for checking reads)."""

    path: Path
    grid: int  # tiles per side; frames are in TILED_FULL (row-major) order
    tile_size: int
    tiles: tuple[bytes, ...]
    frame_tiles: npt.NDArray[np.intp]  # frame number -> index into ``tiles``
    extended_offset_table: bool

    @property
    def frames(self) -> int:
        return self.grid * self.grid

    def expected(self, col: int, row: int) -> bytes:
        return self.tiles[int(self.frame_tiles[row * self.grid + col])]


def make_tiles(count: int, size: int, seed: int = 0) -> tuple[bytes, ...]:
    """``count`` distinct baseline JPEG tiles (4:2:2) of even length, tissue-like noise."""
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(count):
        coarse = rng.integers(90, 250, size=(size // 16, size // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
        tiles.append(_encode_even(image))
    return tuple(tiles)


def _encode_even(image: Image.Image) -> bytes:
    # DICOM items have even length; an even codestream needs no pad byte, so the bytes a
    # reader returns can be compared exactly with the tile that was written.
    for quality in range(80, 90):
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality, subsampling=1)
        if len(out.getvalue()) % 2 == 0:
            return out.getvalue()
    raise RuntimeError("no even-length JPEG encoding found")


def ensure_level(
    directory: Path, grid: int, *, extended_offset_table: bool, tile_size: int = 256
) -> SyntheticLevel:
    """The cached level in ``directory``, written first if missing (deterministic content)."""
    tiles = make_tiles(8, tile_size)
    frame_tiles = np.random.default_rng(1).integers(0, len(tiles), size=grid * grid)
    kind = "eot" if extended_offset_table else "empty-bot"
    path = directory / f"wsi-v{FORMAT_VERSION}-{grid}x{grid}-{tile_size}-{kind}.dcm"
    level = SyntheticLevel(path, grid, tile_size, tiles, frame_tiles, extended_offset_table)
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        write_level(partial, level)
        os.replace(partial, path)
    return level


def write_level(path: Path, level: SyntheticLevel) -> None:
    lengths = np.asarray([len(t) for t in level.tiles], dtype=np.uint64)[level.frame_tiles]
    ds = _header(level)
    if level.extended_offset_table:
        # Offsets count from the first frame's item tag; lengths are payload bytes.
        offsets = np.concatenate(([0], np.cumsum(lengths + np.uint64(8))[:-1]))
        ds.ExtendedOffsetTable = offsets.astype("<u8").tobytes()
        ds.ExtendedOffsetTableLengths = lengths.astype("<u8").tobytes()
    items = [_ITEM.pack(0xFFFE, 0xE000, len(t)) + t for t in level.tiles]
    with path.open("wb") as fp:
        pydicom.dcmwrite(fp, ds, enforce_file_format=True)
        fp.write(_PIXEL_DATA_HEADER)
        fp.write(_ITEM.pack(0xFFFE, 0xE000, 0))  # empty Basic Offset Table
        for start in range(0, level.frames, _CHUNK_FRAMES):
            chunk = level.frame_tiles[start : start + _CHUNK_FRAMES]
            fp.write(b"".join(items[i] for i in chunk))
        fp.write(_SEQUENCE_DELIMITER)


def _header(level: SyntheticLevel) -> Dataset:
    size = level.grid * level.tile_size
    ds = Dataset()
    ds.file_meta = _file_meta()
    ds.SOPClassUID = VL_WSI
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.update(_identity())
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.update(_pixel_module(level, size))
    ds.update(_wsi_module(size))
    return ds


def _file_meta() -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_WSI
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    return meta


def _identity() -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality = "SM"
    ds.PatientID = "BENCH"
    ds.PatientName = "Bench^Synthetic"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyID = "BENCH"
    ds.StudyDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AcquisitionDateTime = "20240101120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "tileserver bench"
    ds.ContainerIdentifier = "BENCH-1"
    ds.SpecimenDescriptionSequence = Sequence()
    return ds


def _pixel_module(level: SyntheticLevel, size: int) -> Dataset:
    ds = Dataset()
    ds.Rows = ds.Columns = level.tile_size
    ds.NumberOfFrames = level.frames
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = size
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = 10
    ds.BurnedInAnnotation = "NO"
    ds.SpecimenLabelInImage = "NO"
    return ds


def _wsi_module(size: int, mm_per_pixel: float = 0.00025) -> Dataset:
    ds = Dataset()
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.VolumetricProperties = "VOLUME"
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.ImagedVolumeWidth = ds.ImagedVolumeHeight = size * mm_per_pixel
    ds.ImagedVolumeDepth = 0.001
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20
    origin.YOffsetInSlideCoordinateSystem = 40
    ds.TotalPixelMatrixOriginSequence = Sequence([origin])
    measures = Dataset()
    measures.PixelSpacing = [mm_per_pixel, mm_per_pixel]
    measures.SliceThickness = 0.001
    measures.SpacingBetweenSlices = 0.001
    frame_type = Dataset()
    frame_type.FrameType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.WholeSlideMicroscopyImageFrameTypeSequence = Sequence([frame_type])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.OpticalPathSequence = Sequence([_optical_path()])
    return ds


def _optical_path() -> Dataset:
    illumination = Dataset()
    illumination.CodeValue = "111744"
    illumination.CodingSchemeDesignator = "DCM"
    illumination.CodeMeaning = "Brightfield illumination"
    color = Dataset()
    color.CodeValue = "414298005"
    color.CodingSchemeDesignator = "SCT"
    color.CodeMeaning = "Full Spectrum"
    path = Dataset()
    path.OpticalPathIdentifier = "0"
    path.IlluminationTypeCodeSequence = Sequence([illumination])
    path.IlluminationColorCodeSequence = Sequence([color])
    return path
