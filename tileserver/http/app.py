"""Application factory; every resource (catalog, cache, scanner) lives in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from tileserver import audit
from tileserver.cache import build_cache
from tileserver.catalog import Catalog, SlideLibrary
from tileserver.http import admin, health, tiles
from tileserver.http.access import Authorizer
from tileserver.http.auth import load_authorizer
from tileserver.http.errors import HANDLERS
from tileserver.http.metrics import Metrics
from tileserver.http.middleware import (
    AccessMiddleware,
    CatchAllMiddleware,
    CorsMiddleware,
    GzipTextMiddleware,
    MetricsMiddleware,
)
from tileserver.http.state import AppState
from tileserver.service import TileService
from tileserver.settings import Settings, cors_origins, served_roots

log = logging.getLogger(__name__)


def create_app(settings: Settings, authorizer: Authorizer | None = None) -> Starlette:
    """The Starlette app of every route; ``authorizer`` defaults to ``settings.authorizer``'s
    (the stored-tile chain in front of it checks the same one: ``http/server.py``)."""
    authorizer = load_authorizer(settings) if authorizer is None else authorizer
    metrics = Metrics()
    state = AppState(settings=settings, metrics=metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        roots = served_roots(settings)
        audit.configure(settings.audit_log)
        if any("://" in root for root in roots):  # object storage: share its reads
            from tileserver.readers import s3

            s3.share_through(settings.redis_url)
        catalog = Catalog(settings.catalog, roots)
        library = SlideLibrary(catalog, roots, max_open=settings.max_open_slides)
        cache = build_cache(settings.redis_url, settings.cache_bytes)
        state.service = TileService(library, cache, settings)
        metrics.cache_stats = cache.stats
        scanner = asyncio.create_task(_scan_forever(state, state.service))
        try:
            yield
        finally:
            scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scanner
            await cache.close()
            library.close()
            catalog.close()

    app = Starlette(
        routes=[*health.routes, *tiles.routes, *admin.routes, *_optional_routes()],
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(CorsMiddleware, origins=cors_origins(settings)),
            Middleware(AccessMiddleware, authorizer=authorizer),
            Middleware(CatchAllMiddleware),
            Middleware(GzipTextMiddleware),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.tileserver = state
    return app


def _optional_routes() -> list[BaseRoute]:
    """Fronts that live in their own modules; each is added once it exists."""
    routes: list[BaseRoute] = []
    for name in ("dzi", "iiif", "viewer", "dicomweb", "dicomweb_stow", "batch", "sign", "openapi"):
        try:
            module = __import__(f"tileserver.http.{name}", fromlist=["routes"])
        except ModuleNotFoundError as exc:
            if exc.name != f"tileserver.http.{name}":
                raise
            continue
        routes.extend(module.routes)
    return routes


async def _scan_forever(state: AppState, service: TileService) -> None:
    """Initial scan (then ``/readyz`` turns 200), then a rescan every interval."""
    interval = state.settings.rescan_interval
    scanned = False
    while True:
        try:
            scanned = await service.run(_locked_refresh, service.library, wait=not scanned)
        except Exception as exc:  # a failed scan must not stop serving what is indexed
            log.exception("slide scan failed")
            state.scan_errors.append(str(exc))
        state.ready = True
        if interval <= 0:
            return
        await asyncio.sleep(interval)


def _locked_refresh(library: SlideLibrary, wait: bool = True) -> bool:
    """Scan unless another process (of any host sharing the catalog) is scanning: the
    catalog's scan lock. Without ``wait`` the scan is skipped then, and this process picks
    that scan's writes up from the catalog; with it, it waits its turn and finds what the
    scanner before indexed unchanged. The first scan waits, and so does the one after a
    skip (servers of other roots would otherwise starve). Whether it scanned."""
    with library.catalog.scan_lock(wait=wait) as scanning:
        if scanning:
            library.refresh()
        else:
            library.sync()
        return scanning
