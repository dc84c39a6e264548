"""Slides opened straight from DICOM files (index, assemble, read), no catalog or server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fixtures import FixtureSet
from tileserver.dicom import assemble, index_instance
from tileserver.readers.dicom import DicomReader
from tileserver.slide import Slide


def open_files(
    paths: Sequence[Path], name: str, on_changed: Callable[[str], None] | None = None
) -> Slide:
    layout = assemble([index_instance(p) for p in sorted(paths)])
    reader = DicomReader(layout, on_changed=on_changed)
    return Slide(layout.series_uid, name, reader, warnings=layout.warnings)


def open_fixture(
    fs: FixtureSet, directory: Path | None = None, on_changed: Callable[[str], None] | None = None
) -> Slide:
    """A fixture case's slide, from its own directory or a copy of it in ``directory``."""
    return open_files(list((directory or fs.directory).iterdir()), fs.name, on_changed)


def written_frame(fs: FixtureSet, col: int, row: int) -> bytes:
    """The bytes the generator wrote for tile ``(col, row)`` of level 0 (first path, plane)."""
    for instance in fs.level(0).instances:
        if (0, 0, col, row) in instance.frame_tiles:
            return instance.read_frame(instance.frame_tiles.index((0, 0, col, row)))
    raise KeyError(f"no frame for tile ({col}, {row})")
