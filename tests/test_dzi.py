"""Deep Zoom arithmetic, checked against OpenSlide's DeepZoomGenerator as the oracle."""

from __future__ import annotations

import itertools
from xml.etree import ElementTree

import openslide
import pytest
from openslide.deepzoom import DeepZoomGenerator
from PIL import Image

from tileserver.dzi import DZI_NAMESPACE, DeepZoom, frame_aligned, native_level_for, parse_tile_name
from tileserver.errors import InvalidRequestError, NotFoundError
from tileserver.geometry import Region, Size
from tileserver.slide import Level

SMALL_SIZES = [(1, 1), (1, 2), (2, 1), (3, 5), (13, 7), (16, 16), (17, 33), (40, 9), (64, 63)]
LARGE_SIZES = [(255, 256), (257, 1), (1000, 1000), (1001, 777), (4097, 3001), (98304, 65537)]
TILINGS = [(1, 0), (2, 1), (3, 2), (4, 0), (4, 3), (7, 1), (16, 0), (16, 5), (254, 1), (256, 0)]


def oracle(width: int, height: int, tile_size: int, overlap: int) -> DeepZoomGenerator:
    # ImageSlide never reads pixels for arithmetic, so a 1x1 stand-in image of the right
    # size is cheap even for huge dimensions.
    image = Image.new("RGB", (width, height)) if width * height <= 10**6 else _Sized(width, height)
    return DeepZoomGenerator(openslide.ImageSlide(image), tile_size, overlap, limit_bounds=False)


