"""Deep Zoom front: ``/dzi/{id}.dzi`` and its tiles, as OpenSeadragon requests them.

TileSize is the slide's frame width and Overlap 0, so a tile on a native level is a stored
frame (passed through, or losslessly cropped at the edges); other levels are composed from
the nearest finer level and cached.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tileserver.dzi import DeepZoom, frame_aligned, native_level_for, parse_tile_name
from tileserver.errors import InvalidRequestError
from tileserver.geometry import Region, Size
from tileserver.http.responses import etag_for, image_response
from tileserver.http.state import service_of
from tileserver.http.stored import dzi_etag
from tileserver.slide import Slide
from tileserver.timing import Timings

DZI_FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png", "webp": "webp"}


def deep_zoom(slide: Slide) -> DeepZoom:
    base = slide.base_level()
    return DeepZoom(base.size.width, base.size.height, base.tile_size.width, 0)


#: What distinguishes DZI renders in the cache (the fast path looks them up too).
COMPOSED_KEY = ("dzi",)


def composed_request(dz: DeepZoom, z_level: int, col: int, row: int) -> tuple[Region, Size]:
    """Level-0 region and output size of a DZI tile composed from stored levels."""
    x, y, w, h = dz.l0_region(z_level, col, row)
    z_region = dz.tile_region(z_level, col, row)
    return (
        Region(int(x), int(y), max(1, round(w)), max(1, round(h))),
        Size(z_region.width, z_region.height),
    )


async def descriptor(request: Request) -> Response:
    slide = await service_of(request).slide(request.path_params["slide_id"])
    xml = deep_zoom(slide).xml("jpeg")
    return Response(
        xml,
        media_type="application/xml",
        headers={"ETag": etag_for(slide.version, "dzi"), "Cache-Control": "public, max-age=3600"},
    )


async def tile(request: Request) -> Response:
    service, timings = service_of(request), Timings()
    slide = await service.slide(request.path_params["slide_id"], timings)
    z_level = request.path_params["level"]
    col, row, fmt = parse_tile_name(request.path_params["name"])
    if fmt not in DZI_FORMATS:
        raise InvalidRequestError(f"DZI tiles are jpeg, png or webp, not {fmt!r}")
    fmt = DZI_FORMATS[fmt]
    dz = deep_zoom(slide)
    dz.tile_region(z_level, col, row)  # validates level, col and row (404)
    etag = dzi_etag(slide.version, z_level, col, row, fmt)
    native = native_level_for(dz, z_level, slide.levels)
    if native is not None and frame_aligned(dz, slide.levels[native]):
        rendered = await service.tile(slide, native, col, row, fmt, timings=timings)
    else:
        l0, out_size = composed_request(dz, z_level, col, row)
        rendered = await service.render(
            slide, l0, out_size, fmt, key_parts=COMPOSED_KEY, timings=timings
        )
    return image_response(request, rendered.data, rendered.media_type, etag, timings)


routes = [
    Route("/dzi/{slide_id}.dzi", descriptor),
    Route("/dzi/{slide_id}_files/{level:int}/{name}", tile),
]
