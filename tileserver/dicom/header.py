"""Read a DICOM header up to Pixel Data and pull out what the index needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from tileserver.errors import CorruptSlideError, NotWsiError, SlideError
from tileserver.formats import PixelFormat
from tileserver.geometry import Size

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"
ROLES = ("VOLUME", "LABEL", "OVERVIEW", "THUMBNAIL")

#: Patient, study and series attributes the catalog keeps as searchable columns.
CATALOG_KEYWORDS = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "ContainerIdentifier",
    "FrameOfReferenceUID",
    "Manufacturer",
)


@dataclass(frozen=True)
class Concatenation:
    uid: str
    number: int
    total: int | None
    frame_offset: int
    source_uid: str | None


@dataclass(frozen=True)
class InstanceHeader:
    """Header facts of one VL WSI instance, free of pydicom types."""

    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    role: str | None  # None when Image Type is missing; resolved per series by size
    image_type: tuple[str, ...]
    pixel_format: PixelFormat
    total_size: Size
    number_of_frames: int
    dimension_organization: str  # TILED_FULL or TILED_SPARSE
    optical_paths: tuple[str, ...]
    focal_planes: int
    focal_plane_spacing: float
    mpp: tuple[float, float] | None
    icc_profile: bytes | None
    concatenation: Concatenation | None
    attributes: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def tile_size(self) -> Size:
        return Size(self.pixel_format.columns, self.pixel_format.rows)


def read_header(fp: BinaryIO) -> tuple[Dataset, int]:
    """Parse ``fp`` up to Pixel Data; return the dataset and Pixel Data's tag offset."""
    # Imported here, not at module level: pydicom takes longer to import than a server
    # takes to start, and only indexing (a new or changed file) reads headers.
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise SlideError("not a DICOM file (no DICM prefix after the 128-byte preamble)") from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptSlideError(f"unreadable DICOM header: {exc}") from exc
    return ds, fp.tell()


def parse_header(ds: Dataset) -> InstanceHeader:
    """Validate that ``ds`` is a VL WSI image and extract its header facts."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class != VL_WSI:
        raise NotWsiError(f"SOP class {sop_class or 'missing'} is not VL Whole Slide Microscopy")
    notes: list[str] = []
    try:
        return _build(ds, notes)
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise CorruptSlideError(f"invalid WSI header: {exc}") from exc


def _build(ds: Dataset, notes: list[str]) -> InstanceHeader:
    pixel_format = PixelFormat(
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        bits_allocated=int(ds.get("BitsAllocated", 8)),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 8))),
        pixel_representation=int(ds.get("PixelRepresentation", 0)),
        planar_configuration=int(ds.get("PlanarConfiguration", 0) or 0),
    )
    total = Size(
        int(ds.get("TotalPixelMatrixColumns", ds.Columns)),
        int(ds.get("TotalPixelMatrixRows", ds.Rows)),
    )
    return InstanceHeader(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        role=_role(ds, notes),
        image_type=tuple(str(v) for v in ds.get("ImageType", ())),
        pixel_format=pixel_format,
        total_size=total,
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        dimension_organization=_dimension_organization(ds, notes),
        optical_paths=_optical_paths(ds),
        focal_planes=int(ds.get("TotalPixelMatrixFocalPlanes", 1) or 1),
        focal_plane_spacing=_focal_plane_spacing(ds),
        mpp=_mpp(ds),
        icc_profile=_icc_profile(ds),
        concatenation=_concatenation(ds),
        attributes={k: str(ds.get(k)) for k in CATALOG_KEYWORDS if ds.get(k) not in (None, "")},
        warnings=tuple(notes),
    )


def _role(ds: Dataset, notes: list[str]) -> str | None:
    image_type = ds.get("ImageType")
    if not image_type or len(image_type) < 3:
        notes.append("Image Type missing or short; role inferred from size")
        return None
    role = str(image_type[2]).upper()
    if role not in ROLES:
        notes.append(f"Image Type value 3 {role!r} is not a known WSI role")
    return role


def _dimension_organization(ds: Dataset, notes: list[str]) -> str:
    kind = str(ds.get("DimensionOrganizationType", "") or "")
    if kind == "TILED_FULL":
        return kind
    if kind not in ("", "TILED_SPARSE"):
        notes.append(f"Dimension Organization Type {kind!r} treated as TILED_SPARSE")
    return "TILED_SPARSE"


def _optical_paths(ds: Dataset) -> tuple[str, ...]:
    paths = tuple(
        str(item.get("OpticalPathIdentifier", i))
        for i, item in enumerate(ds.get("OpticalPathSequence", []))
    )
    return paths or ("0",)


def _focal_plane_spacing(ds: Dataset) -> float:
    for keyword in ("DistanceBetweenFocalPlanes", "SpacingBetweenSlices"):
        value = _shared_attr(ds, "PixelMeasuresSequence", keyword) or ds.get(keyword)
        if value:
            return float(value) * 1000.0
    return 1.0


def _mpp(ds: Dataset) -> tuple[float, float] | None:
    spacing = _shared_attr(ds, "PixelMeasuresSequence", "PixelSpacing")
    if spacing and len(spacing) == 2 and float(spacing[0]) > 0 and float(spacing[1]) > 0:
        # PixelSpacing is (row spacing, column spacing) in mm; mpp is (x, y) in micrometres.
        return float(spacing[1]) * 1000.0, float(spacing[0]) * 1000.0
    return None


def _icc_profile(ds: Dataset) -> bytes | None:
    for item in ds.get("OpticalPathSequence", []):
        if "ICCProfile" in item:
            return bytes(item.ICCProfile)
    return bytes(ds.ICCProfile) if "ICCProfile" in ds else None


def _concatenation(ds: Dataset) -> Concatenation | None:
    uid = ds.get("ConcatenationUID")
    if not uid:
        return None
    source = ds.get("SOPInstanceUIDOfConcatenationSource")
    total = ds.get("InConcatenationTotalNumber")
    return Concatenation(
        uid=str(uid),
        number=int(ds.get("InConcatenationNumber", 1)),
        total=int(total) if total else None,
        frame_offset=int(ds.get("ConcatenationFrameOffsetNumber", 0) or 0),
        source_uid=str(source) if source else None,
    )


def _shared_attr(ds: Dataset, macro: str, keyword: str) -> Any:
    for shared in ds.get("SharedFunctionalGroupsSequence", [])[:1]:
        for item in shared.get(macro, [])[:1]:
            if keyword in item:
                return item.get(keyword)
    return None
