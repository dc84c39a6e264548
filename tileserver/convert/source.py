"""The slide to convert, opened through the format-backend registry without a catalog.

INPUT is one file (a DICOM file brings the instances of its series from its folder), or a
folder holding one slide (a DICOM series, an MRXS folder with its main file).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from tileserver.errors import InvalidRequestError, SlideError
from tileserver.readers import registry
from tileserver.readers.base import StoredFile
from tileserver.readers.registry import HEAD_BYTES, NotASlideError
from tileserver.readers.source import LocalFile
from tileserver.slide import Slide


def open_slide(path: Path) -> Slide:
    """The one slide at ``path``; a ``SlideError`` with the reason when there is none,
    ``InvalidRequestError`` when a folder holds several."""
    path = path.absolute()
    indexed = _index(path) if path.is_file() else _index_folder(path)
    if path.is_file() and indexed[0][1].backend == "dicom":
        indexed += _series_beside(path, indexed[0][0])
    slides: dict[str, list[StoredFile]] = defaultdict(list)
    for slide_id, stored in indexed:
        slides[slide_id].append(stored)
    if len(slides) > 1:
        raise InvalidRequestError(
            f"{path}: {len(slides)} slides in this folder; convert one at a time (name its file)"
        )
    ((slide_id, files),) = slides.items()
    opened = registry.backend(files[0].backend).open(files, _ignore_change)
    return Slide(
        id=slide_id,
        name=path.stem if path.is_file() else path.name,
        reader=opened.reader,
        attributes=opened.attributes,
        warnings=list(opened.warnings),
        path=path.name,
    )


#: (slide id, the file as a catalog would hand it to its backend)
_Indexed = tuple[str, StoredFile]


def _index(path: Path) -> list[_Indexed]:
    """``path`` indexed by the first backend that can; its ``SlideError`` otherwise."""
    source = LocalFile.at(str(path))
    try:
        name, found = registry.index(source)
    except SlideError as exc:
        exc.args = (f"{path.name}: {exc}",)  # the same error, saying which file
        raise
    finally:
        source.close()
    stored = StoredFile(source.identity, str(path.parent), name, found.instance, found.record)
    return [(found.slide_id, stored)]


def _index_folder(folder: Path) -> list[_Indexed]:
    found: list[_Indexed] = []
    reasons: list[str] = []
    for path in _files(folder):
        try:
            found += _index(path)
        except SlideError as exc:
            reasons.append(str(exc))
    if not found:
        detail = f" ({reasons[0]})" if reasons else ""
        raise NotASlideError(f"no slide in {folder}{detail}")
    return found


def _series_beside(path: Path, slide_id: str) -> list[_Indexed]:
    """The other DICOM files in ``path``'s folder of the same series."""
    dicom = registry.backend("dicom")
    found = []
    for other in _files(path.parent):
        if other == path:
            continue
        with other.open("rb") as handle:
            if not dicom.accepts(handle.read(HEAD_BYTES), str(other)):
                continue
        try:
            found += [f for f in _index(other) if f[0] == slide_id]
        except SlideError:
            continue  # another series' damaged file is not this conversion's concern
    return found


def _files(folder: Path) -> list[Path]:
    """Regular files under ``folder``, hidden ones excluded, in a stable order."""
    found = []
    for directory, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(directory, n) for n in sorted(names) if not n.startswith(".")]
    return [p for p in found if p.is_file()]


def _ignore_change(uri: str) -> None:
    """A source rewritten mid-conversion fails its next read (``SlideChangedError``),
    which ends the conversion: nothing to re-index."""
