"""STOW-RS: validate each uploaded part, store it under the stow directory, index it.

A part is first streamed to a hidden temporary file (the scanner skips hidden entries),
then indexed with ``index_instance`` exactly as the scanner would; only a valid VL Whole
Slide Microscopy instance is moved into ``<stow>/<study>/<series>/<sop>.dcm`` and written
to the catalog, so it is searchable and servable as soon as the part is processed. A bad
part becomes a FailedSOPSequence item and never affects the others.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from tileserver.catalog import Catalog
from tileserver.dicom import index_instance
from tileserver.dicom.header import VL_WSI
from tileserver.dicomweb.dicomjson import RETRIEVE_URL, element
from tileserver.errors import NotWsiError, SlideError
from tileserver.readers.base import IndexedFile
from tileserver.readers.source import local_identity

INCOMING = ".incoming"

# Failure reasons (PS3.4 C.4.2.1.4 / PS3.18 Table 10.5.3-1).
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
STUDY_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_MAX = 64  # PS3.5 9.1; also keeps <sop>.dcm well inside any file-name limit


def valid_uid(uid: str) -> bool:
    """A UID by PS3.5 9.1: digits and dots, at most 64 characters (no trailing newline)."""
    return len(uid) <= _UID_MAX and _UID.fullmatch(uid) is not None


@dataclass(frozen=True)
class Outcome:
    """What happened to one part."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_uid: str | None = None
    series_uid: str | None = None
    failure: int | None = None
    reason: str | None = None


def incoming_path(stow_dir: Path) -> Path:
    directory = stow_dir / INCOMING
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{uuid.uuid4().hex}.part"


def failed(reason: str, code: int = CANNOT_UNDERSTAND, path: Path | None = None) -> Outcome:
    """A failure outcome, with the instance's UIDs when the part is readable DICOM."""
    sop_class, sop = _identity(path) if path is not None else (None, None)
    return Outcome(sop_class, sop, failure=code, reason=reason)


def _identity(path: Path) -> tuple[str | None, str | None]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[0x00080016, 0x00080018])
    except Exception:  # anything unreadable simply has no identity to report
        return None, None
    sop_class, sop = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
    return (str(sop_class) if sop_class else None, str(sop) if sop else None)


def store_part(
    tmp: Path, stow_dir: Path, root: str, catalog: Catalog, expected_study: str | None
) -> Outcome:
    """Index ``tmp`` and, when valid, move it into place and catalog it; ``tmp`` is consumed."""
    try:
        return _store(tmp, stow_dir, root, catalog, expected_study)
    finally:
        tmp.unlink(missing_ok=True)


def _store(
    tmp: Path, stow_dir: Path, root: str, catalog: Catalog, expected_study: str | None
) -> Outcome:
    try:
        inst = index_instance(tmp)
    except NotWsiError as exc:
        return failed(str(exc), SOP_CLASS_NOT_SUPPORTED, tmp)
    except SlideError as exc:
        return failed(str(exc), CANNOT_UNDERSTAND, tmp)
    except OSError as exc:
        return failed(f"cannot read the part: {exc}", PROCESSING_FAILURE)
    h = inst.header
    sop_class = VL_WSI
    if not all(valid_uid(u) for u in (h.study_uid, h.series_uid, h.sop_instance_uid)):
        return failed(
            "Study, Series or SOP Instance UID is not a valid UID", CANNOT_UNDERSTAND, tmp
        )
    if expected_study is not None and h.study_uid != expected_study:
        reason = f"Study Instance UID {h.study_uid} differs from {expected_study} in the URL"
        return Outcome(sop_class, h.sop_instance_uid, failure=STUDY_MISMATCH, reason=reason)
    if not _stored_elsewhere(catalog, h.sop_instance_uid, stow_dir):
        dest = stow_dir / h.study_uid / h.series_uid / f"{h.sop_instance_uid}.dcm"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            stored = dataclasses.replace(inst, path=str(dest))
            indexed = IndexedFile(h.series_uid, instance=stored)
            catalog.put_indexed(root, local_identity(str(dest)), "dicom", indexed)
        except OSError as exc:
            reason = f"cannot store the instance: {exc}"
            return Outcome(sop_class, h.sop_instance_uid, failure=PROCESSING_FAILURE, reason=reason)
    return Outcome(sop_class, h.sop_instance_uid, h.study_uid, h.series_uid)


def _stored_elsewhere(catalog: Catalog, sop: str, stow_dir: Path) -> bool:
    """The instance is already served from a file outside the stow directory."""
    rows = catalog.query("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop,))
    stow = str(stow_dir.resolve())
    return any(not str(r[0]).startswith(stow + os.sep) for r in rows)


def catalog_root(stow_dir: Path, roots: list[str]) -> str:
    """The scan root the stow directory lies under (so rescans see the same files)."""
    resolved = stow_dir.resolve()
    for root in roots:
        if "://" not in root and resolved.is_relative_to(root):
            return root
    return str(resolved)


def store_response(outcomes: list[Outcome], base: str, study: str | None) -> tuple[int, Any]:
    """(status, DICOM JSON) of the store: 200 all stored, 202 some failed, 409 none stored."""
    ok = [o for o in outcomes if o.failure is None]
    bad = [o for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    if study is not None or len({o.study_uid for o in ok}) == 1:
        body[RETRIEVE_URL] = element(RETRIEVE_URL, f"{base}/studies/{study or ok[0].study_uid}")
    if ok:
        body["00081199"] = {"vr": "SQ", "Value": [_referenced(o, base) for o in ok]}
    if bad:
        body["00081198"] = {"vr": "SQ", "Value": [_failed(o) for o in bad]}
    status = 200 if not bad else (202 if ok else 409)
    return status, body


def _referenced(o: Outcome, base: str) -> dict[str, Any]:
    url = f"{base}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_instance_uid}"
    return {
        "00081150": element("00081150", o.sop_class_uid),
        "00081155": element("00081155", o.sop_instance_uid),
        RETRIEVE_URL: element(RETRIEVE_URL, url),
    }


def _failed(o: Outcome) -> dict[str, Any]:
    item = {
        "00081150": element("00081150", o.sop_class_uid),
        "00081155": element("00081155", o.sop_instance_uid),
        "00081197": element("00081197", o.failure),
    }
    if o.reason:
        # Not in the standard item; it saves a client a trip to the server log.
        item["00090010"] = {"vr": "LO", "Value": ["tileserver"]}
        item["00091001"] = {"vr": "LT", "Value": [o.reason[:10240]]}
    return item
