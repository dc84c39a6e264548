"""IIIF Image API request grammar, size rounding, errors, info.json and native tiles."""

from __future__ import annotations

import itertools
import math

import pytest

from tileserver.errors import (
    InvalidRequestError,
    LimitExceededError,
    NotFoundError,
    UnsupportedError,
)
from tileserver.geometry import Region, Size
from tileserver.iiif import (
    IiifRequest,
    Limits,
    info_json,
    is_native_tile,
    native_levels,
    parse_request,
    pyramid_info,
)
from tileserver.slide import Level

IMAGE = Size(1000, 1000)
WIDE = Size(300, 200)


def parse(
    version: int = 3,
    region: str = "full",
    size: str = "max",
    rotation: str = "0",
    quality_format: str = "default.jpg",
    image: Size = IMAGE,
    max_area: int | None = None,
    limits: Limits | None = None,
    upscaling: bool = True,
) -> IiifRequest:
    return parse_request(
        version, region, size, rotation, quality_format, image, max_area,
        limits=limits, upscaling=upscaling,
    )  # fmt: skip


# -- region ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("full", Region(0, 0, 300, 200)),
        ("square", Region(50, 0, 200, 200)),
        ("125,15,120,140", Region(125, 15, 120, 140)),
        ("125,15,200,200", Region(125, 15, 175, 185)),  # spec example: cropped at the edge
        ("pct:41.6,7.5,40,70", Region(125, 15, 120, 140)),
        ("pct:41.6,7.5,66.6,100", Region(125, 15, 175, 185)),
        ("pct:0.5,.5,10.,10", Region(2, 1, 30, 20)),
    ],
)
def test_region_forms(version: int, region: str, expected: Region) -> None:
    size = "max" if version == 3 else "full"
    assert parse(version, region, size, image=WIDE).region == expected


def test_square_of_tall_image_is_centred() -> None:
    assert parse(region="square", image=Size(200, 301)).region == Region(0, 50, 200, 200)


def test_tiny_pct_region_keeps_one_pixel() -> None:
    assert parse(region="pct:10,10,0.001,0.001").region == Region(100, 100, 1, 1)


@pytest.mark.parametrize(
    "region",
    [
        "0,0,0,10",  # zero width
        "0,0,10,0",
        "1000,0,10,10",  # entirely outside
        "0,1000,10,10",
        "pct:100,0,10,10",
        "pct:0,0,0,10",
        "0,0,10",
        "0,0,10,10,10",
        "-1,0,10,10",
        "0.5,0,10,10",
        "pct:1e1,0,10,10",
        "pct:+1,0,10,10",
        "Full",
        "abcdef",
        "",
    ],
)
def test_bad_region_is_400(region: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse(region=region)


# -- size, IIIF 3 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("max", Size(300, 200)),
        ("^max", Size(300, 200)),  # no limits: the largest size is the region itself
        ("150,", Size(150, 100)),
        (",150", Size(225, 150)),
        ("pct:50", Size(150, 100)),
        ("225,100", Size(225, 100)),
        ("!225,100", Size(150, 100)),  # spec example
        ("^!360,360", Size(360, 240)),  # spec example
        ("^360,", Size(360, 240)),
        ("^,240", Size(360, 240)),
        ("^pct:120", Size(360, 240)),
        ("^360,360", Size(360, 360)),
        ("^150,", Size(150, 100)),  # ^ without upscaling is fine
        ("100,", Size(100, 67)),  # derived sides round up: 66.67 -> 67
        ("pct:33.3", Size(100, 67)),  # 99.9 -> 100, 66.6 -> 67
    ],
)
def test_size_forms_v3(size: str, expected: Size) -> None:
    assert parse(3, size=size, image=WIDE).size == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("full", Size(300, 200)),
        ("max", Size(300, 200)),
        ("150,", Size(150, 100)),
        (",150", Size(225, 150)),
        ("pct:50", Size(150, 100)),
        ("225,100", Size(225, 100)),
        ("!225,100", Size(150, 100)),
        ("600,", Size(600, 400)),  # 2.1 upscales without any marker
        ("pct:200", Size(600, 400)),
        ("!900,1000", Size(900, 600)),
    ],
)
def test_size_forms_v2(size: str, expected: Size) -> None:
    assert parse(2, size=size, image=WIDE).size == expected


def test_validator_square_sizes_are_exact() -> None:
    for s in range(350, 760, 37):
        assert parse(size=f"{s},").size == Size(s, s)
        assert parse(size=f",{s}").size == Size(s, s)
        assert parse(size=f"!{s},{s + 100}").size == Size(s, s)
    for pct in range(45, 76):
        assert parse(size=f"pct:{pct}").size == Size(pct * 10, pct * 10)


