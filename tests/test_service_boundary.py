"""``service.py`` is the one thread boundary, and a derived image found in the cache costs no
read of the slide's sources."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import anyio
import pytest

import tileserver
from fixtures import FixtureSet
from tileserver.cache import build_cache
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.readers.source import LocalFile
from tileserver.service import TileService
from tileserver.settings import Settings

PACKAGE = Path(tileserver.__file__).parent
#: Where a thread hop may live besides the service: the stored-tile chain and app loader,
#: which run before the service exists, and gzip of large bodies in the middleware.
OWN_BOUNDARY = {"service.py", "http/chain.py", "http/early.py", "http/middleware.py"}


def test_fronts_reach_worker_threads_only_through_the_service() -> None:
    hops = re.compile(r"to_thread|run_in_threadpool|run_in_executor")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if hops.search(path.read_text())
        and str(path.relative_to(PACKAGE)) not in OWN_BOUNDARY
        and not str(path.relative_to(PACKAGE)).startswith(("client/", "loadtest/"))
    ]
    assert offenders == []


@pytest.mark.parametrize("case", ["jpeg_bot", "padded_edges", "j2k_lossless"])
def test_a_cached_derived_tile_reads_no_source_bytes(
    tmp_path: Path,
    fixture_dir: dict[str, FixtureSet],
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    tree = tmp_path / "slides"
    shutil.copytree(fixture_dir[case].directory, tree / case)
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [tree])
    library.refresh()
    service = TileService(library, build_cache(None, 64 << 20), Settings())
    reads: list[int] = []
    real = LocalFile.read

    def counted(self: LocalFile, offset: int, length: int) -> bytes:
        reads.append(length)
        return real(self, offset, length)

    monkeypatch.setattr(LocalFile, "read", counted)

    async def derive_all() -> None:
        slide = await service.slide(fixture_dir[case].series_uid)
        last = slide.levels[0].grid
        for col, row, fmt in [(0, 0, "png"), (last.width - 1, last.height - 1, "jpeg")]:
            await service.tile(slide, 0, col, row, fmt)
        for name in slide.associated:
            await service.associated(slide, name, "png")

    async def twice() -> tuple[int, int]:
        await derive_all()
        first = len(reads)
        await derive_all()
        return first, len(reads) - first

    first, again = anyio.run(twice)
    assert first > 0
    assert again == 0
    library.close()
