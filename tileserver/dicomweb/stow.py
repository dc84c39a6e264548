"""STOW-RS: validate each uploaded part, store it under the stow directory, index it.

A part is first streamed to a hidden temporary file (the scanner skips hidden entries),
then indexed with ``index_instance`` exactly as the scanner would; only a valid VL Whole
Slide Microscopy instance is moved into ``<stow>/<study>/<series>/<sop>.dcm`` and written
to the catalog, so it is searchable and servable as soon as the part is processed. A bad
part becomes a FailedSOPSequence item and never affects the others.

What is served must not change behind a slide's back: an instance whose SOP Instance UID
is stored with other bytes is refused (Duplicate SOP Instance) unless overwriting is on,
and never replaces a file outside the stow directory; an instance that would join a series
whose files lie outside the stow directory is refused (Not Authorized).
"""

from __future__ import annotations

import dataclasses
import errno
import filecmp
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom

from tileserver.catalog import Catalog
from tileserver.dicom import IndexedInstance, index_instance
from tileserver.dicom.header import VL_WSI
from tileserver.dicomweb.dicomjson import RETRIEVE_URL, element
from tileserver.errors import NotWsiError, SlideError
from tileserver.readers.base import IndexedFile
from tileserver.readers.source import local_identity

INCOMING = ".incoming"

# Failure reasons (PS3.4 C.4.2.1.4 / PS3.18 Table 10.5.3-1).
PROCESSING_FAILURE = 0x0110
DUPLICATE = 0x0111
NOT_AUTHORIZED = 0x0124
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
    tmp: Path,
    stow_dir: Path,
    root: str,
    catalog: Catalog,
    expected_study: str | None,
    overwrite: bool = False,
) -> Outcome:
    """Index ``tmp`` and, when valid, move it into place and catalog it; ``tmp`` is consumed.

    Refused: an instance whose SOP Instance UID is stored with other content (unless
    ``overwrite``, and never over a file outside ``stow_dir``), and one that would join a
    series whose files lie outside ``stow_dir`` (it would change a slide served from there)."""
    try:
        return _store(tmp, _Target(stow_dir.resolve(), root, catalog, overwrite), expected_study)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Target:
    stow_dir: Path
    root: str
    catalog: Catalog
    overwrite: bool

    def inside(self, path: str) -> bool:
        return "://" not in path and Path(path).is_relative_to(self.stow_dir)


def _store(tmp: Path, target: _Target, expected_study: str | None) -> Outcome:
    try:
        inst = index_instance(tmp)
    except NotWsiError as exc:
        return failed(str(exc), SOP_CLASS_NOT_SUPPORTED, tmp)
    except SlideError as exc:
        return failed(str(exc), CANNOT_UNDERSTAND, tmp)
    except OSError as exc:
        return failed(f"cannot read the part: {exc}", PROCESSING_FAILURE)
    h = inst.header
    if not all(valid_uid(u) for u in (h.study_uid, h.series_uid, h.sop_instance_uid)):
        return failed(
            "Study, Series or SOP Instance UID is not a valid UID", CANNOT_UNDERSTAND, tmp
        )
    if expected_study is not None and h.study_uid != expected_study:
        reason = f"Study Instance UID {h.study_uid} differs from {expected_study} in the URL"
        return Outcome(VL_WSI, h.sop_instance_uid, failure=STUDY_MISMATCH, reason=reason)
    refusal = _conflict(tmp, inst, target)
    if refusal is not None:
        code, reason = refusal
        return Outcome(VL_WSI, h.sop_instance_uid, failure=code, reason=reason)
    try:
        _put(tmp, inst, target)
    except OSError as exc:
        reason = f"cannot store the instance: {exc}"
        return Outcome(VL_WSI, h.sop_instance_uid, failure=PROCESSING_FAILURE, reason=reason)
    return Outcome(VL_WSI, h.sop_instance_uid, h.study_uid, h.series_uid)


def _conflict(tmp: Path, inst: IndexedInstance, target: _Target) -> tuple[int, str] | None:
    """(failure code, reason) when storing ``inst`` would alter what is already served."""
    h = inst.header
    known = _paths(target.catalog, h.sop_instance_uid)
    for path in known:
        if _same_bytes(tmp, path):
            continue
        if not target.inside(path):
            why = "it is served from outside the STOW directory"
        elif not target.overwrite:
            why = "--stow-overwrite is off"
        else:
            continue
        return DUPLICATE, f"SOP Instance {h.sop_instance_uid} exists with other content; {why}"
    if any(not target.inside(p) for p in known):
        return None  # these very bytes are served already: nothing will be stored
    for path, study, sop in _series_members(target.catalog, h.series_uid):
        if sop == h.sop_instance_uid:
            continue  # this very instance: checked above
        if not target.inside(path):
            reason = f"Series {h.series_uid} is a slide served from outside the STOW directory"
            return NOT_AUTHORIZED, f"{reason}; a stored instance cannot join it"
        if study != h.study_uid:
            reason = f"Series {h.series_uid} belongs to Study {study}, not {h.study_uid}"
            return STUDY_MISMATCH, reason
    return None


def _put(tmp: Path, inst: IndexedInstance, target: _Target) -> None:
    """Move ``tmp`` to its place and catalog it; a same-content copy already there stays."""
    h = inst.header
    dest = target.stow_dir / h.study_uid / h.series_uid / f"{h.sop_instance_uid}.dcm"
    known = _paths(target.catalog, h.sop_instance_uid)
    if any(not target.inside(p) for p in known):
        return  # the same bytes are served from a slide directory (checked by _conflict)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not _place(tmp, dest, target.overwrite) and str(dest) in known:
        return  # the very same file, already stored and catalogued
    stale = [p for p in known if p != str(dest)]  # overwritten under another study or series
    for path in stale:
        Path(path).unlink(missing_ok=True)
    if stale:
        target.catalog.remove(stale)
    indexed = IndexedFile(h.series_uid, instance=dataclasses.replace(inst, path=str(dest)))
    target.catalog.put_indexed(target.root, local_identity(str(dest)), "dicom", indexed)


def _place(tmp: Path, dest: Path, overwrite: bool) -> bool:
    """Put ``tmp`` at ``dest``; False when ``dest`` already holds the same bytes. Without
    ``overwrite`` the link is atomic, so two uploads of one instance race safely."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        if _same_bytes(tmp, str(dest)):
            return False
        if not overwrite:
            raise FileExistsError(errno.EEXIST, "stored meanwhile with other content") from None
        os.replace(tmp, dest)
    return True


def _same_bytes(tmp: Path, path: str) -> bool:
    try:
        return "://" not in path and filecmp.cmp(tmp, path, shallow=False)
    except OSError:
        return False


def _paths(catalog: Catalog, sop: str) -> list[str]:
    rows = catalog.query("SELECT path FROM instances WHERE sop_instance_uid = ?", (sop,))
    return [str(r[0]) for r in rows]


def _series_members(catalog: Catalog, series: str) -> list[tuple[str, str, str]]:
    """(path, study, SOP Instance UID) of each instance of ``series``."""
    sql = "SELECT path, study_uid, sop_instance_uid FROM instances WHERE series_uid = ?"
    return [(str(r[0]), str(r[1]), str(r[2])) for r in catalog.query(sql, (series,))]


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
