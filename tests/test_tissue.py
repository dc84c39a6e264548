"""Tissue detection: saturation, Otsu's threshold, the mask, tile flags and their JSON (no
server)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import anyio
import numpy as np
import orjson
import pytest
from slidefiles import open_fixture

from fixtures import FixtureSet, tissue_image, tissue_mask
from tileserver.cache import build_cache
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.geometry import Size
from tileserver.service import TileService
from tileserver.settings import Settings
from tileserver.slide import Level
from tileserver.tissue import MIN_THRESHOLD, TissueMask, mask_of, otsu_threshold, saturation


def test_saturation_of_grey_is_zero_and_of_pure_colour_is_full() -> None:
    pixels = np.array([[[240, 240, 240], [255, 0, 0], [0, 0, 0], [200, 100, 100]]], np.uint8)
    assert saturation(pixels).tolist() == [[0, 255, 0, 127]]


def test_otsu_splits_two_modes_between_them() -> None:
    values = np.array([10] * 500 + [12] * 300 + [200] * 400 + [210] * 100, dtype=np.uint8)
    assert 12 <= otsu_threshold(values) < 200


def test_blank_image_has_no_tissue() -> None:
    noise = np.random.default_rng(0).integers(235, 245, size=(64, 64, 3), dtype=np.uint8)
    mask, threshold = mask_of(noise)
    assert threshold >= MIN_THRESHOLD and not mask.any()


def test_mask_of_the_fixture_image_matches_its_exact_mask() -> None:
    mask, _ = mask_of(tissue_image(450, 350))
    truth = tissue_mask(450, 350)
    assert not (mask & ~truth).any()  # nothing outside the tissue
    assert (mask & truth).sum() / truth.sum() > 0.9  # faint edges may be missed


def level(index: int, size: int, tile: int, downsample: float) -> Level:
    return Level(index, Size(size, size), Size(tile, tile), (downsample, downsample), None)


def test_tile_flags_map_the_footprint_through_the_downsample() -> None:
    grid = np.zeros((8, 8), dtype=bool)
    grid[5, 2] = True  # mask pixel = 4x4 level-0 pixels
    tissue = TissueMask(grid, (4.0, 4.0), 2, 30)
    flags0 = tissue.tile_flags(level(0, 32, 8, 1.0))  # 4x4 tiles of 8 px
    assert np.argwhere(flags0).tolist() == [[2, 1]]
    flags1 = tissue.tile_flags(level(1, 16, 8, 2.0))  # 2x2 tiles
    assert np.argwhere(flags1).tolist() == [[1, 0]]


def test_partial_tiles_at_the_edge_and_empty_masks() -> None:
    grid = np.zeros((5, 5), dtype=bool)
    grid[4, 4] = True
    flags = TissueMask(grid, (1.0, 1.0), 0, 30).tile_flags(level(0, 5, 4, 1.0))
    assert flags.tolist() == [[False, False], [False, True]]
    empty = TissueMask(np.zeros((5, 5), bool), (1.0, 1.0), 0, 30)
    assert not empty.tile_flags(level(0, 5, 4, 1.0)).any()


def test_png_round_trip_keeps_mask_and_facts() -> None:
    mask = np.random.default_rng(1).random((13, 17)) > 0.5
    original = TissueMask(mask, (2.5, 3.0), None, 44)
    restored = TissueMask.from_png(original.png())
    assert np.array_equal(restored.mask, mask)
    assert (restored.l0_per_mask, restored.source_level, restored.threshold) == (
        (2.5, 3.0),
        None,
        44,
    )


def reference_flags(tissue: TissueMask, level: Level) -> np.ndarray:
    """Tile flags one tile at a time, straight from the documented rule."""
    h, w = tissue.mask.shape
    sx = level.downsample[0] / tissue.l0_per_mask[0]
    sy = level.downsample[1] / tissue.l0_per_mask[1]
    flags = np.zeros((level.grid.height, level.grid.width), dtype=bool)
    for row in range(level.grid.height):
        for col in range(level.grid.width):
            region = level.tile_region(col, row)
            x0 = min(w - 1, max(0, math.floor(region.x * sx)))
            y0 = min(h - 1, max(0, math.floor(region.y * sy)))
            x1 = max(x0 + 1, min(w, math.ceil(region.right * sx)))
            y1 = max(y0 + 1, min(h, math.ceil(region.bottom * sy)))
            flags[row, col] = tissue.mask[y0:y1, x0:x1].any()
    return flags


@pytest.mark.parametrize("seed", range(6))
def test_tile_flags_equal_the_per_tile_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
    tissue = TissueMask(rng.random(shape) > 0.97, (float(rng.uniform(1, 9)), 3.7), 2, 30)
    for downsample, tile in [(1.0, 16), (2.0, 7), (3.3, 5), (16.0, 3)]:
        size = Size(int(shape[1] * tissue.l0_per_mask[0] / downsample), 77)
        lv = Level(0, size, Size(tile, tile + 2), (downsample, downsample * 1.1), None)
        assert np.array_equal(tissue.tile_flags(lv), reference_flags(tissue, lv))


def test_tissue_json_is_built_in_a_worker_thread_once_per_version_and_level(
    fixture_dir: dict[str, FixtureSet], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fs = fixture_dir["sparse"]
    slide = open_fixture(fs)
    library = SlideLibrary(Catalog(tmp_path / "catalog.sqlite"), [])
    service = TileService(library, build_cache(None, 64 * 1024 * 1024), Settings())
    threads: list[int] = []
    real = TissueMask.tile_flags

    def spy(self: TissueMask, level: Level) -> np.ndarray:
        threads.append(threading.get_ident())
        return real(self, level)

    monkeypatch.setattr(TissueMask, "tile_flags", spy)

    async def main() -> tuple[list[bytes], int]:
        levels = [slide.levels[i] for i in (0, 0, 1, 1)]
        bodies = [await service.tissue_json(slide, lv) for lv in levels]
        return bodies, threading.get_ident()

    try:
        bodies, loop_thread = anyio.run(main)
    finally:
        slide.close()
    assert len(threads) == 2 and loop_thread not in threads  # one build per level, off-loop
    assert bodies[0] == bodies[1] and bodies[2] == bodies[3]
    first = orjson.loads(bodies[0])
    grid = slide.levels[0].grid
    assert first["level"] == 0 and first["grid"] == [grid.width, grid.height]
