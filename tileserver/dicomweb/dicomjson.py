"""DICOM JSON (PS3.18 F.2) elements: tags from keywords or hex, values typed by VR."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from tileserver.errors import InvalidRequestError

#: DICOM JSON of one dataset: 8-hex-digit tag -> {"vr": ..., "Value": [...]}.
JsonDataset = dict[str, Any]

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
SOP_CLASS_UID = "00080016"
RETRIEVE_URL = "00081190"
AVAILABLE_TRANSFER_SYNTAX = "00083002"
#: (0002,0010) of the file meta, which Google's store also returns in metadata and QIDO.
FILE_TRANSFER_SYNTAX = "00020010"

_NUMBER_VRS = {"IS": int, "DS": float, "US": int, "SS": int, "UL": int, "SL": int, "UV": int}
_NUMBER_VRS.update({"SV": int, "FL": float, "FD": float})


def tag_of(name: str) -> str:
    """``name`` (keyword such as ``PatientID`` or tag such as ``00100020``) as 8 hex digits."""
    text = name.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.upper()
    tag = tag_for_keyword(text)
    if tag is None:
        raise InvalidRequestError(f"unknown DICOM attribute {name!r}")
    return f"{tag:08X}"


def keyword_of(tag: str) -> str:
    return str(keyword_for_tag(int(tag, 16)) or tag)


def vr_of(tag: str) -> str:
    try:
        return str(dictionary_VR(int(tag, 16))).split(" or ")[0]
    except KeyError:
        return "UN"


def element(tag: str, value: object | None) -> dict[str, Any]:
    """One DICOM JSON element; ``None`` or ``""`` gives an empty (present, zero-length) one."""
    vr = vr_of(tag)
    values = value if isinstance(value, list | tuple) else [value]
    values = [v for v in values if v is not None and v != ""]
    if not values:
        return {"vr": vr}
    return {"vr": vr, "Value": [_typed(vr, v) for v in values]}


def _typed(vr: str, value: object) -> object:
    if vr == "PN":
        return value if isinstance(value, dict) else {"Alphabetic": str(value)}
    convert = _NUMBER_VRS.get(vr)
    if convert is not None:
        try:
            return convert(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def absolute_bulk_uris(value: Any, instance_url: str) -> Any:
    """``value`` with each stored relative ``bulk/<tag>`` BulkDataURI, at any depth, made
    absolute under ``instance_url`` (clients fetch them as they are, e.g. EZ-WSI's ICC)."""
    if isinstance(value, dict):
        return {
            key: f"{instance_url}/{item}"
            if key == "BulkDataURI" and isinstance(item, str) and item.startswith("bulk/")
            else absolute_bulk_uris(item, instance_url)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [absolute_bulk_uris(item, instance_url) for item in value]
    return value


def first_value(dataset: JsonDataset, tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value") or [None]
    return values[0]
