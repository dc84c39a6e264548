"""The header of one VL Whole Slide Microscopy Image instance (everything but Pixel Data).

Modules (PS3.3 A.32.8): Patient, General Study, General Series and Whole Slide Microscopy
Series, Frame of Reference, General and Enhanced General Equipment, General Image and
Whole Slide Microscopy Image (TILED_FULL, no per-frame groups), Multi-frame Functional
Groups (shared: Pixel Measures, frame type, optical path), Multi-frame Dimension,
Specimen, Optical Path, SOP Common. Values the input does not know are left empty where
the standard allows (type 2) and named as unknown where it does not.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, generate_uid
from pydicom.valuerep import DSfloat

from tileserver import __version__
from tileserver.convert.coding import Coding
from tileserver.geometry import Size

VL_WSI = UID("1.2.840.10008.5.1.4.1.1.77.1.6")
#: Patient and study attributes a DICOM input's new series keeps (it joins its study).
KEPT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "ContainerIdentifier",
)
#: An imaged depth nobody measured: the focal depth of a typical 20x scan, in mm.
NOMINAL_DEPTH_MM = 0.001
#: Written as Lossy Image Compression Ratio and replaced once the frames are written
#: (``writer.write_instance``): 16 characters, the longest a DS value may be.
RATIO_PLACEHOLDER = "9999999999999999"


@dataclass(frozen=True)
class Series:
    """What every instance of the converted series shares."""

    name: str  # the input's file name
    attributes: Mapping[str, str]  # from the input: DICOM keywords and vendor facts
    icc_profile: bytes | None
    created: datetime = field(default_factory=datetime.now)
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    frame_of_reference_uid: str = field(default_factory=generate_uid)
    dimension_uid: str = field(default_factory=generate_uid)
    specimen_uid: str = field(default_factory=generate_uid)


@dataclass(frozen=True)
class Image:
    """One instance: a pyramid level or an associated image."""

    flavor: str  # VOLUME, LABEL, OVERVIEW or THUMBNAIL
    number: int  # Instance Number
    size: Size
    tile_size: Size
    coding: Coding
    spacing_mm: tuple[float, float] | None  # (x, y) size of one pixel
    lossy: bool  # this image or its source was lossy-compressed

    @property
    def image_type(self) -> list[str]:
        derived = self.flavor == "THUMBNAIL" or (self.flavor == "VOLUME" and self.number > 1)
        first = ["DERIVED", "PRIMARY"] if derived else ["ORIGINAL", "PRIMARY"]
        return [*first, self.flavor, "RESAMPLED" if derived else "NONE"]

    @property
    def frames(self) -> int:
        return self.size.ceil_div(self.tile_size).area


def instance_dataset(series: Series, image: Image) -> Dataset:
    """The header of ``image`` as an instance of ``series``, file meta included."""
    ds = Dataset()
    ds.SOPClassUID = VL_WSI
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = image.number
    _identity(ds, series)
    _dates(ds, series.created)
    _image(ds, image)
    _functional_groups(ds, series, image)
    ds.OpticalPathSequence = [_optical_path(series, image.coding.samples)]
    ds.file_meta = _file_meta(ds, image.coding.transfer_syntax)
    return ds


def _identity(ds: Dataset, series: Series) -> None:
    kept = series.attributes
    for keyword in KEPT:
        setattr(ds, keyword, kept.get(keyword, ""))
    ds.StudyInstanceUID = kept.get("StudyInstanceUID") or series.study_uid
    ds.StudyDescription = ds.StudyDescription or series.name[:64]
    ds.Modality = "SM"
    ds.SeriesInstanceUID = series.series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"converted from {series.name}"[:64]
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.Manufacturer = kept.get("Manufacturer") or "unknown"
    ds.ManufacturerModelName = kept.get("Format") or kept.get("Manufacturer") or "unknown"
    ds.DeviceSerialNumber = "unknown"
    ds.SoftwareVersions = f"tileserver {__version__}"
    ds.ContainerIdentifier = ds.ContainerIdentifier or series.name[:64]
    ds.IssuerOfTheContainerIdentifierSequence = []
    ds.ContainerTypeCodeSequence = [_code("433466003", "SCT", "Microscope slide")]
    ds.AcquisitionContextSequence = []
    ds.SpecimenDescriptionSequence = [_specimen(ds.ContainerIdentifier, series.specimen_uid)]


def _specimen(identifier: str, uid: str) -> Dataset:
    item = Dataset()
    item.SpecimenIdentifier = identifier
    item.SpecimenUID = uid
    item.IssuerOfTheSpecimenIdentifierSequence = []
    item.SpecimenPreparationSequence = []
    return item


def _dates(ds: Dataset, when: datetime) -> None:
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.StudyDate = ds.StudyDate or ds.ContentDate
    ds.StudyTime = ds.StudyTime or ds.ContentTime


def _image(ds: Dataset, image: Image) -> None:
    coding = image.coding
    ds.ImageType = image.image_type
    ds.Rows, ds.Columns = image.tile_size.height, image.tile_size.width
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = image.size.width, image.size.height
    ds.NumberOfFrames = image.frames
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.SamplesPerPixel = coding.samples
    ds.PhotometricInterpretation = coding.photometric
    if coding.samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    _compression(ds, image.lossy)
    if image.flavor == "LABEL":  # Slide Label module: nothing read from the label
        ds.BarcodeValue = ""
        ds.LabelText = ""
    ds.BurnedInAnnotation = "YES" if image.flavor == "LABEL" else "NO"
    ds.SpecimenLabelInImage = "YES" if image.flavor in ("LABEL", "OVERVIEW") else "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.VolumetricProperties = "VOLUME"
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.TotalPixelMatrixOriginSequence = [_origin()]
    if image.spacing_mm is not None:
        x, y = image.spacing_mm
        ds.ImagedVolumeWidth = ds_value(image.size.width * x)
        ds.ImagedVolumeHeight = ds_value(image.size.height * y)
        ds.ImagedVolumeDepth = NOMINAL_DEPTH_MM


def _compression(ds: Dataset, lossy: bool) -> None:
    ds.LossyImageCompression = "01" if lossy else "00"
    if lossy:
        ds.LossyImageCompressionRatio = RATIO_PLACEHOLDER
        ds.LossyImageCompressionMethod = "ISO_10918_1"


def ds_value(number: float) -> DSfloat:
    """``number`` as a DS value of at most 16 characters."""
    return DSfloat(number, auto_format=True)


def _origin() -> Dataset:
    item = Dataset()
    item.XOffsetInSlideCoordinateSystem = 0.0
    item.YOffsetInSlideCoordinateSystem = 0.0
    return item


def _functional_groups(ds: Dataset, series: Series, image: Image) -> None:
    shared = Dataset()
    if image.spacing_mm is not None:
        measures = Dataset()
        x, y = image.spacing_mm
        measures.PixelSpacing = [ds_value(y), ds_value(x)]  # between rows, then columns
        measures.SliceThickness = NOMINAL_DEPTH_MM
        shared.PixelMeasuresSequence = [measures]
    frame_type = Dataset()
    frame_type.FrameType = image.image_type
    shared.WholeSlideMicroscopyImageFrameTypeSequence = [frame_type]
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    shared.OpticalPathIdentificationSequence = [path]
    ds.SharedFunctionalGroupsSequence = [shared]
    organization = Dataset()
    organization.DimensionOrganizationUID = series.dimension_uid
    ds.DimensionOrganizationSequence = [organization]
    ds.DimensionIndexSequence = [
        _dimension(series.dimension_uid, "ColumnPositionInTotalImagePixelMatrix"),
        _dimension(series.dimension_uid, "RowPositionInTotalImagePixelMatrix"),
    ]


def _dimension(uid: str, keyword: str) -> Dataset:
    item = Dataset()
    item.DimensionOrganizationUID = uid
    item.DimensionIndexPointer = Tag(keyword)
    item.FunctionalGroupPointer = Tag("PlanePositionSlideSequence")
    return item


def _optical_path(series: Series, samples: int) -> Dataset:
    item = Dataset()
    item.IlluminationTypeCodeSequence = [_code("111744", "DCM", "Brightfield illumination")]
    item.IlluminationColorCodeSequence = [_code("414298005", "SCT", "Full Spectrum")]
    item.OpticalPathIdentifier = "1"
    if samples == 3:
        item.ICCProfile = series.icc_profile or srgb_profile()
    power = series.attributes.get("ObjectiveLensPower") or series.attributes.get("ObjectivePower")
    if power:
        item.ObjectiveLensPower = power
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


@functools.cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile, for inputs that carry none (colour images need one)."""
    from PIL import ImageCms

    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"tileserver {__version__}"[:16]
    return meta
