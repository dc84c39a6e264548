"""The OpenSlide format backend: any local file OpenSlide opens is a slide.

SVS, NDPI, MRXS, SCN, BIF, VMS/VMU, Philips TIFF, generic tiled TIFF, and DICOM the DICOM
backend refuses. It is probed last: the TIFF passthrough serves the stored tiles of what it
can index, OpenSlide the rest (``readers/registry.py`` tries the next accepting backend
when one refuses a file).

Slide ids are ``VENDOR-DIGEST``, URL-safe and independent of the served root: the digest is
OpenSlide's quickhash of the image data for a one-file slide (moving or renaming it keeps
the id), and a hash of the main file's path for a multi-file slide (MRXS, VMS), whose
parts are indexed one by one and must all name the same slide (``openslide_parts.py``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tileserver.errors import CorruptSlideError, SlideError
from tileserver.geometry import Size
from tileserver.readers.base import IndexedFile, OpenedSlide, StoredFile
from tileserver.readers.openslide_parts import is_multi_file, main_of, parts_of
from tileserver.readers.openslide_pool import pool
from tileserver.readers.openslide_reader import (
    OpenSlideLevel,
    OpenSlideReader,
    SlideRecord,
    parse_record,
    part_record,
)
from tileserver.readers.source import ByteSource, SourceIdentity, local_identity, scheme_of

#: Tile edge used when a level's stored tiles are not a usable size (strips, 8-line
#: restart intervals, untiled images).
DEFAULT_TILE = 512
#: Native tile edges served as they are: reading along stored tiles decodes each once.
NATIVE_TILE_RANGE = (128, 1024)
#: OpenSlide's associated image names -> served names (DICOM's roles).
ASSOCIATED_NAMES = {"macro": "overview"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Suffixes of slide files: accepted even when OpenSlide does not recognise them, so a
#: damaged scan gets OpenSlide's reason instead of "not a slide".
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".czi")


class OpenSlideUnsupportedError(SlideError):
    """A file OpenSlide recognises but cannot open (an unsupported variant)."""


class OpenSlideBackend:
    name = "openslide"
    reject_reason = "not a format OpenSlide opens"

    def accepts(self, head: bytes, uri: str) -> bool:
        """OpenSlide's own format detection; OpenSlide reads local paths only. A file of
        a multi-file slide (an MRXS folder, a VMS image) is accepted as its part."""
        if scheme_of(uri) != "":
            return False
        if main_of(uri) is not None or uri.lower().endswith(SLIDE_SUFFIXES):
            return True
        import openslide

        try:
            return openslide.OpenSlide.detect_format(uri) is not None
        except Exception:  # detection of a file OpenSlide cannot even read
            return False

    def index(self, source: ByteSource) -> IndexedFile:
        uri = source.identity.uri
        if scheme_of(uri) != "":
            raise OpenSlideUnsupportedError("OpenSlide reads local files only")
        main = main_of(uri)
        if main is None:
            record, slide_id = inspect(uri)
            return IndexedFile(slide_id, record=record.encode())
        try:
            _, slide_id = inspect(main)
        except SlideError as exc:
            reason = f"part of the slide {main}, which cannot be served: {exc}"
            raise CorruptSlideError(reason) from exc
        return IndexedFile(slide_id, record=part_record(main))

    def open(self, files: Sequence[StoredFile], on_changed: Callable[[str], None]) -> OpenedSlide:
        records = [(f, parse_record(f.record)) for f in files]
        mains = [(f, r) for f, r in records if r["role"] == "slide"]
        if not mains:
            named = ", ".join(sorted({str(r.get("main")) for _, r in records}))
            raise CorruptSlideError(f"main file missing or unreadable: {named}")
        main, data = mains[0]
        record = SlideRecord.decode(data)
        warnings = [
            f"{Path(f.identity.uri).name}: the same image as {Path(main.identity.uri).name}, "
            "served once"
            for f, _ in mains[1:]
        ]
        # Parts as the catalog has them now (re-indexed when rewritten), else as recorded.
        sources = {p.uri: p for p in record.parts}
        for f, r in records:
            if r.get("main") == main.identity.uri:
                sources[f.identity.uri] = f.identity
        files_checked = (main.identity, *sorted(sources.values()))
        reader = OpenSlideReader(main.identity, record, files_checked, pool(), on_changed)
        return OpenedSlide(reader, dict(record.attributes), warnings, main.identity.uri)


_inspected: OrderedDict[SourceIdentity, tuple[SlideRecord, str] | SlideError] = OrderedDict()
_inspected_lock = threading.Lock()


def inspect(path: str) -> tuple[SlideRecord, str]:
    """The record and slide id of the slide whose main file is ``path`` (remembered per
    file identity: every part of a multi-file slide asks for its main file's)."""
    identity = local_identity(path)
    with _inspected_lock:
        found = _inspected.get(identity)
    if found is None:
        try:
            found = _inspect(path)
        except SlideError as exc:
            found = exc
        with _inspected_lock:
            _inspected[identity] = found
            while len(_inspected) > 64:
                _inspected.popitem(last=False)
    if isinstance(found, SlideError):
        raise found
    return found


def _inspect(path: str) -> tuple[SlideRecord, str]:
    import openslide

    try:
        handle = openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        if path.lower().endswith(SLIDE_SUFFIXES):
            raise CorruptSlideError(
                f"OpenSlide does not recognise this {Path(path).suffix} file "
                "(truncated or damaged, or a variant it does not read)"
            ) from exc
        raise OpenSlideUnsupportedError("not a format OpenSlide opens") from exc
    except (openslide.OpenSlideError, OSError) as exc:
        raise CorruptSlideError(f"OpenSlide cannot open it: {exc}") from exc
    try:
        record = _record(handle, path)
        _probe(handle)
        return record, _slide_id(path, record, handle.properties)
    except (openslide.OpenSlideError, OSError) as exc:
        raise CorruptSlideError(f"OpenSlide cannot read it: {exc}") from exc
    finally:
        handle.close()


def _record(handle: Any, path: str) -> SlideRecord:
    props = handle.properties
    vendor = props.get("openslide.vendor") or "openslide"
    levels = tuple(
        OpenSlideLevel(Size(w, h), _tile_size(props, index), float(ds))
        for index, ((w, h), ds) in enumerate(
            zip(handle.level_dimensions, handle.level_downsamples, strict=True)
        )
    )
    associated = {
        _served_name(name): (
            int(props[f"openslide.associated.{name}.width"]),
            int(props[f"openslide.associated.{name}.height"]),
            name,
        )
        for name in handle.associated_images
    }
    profile = handle.color_profile
    return SlideRecord(
        vendor=vendor,
        levels=levels,
        associated=associated,
        mpp=_mpp(props),
        background=_background(props.get("openslide.background-color")),
        attributes=_attributes(vendor, props),
        parts=tuple(local_identity(p) for p in parts_of(path)),
        icc_profile=profile.tobytes() if profile is not None else None,
    )


def _probe(handle: Any) -> None:
    """Decode a pixel of the last tile of level 0 and of the smallest level, so a
    truncated file is reported when indexed, not when a viewer reaches its end."""
    width, height = handle.level_dimensions[0]
    handle.read_region((width - 1, height - 1), 0, (1, 1))
    handle.read_region((0, 0), handle.level_count - 1, (1, 1))


def _tile_size(props: Any, level: int) -> Size:
    try:
        width = int(props[f"openslide.level[{level}].tile-width"])
        height = int(props[f"openslide.level[{level}].tile-height"])
    except (KeyError, ValueError):
        return Size(DEFAULT_TILE, DEFAULT_TILE)
    low, high = NATIVE_TILE_RANGE
    if low <= width <= high and low <= height <= high:
        return Size(width, height)
    return Size(DEFAULT_TILE, DEFAULT_TILE)


def _served_name(name: str) -> str:
    return ASSOCIATED_NAMES.get(name, _UNSAFE.sub("-", name))


def _mpp(props: Any) -> tuple[float, float] | None:
    try:
        x, y = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
    except (KeyError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _background(value: str | None) -> tuple[int, int, int]:
    if value and re.fullmatch(r"[0-9A-Fa-f]{6}", value):
        return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
    return 255, 255, 255


def _attributes(vendor: str, props: Any) -> dict[str, str]:
    """Vendor facts under the DICOM keywords the viewer shows."""
    found = {
        "Manufacturer": vendor,
        "ObjectiveLensPower": props.get("openslide.objective-power"),
        "ContainerIdentifier": props.get("openslide.barcode"),
    }
    return {k: str(v) for k, v in found.items() if v not in (None, "")}


def _slide_id(path: str, record: SlideRecord, props: Any) -> str:
    vendor = _UNSAFE.sub("-", record.vendor)
    quickhash = props.get("openslide.quickhash-1")
    if is_multi_file(path) or not quickhash:
        # A part re-indexed alone must land in the same slide: the main file's path is
        # the one thing every part knows of it.
        quickhash = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()
    return f"{vendor}-{quickhash[:24]}"
