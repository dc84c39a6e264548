"""DICOM WSI parsing: headers, frame offset tables and tile->frame maps (no pixel decoding)."""

from tileserver.dicom.instance import IndexedInstance, index_instance
from tileserver.dicom.series import FrameGrid, SeriesLayout, assemble

__all__ = ["FrameGrid", "IndexedInstance", "SeriesLayout", "assemble", "index_instance"]
