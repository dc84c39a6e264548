"""IIIF Image API 3.0 (``/iiif/3``) and 2.1 (``/iiif/2``) at compliance level 2.

A request equal to one stored frame takes the no-decode path; everything else is rendered
from the best level, transformed (mirror, rotation, quality) and cached. The IIIF logic is
imported by the handlers that use it, not at start-up.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tileserver.errors import NotFoundError
from tileserver.http.forwarded import public_origin
from tileserver.http.responses import etag_for, image_response, json_response
from tileserver.http.state import service_of
from tileserver.service import importing
from tileserver.timing import Timings

if TYPE_CHECKING:
    from tileserver.compose import Pixels

OUTPUT = {"jpg": "jpeg", "png": "png", "webp": "webp"}
PROFILE_LINK = {
    3: '<http://iiif.io/api/image/3/level2.json>;rel="profile"',
    2: '<http://iiif.io/api/image/2/level2.json>;rel="profile"',
}


def _version(request: Request) -> int:
    raw = request.path_params["version"]
    if raw not in ("2", "3"):
        raise NotFoundError(f"IIIF Image API version {raw!r} is not served (2 or 3)")
    return int(raw)


def base_id(request: Request, version: int, slide_id: str) -> str:
    """The service id as the client addressed it, behind proxies too (X-Forwarded-*)."""
    return f"{public_origin(request)}/iiif/{version}/{slide_id}"


async def redirect_to_info(request: Request) -> Response:
    version = _version(request)
    slide = await service_of(request).slide(request.path_params["slide_id"])
    slide.base_level()
    return RedirectResponse(base_id(request, version, slide.id) + "/info.json", status_code=303)


@importing("tileserver.iiif")
async def info(request: Request) -> Response:
    from tileserver import iiif

    version = _version(request)
    service = service_of(request)
    slide = await service.slide(request.path_params["slide_id"])
    slide.base_level()
    tile, factors, sizes = iiif.pyramid_info(slide.levels)
    doc = iiif.info_json(
        version,
        base_id(request, version, slide.id),
        slide.levels[0].size,
        tile,
        factors,
        sizes,
        service.settings.max_output_pixels,
    )
    media_type = "application/json"
    if "application/ld+json" in request.headers.get("accept", ""):
        media_type = "application/ld+json"
        if version == 3:
            media_type += ';profile="http://iiif.io/api/image/3/context.json"'
    return json_response(
        doc,
        headers={
            "Link": PROFILE_LINK[version],
            "Cache-Control": "public, max-age=3600",
            "Vary": "Accept",
        },
        media_type=media_type,
    )


@importing("tileserver.iiif")
async def image(request: Request) -> Response:
    from tileserver import iiif

    version = _version(request)
    service, timings = service_of(request), Timings()
    slide = await service.slide(request.path_params["slide_id"], timings)
    slide.base_level()
    p = request.path_params
    req = iiif.parse_request(
        version,
        p["region"],
        p["size"],
        p["rotation"],
        p["quality_format"],
        slide.levels[0].size,
        service.settings.max_output_pixels,
    )
    fmt = OUTPUT[req.format]
    etag = etag_for(slide.version, "iiif", req)
    native = iiif.is_native_tile(req, slide.levels)
    if native is not None:
        rendered = await service.tile(slide, *native, fmt, timings=timings)
    else:
        rendered = await service.render(
            slide,
            req.region,
            req.size,
            fmt,
            timings=timings,
            key_parts=("iiif", req.mirror, req.rotation, req.quality),
            transform=partial(
                _transform, mirror=req.mirror, rotation=req.rotation, quality=req.quality
            ),
        )
    response = image_response(request, rendered.data, rendered.media_type, etag, timings)
    response.headers["Link"] = PROFILE_LINK[version]
    return response


def _transform(pixels: Pixels, *, mirror: bool, rotation: float, quality: str) -> Pixels:
    from tileserver import imageops  # in a worker thread (``TileService.render``)

    if mirror:
        pixels = imageops.mirror(pixels)
    return imageops.recolour(imageops.rotate(pixels, rotation), quality)


routes = [
    Route("/iiif/{version}/{slide_id}", redirect_to_info),
    Route("/iiif/{version}/{slide_id}/info.json", info),
    Route("/iiif/{version}/{slide_id}/{region}/{size}/{rotation}/{quality_format}", image),
]
