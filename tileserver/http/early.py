"""Stored tiles while the app loads: the first requests after a (re)start.

Building the app imports numpy, Pillow, pydicom, Starlette and the codecs, which on a cold
machine takes longer than the server itself needs to start (``cold start`` in
docs/benchmarks.md). So the server front is handed ``EarlyASGI`` (uvicorn) or
``EarlyRSGI`` (granian), which import little beyond the standard library: they build the
app in a worker thread and meanwhile answer plain ``GET``s of stored tiles from the tile
locators the catalog keeps for slides opened before (``readers/locator.py``), with the
headers the app sends. Every other request waits for the app, then goes to it.

Like the app before its first rescan, the early path serves the catalog as last written; it
checks that a slide's files are still the ones the catalog lists under the served roots and
that each file read is unchanged, and leaves anything else (a query, ``If-None-Match``, a
slide or tile it has no locator for, a changed file) to the app.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

from starlette.types import Receive, Scope, Send

from tileserver.http.lifespan import LifespanDriver
from tileserver.http.stored import (
    TILE_PATH,
    TILES_ROUTE,
    CorsPolicy,
    raw_tile_headers,
    tile_etag,
    tile_headers,
)
from tileserver.readers.locator import TileLocator
from tileserver.settings import Settings, served_roots

if TYPE_CHECKING:
    from tileserver.http.fastpath import FastPath, StoredTileFastPath
    from tileserver.http.rsgi import RSGIApp, RSGIProtocol, RSGIScope

log = logging.getLogger(__name__)


class _FirstPlane(NamedTuple):
    focal_plane: int = 0
    optical_path: int = 0


class EarlyTile(NamedTuple):
    data: bytes
    media_type: str
    etag: str
    seconds: float


class EarlyTiles:
    """Stored tiles from the catalog's tile locators (blocking: call ``answer`` in a thread)."""

    def __init__(self, catalog: Path, roots: list[str]) -> None:
        self.catalog = catalog
        self.roots = roots
        self._locators: dict[str, TileLocator | None] = {}
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def answer(self, path: str) -> EarlyTile | None:
        """The tile a native tile URL asks for, or None when the app must answer."""
        start = time.perf_counter()
        match = TILE_PATH.fullmatch(path)
        if match is None:
            return None
        slide_id = match[1]
        level, col, row = int(match[2]), int(match[3]), int(match[4])
        locator = self._locator(slide_id)
        found = None if locator is None else locator.read(level, col, row)
        if locator is None or found is None:
            return None
        etag = tile_etag(locator.version, level, col, row, _FirstPlane(), None)
        return EarlyTile(found[0], found[1], etag, time.perf_counter() - start)

    def _locator(self, slide_id: str) -> TileLocator | None:
        with self._lock:
            if slide_id not in self._locators:
                self._locators[slide_id] = self._load(slide_id)
            return self._locators[slide_id]

    def _load(self, slide_id: str) -> TileLocator | None:
        """The slide's locator if the catalog still lists the files its version was made of."""
        try:
            conn = self._connection()
            row = conn.execute(
                "SELECT meta, tables FROM tile_locators WHERE slide_id = ?", (slide_id,)
            ).fetchone()
            if row is None:
                return None
            locator = TileLocator.decode(row[0], row[1])
            sql = (
                "SELECT f.path, f.size, f.mtime_ns FROM instances i JOIN files f USING (path) "
                "WHERE i.series_uid = ?"
            )
            if self.roots:
                sql += f" AND f.root IN ({', '.join('?' for _ in self.roots)})"
            files = conn.execute(sql, (slide_id, *self.roots)).fetchall()
        except (sqlite3.Error, ValueError) as exc:
            log.info("no early tiles for %s: %s", slide_id, exc)
            return None
        if sorted(files) != locator.series:  # the slide's files are no longer the same
            return None
        return locator

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = self.catalog.resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._conn


class _HasFastPath(Protocol):
    @property
    def fast(self) -> FastPath: ...


App = TypeVar("App", bound=_HasFastPath)
Step = Callable[[App], Awaitable[None]]


