"""The header as DICOM JSON (PS3.18 F.2), with large binary values left as bulk data.

Bulk values become ``{"BulkDataURI": "bulk/<tag path>"}``: a path relative to the instance
that the DICOMweb front turns into an absolute URL and resolves by re-reading the header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset

BULK_THRESHOLD = 1024


def dataset_json(ds: Dataset) -> bytes:
    """orjson bytes of the header's DICOM JSON, bulk data replaced by relative URIs."""

    def bulk(element: DataElement) -> str:
        return f"bulk/{element.tag:08X}"

    value: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk
    )
    value.pop("7FE00010", None)
    return orjson.dumps(value)
