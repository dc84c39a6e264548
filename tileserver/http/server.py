"""Run the app under uvicorn (uvloop + httptools), one or several worker processes."""

from __future__ import annotations

import os

import uvicorn

from tileserver.settings import Settings


def run(settings: Settings) -> int:
    """Serve until interrupted; workers > 1 share the catalog through the environment."""
    _export(settings)
    print(f"tileserver: viewer at http://{settings.host}:{settings.port}/", flush=True)
    uvicorn.run(
        "tileserver.http.server:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="auto",
        http="auto",
        log_level=settings.log_level,
        proxy_headers=True,
        forwarded_allow_ips="*",
    )
    return 0


def app_from_env() -> object:
    from tileserver.http.app import create_app

    return create_app(Settings.from_env())


def _export(settings: Settings) -> None:
    """Worker processes rebuild the settings from TILESERVER_* variables."""
    os.environ["TILESERVER_SLIDES"] = os.pathsep.join(str(p.resolve()) for p in settings.slides)
    os.environ["TILESERVER_CATALOG"] = str(settings.catalog)
    for name in (
        "redis_url",
        "cache_bytes",
        "rescan_interval",
        "max_output_pixels",
        "cors_origins",
        "jpeg_quality",
        "max_open_slides",
        "convert_to_srgb",
    ):
        value = getattr(settings, name)
        if value is not None:
            os.environ[f"TILESERVER_{name.upper()}"] = str(value)
