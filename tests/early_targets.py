"""Server targets for tests/test_early.py: tileserver's early path with the app's build held
until the file named by ``EARLY_TEST_GATE`` exists, so a test sees the early window."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tileserver.http.early import EarlyASGI, EarlyRSGI
from tileserver.http.server import full_asgi_app, full_rsgi_app
from tileserver.settings import Settings

if TYPE_CHECKING:
    from tileserver.http.fastpath import StoredTileFastPath
    from tileserver.http.rsgi import RSGIApp


def _wait_for_gate() -> None:
    gate = Path(os.environ["EARLY_TEST_GATE"])
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def held_asgi() -> EarlyASGI:
    settings = Settings.from_env()

    def build() -> StoredTileFastPath:
        _wait_for_gate()
        return full_asgi_app(settings)

    return EarlyASGI(settings, build)


def held_rsgi() -> EarlyRSGI:
    settings = Settings.from_env()

    def build() -> RSGIApp:
        _wait_for_gate()
        return full_rsgi_app(settings)

    return EarlyRSGI(settings, build)


def failing_asgi() -> EarlyASGI:
    """An app whose build fails once the gate opens."""
    settings = Settings.from_env()

    def build() -> StoredTileFastPath:
        _wait_for_gate()
        raise RuntimeError("broken on purpose")

    return EarlyASGI(settings, build)
