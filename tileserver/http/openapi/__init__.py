"""``/openapi.json`` (OpenAPI 3.1) and ``/docs``, a page rendered from it on the server.

No CDN and no script: the page is plain HTML built from the same document, so it works
offline and behind strict content security policies.
"""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from tileserver import __version__
from tileserver.http.forwarded import public_origin
from tileserver.http.openapi import dicomweb, paths
from tileserver.http.openapi.docs import render_page
from tileserver.http.openapi.schemas import SCHEMAS
from tileserver.http.openapi.spec import Json
from tileserver.http.responses import json_response

OPENAPI_VERSION = "3.1.0"
TAGS = [
    {"name": "slides", "description": "Native API: slides, stored tiles, regions, images"},
    {"name": "dzi", "description": "Deep Zoom (OpenSeadragon's DZI)"},
    {"name": "iiif", "description": "IIIF Image API 3.0 and 2.1, level 2"},
    {"name": "dicomweb", "description": "DICOMweb: QIDO-RS, WADO-RS, STOW-RS"},
    {"name": "viewer", "description": "Built-in viewer pages"},
    {"name": "operations", "description": "Health, readiness, metrics, cache, this document"},
]


@functools.cache
def document() -> Json:
    """The description, without ``servers`` (added per request: the origin as addressed)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "tileserver",
            "version": __version__,
            "summary": "Whole-slide pathology tile server",
            "description": (
                'Errors are JSON `{"error": ...}` with a 4xx status for every bad id, level, '
                "coordinate or parameter. Every response carries CORS headers."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": TAGS,
        "paths": {**paths.paths(), **dicomweb.paths()},
        "components": {"schemas": SCHEMAS},
    }


def _served(request: Request) -> Json:
    return {**document(), "servers": [{"url": public_origin(request)}]}


async def openapi_json(request: Request) -> Response:
    return json_response(_served(request))


async def docs(request: Request) -> Response:
    return HTMLResponse(render_page(_served(request)))


routes: list[BaseRoute] = [Route("/openapi.json", openapi_json), Route("/docs", docs)]

__all__ = ["document", "routes"]
