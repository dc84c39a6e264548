"""Stored tiles while the app loads, and the loader that builds and starts the app.

Building the app imports numpy, Pillow, pydicom, Starlette and the codecs, which on a cold
machine takes longer than the server itself needs to start (``cold start`` in
docs/benchmarks.md). So the server fronts (``http/asgi.py``, ``http/rsgi.py``) import little
beyond the standard library: an ``AppLoader`` builds the app in a worker thread and runs its
lifespan, while the stored-tile chain (``http/chain.py``) answers plain ``GET``s of stored
tiles with ``EarlyTiles``, from the tile locators the catalog keeps for slides opened before
(``readers/locator.py``), with the headers the app sends.

Like the app before its first rescan, the early path serves the catalog as last written; it
checks, as the app does before it opens a slide, that the slide's sources are the ones the
catalog lists under the served roots and are unchanged, checks each source it reads again,
and leaves anything else to the app. A build or startup that fails is logged; requests
waiting for the app get a 503 and the process exits with status 3, as uvicorn's own failed
startup does, so a supervisor does not restart it in a loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from starlette.types import ASGIApp

from tileserver.catalog.locators import CatalogReadError, LocatorRows
from tileserver.http.lifespan import LifespanDriver
from tileserver.http.stored import JSON, TILE_PATH, TILES_ROUTE, Answer, tile_etag
from tileserver.readers.locator import TileLocator
from tileserver.readers.source import current_identity

log = logging.getLogger(__name__)


class _FirstPlane(NamedTuple):
    focal_plane: int = 0
    optical_path: int = 0


class EarlyTiles:
    """Stored tiles from the catalog's tile locators (blocking: call ``answer`` in a thread)."""

    #: Slides remembered (with or without a locator) before the memo starts over.
    MEMO_LIMIT = 4096

    def __init__(self, catalog: str | Path, roots: list[str]) -> None:
        self.catalog = catalog
        self.roots = roots
        self._locators: dict[str, TileLocator | None] = {}
        self._lock = threading.Lock()
        self._rows = LocatorRows(catalog, roots)

    def answer(self, path: str) -> Answer | None:
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
        except CatalogReadError as exc:  # a catalog without locators yet, say: the app answers
            log.info("no early tile for %s: %s", path, exc)
            return None
        except Exception:  # the app answers, with the right status and message
            log.exception("early tile %s", path)
            return None
        if locator is None or found is None:
            return None
        etag = tile_etag(locator.version, level, col, row, _FirstPlane(), None)
        seconds = time.perf_counter() - start
        return Answer(200, found[0], found[1], etag, seconds, TILES_ROUTE, early=True)

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
        """The slide's locator if the catalog still lists the sources its version was made
        of, under the served roots, and they are unchanged."""
        blobs = self._rows.locator(slide_id)
        if blobs is None:
            return None
        try:
            locator = TileLocator.decode(*blobs)
        except ValueError as exc:  # an older tileserver's: rewritten when the app opens it
            log.info("no early tiles for %s: %s", slide_id, exc)
            return None
        listed = self._rows.sources(slide_id)
        if listed != [(i.uri, i.size, i.tag) for i in locator.series]:
            return None  # the app re-indexes what changed before it serves the slide
        if not all(_unchanged(identity) for identity in locator.series):
            return None
        return locator


def _unchanged(identity: Any) -> bool:
    try:
        return bool(current_identity(identity.uri) == identity)
    except Exception:
        return False


#: Exit status of a server whose app failed to start (uvicorn's own for a failed startup).
STARTUP_FAILURE = 3


class AppLoader:
    """Builds the app in a worker thread and runs its lifespan while the chain answers
    early requests; ``on_ready(app)`` once it has started. A build or startup that fails
    is logged and ends the process."""

    def __init__(self, build: Callable[[], ASGIApp], on_ready: Callable[[ASGIApp], None]):
        self.app: ASGIApp | None = None
        #: The lifespan state every request's scope gets (the RSGI bridge passes it on).
        self.state: dict[str, Any] = {}
        self.failure_reason: str | None = None
        self._build, self._on_ready = build, on_ready
        self._lifespan: LifespanDriver | None = None
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
        if self._lifespan is not None:
            await self._lifespan.shutdown()

    async def wait(self) -> ASGIApp | None:
        """The started app, or None when it failed to start."""
        if self.app is not None:
            return self.app
        self.start(asyncio.get_running_loop())  # a server that runs no lifespan
        assert self._done is not None
        await self._done.wait()
        return self.app

    async def _load(self) -> None:
        assert self._done is not None
        try:
            app = await asyncio.to_thread(self._build)
            if not self._stopping:  # stopped while building: never started
                self._lifespan = LifespanDriver(app, self.state)
                await self._lifespan.startup()
                self._on_ready(app)
                self.app = app
        except Exception as exc:
            log.exception("tileserver failed to start")
            self.failure_reason = f"server failed to start: {exc}"
            # Requests waiting for the app get their 503 first.
            asyncio.get_running_loop().call_later(0.2, _exit_failed)
        finally:
            self._done.set()

    def failure(self) -> Answer:
        """What requests that waited for an app that did not start get."""
        body = json.dumps({"error": self.failure_reason or "server stopped"}).encode()
        return Answer(503, body, JSON)


def _exit_failed() -> None:
    logging.shutdown()
    os._exit(STARTUP_FAILURE)
