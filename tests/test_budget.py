"""The render budget (``tileserver/budget.py``): concurrent renders hold their pixels, and
what is in flight never exceeds the budget, so large requests queue instead of piling up
in memory."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import anyio
import pytest

from fixtures import FixtureSet
from tileserver.budget import PixelBudget
from tileserver.cache import build_cache
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.geometry import Region, Size
from tileserver.service import RENDER_BUDGET_OUTPUTS, TileService
from tileserver.settings import Settings


def test_holders_never_exceed_the_capacity() -> None:
    budget = PixelBudget(100)
    peak, current = [0], [0]

    async def hold(pixels: int) -> None:
        held = min(pixels, budget.capacity)  # a request over the budget holds all of it
        async with budget.hold(pixels):
            current[0] += held
            peak[0] = max(peak[0], current[0])
            await anyio.sleep(0.01)
            current[0] -= held

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for pixels in (60, 60, 30, 30, 500, 10, 90):  # 500: more than all of it
                group.start_soon(hold, pixels)

    anyio.run(main)
    assert 0 < peak[0] <= 100 and budget.in_use == 0


def test_concurrent_large_renders_are_bounded_by_the_budget(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet], monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tmp_path / "slides"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, tree / "s")
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [tree])
    library.refresh()
    settings = Settings(max_output_pixels=200 * 200)
    service = TileService(library, build_cache(None, 64 << 20), settings)
    running, peak, lock = [0], [0], threading.Lock()
    real = service._encode

    def counting(*args: object) -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            threading.Event().wait(0.05)
            return real(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(service, "_encode", counting)

    async def main() -> None:
        slide = await service.slide(fixture_dir["jpeg_bot"].series_uid)
        async with anyio.create_task_group() as group:
            for i in range(12):  # each the largest output: 5x its area is held
                region = Region(i, 0, 200, 200)
                group.start_soon(service.render, slide, region, Size(200, 200), "png")

    anyio.run(main)
    # Each holds min(5 x area, budget) = the whole budget of 4 outputs: one at a time.
    assert RENDER_BUDGET_OUTPUTS < 5 and peak[0] == 1


def test_a_full_queue_turns_renders_away_with_a_retry_time() -> None:
    from tileserver.errors import OverloadedError

    budget = PixelBudget(10, max_waiting=2, max_wait=0.2)
    outcomes: list[str] = []

    async def hold(pixels: int, seconds: float) -> None:
        try:
            async with budget.hold(pixels):
                await anyio.sleep(seconds)
            outcomes.append("served")
        except OverloadedError as exc:
            outcomes.append("busy" if exc.retry_after > 0 else "?")

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(hold, 10, 0.5)  # holds everything for longer than max_wait
            await anyio.sleep(0.01)
            for _ in range(4):  # two wait (then time out), two are turned away at once
                group.start_soon(hold, 5, 0.0)

    anyio.run(main)
    assert outcomes.count("served") == 1 and outcomes.count("busy") == 4
    assert budget.in_use == 0 and budget.waiting == 0


def test_an_overloaded_answer_is_a_503_with_retry_after() -> None:
    from tileserver.errors import OverloadedError
    from tileserver.http.errors import domain_error

    response = anyio.run(domain_error, None, OverloadedError("busy", retry_after=3))
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
