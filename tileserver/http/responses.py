"""Response helpers: orjson JSON, and image responses with strong ETags and 304s."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tileserver.http.stored import TILE_CACHE_CONTROL
from tileserver.timing import Timings


def json_response(
    value: Any,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    media_type: str = "application/json",
) -> Response:
    body = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status_code, headers=headers, media_type=media_type)


def etag_for(*parts: object) -> str:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()
    return f'"{digest}"'


def not_modified(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    return header.strip() == "*" or etag in (t.strip() for t in header.split(","))


def image_response(
    request: Request, data: bytes, media_type: str, etag: str, timings: Timings | None = None
) -> Response:
    """Bytes with ``ETag``/``Cache-Control``; a 304 when the client already has them."""
    headers = {"ETag": etag, "Cache-Control": TILE_CACHE_CONTROL}
    if timings is not None and timings.values:
        headers["Server-Timing"] = timings.header()
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)
