"""Stored tiles while the app loads: the first requests after a (re)start.

Building the app imports numpy, Pillow, pydicom, Starlette and the codecs, which on a cold
machine takes longer than the server itself needs to start (``cold start`` in
docs/benchmarks.md). So the server front is handed ``EarlyASGI`` (uvicorn) or
``EarlyRSGI`` (granian), which import little beyond the standard library: they build the
app in a worker thread and meanwhile answer plain ``GET``s of stored tiles from the tile
locators the catalog keeps for slides opened before (``readers/locator.py``), with the
headers the app sends. Every other request waits for the app, then goes to it.

Like the app before its first rescan, the early path serves the catalog as last written; it
checks, as the app does before it opens a slide, that the slide's files are the ones the
catalog lists under the served roots and are unchanged on disk, checks each file it reads
again, and leaves anything else (a query, ``HEAD``, ``If-None-Match``, a slide or tile it has
no locator for, a changed file, any error) to the app. ``/healthz`` answers at once and
``/readyz`` says "starting" (503) until the app is up. A build or startup that fails is
logged; requests waiting for the app get a 503 and the process exits with status 3, as
uvicorn's own failed startup does, so a supervisor does not restart it in a loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
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
    scan_headers,
    tile_etag,
    tile_headers,
)
from tileserver.readers.locator import TileLocator
from tileserver.readers.pageread import file_unchanged
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

    #: Slides remembered (with or without a locator) before the memo starts over.
    MEMO_LIMIT = 4096

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
        try:
            locator = self._locator(slide_id)
            found = None if locator is None else locator.read(level, col, row)
        except sqlite3.Error as exc:  # a catalog without locators yet, say: the app answers
            log.info("no early tile for %s: %s", path, exc)
            return None
        except Exception:  # the app answers, with the right status and message
            log.exception("early tile %s", path)
            return None
        if locator is None or found is None:
            return None
        etag = tile_etag(locator.version, level, col, row, _FirstPlane(), None)
        return EarlyTile(found[0], found[1], etag, time.perf_counter() - start)

    def _locator(self, slide_id: str) -> TileLocator | None:
        with self._lock:
            if slide_id in self._locators:
                return self._locators[slide_id]
            locator = self._load(slide_id)  # raises on a catalog error: not remembered
            if len(self._locators) >= self.MEMO_LIMIT:
                self._locators.clear()
            self._locators[slide_id] = locator
            return locator

    def _load(self, slide_id: str) -> TileLocator | None:
        """The slide's locator if the catalog still lists the files its version was made
        of, under the served roots, and they are unchanged on disk."""
        conn = self._connection()
        row = conn.execute(
            "SELECT meta, tables FROM tile_locators WHERE slide_id = ?", (slide_id,)
        ).fetchone()
        if row is None:
            return None
        try:
            locator = TileLocator.decode(row[0], row[1])
        except ValueError as exc:  # an older tileserver's: rewritten when the app opens it
            log.info("no early tiles for %s: %s", slide_id, exc)
            return None
        # The roots filter of the catalog's own queries (store._under_roots), written out
        # here as the early path does not import the catalog package (numpy).
        sql = (
            "SELECT f.path, f.size, f.mtime_ns FROM instances i JOIN files f USING (path) "
            "WHERE i.series_uid = ?"
        )
        if self.roots:
            sql += f" AND f.root IN ({', '.join('?' for _ in self.roots)})"
        files = conn.execute(sql, (slide_id, *self.roots)).fetchall()
        if sorted(files) != locator.series or not all(file_unchanged(*i) for i in locator.series):
            return None  # the app re-indexes what changed before it serves the slide
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
#: Exit status of a server whose app failed to start (uvicorn's own for a failed startup).
STARTUP_FAILURE = 3


class AppLoader(Generic[App]):
    """Builds the app in a worker thread and runs its startup while early requests are
    answered; a build or startup that fails is logged and ends the process."""

    def __init__(
        self, settings: Settings, build: Callable[[], App], startup: Step[App], shutdown: Step[App]
    ) -> None:
        roots = [str(r) for r in served_roots(settings)]
        self.tiles: EarlyTiles | None = EarlyTiles(settings.catalog, roots)
        self.cors = CorsPolicy(settings.cors_origins)
        self.app: App | None = None
        self.failure_reason: str | None = None
        self._build, self._startup, self._shutdown = build, startup, shutdown
        self._served: list[float] = []  # early answers, counted in the app's metrics
        self._done: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None:
            self._done = asyncio.Event()
            self._task = loop.create_task(self._load())

    async def stop(self) -> None:
        """Shut the app down, or keep it from starting when it is still being built."""
        self._stopping = True
        if self._task is not None:
            await self._task
        if self.app is not None:
            await self._shutdown(self.app)

    async def wait(self) -> App | None:
        """The started app, or None when it failed to start."""
        self.start(asyncio.get_running_loop())  # a server that runs no lifespan
        assert self._done is not None
        await self._done.wait()
        return self.app

    def early(self, method: str, path: str, headers: EarlyHeaders) -> bool:
        """Whether the early path may answer this request (else it waits for the app)."""
        if self.tiles is None or method != "GET" or headers.conditional:
            return False
        return TILE_PATH.fullmatch(path) is not None or path in _PROBES

    async def answer(self, path: str) -> EarlyAnswer | None:
        """The early answer to a ``GET`` of ``path``, or None: wait for the app."""
        probe = _PROBES.get(path)
        if probe is not None:
            return probe
        tiles = self.tiles
        found = None if tiles is None else await asyncio.to_thread(tiles.answer, path)
        if found is None:
            return None
        if self.app is not None:
            self.app.fast.state.metrics.observe_request(TILES_ROUTE, "GET", 200, found.seconds)
        else:
            self._served.append(found.seconds)
        return EarlyAnswer(200, found.data, found.media_type, found)

    async def _load(self) -> None:
        assert self._done is not None
        try:
            app = await asyncio.to_thread(self._build)
            if not self._stopping:  # stopped while building: never started
                await self._startup(app)
                for seconds in self._served:
                    app.fast.state.metrics.observe_request(TILES_ROUTE, "GET", 200, seconds)
                self.app = app
        except Exception as exc:
            log.exception("tileserver failed to start")
            self.failure_reason = f"server failed to start: {exc}"
            # Requests waiting for the app get their 503 first.
            asyncio.get_running_loop().call_later(0.2, _exit_failed)
        finally:
            self.tiles = None  # its file descriptors close with the last early read
            self._done.set()

    def failure(self) -> EarlyAnswer:
        """What requests that waited for an app that did not start get."""
        body = json.dumps({"error": self.failure_reason or "server stopped"}).encode()
        return EarlyAnswer(503, body, _JSON, None)


def _exit_failed() -> None:
    logging.shutdown()
    os._exit(STARTUP_FAILURE)


class EarlyAnswer(NamedTuple):
    status: int
    body: bytes
    media_type: str
    tile: EarlyTile | None  # a stored tile's ETag and read time


_JSON = "application/json"
#: What the early path answers for the probes: alive, not ready yet.
_PROBES = {
    "/healthz": EarlyAnswer(200, b'{"status":"ok"}', _JSON, None),
    "/readyz": EarlyAnswer(503, b'{"status":"starting","ready":false}', _JSON, None),
}


class EarlyHeaders(NamedTuple):
    origin: str
    conditional: bool


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
        if scope["type"] == "http" and not scope["query_string"]:
            origin, conditional = scan_headers(scope["headers"])
            request = EarlyHeaders(origin.decode("latin-1"), conditional)
            if self.loader.early(scope["method"], scope["path"], request):
                answered = await self.loader.answer(scope["path"])
                if answered is not None:
                    await self._send(send, origin, answered)
                    return
        app = await self.loader.wait()
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "http":
            await self._send(send, b"", self.loader.failure())

    async def _send(self, send: Send, origin: bytes, answer: EarlyAnswer) -> None:
        cors, tile, body = self.loader.cors, answer.tile, answer.body
        if tile is not None:
            headers = raw_tile_headers(
                cors, origin, answer.media_type, tile.etag, tile.seconds, len(body), early=True
            )
        else:
            headers = [
                (b"content-type", answer.media_type.encode()),
                (b"content-length", b"%d" % len(body)),
                *cors.raw_headers(origin),
            ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

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
        headers = scope.headers
        if scope.proto == "http" and not scope.query_string:
            request = EarlyHeaders(headers.get("origin", ""), "if-none-match" in headers)
            if self.loader.early(scope.method, scope.path, request):
                answered = await self.loader.answer(scope.path)
                if answered is not None:
                    self._send(protocol, request.origin, answered)
                    return
        app = await self.loader.wait()
        if app is not None:
            await app.__rsgi__(scope, protocol)
        elif scope.proto == "http":
            self._send(protocol, headers.get("origin", ""), self.loader.failure())

    def _send(self, protocol: RSGIProtocol, origin: str, answer: EarlyAnswer) -> None:
        cors, tile, media_type = self.loader.cors, answer.tile, answer.media_type
        if tile is not None:
            headers = tile_headers(cors, origin, media_type, tile.etag, tile.seconds, early=True)
        else:
            headers = [("content-type", media_type), *cors.headers(origin)]
        protocol.response_bytes(answer.status, headers, answer.body)


async def _rsgi_startup(app: RSGIApp) -> None:
    await app.startup()


async def _rsgi_shutdown(app: RSGIApp) -> None:
    await app.shutdown()
