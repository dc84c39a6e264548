"""Typed access to what the lifespan puts on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from tileserver.http.metrics import Metrics
from tileserver.service import TileService
from tileserver.settings import Settings


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    service: TileService | None = None
    ready: bool = False
    scan_errors: list[str] = field(default_factory=list)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.tileserver
    return state


def service_of(request: Request) -> TileService:
    service = state_of(request).service
    if service is None:
        raise RuntimeError("service used before the lifespan started")
    return service
