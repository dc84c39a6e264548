"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tileserver.http.responses import json_response
from tileserver.http.state import state_of


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = state_of(request)
    if not state.ready:
        return json_response({"status": "scanning", "ready": False}, status_code=503)
    return json_response({"status": "ready", "ready": True})


async def metrics(request: Request) -> Response:
    body = state_of(request).metrics.render()
    return Response(body, media_type="text/plain; version=0.0.4")


routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
