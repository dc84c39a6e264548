"""Deep Zoom front: ``/dzi/{id}.dzi`` and its tiles, as OpenSeadragon requests them.

TileSize is the slide's frame width and Overlap 0, so a tile on a native level is a stored
frame (passed through, or losslessly cropped at the edges); other levels are composed from
the nearest finer level and cached.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tileserver.dzi import parse_tile_name
from tileserver.errors import InvalidRequestError
from tileserver.http import convertors  # noqa: F401 (bounded {name:int} routes)
from tileserver.http.responses import etag_for, image_response
from tileserver.http.state import service_of
from tileserver.http.stored import DZI_ROUTE, dzi_etag
from tileserver.timing import Timings

DZI_FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png", "webp": "webp"}


#: What distinguishes DZI renders in the cache (the chain looks them up too).
COMPOSED_KEY = ("dzi",)


async def descriptor(request: Request) -> Response:
    slide = await service_of(request).slide(request.path_params["slide_id"])
    xml = service_of(request).dzi_plan(slide).zoom.xml("jpeg")
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
    plan = service.dzi_plan(slide)
    plan.zoom.tile_region(z_level, col, row)  # validates level, col and row (404)
    etag = dzi_etag(slide.version, z_level, col, row, fmt)
    native = plan.native.get(z_level)
    if native is not None:
        rendered = await service.tile(slide, native, col, row, fmt, timings=timings)
    else:
        l0, out_size = plan.composed(z_level, col, row)
        rendered = await service.render(
            slide, l0, out_size, fmt, key_parts=COMPOSED_KEY, timings=timings
        )
    return image_response(request, rendered.data, rendered.media_type, etag, timings)


routes = [
    Route("/dzi/{slide_id}.dzi", descriptor),
    Route(DZI_ROUTE, tile),
]
