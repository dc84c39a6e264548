"""Pure ASGI middleware: access, CORS on every response, gzip for text, request metrics."""

from __future__ import annotations

import gzip
import logging
import time
from typing import Any

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tileserver.http.access import (
    ALLOW_ALL,
    CURRENT_GRANT,
    GRANT_KEY,
    Authorizer,
    Grant,
    HeaderRequest,
    Refusal,
)
from tileserver.http.metrics import Metrics
from tileserver.http.stored import CorsPolicy

log = logging.getLogger(__name__)
PREFLIGHT_HEADERS = "Accept, Authorization, Content-Type, If-None-Match, Range"
_COMPRESSIBLE = (
    b"application/json",
    b"application/ld+json",
    b"application/dicom+json",
    b"application/xml",
    b"text/",
)


class CorsMiddleware:
    """``Access-Control-Allow-Origin`` on every response, errors included; preflights."""

    def __init__(self, app: ASGIApp, origins: str = "*") -> None:
        self.app = app
        self.policy = CorsPolicy(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            allow = self.policy.allow(origin)
            await self._preflight(allow, headers.get(b"access-control-request-headers"), send)
            return
        extra = self.policy.raw_headers(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    @staticmethod
    async def _preflight(allow: str | None, requested: bytes | None, send: Send) -> None:
        # Accept and Authorization always; any other header the browser asks for too.
        allowed = PREFLIGHT_HEADERS.encode() + (b", " + requested if requested else b"")
        headers = [
            (b"access-control-allow-methods", b"GET, HEAD, POST, DELETE, OPTIONS"),
            (b"access-control-allow-headers", allowed),
            (b"access-control-max-age", b"86400"),
            (b"content-length", b"0"),
        ]
        if allow is not None:
            headers.append((b"access-control-allow-origin", allow.encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


class AccessMiddleware:
    """The app's side of the one access check (``http/access.py``): a request the
    stored-tile chain already checked carries its grant; any other is checked here."""

    def __init__(self, app: ASGIApp, authorizer: Authorizer = ALLOW_ALL) -> None:
        self.app = app
        self.authorizer = authorizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and GRANT_KEY not in scope:
            pairs = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
            query = scope["query_string"].decode("latin-1")
            verdict = self.authorizer.check(
                HeaderRequest(scope["method"], scope["path"], query, pairs)
            )
            if isinstance(verdict, Refusal):
                await _refuse(send, verdict)
                return
            scope[GRANT_KEY] = verdict
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        grant: Grant = scope[GRANT_KEY]
        CURRENT_GRANT.set(grant)  # this request's task and its threads
        if self.authorizer is ALLOW_ALL or grant.signed:
            await self.app(scope, receive, send)
            return

        async def private(message: Message) -> None:
            if message["type"] == "http.response.start":  # credentialed: no shared caching
                message["headers"] = [
                    (k, v.replace(b"public", b"private") if k == b"cache-control" else v)
                    for k, v in message.get("headers", [])
                ]
            await send(message)

        await self.app(scope, receive, private)


async def _refuse(send: Send, refusal: Refusal) -> None:
    body = refusal.body()
    pairs = [("content-type", "application/json"), *refusal.challenge_headers()]
    headers = [(k.encode(), v.encode("latin-1")) for k, v in pairs]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CatchAllMiddleware:
    """Unexpected exceptions become a JSON 500 here, inside the CORS layer, so even those
    responses carry CORS headers (Starlette's own handler sits outside all middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("unhandled error on %s", scope.get("path"))
            if started:
                raise
            body = b'{"error":"internal error"}'
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})


class GzipTextMiddleware:
    """Gzip JSON, XML and text bodies (never images) for clients that accept it."""

    def __init__(self, app: ASGIApp, minimum_size: int = 512) -> None:
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepts = b"gzip" in dict(scope.get("headers", [])).get(b"accept-encoding", b"")
        if scope["type"] != "http" or not accepts:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if not content_type.startswith(_COMPRESSIBLE):
                    await send(message)
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await _send_compressed(send, start, b"".join(chunks), self.minimum_size)

        await self.app(scope, receive, buffered)


async def _send_compressed(send: Send, start: Message, body: bytes, minimum: int) -> None:
    headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
    if len(body) >= minimum:
        if len(body) > 256 * 1024:  # big documents compress off the event loop
            body = await to_thread.run_sync(gzip.compress, body, 5)
        else:
            body = gzip.compress(body, compresslevel=5)
        headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Counts requests and observes latency per route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.observe_request(
                _route(scope), scope["method"], status, time.perf_counter() - start
            )


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
