"""The DICOM WSI format backend: index one instance per source, open a series as a slide.

A slide is a DICOM series (its id is the Series Instance UID): its instances (levels,
concatenation parts, optical paths, focal planes, associated images) are indexed file by
file and assembled when the slide opens (``dicom/series.py``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

from tileserver.dicom.instance import index_stream
from tileserver.dicom.pixeldata import FileView
from tileserver.dicom.series import assemble
from tileserver.errors import CorruptSlideError
from tileserver.readers.base import IndexedFile, OpenedSlide, StoredFile
from tileserver.readers.dicom import DicomReader
from tileserver.readers.source import ByteSource, SourceStream

#: Bytes read at once while parsing a header (a ranged read each, from object storage).
HEADER_CHUNK = 64 * 1024


class DicomBackend:
    name = "dicom"
    reject_reason = "not a DICOM file (no DICM prefix after the 128-byte preamble)"

    def accepts(self, head: bytes, uri: str) -> bool:
        return head[128:132] == b"DICM"

    def index(self, source: ByteSource) -> IndexedFile:
        size = source.identity.size
        stream = io.BufferedReader(SourceStream(source), HEADER_CHUNK)
        view = FileView(source.read, size, source.advise)
        instance = index_stream(stream, view, source.identity.uri)
        return IndexedFile(instance.header.series_uid, instance=instance)

    def open(self, files: Sequence[StoredFile], on_changed: Callable[[str], None]) -> OpenedSlide:
        instances = [f.instance for f in files if f.instance is not None]
        if not instances:
            raise CorruptSlideError("no DICOM instances for this slide")
        layout = assemble(instances)
        identities = {f.identity.uri: f.identity for f in files}
        warnings = [
            *layout.warnings,
            *(f"{Path(i.path).name}: {w}" for i in layout.instances for w in i.warnings),
        ]
        reader = DicomReader(layout, identities, on_changed)
        header = instances[0].header
        attributes = {**header.attributes, "StudyInstanceUID": header.study_uid}
        return OpenedSlide(reader, attributes, warnings)