def test_size_applies_to_the_region() -> None:
    req = parse(region="300,400,100,100", size="50,50")

    assert req.region == Region(300, 400, 100, 100)
    assert req.size == Size(50, 50)


def test_confined_size_never_leaves_the_box() -> None:
    for w, h in itertools.product(range(1, 60, 7), range(1, 60, 5)):
        out = parse(size=f"!{w},{h}", image=Size(97, 61)).size
        assert out.width <= w
        assert out.height <= h
        assert out.width == w or out.height == h


@pytest.mark.parametrize(
    "size", ["1100,1100", ",1100", "1100,", "pct:200", "!2000,3000", "1001,10"]
)
def test_v3_upscaling_without_caret_is_400(size: str) -> None:
    """The iiif-validator's size_noup test expects 400 for each of these."""
    with pytest.raises(InvalidRequestError):
        parse(3, size=size)


@pytest.mark.parametrize(
    "size", ["full", "^full", "0,", ",0", "0,0", "pct:0", "^pct:0", "!0,10", "!10,", "!,10", ","]
)
def test_bad_size_v3_is_400(size: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse(3, size=size)


@pytest.mark.parametrize(
    "size", ["^max", "^100,", "^pct:50", "0,", "pct:0", "pct:-5", "10,10,", "abcdef", "", "!10,"]
)
def test_bad_size_v2_is_400(size: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse(2, size=size)


def test_caret_upscaling_when_switched_off_is_501() -> None:
    with pytest.raises(UnsupportedError):
        parse(3, size="^pct:120", upscaling=False)


def test_caret_without_upscaling_is_fine_when_switched_off() -> None:
    assert parse(3, size="^pct:50", upscaling=False).size == Size(500, 500)


def test_v2_upscaling_when_switched_off_is_501() -> None:
    with pytest.raises(UnsupportedError):
        parse(2, size="2000,", upscaling=False)


# -- limits ------------------------------------------------------------------------------------


def test_max_is_constrained_by_max_area() -> None:
    out = parse(size="max", image=Size(6000, 4000), max_area=4_000_000).size

    assert out.area <= 4_000_000
    assert out.width / out.height == pytest.approx(1.5, rel=1e-3)
    assert out.width >= 2440


def test_max_is_constrained_by_max_width_and_height() -> None:
    limits = Limits(max_width=3000, max_height=1000)

    assert parse(size="max", image=Size(6000, 4000), limits=limits).size == Size(1500, 1000)


def test_caret_max_grows_to_the_limits() -> None:
    assert parse(size="^max", image=WIDE, limits=Limits(max_width=360)).size == Size(360, 240)


def test_explicit_size_over_max_area_is_limit_exceeded() -> None:
    with pytest.raises(LimitExceededError):
        parse(size="1000,1000", max_area=999_999)


def test_v2_full_over_max_area_is_limit_exceeded() -> None:
    with pytest.raises(LimitExceededError):
        parse(2, size="full", max_area=10_000)


def test_size_over_max_width_is_limit_exceeded() -> None:
    with pytest.raises(LimitExceededError):
        parse(size="600,", limits=Limits(max_width=500))


# -- rotation, quality, format -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rotation", "mirror", "degrees"),
    [("0", False, 0.0), ("90", False, 90.0), ("!0", True, 0.0), ("!180", True, 180.0),
     ("22.5", False, 22.5), ("0.5", False, 0.5), ("360", False, 0.0), ("359.99", False, 359.99)],
)  # fmt: skip
def test_rotation(rotation: str, mirror: bool, degrees: float) -> None:
    req = parse(rotation=rotation)

    assert (req.mirror, req.rotation) == (mirror, degrees)


@pytest.mark.parametrize("rotation", ["-90", "+90", "360.5", "400", "!", "!!90", "9O", "1e2", ""])
def test_bad_rotation_is_400(rotation: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse(rotation=rotation)


@pytest.mark.parametrize("quality", ["default", "color", "gray", "bitonal"])
@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
@pytest.mark.parametrize("version", [2, 3])
def test_quality_and_format(version: int, quality: str, fmt: str) -> None:
    req = parse(version, size="max", quality_format=f"{quality}.{fmt}")

    assert (req.quality, req.format) == (quality, fmt)


def test_v2_native_quality_means_default() -> None:
    assert parse(2, quality_format="native.jpg").quality == "default"


@pytest.mark.parametrize(
    "quality_format",
    ["native.jpg", "grey.jpg", "Default.jpg", "default", "default.", "default.JPG", "default.tif",
     "default.gif", "default.pdf", "default.jp2", "default.xyz", ".jpg", "default.jpg.png"],
)  # fmt: skip
def test_bad_quality_or_format_is_400_in_v3(quality_format: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse(3, quality_format=quality_format)


@pytest.mark.parametrize("version", [1, 4])
def test_unknown_version_is_not_found(version: int) -> None:
    with pytest.raises(NotFoundError):
        parse(version)


# -- info.json -----------------------------------------------------------------------------


def _level(index: int, width: int, height: int, tile: int = 256) -> Level:
    return Level(index, Size(width, height), Size(tile, tile), (1.0, 1.0), None)


CEIL_PYRAMID = [_level(0, 1001, 777), _level(1, 501, 389), _level(2, 251, 195), _level(3, 126, 98)]
FLOOR_PYRAMID = [_level(0, 1001, 777), _level(1, 500, 388), _level(2, 250, 194)]


def test_info_json_v3_shape() -> None:
    tile, factors, sizes = pyramid_info(CEIL_PYRAMID)

    doc = info_json(3, "http://x/iiif/3/s1", Size(1001, 777), tile, factors, sizes, 4_000_000)

    assert next(iter(doc)) == "@context"
    assert doc["@context"] == "http://iiif.io/api/image/3/context.json"
    assert doc["id"] == "http://x/iiif/3/s1"
    assert doc["type"] == "ImageService3"
    assert doc["protocol"] == "http://iiif.io/api/image"
    assert doc["profile"] == "level2"
    assert (doc["width"], doc["height"], doc["maxArea"]) == (1001, 777, 4_000_000)
    assert doc["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4, 8]}]
    assert doc["sizes"][0] == {"width": 126, "height": 98}
    assert doc["sizes"][-1] == {"width": 1001, "height": 777}
    assert doc["extraFormats"] == ["webp"]
    assert {"gray", "bitonal"} <= set(doc["extraQualities"])
    assert {"mirroring", "rotationArbitrary", "sizeUpscaling"} <= set(doc["extraFeatures"])


def test_info_json_v2_shape() -> None:
    tile, factors, sizes = pyramid_info(CEIL_PYRAMID)

    doc = info_json(2, "http://x/iiif/2/s1", Size(1001, 777), tile, factors, sizes, 500_000)

    assert doc["@context"] == "http://iiif.io/api/image/2/context.json"
    assert doc["@id"] == "http://x/iiif/2/s1"
    assert doc["protocol"] == "http://iiif.io/api/image"
    assert doc["profile"][0] == "http://iiif.io/api/image/2/level2.json"
    profile = doc["profile"][1]
    assert profile["formats"] == ["jpg", "png", "webp"]
    assert profile["qualities"] == ["default", "color", "gray", "bitonal"]
    assert {"mirroring", "rotationArbitrary", "sizeAboveFull", "regionSquare"} <= set(
        profile["supports"]
    )
    assert profile["maxArea"] == 500_000
    assert "maxArea" not in doc
    # Sizes beyond maxArea are not advertised: the spec says listed sizes must be servable.
    assert {"width": 1001, "height": 777} not in doc["sizes"]


def test_info_json_without_upscaling_does_not_claim_it() -> None:
    v3 = info_json(3, "http://x/a", IMAGE, Size(256, 256), [1], [], upscaling=False)
    v2 = info_json(2, "http://x/a", IMAGE, Size(256, 256), [1], [], upscaling=False)

    assert "sizeUpscaling" not in v3["extraFeatures"]
    assert "sizeAboveFull" not in v2["profile"][1]["supports"]


def test_info_json_extra_merges_lists_and_sets_keys() -> None:
    extra = {"extraFeatures": ["cors", "mirroring"], "rights": "http://rightsstatements.org/x"}

    doc = info_json(3, "http://x/a", IMAGE, Size(256, 256), [1], [], extra=extra)

    assert doc["extraFeatures"].count("mirroring") == 1
    assert "cors" in doc["extraFeatures"]
    assert doc["rights"] == "http://rightsstatements.org/x"


def test_native_levels_accept_floor_and_ceil_halvings_only() -> None:
    odd = [_level(0, 1000, 1000), _level(1, 333, 333), _level(2, 250, 250)]

    assert {f: lv.index for f, lv in native_levels(CEIL_PYRAMID).items()} == {
        1: 0,
        2: 1,
        4: 2,
        8: 3,
    }
    assert {f: lv.index for f, lv in native_levels(FLOOR_PYRAMID).items()} == {1: 0, 2: 1, 4: 2}
    assert {f: lv.index for f, lv in native_levels(odd).items()} == {1: 0, 4: 2}


def test_pyramid_info_lists_only_levels_with_level_zero_frames() -> None:
    levels = [_level(0, 4096, 4096, 512), _level(1, 2048, 2048, 512), _level(2, 1024, 1024, 256)]

    tile, factors, sizes = pyramid_info(levels)

    assert tile == Size(512, 512)
    assert factors == [1, 2]
    assert sizes == [Size(1024, 1024), Size(2048, 2048), Size(4096, 4096)]


# -- native tiles --------------------------------------------------------------------------


def osd_tile_params(
    version: int, image: Size, tile: int, level_sizes: list[Size], level: int, col: int, row: int
) -> tuple[str, str]:
    """Region and size strings OpenSeadragon 6 builds for a IIIF tile (written from its rules)."""
    max_level = len(level_sizes) - 1
    scale = 0.5 ** (max_level - level)
    level_size = level_sizes[level]
    if level_size.width < tile and level_size.height < tile:
        region = "full"
        w, h = level_size.width, level_size.height
    else:
        span = round(tile / scale)
        x, y = col * span, row * span
        rw, rh = min(span, image.width - x), min(span, image.height - y)
        whole = x == 0 and y == 0 and (rw, rh) == (image.width, image.height)
        region = "full" if whole else f"{x},{y},{rw},{rh}"
        w = min(tile, level_size.width - col * tile)
        h = min(tile, level_size.height - row * tile)
    if version == 3 and (w, h) == (image.width, image.height):
        return region, "max"
    return region, f"{w},{h}"


@pytest.mark.parametrize("pyramid", [CEIL_PYRAMID, FLOOR_PYRAMID], ids=["ceil", "floor"])
@pytest.mark.parametrize("version", [2, 3])
def test_every_viewer_tile_request_is_a_native_tile(pyramid: list[Level], version: int) -> None:
    image = pyramid[0].size
    _, factors, sizes = pyramid_info(pyramid)
    max_level = int(math.log2(factors[-1]))
    assert len(sizes) == max_level + 1  # so OpenSeadragon adopts the listed level sizes

    for osd_level in range(len(sizes)):
        stored = pyramid[max_level - osd_level]
        grid = stored.grid
        for col, row in itertools.product(range(grid.width), range(grid.height)):
            region, size = osd_tile_params(version, image, 256, sizes, osd_level, col, row)
            req = parse_request(version, region, size, "0", "default.jpg", image)

            assert is_native_tile(req, pyramid) == (stored.index, col, row)


def test_native_tile_on_level_zero() -> None:
    req = parse(region="256,512,256,256", size="256,256", image=Size(1001, 777))

    assert is_native_tile(req, CEIL_PYRAMID) == (0, 1, 2)


@pytest.mark.parametrize(
    ("region", "size", "rotation", "quality_format"),
    [
        ("256,512,256,256", "128,128", "0", "default.jpg"),  # scaled
        ("256,512,256,255", "256,255", "0", "default.jpg"),  # not the whole frame
        ("255,512,256,256", "256,256", "0", "default.jpg"),  # off the grid
        ("256,512,256,256", "256,256", "90", "default.jpg"),  # rotated
        ("256,512,256,256", "256,256", "!0", "default.jpg"),  # mirrored
        ("256,512,256,256", "256,256", "0", "gray.jpg"),  # recoloured
    ],
)
def test_not_native_tiles(region: str, size: str, rotation: str, quality_format: str) -> None:
    req = parse_request(3, region, size, rotation, quality_format, Size(1001, 777))

    assert is_native_tile(req, CEIL_PYRAMID) is None


def test_ceil_sized_edge_tile_of_floor_halved_level_is_not_native() -> None:
    # OpenSeadragon without usable `sizes` asks for ceil(size / 2); this level floored.
    req = parse(region="512,512,489,265", size="245,133", image=Size(1001, 777))

    assert is_native_tile(req, FLOOR_PYRAMID) is None
    assert is_native_tile(req, CEIL_PYRAMID) == (1, 1, 1)


def test_colour_quality_is_still_native() -> None:
    req = parse(region="0,0,256,256", size="256,256", quality_format="color.png", image=IMAGE)

    assert is_native_tile(req, [_level(0, 1000, 1000)]) == (0, 0, 0)
