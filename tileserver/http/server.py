"""Run the app under uvicorn (uvloop + httptools; the default) or granian, N worker processes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING

from tileserver.errors import UnsupportedError
from tileserver.settings import Settings

if TYPE_CHECKING:
    from tileserver.http.fastpath import StoredTileFastPath
    from tileserver.http.rsgi import RSGIApp


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
    """uvicorn's app: early tiles (``http/early.py``) while the app is built."""
    from tileserver.http.early import EarlyASGI

    settings = Settings.from_env()
    return EarlyASGI(settings, lambda: full_asgi_app(settings))


def rsgi_app_from_env() -> object:
    """granian's app: early tiles while the app is built, then RSGI over it."""
    from tileserver.http.early import EarlyRSGI

    settings = Settings.from_env()
    return EarlyRSGI(settings, lambda: full_rsgi_app(settings))


def full_asgi_app(settings: Settings) -> StoredTileFastPath:
    """The app behind the early path (imports everything: call it in a thread)."""
    from tileserver.http.app import create_asgi_app

    return create_asgi_app(settings)


def full_rsgi_app(settings: Settings) -> RSGIApp:
    from tileserver.http.rsgi import RSGIApp

    return RSGIApp(full_asgi_app(settings))


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
