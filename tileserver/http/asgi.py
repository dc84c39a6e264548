"""ASGI front (uvicorn): the stored-tile chain first, then the app once it has started.

A thin adapter: it reads what the chain needs from the scope, sends the chain's answers,
and hands everything else (with the grant the chain gave it) to the app, which an
``AppLoader`` builds in a worker thread while the chain answers early requests.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import Message, Receive, Scope, Send

from tileserver.http.access import GRANT_KEY
from tileserver.http.accesslog import AccessLog
from tileserver.http.chain import LATER, ChainRequest, StoredTileChain
from tileserver.http.early import AppLoader
from tileserver.http.stored import Answer

#: Set in a scope the stored-tile chain answered (for the access log).
VIA = "tileserver.via"


class AsgiRequest(ChainRequest):
    __slots__ = ("_headers",)

    def __init__(self, scope: Scope) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        origin, conditional = b"", False
        for name, value in headers:
            if name == b"origin":
                origin = value
            elif name == b"if-none-match":
                conditional = True
        raw_query = scope["query_string"]
        # Decoding costs per request: only what is there (most tile requests have neither).
        query = raw_query.decode("latin-1") if raw_query else ""
        text_origin = origin.decode("latin-1") if origin else ""
        peer = scope.get("client")
        client = peer[0] if peer else ""
        super().__init__(scope["method"], scope["path"], query, conditional, text_origin, client)
        self._headers = headers

    def header(self, name: str) -> str | None:
        key = name.encode("latin-1")
        return next((v.decode("latin-1") for k, v in self._headers if k == key), None)


class AsgiFront:
    """The ASGI application uvicorn runs."""

    def __init__(self, chain: StoredTileChain, loader: AppLoader) -> None:
        self.chain = chain
        self.loader = loader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection scope (the chain's answers mark it ``VIA``)."""
        kind = scope["type"]
        if kind == "http":
            request = AsgiRequest(scope)
            answer = self.chain.first(request)
            if answer is LATER:
                answer = await self.chain.later(request)
            if answer is not None:
                await self._send(send, answer, request.origin, self.chain.private(request))
                scope[VIA] = "chain"
                return
            if request.grant is not None:
                scope[GRANT_KEY] = request.grant
        elif kind == "lifespan":
            await self._lifespan(receive, send)
            return
        app = self.loader.app or await self.loader.wait()
        if app is not None:
            await app(scope, receive, send)
        elif kind == "http":
            await self._send(send, self.loader.failure(), "", False)

    async def _send(self, send: Send, answer: Answer, origin: str, private: bool) -> None:
        headers = self.chain.headers.build_raw(answer, origin, private)
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The server's lifespan starts the loader (the app starts in the background) and
        stops the app."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loader.start(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.loader.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


class LoggedAsgiFront(AsgiFront):
    """``AsgiFront`` writing the access log (``--access-log``): a class of its own, so a
    server without one pays nothing for it per request."""

    def __init__(self, chain: StoredTileChain, loader: AppLoader, log: AccessLog) -> None:
        super().__init__(chain, loader)
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._logged(scope, receive, send, self.log)
        else:
            await super().__call__(scope, receive, send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send, log: AccessLog) -> None:
        """``_serve`` with the request's access-log line."""
        started, seen = time.perf_counter(), [500, 0]

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
            elif message["type"] == "http.response.body":
                seen[1] += len(message.get("body", b""))
            await send(message)

        try:
            await super().__call__(scope, receive, counting)
        finally:
            grant = scope.get(GRANT_KEY)
            log.record(
                scope["method"],
                scope["path"],
                scope["query_string"].decode("latin-1"),
                seen[0],
                seen[1],
                started,
                str((scope.get("client") or ("",))[0]),
                grant.principal if grant is not None else "",
                scope.get(VIA, "app"),
                _request_id(scope),
            )


def _request_id(scope: Scope) -> str | None:
    """The client's or the proxy's ``X-Request-Id``, for the access log."""
    found = (v for k, v in scope["headers"] if k == b"x-request-id")
    return next((v.decode("latin-1") for v in found), None)
