"""``POST /auth/sign``: signed URLs of one slide (``http/signing.py``), for a credential that
may see it. Body: ``{"slide": ID, "expires_in": SECONDS}`` (default one hour)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tileserver.errors import InvalidRequestError, NotFoundError
from tileserver.http.responses import json_response
from tileserver.http.signing import UrlSigner
from tileserver.http.state import service_of

DEFAULT_SECONDS = 3600


async def sign(request: Request) -> Response:
    service = service_of(request)
    key = service.settings.url_signing_key
    if not key:
        raise NotFoundError("URL signing is off: start the server with --url-signing-key")
    try:
        body = orjson.loads(await request.body())
        slide_id, seconds = str(body["slide"]), int(body.get("expires_in", DEFAULT_SECONDS))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRequestError('expected {"slide": ID, "expires_in": SECONDS}') from exc
    slide = await service.slide(slide_id)  # 404 for a slide this credential may not see
    try:
        query, expires = UrlSigner(key).query(slide.id, seconds)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc
    return json_response(
        {
            "slide": slide.id,
            "expires": expires,
            "query": query,
            "viewer": f"/viewer/{slide.id}?{query}",
            "dzi": f"/dzi/{slide.id}.dzi?{query}",
            "tiles": f"/slides/{slide.id}/tiles/{{level}}/{{col}}/{{row}}?{query}",
        }
    )


routes = [Route("/auth/sign", sign, methods=["POST"])]
