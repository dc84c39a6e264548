"""Built-in viewer: the slide list, the OpenSeadragon page, and the vendored static files."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tileserver.http.state import service_of

STATIC = Path(__file__).parent / "static"


@cache
def _page(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


async def index(request: Request) -> Response:
    return HTMLResponse(_page("index.html"))


async def viewer(request: Request) -> Response:
    slide = await service_of(request).slide(request.path_params["slide_id"])
    page = _page("viewer.html").replace(
        'data-slide-id=""', f'data-slide-id="{html.escape(slide.id)}"', 1
    )
    return HTMLResponse(page)


routes: list[BaseRoute] = [
    Route("/", index),
    Route("/viewer/{slide_id}", viewer),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
