"""Tissue detection: saturation, Otsu's threshold, the mask and tile flags (no server)."""

from __future__ import annotations

import numpy as np

from fixtures import tissue_image, tissue_mask
from tileserver.geometry import Size
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
