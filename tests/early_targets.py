"""Server targets for tests/test_early.py: tileserver's early path with the app's build held
until the file named by ``EARLY_TEST_GATE`` exists, so a test sees the early window."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tileserver.http.server import asgi_front, rsgi_front
from tileserver.settings import Settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from tileserver.http.asgi import AsgiFront
    from tileserver.http.rsgi import RsgiFront

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


def _full(settings: Settings) -> ASGIApp:
    from tileserver.http.app import create_app

    return create_app(settings)


def held_asgi() -> AsgiFront:
    return _gated(asgi_front, _full)


def held_rsgi() -> RsgiFront:
    return _gated(rsgi_front, _full)


def _broken(settings: Settings) -> ASGIApp:
    raise RuntimeError("broken on purpose")


def failing_asgi() -> AsgiFront:
    """An app whose build fails once the gate opens."""
    return _gated(asgi_front, _broken)
