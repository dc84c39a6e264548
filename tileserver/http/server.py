"""Run the app under uvicorn (uvloop + httptools; the default) or granian, N worker processes."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING

from tileserver.errors import UnsupportedError
from tileserver.settings import Settings, cors_origins, served_roots, served_slide_roots

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

    from tileserver.http.asgi import AsgiFront
    from tileserver.http.chain import StoredTileChain
    from tileserver.http.early import AppLoader
    from tileserver.http.rsgi import RsgiFront

    Build = Callable[[], ASGIApp]


def run(settings: Settings) -> int:
    """Serve until interrupted; workers > 1 share the catalog through the environment.

    The viewer URL is printed once the port is bound, never before; a port that cannot
    be bound raises an ``OSError`` naming the address."""
    runner = SERVERS.get(settings.server)
    if runner is None:
        raise UnsupportedError(f"unknown server {settings.server!r}: {', '.join(SERVERS)}")
    from tileserver.http.auth import warn_if_open

    try:
        cors_origins(settings)
    except ValueError as exc:  # a configuration the server must not start with
        raise UnsupportedError(str(exc)) from None
    warn_if_open(settings)
    _export(settings)
    runner(settings)
    return 0


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (SO_REUSEADDR, as the servers set it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:  # create_server's message repeats the address: keep the reason
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(exc.errno, f"cannot listen: {reason}", f"{host}:{port}") from None


def announce(sock: socket.socket) -> None:
    """The one line ``tileserver serve`` prints: where the viewer is."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"tileserver: viewer at http://{netloc}/", flush=True)


def _uvicorn(settings: Settings) -> None:
    """uvicorn on a socket bound here, so the URL is printed only once it is bound."""
    import uvicorn

    from tileserver.http.headertimeout import PlainConfig, TimeoutConfig

    deadlines = settings.header_timeout > 0 or settings.body_timeout > 0
    config_class = TimeoutConfig if deadlines else PlainConfig  # 0 and 0: httptools as is
    config = config_class(
        TARGET,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
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
    sock = listen(settings.host, settings.port)
    announce(sock)
    if config.workers > 1:
        _multiprocess(config, sock)
        return
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    if not server.started:  # as uvicorn.run: a failed startup exits 3
        raise SystemExit(STARTUP_FAILURE)


def _multiprocess(config: uvicorn.Config, sock: socket.socket) -> None:
    """uvicorn's worker supervisor over our socket (its signature changed in 0.30)."""
    import inspect

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    with contextlib.suppress(KeyboardInterrupt):
        if "target" in inspect.signature(Multiprocess).parameters:
            target = uvicorn.Server(config).run
            Multiprocess(config, target=target, sockets=[sock]).run()  # type: ignore[call-arg]
        else:
            Multiprocess(config, sockets=[sock]).run()


def _granian(settings: Settings) -> None:
    """granian on its RSGI interface (``tileserver.http.rsgi``): the same app, with tile
    requests answered without the ASGI message exchange. granian binds its own socket:
    the port is checked here first, so a busy port fails before the URL is printed."""
    try:
        from granian import Granian
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings
    except ImportError:
        raise UnsupportedError("--server granian needs: pip install 'tileserver[fast]'") from None
    with listen(settings.host, settings.port) as probe:
        port = probe.getsockname()[1]
        announce(probe)
    Granian(
        RSGI_TARGET,
        address=settings.host,
        port=port,
        interface=Interfaces.RSGI,
        workers=settings.workers,
        factory=True,
        log_level=settings.log_level,  # type: ignore[arg-type]
        http1_settings=HTTP1Settings(header_read_timeout=_milliseconds(settings.header_timeout)),
    ).serve()


def _milliseconds(seconds: float) -> int:
    """granian's header timeout: hyper closes a connection whose headers take longer."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 24 * 3600 * 1000  # 0: none


STARTUP_FAILURE = 3
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
    from tileserver.http.asgi import AsgiFront, LoggedAsgiFront

    chain, loader = _chain_and_loader(settings, build)
    if chain.access_log is not None:
        return LoggedAsgiFront(chain, loader, chain.access_log)
    return AsgiFront(chain, loader)


def rsgi_front(settings: Settings, build: Build | None = None) -> RsgiFront:
    from tileserver.http.rsgi import RsgiFront

    chain, loader = _chain_and_loader(settings, build)
    return RsgiFront(chain, loader, settings.body_timeout)


def _chain_and_loader(settings: Settings, build: Build | None) -> tuple[StoredTileChain, AppLoader]:
    """One chain (the access check, early and fast tiles) and the loader of its app."""
    from tileserver.http.auth import load_authorizer
    from tileserver.http.chain import StoredTileChain
    from tileserver.http.early import AppLoader, EarlyTiles
    from tileserver.http.stored import CorsPolicy

    chain = StoredTileChain(CorsPolicy(cors_origins(settings)), load_authorizer(settings))
    chain.early = EarlyTiles(settings.catalog, [str(r) for r in served_roots(settings)])
    if settings.rate_limit > 0:
        from tileserver.http.ratelimit import RateLimit

        chain.rate_limit = RateLimit(settings.rate_limit)
    if settings.access_log:
        from tileserver.http.accesslog import AccessLog

        chain.access_log = AccessLog(settings.access_log)
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
            value = os.pathsep.join(served_slide_roots(value))
        env[f"TILESERVER_{field.name.upper()}"] = str(value)
    return env
