"""RSGI front (granian): the stored-tile chain first, then the app through an ASGI bridge.

RSGI hands a request to Python as one scope object and takes the whole response in one
call (``protocol.response_bytes``), which costs granian far less per request than the
ASGI message exchange. The chain's answers (``http/chain.py``) use it directly; every other
request is bridged to the Starlette app as ordinary ASGI (streamed request bodies, streamed
responses, the lifespan run by the ``AppLoader`` at worker start and stop), so both server
fronts serve the same application.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import quote

from starlette.types import ASGIApp, Message

from tileserver.http.access import GRANT_KEY, Grant
from tileserver.http.chain import LATER, ChainRequest, StoredTileChain
from tileserver.http.early import AppLoader

Headers = list[tuple[str, str]]
_PATH_SAFE = "/:@!$&'()*+,;=~"


class RSGIHeaders(Protocol):
    def __contains__(self, key: str) -> bool: ...
    def get(self, key: str, default: str | None = None) -> str: ...
    def items(self) -> list[tuple[str, str]]: ...


class RSGIScope(Protocol):
    proto: str
    http_version: str
    scheme: str
    method: str
    path: str
    query_string: str
    client: str
    server: str

    @property
    def headers(self) -> RSGIHeaders: ...


class RSGIStream(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...


class RSGIProtocol(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def client_disconnect(self) -> None: ...
    def response_bytes(self, status: int, headers: Headers, body: bytes) -> None: ...
    def response_stream(self, status: int, headers: Headers) -> RSGIStream: ...


class RsgiRequest(ChainRequest):
    __slots__ = ("_headers",)

    def __init__(self, scope: RSGIScope) -> None:
        headers = scope.headers
        conditional = "if-none-match" in headers
        origin = headers.get("origin", "")
        client = scope.client.rpartition(":")[0].strip("[]")
        super().__init__(scope.method, scope.path, scope.query_string, conditional, origin, client)
        self._headers = headers

    def header(self, name: str) -> str | None:
        return self._headers.get(name)


class RsgiFront:
    """The RSGI application granian runs (``--interface rsgi``)."""

    def __init__(
        self, chain: StoredTileChain, loader: AppLoader, body_timeout: float = 30.0
    ) -> None:
        self.chain = chain
        self.loader = loader
        self.body_timeout = body_timeout

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Worker start: the app is built and started in the background."""
        self.loader.start(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.loader.stop())

    async def __rsgi__(self, scope: RSGIScope, protocol: RSGIProtocol) -> None:
        if scope.proto != "http":
            return  # no websockets here; granian closes the connection
        log = self.chain.access_log
        if log is None:
            await self._serve(scope, protocol)
            return
        started = time.perf_counter()
        status, size, via, request = 500, 0, "app", None
        try:
            status, size, via, request = await self._serve(scope, protocol)
        finally:
            grant = request.grant if request is not None else None
            client = scope.client.rpartition(":")[0].strip("[]")
            principal = grant.principal if grant is not None else ""
            log.record(
                scope.method, scope.path, scope.query_string, status, size, started,
                client, principal, via, scope.headers.get("x-request-id"),
            )  # fmt: skip

    async def _serve(
        self, scope: RSGIScope, protocol: RSGIProtocol
    ) -> tuple[int, int, str, RsgiRequest]:
        """Serve one request: (status, body bytes, "chain" or "app", the request)."""
        request = RsgiRequest(scope)
        answer = self.chain.first(request)
        if answer is LATER:
            answer = await self.chain.later(request)
        if answer is None:
            app = self.loader.app or await self.loader.wait()
            if app is not None:
                exchange = _Exchange(scope, protocol, self.body_timeout)
                await exchange.run(app, self.loader.state, request.grant)
                return exchange.status, exchange.sent, "app", request
            answer = self.loader.failure()
        private = self.chain.private(request)
        headers = self.chain.headers.build(answer, request.origin, private)
        protocol.response_bytes(answer.status, headers, answer.body)
        return answer.status, len(answer.body), "chain", request


class _Exchange:
    """One request bridged to ASGI: ``receive`` streams the body, ``send`` maps the
    response onto ``response_bytes`` (one body message) or ``response_stream``."""

    def __init__(self, scope: RSGIScope, protocol: RSGIProtocol, body_timeout: float) -> None:
        self.scope = scope
        self.protocol = protocol
        self.body_timeout = body_timeout
        self.body: AsyncIterator[bytes] | None = None
        self.body_done = False
        self.status = 500
        self.headers: Headers = []
        self.stream: RSGIStream | None = None
        self.done = False
        self.sent = 0  # body bytes, for the access log

    async def run(self, app: ASGIApp, state: dict[str, Any], grant: Grant | None) -> None:
        scope = self.scope
        path = scope.path
        asgi_scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": path,  # granian has decoded it, as ASGI's path is
            "raw_path": quote(path, safe=_PATH_SAFE).encode(),
            "query_string": scope.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()
            ],
            "client": _address(scope.client),
            "server": _address(scope.server),
            "state": dict(state),
        }
        if grant is not None:
            asgi_scope[GRANT_KEY] = grant
        try:
            await app(asgi_scope, self.receive, self.send)
        finally:
            if not self.done and self.stream is None:  # the app sent no complete response
                self.protocol.response_bytes(500, [("content-type", "text/plain")], b"")

    async def receive(self) -> Message:
        if not self.body_done:
            if self.body is None:
                self.body = self.protocol.__aiter__()
            try:
                async with asyncio.timeout(self.body_timeout or None):
                    chunk = await self.body.__anext__()
            except StopAsyncIteration:
                self.body_done = True
                return {"type": "http.request", "body": b"", "more_body": False}
            except TimeoutError:  # a body gone silent must not hold the request forever
                self._refuse_slow_body()
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": True}
        await self.protocol.client_disconnect()
        return {"type": "http.disconnect"}

    def _refuse_slow_body(self) -> None:
        """A 408 (the app's own answer, if any, comes too late and is dropped)."""
        self.body_done = True
        if not self.done and self.stream is None:
            self.done = True
            headers = [("content-type", "application/json"), ("connection", "close")]
            body = b'{"error":"the request body went silent for longer than --body-timeout"}'
            self.protocol.response_bytes(408, headers, body)

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
            ]
            return
        if kind != "http.response.body" or self.done:
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        self.sent += len(body)
        if self.stream is None:
            if not more:
                self.done = True
                self.protocol.response_bytes(self.status, self.headers, body)
                return
            self.stream = self.protocol.response_stream(self.status, self.headers)
        try:
            if body:
                await self.stream.send_bytes(body)
        except RuntimeError as exc:  # granian's ProtocolClosed: the client went away
            raise OSError(f"client disconnected: {exc}") from exc
        self.done = not more


def _address(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)
