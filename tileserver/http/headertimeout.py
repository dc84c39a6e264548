"""uvicorn's HTTP/1.1 protocol (httptools) with deadlines on request headers and bodies.

uvicorn times out idle keep-alive connections only: a client that opens a connection and
sends half a request line, trickles header bytes or stops halfway through a body holds it
(and a file descriptor, and a task waiting for the body) forever. Here the headers of every
request must be complete within ``header_timeout`` seconds of the connection opening (first
request) or of the request's first byte (later ones), and within ``MAX_HEADER_BYTES``; and a
body the app is waiting for may not go silent for longer than ``body_timeout`` (plus a
second, so a route with its own timeout, STOW-RS, answers first). Otherwise the connection
is answered 408 or 431 and closed. Parser errors are answered in JSON, as every other error
of the server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Request line plus headers; a larger block is answered 431 (nginx's default is 32 KiB).
MAX_HEADER_BYTES = 64 * 1024
#: Header fields of one request; more are answered 431 (hyper, under granian, takes 100).
MAX_HEADERS = 200
#: Seconds added to the body timeout here, so a route's own (STOW-RS) answers first.
BACKSTOP = 1.0


class HeadersTooLargeError(Exception):
    """Raised inside httptools' callback to stop parsing a request already answered 431."""


class TimeoutConfig(uvicorn.Config):
    """uvicorn's configuration, serving HTTP/1.1 with ``HeaderTimeoutProtocol``."""

    def __init__(
        self, *args: Any, header_timeout: float = 30.0, body_timeout: float = 30.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **{**kwargs, "http": HeaderTimeoutProtocol})
        self.header_timeout, self.body_timeout = header_timeout, body_timeout


class PlainConfig(uvicorn.Config):
    """uvicorn's own configuration (``--header-timeout 0 --body-timeout 0``: no deadlines),
    taking and ignoring the deadline arguments ``TimeoutConfig`` takes."""

    def __init__(
        self, *args: Any, header_timeout: float = 0.0, body_timeout: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.body_timeout = header_timeout, body_timeout


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """httptools' protocol; closes connections whose headers or bodies come too slowly.

    The hot path only stamps times (a request's start, a body's last byte); one timer per
    connection looks at them, so a request costs no timer of its own."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout = float(getattr(config, "header_timeout", 30.0))
        body_timeout = float(getattr(config, "body_timeout", 30.0))
        self.body_timeout = body_timeout + BACKSTOP if body_timeout > 0 else 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._began: float | None = None  # loop time the pending headers were due from
        self._body_since: float | None = None  # loop time of the awaited body's last byte
        self._header_bytes = self._chunk = 0
        self._in_headers = False  # bytes of a request arrived, its headers not complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._began = self.loop.time()
        self._schedule()

    def data_received(self, data: bytes) -> None:
        self._chunk = len(data)
        super().data_received(data)
        if self._began is not None:  # headers still incomplete: all of ``data`` is header
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES:
                self._refuse(431, f"request headers over {MAX_HEADER_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._began is None:
            self._began = self.loop.time()

    def on_headers_complete(self) -> None:
        # Headers that came in the chunk that completed them escaped the count above.
        if self._header_bytes + self._chunk > MAX_HEADER_BYTES or len(self.headers) > MAX_HEADERS:
            self._too_large()
        self._began, self._in_headers, self._header_bytes = None, False, 0
        super().on_headers_complete()
        self._body_since = self.loop.time()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_since = self.loop.time()  # the silence counts from the last byte

    def on_message_complete(self) -> None:
        self._body_since = None
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def _too_large(self) -> None:
        """431 when the header block, measured exactly, is over the limits."""
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size <= MAX_HEADER_BYTES and len(self.headers) <= MAX_HEADERS:
            return
        why = f"over {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields"
        self._refuse(431, f"request headers {why}")
        # Stops the parser; uvicorn then calls send_400_response, which finds it answered.
        raise HeadersTooLargeError(why)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, f"invalid HTTP request: {msg}")

    def _schedule(self, delay: float | None = None) -> None:
        every = min(t for t in (self.header_timeout, self.body_timeout, 3600.0) if t > 0)
        self._timer = self.loop.call_later(every if delay is None else delay, self._tick)

    def _tick(self) -> None:
        """Act on an expired deadline, else look again when the next one falls due."""
        self._timer = None
        if self.transport.is_closing():
            return
        now, due = self.loop.time(), []
        if self._began is not None and self.header_timeout > 0:
            if now - self._began >= self.header_timeout:
                return self._headers_expired()
            due.append(self._began + self.header_timeout - now)
        if self._body_since is not None and self.body_timeout > 0:
            if now - self._body_since >= self.body_timeout:
                self._body_since = now if self._body_expired() else None
            else:
                due.append(self._body_since + self.body_timeout - now)
        if not self.transport.is_closing():
            self._schedule(min(due) if due else None)

    def _headers_expired(self) -> None:
        if self._in_headers:  # a request began: say why it ends
            self._refuse(408, f"request headers not received within {self.header_timeout:g} s")
        else:
            self.transport.close()

    def _body_expired(self) -> bool:
        """Refuse a request whose body went silent; True when it is not the client's silence
        (the app is not reading yet) and the clock starts again."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.more_body:
            return False
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            return True
        if cycle.response_started:
            self.transport.close()
        else:
            seconds = self.body_timeout - BACKSTOP
            self._refuse(408, f"no byte of the request body for {seconds:g} s")
        cycle.disconnected = True  # the app's receive() answers http.disconnect
        cycle.message_event.set()
        return False

    def _refuse(self, status: int, reason: str) -> None:
        self._began = self._body_since = None
        if self.transport.is_closing():
            return
        body = json.dumps({"error": reason}).encode()
        head = (
            f"HTTP/1.1 {status} {_PHRASES[status]}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.transport.close()


_PHRASES = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large"}
