"""The tile fast path in process: what it answers, and what it must not keep alive."""

from __future__ import annotations

import gc
import os
import shutil
import weakref
from pathlib import Path

from fixtures import FixtureSet
from tileserver.cache import build_cache
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.http.fastpath import FastPath
from tileserver.http.metrics import Metrics
from tileserver.http.state import AppState
from tileserver.service import TileService
from tileserver.settings import Settings


def test_a_replaced_version_leaves_no_reader_behind(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    """After a slide's file changes, the fast path holds nothing of the old version's
    reader, whose file descriptors close when it goes."""
    fs = fixture_dir["jpeg_bot"]
    tree = tmp_path / "slides"
    shutil.copytree(fs.directory, tree / "jpeg_bot")
    settings = Settings(slides=(tree,), catalog=tmp_path / "catalog.sqlite")
    library = SlideLibrary(Catalog(settings.catalog), [tree])
    library.refresh()
    service = TileService(library, build_cache(None, 1 << 20), settings)
    fast = FastPath(AppState(settings=settings, metrics=Metrics(), service=service))

    old = library.get(fs.series_uid)
    expected = old.read_tile_bytes(0, 0, 0).data  # opens the file: its pages are cached
    found = fast.lookup(f"/slides/{fs.series_uid}/tiles/0/0/0")
    assert found is not None and found.body == expected
    top = service.dzi_plan(old).zoom.level_count - 1
    dzi = fast.lookup(f"/dzi/{fs.series_uid}_files/{top}/0_0.jpeg")
    assert dzi is not None and dzi.body == expected
    reader = weakref.ref(old.reader)

    for path in sorted((tree / "jpeg_bot").iterdir()):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    library.refresh()
    new = library.get(fs.series_uid)
    assert new.version != old.version
    fresh = fast.lookup(f"/slides/{fs.series_uid}/tiles/0/0/0")
    assert fresh is None  # the new version's file is not open yet: the app reads it
    assert new.read_tile_bytes(0, 0, 0).data == expected  # opens it (same pixels, new mtime)
    fresh = fast.lookup(f"/slides/{fs.series_uid}/tiles/0/0/0")
    assert fresh is not None and fresh.body == expected and new.version in str(fresh.etag)
    assert old.version not in str(fresh.etag)
    del old, found, dzi
    gc.collect()
    assert reader() is None
