"""``tileserver validate`` for every format backend: files are indexed through the
registry (as the scanner does), DICOM instances grouped into series and reported in full
(``report.py``), and the slides of other backends (TIFF passthrough, OpenSlide) opened as
the server opens them and described in the same shape."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tileserver.dicom.instance import IndexedInstance
from tileserver.errors import TileServerError
from tileserver.readers.base import IndexedFile, SlideReader, StoredFile
from tileserver.readers.registry import backend, index
from tileserver.readers.source import LocalFile


class Indexed:
    """What indexing a tree found: DICOM instances by series, other slides' files by
    (backend, slide id), and the files skipped with their reasons."""

    def __init__(self) -> None:
        self.dicom: dict[str, list[IndexedInstance]] = defaultdict(list)
        self.others: dict[tuple[str, str], list[StoredFile]] = defaultdict(list)
        self.skipped: list[dict[str, str]] = []

    def add(self, path: Path) -> None:
        try:
            source = LocalFile.at(str(path))
            try:
                name, found = index(source)
            finally:
                source.close()
        except (TileServerError, OSError) as exc:
            self.skipped.append({"path": str(path), "reason": str(exc)})
            return
        self._keep(name, found, source)

    def _keep(self, name: str, found: IndexedFile, source: LocalFile) -> None:
        if found.instance is not None:
            self.dicom[found.instance.header.series_uid].append(found.instance)
            return
        stored = StoredFile(source.identity, "", name, None, found.record)
        self.others[(name, found.slide_id)].append(stored)

    def other_reports(self) -> list[dict[str, Any]]:
        reports = []
        for (name, slide_id), files in self.others.items():
            try:
                opened = backend(name).open(files, lambda _uri: None)
            except (TileServerError, OSError) as exc:
                for f in files:
                    self.skipped.append({"path": f.identity.uri, "reason": str(exc)})
                continue
            main = next((f for f in files if f.identity.uri == opened.main), files[0])
            reports.append(describe(name, slide_id, main.identity.uri, files, opened.reader))
            reports[-1]["warnings"] = list(opened.warnings)
            opened.reader.close()
        return reports


def describe(
    name: str, slide_id: str, path: str, files: Sequence[StoredFile], reader: SlideReader
) -> dict[str, Any]:
    """A slide of a non-DICOM backend in the shape of a DICOM series' report."""
    planes, paths = list(reader.focal_planes), list(reader.optical_paths)
    return {
        "id": slide_id,
        "name": Path(path).stem,
        "path": path,
        "format": name,
        "mpp": list(reader.mpp) if reader.mpp else None,
        "files": [
            {
                "path": f.identity.uri,
                "role": None,
                "transfer_syntax": reader.transfer_syntax,
                "photometric": "",
                "frames": sum(level.frames for level in reader.levels),
                "offset_table": name,
                "fragments_per_frame": {"min": 1, "max": 1},
                "icc_profile": reader.icc_profile is not None,
                "warnings": [],
            }
            for f in files
        ],
        "levels": [
            {
                "width": level.size.width,
                "height": level.size.height,
                "tile_width": level.tile_size.width,
                "tile_height": level.tile_size.height,
                "frames": level.frames,
                "absent_tiles": level.size.ceil_div(level.tile_size).area - level.frames,
                "optical_paths": paths,
                "focal_planes": planes,
                "files": len(files),
            }
            for level in reader.levels
        ],
        "associated": {
            n: {"width": a.size.width, "height": a.size.height}
            for n, a in reader.associated.items()
        },
        "concatenations": [],
        "icc_profile": reader.icc_profile is not None,
        "warnings": [],
    }
