"""The one access check (``tileserver/http/access.py``): an authorizer that refuses is obeyed
on every entry point — the app's routes, the stored-tile chain's fast path, the RSGI front
and the early path while the app loads — on real uvicorn and granian processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from access_targets import KEY, KeyRequired
from serverproc import free_port
from test_early import HeldServer, build_catalog

from fixtures import FixtureSet
from tileserver.http.app import create_app
from tileserver.http.lifespan import LifespanDriver
from tileserver.settings import Settings

TESTS = Path(__file__).parent
AUTHORIZER = "access_targets:key_required"
OPEN = {"authorization": KEY}


def refused(response: httpx.Response) -> bool:
    return (
        response.status_code == 401
        and response.json() == {"error": "a credential is required"}
        and response.headers.get("www-authenticate") == 'Bearer realm="tileserver"'
    )


@pytest.fixture(params=["uvicorn", "granian"])
def guarded(
    request: pytest.FixtureRequest, tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> Iterator[httpx.Client]:
    """A full server (``tileserver serve``) whose authorizer wants ``KEY``."""
    port = free_port()
    argv = [sys.executable, "-m", "tileserver.cli", "serve", "--port", str(port)]
    argv += ["--server", request.param, "--catalog", str(tmp_path / "catalog.sqlite")]
    argv += ["--slides", str(fixture_dir["jpeg_bot"].directory), "--authorizer", AUTHORIZER]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        _wait_ready(client, process, log)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(client: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if client.get("/readyz", headers=OPEN).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready")


def test_every_route_and_the_fast_path_refuse_without_a_credential(
    guarded: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    tile = f"/slides/{sid}/tiles/0/0/0"
    dzi = guarded.get(f"/dzi/{sid}.dzi", headers=OPEN)
    assert dzi.status_code == 200
    for _ in range(3):  # opens the slide and caches the frame: the fast path can answer
        served = guarded.get(tile, headers=OPEN)
    assert served.status_code == 200
    assert served.headers["server-timing"].startswith("read;")  # the chain, not the app
    assert "index" not in served.headers["server-timing"]

    requests = [
        ("GET", tile),
        ("GET", f"/slides/{sid}/tiles/0/0/0?format=png"),
        ("HEAD", tile),
        ("GET", f"/dzi/{sid}_files/0/0_0.jpeg"),
        ("GET", "/slides"),
        ("GET", f"/slides/{sid}"),
        ("GET", f"/iiif/3/{sid}/info.json"),
        ("GET", "/dicomweb/studies"),
        ("POST", "/dicomweb/studies"),
        ("DELETE", "/cache"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/"),
        ("GET", "/no/such/route"),
    ]
    for method, path in requests:
        response = guarded.request(method, path)
        if method == "HEAD":
            assert response.status_code == 401, path
        else:
            assert refused(response), (method, path, response.status_code, response.text[:200])
    conditional = guarded.get(tile, headers={"if-none-match": served.headers["etag"]})
    assert refused(conditional)
    again = guarded.get(tile, headers=OPEN)
    assert again.status_code == 200 and again.content == served.content


def test_the_early_path_refuses_while_the_app_loads(
    fixture_dir: dict[str, FixtureSet], tmp_path: Path
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    root, catalog = tmp_path / "slides", tmp_path / "catalog.sqlite"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, root / "jpeg_bot")
    indexed = (root, catalog, build_catalog(root, catalog)[sid])
    for server in ("uvicorn", "granian"):
        work = tmp_path / server
        work.mkdir()
        held = HeldServer(server, indexed, work, TILESERVER_AUTHORIZER=AUTHORIZER)
        with held as client:
            tile = f"/slides/{sid}/tiles/0/0/1"
            assert refused(client.get(tile)), server
            assert refused(client.get("/healthz")), server
            early = client.get(tile, headers=OPEN)
            assert early.status_code == 200, server
            assert early.headers["server-timing"].endswith('desc="early"')


def test_the_app_alone_checks_requests_that_did_not_come_through_the_chain(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    settings = Settings(slides=(fixture_dir["jpeg_bot"].directory,), catalog=tmp_path / "c.db")
    app = create_app(settings, KeyRequired())

    async def get(headers: dict[str, str]) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return (await client.get("/slides", headers=headers)).status_code

    async def run() -> tuple[int, int]:
        lifespan = LifespanDriver(app, {})
        await lifespan.startup()
        try:
            return await get({}), await get(OPEN)
        finally:
            await lifespan.shutdown()

    assert asyncio.run(run()) == (401, 200)
