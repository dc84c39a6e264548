"""Run the app under uvicorn (uvloop + httptools; the default) or granian, N worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING

from tileserver.errors import UnsupportedError
from tileserver.settings import Settings, served_roots

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from tileserver.http.asgi import AsgiFront
    from tileserver.http.chain import StoredTileChain
    from tileserver.http.early import AppLoader
    from tileserver.http.rsgi import RsgiFront

    Build = Callable[[], ASGIApp]


def run(settings: Settings) -> int:
    """Serve until interrupted; workers > 1 share the catalog through the environment."""
    _export(settings)
    print(f"tileserver: viewer at http://{settings.host}:{settings.port}/", flush=True)
    runner = SERVERS.get(settings.server)
    if runner is None:
        raise UnsupportedError(f"unknown server {settings.server!r}: {', '.join(SERVERS)}")
    runner(settings)
    return 0


def _uvicorn(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        TARGET,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="auto",
        http="auto",
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,  # the app reads X-Forwarded-* itself (http/forwarded.py)
    )


def _granian(settings: Settings) -> None:
    """granian on its RSGI interface (``tileserver.http.rsgi``): the same app, with tile
    requests answered without the ASGI message exchange."""
    try:
        from granian import Granian
        from granian.constants import Interfaces
    except ImportError:
        raise UnsupportedError("--server granian needs: pip install 'tileserver[fast]'") from None
    Granian(
        RSGI_TARGET,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.RSGI,
        workers=settings.workers,
        factory=True,
        log_level=settings.log_level,  # type: ignore[arg-type]
    ).serve()


TARGET = "tileserver.http.server:app_from_env"
RSGI_TARGET = "tileserver.http.server:rsgi_app_from_env"
SERVERS: dict[str, Callable[[Settings], None]] = {"uvicorn": _uvicorn, "granian": _granian}


def app_from_env() -> object:
    """uvicorn's app: the stored-tile chain, answering while the app is built."""
    return asgi_front(Settings.from_env())


def rsgi_app_from_env() -> object:
    """granian's app: the same chain and app behind the RSGI interface."""
    return rsgi_front(Settings.from_env())


def asgi_front(settings: Settings, build: Build | None = None) -> AsgiFront:
    """The served ASGI application over ``build``'s app (default: the full app)."""
    from tileserver.http.asgi import AsgiFront

    chain, loader = _chain_and_loader(settings, build)
    return AsgiFront(chain, loader)


def rsgi_front(settings: Settings, build: Build | None = None) -> RsgiFront:
    from tileserver.http.rsgi import RsgiFront

    chain, loader = _chain_and_loader(settings, build)
    return RsgiFront(chain, loader)


def _chain_and_loader(settings: Settings, build: Build | None) -> tuple[StoredTileChain, AppLoader]:
    """One chain (the access check, early and fast tiles) and the loader of its app."""
    from tileserver.http.access import load_authorizer
    from tileserver.http.chain import StoredTileChain
    from tileserver.http.early import AppLoader, EarlyTiles
    from tileserver.http.stored import CorsPolicy

    chain = StoredTileChain(CorsPolicy(settings.cors_origins), load_authorizer(settings))
    chain.early = EarlyTiles(settings.catalog, [str(r) for r in served_roots(settings)])
    authorizer = chain.authorizer

    def full() -> ASGIApp:  # imports everything: the loader calls it in a thread
        from tileserver.http.app import create_app

        return create_app(settings, authorizer)

    def ready(app: ASGIApp) -> None:
        from tileserver.http.fastpath import FastPath

        state = app.state.tileserver  # type: ignore[attr-defined]
        chain.attach(FastPath(state), state.metrics.observe_request)

    return chain, AppLoader(build or full, ready)


def _export(settings: Settings) -> None:
    """Worker processes rebuild the settings from TILESERVER_* variables."""
    for name, value in settings_environment(settings).items():
        os.environ[name] = value


def settings_environment(settings: Settings) -> dict[str, str]:
    """Every set field as the TILESERVER_* variable ``Settings.from_env`` reads back."""
    env = {}
    for field in fields(Settings):
        value = getattr(settings, field.name)
        if value is None:
            continue
        if field.name == "slides":
            value = os.pathsep.join(str(p.resolve()) for p in value)
        env[f"TILESERVER_{field.name.upper()}"] = str(value)
    return env
