"""Cache purge: the whole cache, or one slide's derived images (its current version)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tileserver.cache import version_prefix
from tileserver.http.responses import json_response
from tileserver.http.state import service_of


async def purge_all(request: Request) -> Response:
    await service_of(request).cache.clear()
    return json_response({"purged": "all"})


async def purge_slide(request: Request) -> Response:
    service = service_of(request)
    slide = await service.slide(request.path_params["slide_id"])
    removed = await service.cache.delete_prefix(version_prefix(slide.version))
    return json_response({"purged": slide.id, "entries": removed})


routes = [
    Route("/cache", purge_all, methods=["DELETE"]),
    Route("/cache/slides/{slide_id}", purge_slide, methods=["DELETE"]),
]
