"""Middleware behaviour on a tiny app: CORS on every response (500s included), Vary, gzip."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tileserver.http.middleware import CatchAllMiddleware, CorsMiddleware, GzipTextMiddleware


async def boom(request: Request) -> Response:
    raise RuntimeError("a bug")


async def big_json(request: Request) -> Response:
    return JSONResponse({"items": list(range(int(request.query_params.get("n", 500))))})


def app(origins: str = "*") -> Starlette:
    return Starlette(
        routes=[Route("/boom", boom), Route("/json", big_json)],
        middleware=[
            Middleware(CorsMiddleware, origins=origins),
            Middleware(CatchAllMiddleware),
            Middleware(GzipTextMiddleware),
        ],
    )


def request(
    application: Starlette, method: str, url: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, url, headers=headers)

    return asyncio.run(go())


def test_unexpected_error_is_json_500_with_cors() -> None:
    response = request(app(), "GET", "/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error"}
    assert response.headers["access-control-allow-origin"] == "*"


def test_restricted_origins_vary_on_origin_even_without_one() -> None:
    restricted = app("http://a.example")
    plain = request(restricted, "GET", "/json")
    assert "access-control-allow-origin" not in plain.headers
    assert "Origin" in plain.headers["vary"]
    allowed = request(restricted, "GET", "/json", {"Origin": "http://a.example"})
    assert allowed.headers["access-control-allow-origin"] == "http://a.example"
    other = request(restricted, "GET", "/json", {"Origin": "http://b.example"})
    assert "access-control-allow-origin" not in other.headers


def test_preflight_allows_what_the_browser_asks_for() -> None:
    response = request(
        app(),
        "OPTIONS",
        "/json",
        {
            "Origin": "http://a.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-custom-trace",
        },
    )
    allowed = response.headers["access-control-allow-headers"].lower()
    assert response.status_code == 204
    assert "accept" in allowed and "authorization" in allowed and "x-custom-trace" in allowed


def test_json_is_gzipped_only_when_accepted() -> None:
    zipped = request(app(), "GET", "/json", {"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and len(zipped.json()["items"]) == 500
    plain = request(app(), "GET", "/json", {"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def test_large_json_is_gzipped_too() -> None:
    zipped = request(app(), "GET", "/json?n=100000", {"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.json()["items"][-1] == 99_999
