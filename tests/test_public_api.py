"""Public names of the core packages are a contract: changing them is a deliberate act."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "tileserver.dicom": [
        "FrameGrid",
        "IndexedInstance",
        "SeriesLayout",
        "assemble",
        "index_instance",
    ],
    "tileserver.catalog": ["Catalog", "ScanReport", "SlideLibrary", "scan"],
    "tileserver.readers": ["ReaderLevel", "SlideReader"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_frozen(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == PUBLIC[module]
    for name in imported.__all__:
        assert hasattr(imported, name)
