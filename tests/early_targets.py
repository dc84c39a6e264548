"""Server targets for tests/test_early.py: tileserver's early path with the app's build held
until the file named by ``EARLY_TEST_GATE`` exists, so a test sees the early window."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tileserver.http.early import EarlyASGI, EarlyRSGI
from tileserver.http.server import full_asgi_app, full_rsgi_app
from tileserver.settings import Settings

if TYPE_CHECKING:
    from tileserver.http.fastpath import StoredTileFastPath

App = TypeVar("App")
Front = TypeVar("Front")


def _wait_for_gate() -> None:
    gate = Path(os.environ["EARLY_TEST_GATE"])
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _gated(
    front: Callable[[Settings, Callable[[], App]], Front], full: Callable[[Settings], App]
) -> Front:
    """``front`` over an app that ``full`` builds once the gate is open."""
    settings = Settings.from_env()

    def build() -> App:
        _wait_for_gate()
        return full(settings)

    return front(settings, build)


def held_asgi() -> EarlyASGI:
    return _gated(EarlyASGI, full_asgi_app)


def held_rsgi() -> EarlyRSGI:
    return _gated(EarlyRSGI, full_rsgi_app)


def _broken(settings: Settings) -> StoredTileFastPath:
    raise RuntimeError("broken on purpose")


def failing_asgi() -> EarlyASGI:
    """An app whose build fails once the gate opens."""
    return _gated(EarlyASGI, _broken)
