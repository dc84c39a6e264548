"""A minimal HTTP/1.1 keep-alive GET client on asyncio streams, for load generation.

httpx spends more CPU per request than a fast server does, so at high concurrency a
benchmark driven by httpx measures httpx. One connection per worker, sequential GETs,
``Content-Length`` or chunked bodies; a ``Connection: close`` answer reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class Connection:
    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, int]:
        """(status, body bytes) of ``GET path``."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n"
        self._writer.write(request.encode("latin-1"))
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("connection closed by the server")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                close = b"close" in value.lower()
        size = await self._chunked() if chunked else len(await self._reader.readexactly(length))
        if close:
            await self.close()
        return status, size

    async def _chunked(self) -> int:
        assert self._reader is not None
        total = 0
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            await self._reader.readexactly(size + 2)
            total += size
            if size == 0:
                return total

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None
