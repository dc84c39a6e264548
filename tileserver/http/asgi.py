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
        query = scope["query_string"].decode("latin-1")
        super().__init__(
            scope["method"], scope["path"], query, conditional, origin.decode("latin-1")
        )
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
        log = self.chain.access_log
        if log is not None and scope["type"] == "http":
            await self._logged(scope, receive, send, log)
        else:
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> str:
        """Serve one connection scope; which answered: "chain" or "app"."""
        kind = scope["type"]
        if kind == "http":
            request = AsgiRequest(scope)
            answer = self.chain.first(request)
            if answer is LATER:
                answer = await self.chain.later(request)
            if answer is not None:
                await self._send(send, answer, request.origin, self.chain.private(request))
                return "chain"
            if request.grant is not None:
                scope[GRANT_KEY] = request.grant
        elif kind == "lifespan":
            await self._lifespan(receive, send)
            return "app"
        app = self.loader.app or await self.loader.wait()
        if app is not None:
            await app(scope, receive, send)
        elif kind == "http":
            await self._send(send, self.loader.failure(), "", False)
        return "app"

    async def _logged(self, scope: Scope, receive: Receive, send: Send, log: AccessLog) -> None:
        """``_serve`` with the request's access-log line."""
        started, seen = time.perf_counter(), [500, 0]

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
            elif message["type"] == "http.response.body":
                seen[1] += len(message.get("body", b""))
            await send(message)

        via = "app"
        try:
            via = await self._serve(scope, receive, counting)
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
                via,
                next(
                    (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None
                ),
            )

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


def _request_id(scope: Scope) -> str | None:
    """The client's or the proxy's ``X-Request-Id``, for the access log."""
    found = (v for k, v in scope["headers"] if k == b"x-request-id")
    return next((v.decode("latin-1") for v in found), None)
