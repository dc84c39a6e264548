"""The tiled TIFF format backend: Aperio SVS, pyramidal TIFF with SubIFD levels (OME-TIFF,
libvips) and generic tiled TIFF, one file per slide (``readers/tiff_layout.py``).

A slide's id is a digest of the file's size and pyramid directories, so copies of one
file are one slide (the first copy by path is served) and the id does not depend on the
root a server was started with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tileserver.errors import CorruptSlideError
from tileserver.readers.base import IndexedFile, OpenedSlide, StoredFile
from tileserver.readers.source import ByteSource
from tileserver.readers.tiff import TiffReader
from tileserver.readers.tiff_layout import read_layout
from tileserver.readers.tiff_record import dump, load

#: Classic TIFF and BigTIFF, little- and big-endian.
_MAGICS = frozenset({b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"})


class TiffBackend:
    name = "tiff"
    reject_reason = "not a TIFF file (no II*/MM* header)"

    def accepts(self, head: bytes, uri: str) -> bool:
        return head[:4] in _MAGICS

    def index(self, source: ByteSource) -> IndexedFile:
        slide_id, layout = read_layout(source)
        return IndexedFile(slide_id, record=dump(layout))

    def open(self, files: Sequence[StoredFile], on_changed: Callable[[str], None]) -> OpenedSlide:
        copies = sorted((f for f in files if f.record is not None), key=lambda f: f.identity.uri)
        if not copies:
            raise CorruptSlideError("no indexed TIFF file for this slide")
        served = copies[0]
        assert served.record is not None
        layout = load(served.record)
        reader = TiffReader(layout, served.identity, on_changed)
        warnings = [
            *layout.warnings,
            *(f"{f.identity.uri}: a copy of {served.identity.uri}, not served" for f in copies[1:]),
        ]
        return OpenedSlide(reader, dict(layout.attributes), warnings)
