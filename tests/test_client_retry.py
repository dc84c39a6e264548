"""Retries against a small local server that fails some requests on purpose."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from serverproc import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tileserver.client import AsyncTileClient, ServerError, TileClient


class FlakyServer:
    """``/slides`` fails ``failures[path]`` times with ``status`` before answering 200."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.failures: dict[str, tuple[int, int]] = {}
        app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, port=self.port, log_level="error", lifespan="off", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.hits[path] += 1
        count, status = self.failures.get(path, (0, 200))
        if self.hits[path] <= count:
            headers = {"Retry-After": "0"} if status in (429, 503) else {}
            return JSONResponse({"error": "on purpose"}, status_code=status, headers=headers)
        if path == "/slides":
            return JSONResponse({"slides": []})
        return JSONResponse({"error": "no such thing"}, status_code=404)

    def start(self) -> FlakyServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("flaky server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def flaky() -> Iterator[FlakyServer]:
    server = FlakyServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("status", [502, 503, 504, 429])
def test_transient_statuses_are_retried(flaky: FlakyServer, status: int) -> None:
    flaky.failures["/slides"] = (2, status)
    with TileClient(flaky.url, retries=3, backoff=0.001) as client:
        assert client.slides() == []
    assert flaky.hits["/slides"] == 3


def test_retries_give_up_with_the_last_status(flaky: FlakyServer) -> None:
    flaky.failures["/slides"] = (10, 503)
    client = TileClient(flaky.url, retries=2, backoff=0.001)
    with client, pytest.raises(ServerError) as error:
        client.slides()
    assert error.value.status_code == 503
    assert flaky.hits["/slides"] == 3


@pytest.mark.parametrize("status", [400, 404, 500])
def test_client_errors_are_not_retried(flaky: FlakyServer, status: int) -> None:
    flaky.failures["/slides"] = (1, status)
    client = TileClient(flaky.url, retries=3, backoff=0.001)
    with client, pytest.raises(ServerError) as error:
        client.slides()
    assert error.value.status_code == status and error.value.message == "on purpose"
    assert flaky.hits["/slides"] == 1


def test_async_client_retries_too(flaky: FlakyServer) -> None:
    flaky.failures["/slides"] = (2, 503)

    async def main() -> None:
        async with AsyncTileClient(flaky.url, retries=3, backoff=0.001) as client:
            assert await client.slides() == []
            with pytest.raises(ServerError):
                await client.slide("missing")

    asyncio.run(main())
    assert flaky.hits["/slides"] == 3 and flaky.hits["/slides/missing"] == 1


def test_connect_errors_are_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"slides": []})

    client = TileClient("http://tileserver.invalid", retries=3, backoff=0.001)
    client._http = httpx.Client(base_url=client.base_url, transport=httpx.MockTransport(handler))
    with client:
        assert client.slides() == []
    assert calls == 3


def test_connect_errors_surface_after_the_last_retry() -> None:
    port = free_port()  # nothing listens here
    client = TileClient(f"http://127.0.0.1:{port}", retries=1, backoff=0.001)
    with client, pytest.raises(httpx.ConnectError):
        client.slides()