class AppLoader(Generic[App]):
    """Builds the app in a worker thread and runs its startup while early tiles are
    answered; a build or startup that fails is logged and stops the process."""

    def __init__(
        self, settings: Settings, build: Callable[[], App], startup: Step[App], shutdown: Step[App]
    ) -> None:
        roots = [str(r) for r in served_roots(settings)]
        self.tiles: EarlyTiles | None = EarlyTiles(settings.catalog, roots)
        self.cors = CorsPolicy(settings.cors_origins)
        self.app: App | None = None
        self.failure: str | None = None
        self._build, self._startup, self._shutdown = build, startup, shutdown
        self._served: list[float] = []  # early answers, counted in the app's metrics
        self._done: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._done = asyncio.Event()
        self._task = loop.create_task(self._load())

    async def stop(self) -> None:
        if self._task is not None:
            await self._task
        if self.app is not None:
            await self._shutdown(self.app)

    async def wait(self) -> App | None:
        """The started app, or None when it failed to start."""
        assert self._done is not None, "start() first"
        await self._done.wait()
        return self.app

    async def early(self, path: str) -> EarlyTile | None:
        tiles = self.tiles
        if tiles is None or TILE_PATH.fullmatch(path) is None:
            return None
        found = await asyncio.to_thread(tiles.answer, path)
        if found is not None:
            if self.app is not None:
                self.app.fast.state.metrics.observe_request(TILES_ROUTE, "GET", 200, found.seconds)
            else:
                self._served.append(found.seconds)
        return found

    async def _load(self) -> None:
        assert self._done is not None
        try:
            app = await asyncio.to_thread(self._build)
            await self._startup(app)
            for seconds in self._served:
                app.fast.state.metrics.observe_request(TILES_ROUTE, "GET", 200, seconds)
            self.app = app
        except Exception as exc:
            log.exception("tileserver failed to start")
            self.failure = f"server failed to start: {exc}"
            os.kill(os.getpid(), signal.SIGTERM)  # the server stops as on a signal
        finally:
            self.tiles = None  # its file descriptors close with the last early read
            self._done.set()

    def failure_body(self) -> bytes:
        return json.dumps({"error": self.failure or "server failed to start"}).encode()


class EarlyASGI:
    """ASGI (uvicorn): early tiles until the app has started, then the app."""

    def __init__(self, settings: Settings, build: Callable[[], StoredTileFastPath]) -> None:
        self.loader = AppLoader(settings, build, self._startup, self._shutdown)
        self._lifespan: LifespanDriver | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.loader.app
        if app is not None:
            await app(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            await self._lifespan_messages(receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            origin, conditional = b"", False
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value
                elif name == b"if-none-match":
                    conditional = True
            found = None if conditional else await self.loader.early(scope["path"])
            if found is not None:
                cors, length = self.loader.cors, len(found.data)
                headers = raw_tile_headers(
                    cors, origin, found.media_type, found.etag, found.seconds, length, early=True
                )
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": found.data})
                return
        app = await self.loader.wait()
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "http":
            headers = [(b"content-type", b"application/json"), *self.loader.cors.raw_headers(b"")]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": self.loader.failure_body()})

    async def _lifespan_messages(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loader.start(asyncio.get_running_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.loader.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _startup(self, app: StoredTileFastPath) -> None:
        self._lifespan = LifespanDriver(app, {})
        await self._lifespan.startup()

    async def _shutdown(self, app: StoredTileFastPath) -> None:
        if self._lifespan is not None:
            await self._lifespan.shutdown()


class EarlyRSGI:
    """RSGI (granian): early tiles until the app has started, then the app."""

    def __init__(self, settings: Settings, build: Callable[[], RSGIApp]) -> None:
        self.loader = AppLoader(settings, build, _rsgi_startup, _rsgi_shutdown)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loader.start(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.loader.stop())

    async def __rsgi__(self, scope: RSGIScope, protocol: RSGIProtocol) -> None:
        app = self.loader.app
        if app is not None:
            await app.__rsgi__(scope, protocol)
            return
        if scope.proto == "http" and scope.method == "GET" and not scope.query_string:
            headers = scope.headers
            if "if-none-match" not in headers:
                found = await self.loader.early(scope.path)
                if found is not None:
                    origin = headers.get("origin", "")
                    response_headers = tile_headers(
                        self.loader.cors,
                        origin,
                        found.media_type,
                        found.etag,
                        found.seconds,
                        early=True,
                    )
                    protocol.response_bytes(200, response_headers, found.data)
                    return
        app = await self.loader.wait()
        if app is not None:
            await app.__rsgi__(scope, protocol)
        elif scope.proto == "http":
            headers503 = [("content-type", "application/json"), *self.loader.cors.headers("")]
            protocol.response_bytes(503, headers503, self.loader.failure_body())


async def _rsgi_startup(app: RSGIApp) -> None:
    await app.startup()


async def _rsgi_shutdown(app: RSGIApp) -> None:
    await app.shutdown()
