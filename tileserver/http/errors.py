"""One table from domain errors to HTTP statuses; every error is JSON ``{"error": ...}``.

Nothing below ``tileserver.http`` raises HTTP exceptions: the fronts let domain errors
propagate and this module turns them into responses, most specific class first.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tileserver.errors import (
    CacheUnavailableError,
    CorruptSlideError,
    InvalidRequestError,
    LimitExceededError,
    NotAcceptableError,
    NotFoundError,
    OverloadedError,
    SlideError,
    SourceUnavailableError,
    TileServerError,
    UnsupportedError,
    UnsupportedMediaTypeError,
)
from tileserver.http.responses import json_response

log = logging.getLogger(__name__)

STATUS: dict[type[TileServerError], int] = {
    NotFoundError: 404,
    NotAcceptableError: 406,
    UnsupportedMediaTypeError: 415,
    InvalidRequestError: 400,
    LimitExceededError: 400,
    SourceUnavailableError: 503,
    CacheUnavailableError: 503,
    OverloadedError: 503,
    UnsupportedError: 501,
    CorruptSlideError: 422,
    SlideError: 422,
    TileServerError: 500,
}


def status_for(exc: TileServerError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


async def domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TileServerError)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, OverloadedError) else None
    return json_response({"error": str(exc)}, status_code=status_for(exc), headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return json_response(
        {"error": exc.detail}, status_code=exc.status_code, headers=dict(exc.headers or {})
    )


# Other exceptions: ``middleware.CatchAllMiddleware`` (inside CORS) answers a JSON 500.
HANDLERS = {TileServerError: domain_error, HTTPException: http_error}