class _Sized(Image.Image):
    """A PIL image that only reports a size, for arithmetic over huge dimensions."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self._size = (width, height)
        self._mode = "RGB"


@pytest.mark.parametrize(("width", "height"), SMALL_SIZES + LARGE_SIZES)
@pytest.mark.parametrize(("tile_size", "overlap"), TILINGS)
def test_levels_and_grids_match_openslide(
    width: int, height: int, tile_size: int, overlap: int
) -> None:
    expected = oracle(width, height, tile_size, overlap)

    dzi = DeepZoom(width, height, tile_size, overlap)

    assert dzi.level_count == expected.level_count
    sizes = [dzi.z_size(level) for level in range(dzi.level_count)]
    assert [(s.width, s.height) for s in sizes] == list(expected.level_dimensions)
    grids = [dzi.tiles(level) for level in range(dzi.level_count)]
    assert [(g.width, g.height) for g in grids] == list(expected.level_tiles)


@pytest.mark.parametrize(("width", "height"), SMALL_SIZES)
@pytest.mark.parametrize(("tile_size", "overlap"), TILINGS)
def test_every_tile_matches_openslide(
    width: int, height: int, tile_size: int, overlap: int
) -> None:
    expected = oracle(width, height, tile_size, overlap)
    dzi = DeepZoom(width, height, tile_size, overlap)

    for level in range(dzi.level_count):
        grid = dzi.tiles(level)
        z_size = dzi.z_size(level)
        for col, row in itertools.product(range(grid.width), range(grid.height)):
            region = dzi.tile_region(level, col, row)
            l0 = dzi.l0_region(level, col, row)
            (l0_x, l0_y), _, (l0_w, l0_h) = expected.get_tile_coordinates(level, (col, row))
            o_w, o_h = expected.get_tile_dimensions(level, (col, row))

            # OpenSlide lets the far overlap of a tile run past the image when the last
            # tile is thinner than the overlap; OpenSeadragon crops it, and so do we.
            assert (region.width, region.height) == (
                min(o_w, z_size.width - region.x),
                min(o_h, z_size.height - region.y),
            )
            assert region.x == max(0, col * tile_size - overlap)
            assert region.y == max(0, row * tile_size - overlap)
            assert l0 == (l0_x, l0_y, l0_w, l0_h)


def test_level_zero_is_one_pixel_and_last_is_full_size() -> None:
    dzi = DeepZoom(1001, 777, 254, 1)

    assert dzi.z_size(0) == Size(1, 1)
    assert dzi.z_size(dzi.max_level) == Size(1001, 777)
    assert dzi.max_level == 10  # ceil(log2(1001))


def test_scale_is_power_of_two_from_level_zero() -> None:
    dzi = DeepZoom(1024, 512, 256)

    assert dzi.scale(dzi.max_level) == 1.0
    assert dzi.scale(dzi.max_level - 3) == 8.0


def test_interior_tile_has_overlap_on_all_sides() -> None:
    dzi = DeepZoom(1000, 1000, 254, 1)

    assert dzi.tile_region(dzi.max_level, 1, 1) == Region(253, 253, 256, 256)


def test_edge_tile_is_cropped_not_padded() -> None:
    dzi = DeepZoom(1000, 600, 254, 1)

    assert dzi.tile_region(dzi.max_level, 3, 2) == Region(761, 507, 239, 93)


@pytest.mark.parametrize(("level", "col", "row"), [(-1, 0, 0), (11, 0, 0), (10, 4, 0), (10, 0, 3)])
def test_outside_the_pyramid_is_not_found(level: int, col: int, row: int) -> None:
    dzi = DeepZoom(1000, 600, 254, 1)

    with pytest.raises(NotFoundError):
        dzi.tile_region(level, col, row)


@pytest.mark.parametrize(
    ("width", "height", "tile_size", "overlap"), [(0, 5, 256, 0), (5, 5, 0, 0), (5, 5, 256, -1)]
)
def test_malformed_pyramid_is_invalid(
    width: int, height: int, tile_size: int, overlap: int
) -> None:
    with pytest.raises(InvalidRequestError):
        DeepZoom(width, height, tile_size, overlap)


def test_xml_descriptor() -> None:
    root = ElementTree.fromstring(DeepZoom(1001, 777, 254, 1).xml("jpeg"))

    assert root.tag == f"{{{DZI_NAMESPACE}}}Image"
    assert root.attrib == {"TileSize": "254", "Overlap": "1", "Format": "jpeg"}
    size = root.find(f"{{{DZI_NAMESPACE}}}Size")
    assert size is not None
    assert size.attrib == {"Width": "1001", "Height": "777"}


def test_xml_rejects_bad_format() -> None:
    with pytest.raises(InvalidRequestError):
        DeepZoom(10, 10, 254).xml('jpeg"/><x')


def test_parse_tile_name() -> None:
    assert parse_tile_name("3_14.jpeg") == (3, 14, "jpeg")


@pytest.mark.parametrize("name", ["3_14", "3-14.jpeg", "_1.png", "1_2.", "-1_2.png", "1_2.png/x"])
def test_parse_tile_name_rejects_malformed(name: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_tile_name(name)


def _level(index: int, width: int, height: int, tile: int = 256) -> Level:
    return Level(index, Size(width, height), Size(tile, tile), (1.0, 1.0), None)


def test_native_level_for_ceil_halved_pyramid() -> None:
    levels = [_level(0, 1001, 777), _level(1, 501, 389), _level(2, 251, 195)]
    dzi = DeepZoom(1001, 777, 256)

    found = [native_level_for(dzi, z, levels) for z in range(dzi.max_level - 3, dzi.level_count)]

    assert found == [None, 2, 1, 0]


def test_native_level_for_rejects_floor_halved_level() -> None:
    levels = [_level(0, 1001, 777), _level(1, 500, 388)]
    dzi = DeepZoom(1001, 777, 256)

    assert native_level_for(dzi, dzi.max_level - 1, levels) is None


def test_frame_aligned_needs_matching_tiles_and_no_overlap() -> None:
    level = _level(0, 1000, 1000, tile=256)

    assert frame_aligned(DeepZoom(1000, 1000, 256, 0), level)
    assert not frame_aligned(DeepZoom(1000, 1000, 256, 1), level)
    assert not frame_aligned(DeepZoom(1000, 1000, 254, 0), level)


def test_native_tile_maps_one_to_one_to_stored_frame() -> None:
    level = _level(1, 501, 389)
    dzi = DeepZoom(1001, 777, 256)
    z_level = dzi.max_level - 1

    for col, row in itertools.product(range(2), range(2)):
        assert dzi.tile_region(z_level, col, row) == level.tile_region(col, row)
