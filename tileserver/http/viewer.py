"""Built-in viewer: the landing page, the OpenSeadragon page, its error page, the favicon
and the vendored static files."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tileserver.errors import TileServerError
from tileserver.http.errors import status_for
from tileserver.http.state import service_of

STATIC = Path(__file__).parent / "static"
TITLES = {404: "Slide not found", 422: "Slide cannot be read"}


@cache
def _page(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


async def index(request: Request) -> Response:
    return HTMLResponse(_page("index.html"))


def error_page(status: int, reason: str) -> HTMLResponse:
    """A person's version of the JSON error: what went wrong and a way back."""
    title = TITLES.get(status, "The slide cannot be shown")
    page = _page("error.html")
    for key, value in (("title", title), ("status", str(status)), ("reason", reason)):
        page = page.replace("{" + key + "}", html.escape(value))
    return HTMLResponse(page, status_code=status)


async def viewer(request: Request) -> Response:
    try:
        slide = await service_of(request).slide(request.path_params["slide_id"])
    except TileServerError as exc:
        return error_page(status_for(exc), str(exc))
    page = _page("viewer.html").replace(
        'data-slide-id=""', f'data-slide-id="{html.escape(slide.id)}"', 1
    )
    return HTMLResponse(page)


async def favicon(request: Request) -> Response:
    return FileResponse(
        STATIC / "favicon.ico",
        media_type="image/vnd.microsoft.icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )


routes: list[BaseRoute] = [
    Route("/", index),
    Route("/favicon.ico", favicon),
    Route("/viewer/{slide_id}", viewer),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
