"""Native API: slide listing and metadata, stored tiles, regions, thumbnails, associated images."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tileserver import compose
from tileserver.errors import NotFoundError, TileAbsentError, TileServerError
from tileserver.geometry import Region
from tileserver.grants import may_see
from tileserver.http import convertors  # noqa: F401 (bounded {name:int} routes)
from tileserver.http.params import (
    format_param,
    int_param,
    optional_format_param,
    plane_param,
)
from tileserver.http.responses import (
    etag_for,
    image_response,
    json_response,
    not_modified,
)
from tileserver.http.state import service_of
from tileserver.http.stored import tile_etag
from tileserver.slide import Level, Slide
from tileserver.timing import Timings

log = logging.getLogger(__name__)
IMAGE_FORMATS = ("jpeg", "jpg", "png", "webp")
#: What a listing entry shows of the patient, study and series (the landing page searches it).
LISTED_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "StudyID",
    "AccessionNumber",
    "SeriesDescription",
    "StudyInstanceUID",
)


def slide_entry(slide: Slide) -> dict[str, Any]:
    """The ``GET /slides`` entry of one slide."""
    base = slide.levels[0] if slide.levels else None
    return {
        "id": slide.id,
        "name": slide.name,
        "path": slide.path,
        "size": slide.reader.size_bytes,
        "width": base.size.width if base else None,
        "height": base.size.height if base else None,
        "levels": [_level(lv) for lv in slide.levels],
        "tile_size": [base.tile_size.width, base.tile_size.height] if base else None,
        "transfer_syntax": slide.reader.transfer_syntax,
        "associated": sorted(slide.associated),
        "attributes": {k: v for k, v in slide.attributes.items() if k in LISTED_ATTRIBUTES},
    }


def slide_detail(slide: Slide) -> dict[str, Any]:
    return {
        **slide_entry(slide),
        "mpp": list(slide.mpp) if slide.mpp else None,
        "focal_planes": list(slide.focal_planes),
        "optical_paths": list(slide.optical_paths),
        "associated_images": [
            {"name": a.name, "width": a.size.width, "height": a.size.height}
            for a in slide.associated.values()
        ],
        "icc_profile": slide.icc_profile is not None,
        "background": list(slide.background) if slide.background else None,
        "attributes": dict(slide.attributes),
        "warnings": list(slide.warnings),
    }


def _level(lv: Level) -> dict[str, Any]:
    return {
        "index": lv.index,
        "width": lv.size.width,
        "height": lv.size.height,
        "tile_width": lv.tile_size.width,
        "tile_height": lv.tile_size.height,
        "grid": [lv.grid.width, lv.grid.height],
        "downsample": list(lv.downsample),
        "mpp": list(lv.mpp) if lv.mpp else None,
    }


async def list_slides(request: Request) -> Response:
    service = service_of(request)
    ids = await service.run(service.library.ids)
    entries = []
    for slide_id in ids:
        version = service.library.version_of(slide_id)
        cached = service.summaries.get(slide_id)
        if cached is None or cached[0] != version:
            try:
                slide = await service.slide(slide_id, keep=False)
            except NotFoundError:
                continue  # not visible to this request's grant (or gone)
            except TileServerError as exc:  # one broken slide must not hide the others
                log.warning("slide %s left out of the listing: %s", slide_id, exc)
                continue
            cached = service.summaries[slide_id] = (slide.version, slide_entry(slide))
        attributes: Any = cached[1]["attributes"]
        if may_see(attributes.get("StudyInstanceUID")):
            entries.append(cached[1])
    entries.sort(key=lambda e: (str(e["path"]), str(e["id"])))
    return json_response({"slides": entries})


async def get_slide(request: Request) -> Response:
    service = service_of(request)
    slide = await service.slide(request.path_params["slide_id"])
    await service.run(compose.background_of, slide)  # decodes a few tiles, once per slide
    return json_response(slide_detail(slide))


async def get_tile(request: Request) -> Response:
    service, timings = service_of(request), Timings()
    slide = await service.slide(request.path_params["slide_id"], timings)
    level, col, row = (request.path_params[k] for k in ("level", "col", "row"))
    fmt = optional_format_param(request, IMAGE_FORMATS)
    plane = plane_param(request)
    etag = tile_etag(slide.version, level, col, row, plane, fmt)
    if not_modified(request, etag):
        return image_response(request, b"", "", etag)
    if fmt is None:
        try:
            encoded = await service.stored_tile(slide, level, col, row, plane, timings)
            return image_response(request, encoded.data, encoded.media_type, etag, timings)
        except TileAbsentError:
            fmt = "jpeg"
    rendered = await service.tile(slide, level, col, row, fmt, plane, timings)
    return image_response(request, rendered.data, rendered.media_type, etag, timings)


async def get_region(request: Request) -> Response:
    service, timings = service_of(request), Timings()
    slide = await service.slide(request.path_params["slide_id"], timings)
    level = int_param(request, "level", 0, minimum=0)
    region = Region(
        int_param(request, "x", 0),
        int_param(request, "y", 0),
        int_param(request, "width", minimum=1),
        int_param(request, "height", minimum=1),
    )
    fmt = format_param(request, "jpeg", (*IMAGE_FORMATS, "npy"))
    plane = plane_param(request)
    slide.level(level)
    etag = etag_for(slide.version, "region", level, region, plane, fmt)
    rendered = await service.region(slide, level, region, fmt, plane, timings)
    return image_response(request, rendered.data, rendered.media_type, etag, timings)


async def get_thumbnail(request: Request) -> Response:
    service, timings = service_of(request), Timings()
    slide = await service.slide(request.path_params["slide_id"], timings)
    max_side = int_param(request, "max", 512, minimum=1, maximum=4096)
    fmt = format_param(request, "jpeg", IMAGE_FORMATS)
    etag = etag_for(slide.version, "thumbnail", max_side, fmt)
    rendered = await service.thumbnail(slide, max_side, fmt, timings)
    return image_response(request, rendered.data, rendered.media_type, etag, timings)


async def get_associated(request: Request) -> Response:
    service, timings = service_of(request), Timings()
    slide = await service.slide(request.path_params["slide_id"], timings)
    name = request.path_params["name"]
    fmt = format_param(request, "jpeg", IMAGE_FORMATS)
    etag = etag_for(slide.version, "associated", name, fmt)
    rendered = await service.associated(slide, name, fmt, timings)
    return image_response(request, rendered.data, rendered.media_type, etag, timings)


routes = [
    Route("/slides", list_slides),
    Route("/slides/{slide_id}", get_slide),
    Route("/slides/{slide_id}/tiles/{level:int}/{col:int}/{row:int}", get_tile),
    Route("/slides/{slide_id}/region", get_region),
    Route("/slides/{slide_id}/thumbnail", get_thumbnail),
    Route("/slides/{slide_id}/associated/{name}", get_associated),
]
