"""A server answering stored tiles imports only what that takes.

pydicom, Pillow, the codecs and the heavier fronts' logic load when something needs them
(indexing a new or changed file, DICOMweb, a decoded or composed image), never on the way
from process start to the first stored tile. Each test checks ``sys.modules`` of a fresh
interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from fixtures import FixtureSet
from tileserver.catalog import Catalog, scan
from tileserver.service import importing

#: Modules the stored-tile path must not import.
DEFERRED = (
    "pydicom",
    "PIL",
    "imagecodecs",
    "simplejpeg",
    "requests",
    "tileserver.codec",
    "tileserver.tissue",
    "tileserver.iiif",
    "tileserver.dicomweb.instances",
    "tileserver.dicomweb.qido",
    "tileserver.dicomweb.stow",
)

#: The served app factories (uvicorn's ASGI, granian's RSGI), as the servers call them.
APP_FACTORY = """
import json, sys
from tileserver.http import server

getattr(server, sys.argv[1])()
print(json.dumps(sorted(m for m in sys.argv[2:] if m in sys.modules)))
"""

#: The served app through its lifespan: one stored tile, then the initial scan (/readyz).
FIRST_TILE = """
import asyncio, json, sys
from tileserver.http.server import app_from_env


async def get(app, path):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {},
    }
    await app(scope, receive, send)
    return sent[0]["status"]


async def main(tile_path, modules):
    app = app_from_env()
    inbox, started = asyncio.Queue(), asyncio.Event()

    async def send(message):
        if message["type"] == "lifespan.startup.complete":
            started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    lifespan = asyncio.create_task(app(scope, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await started.wait()
    status = await get(app, tile_path)
    while await get(app, "/readyz") != 200:
        await asyncio.sleep(0.01)
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    print(json.dumps({"status": status, "loaded": sorted(m for m in modules if m in sys.modules)}))


asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""


def run_python(code: str, args: list[str], slides: Path, catalog: Path) -> object:
    env = {"TILESERVER_SLIDES": str(slides), "TILESERVER_CATALOG": str(catalog)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TILESERVER_")}, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("factory", ["app_from_env", "rsgi_app_from_env"])
def test_app_factory_imports_no_deferred_module(tmp_path: Path, factory: str) -> None:
    args = [factory, *DEFERRED]
    loaded = run_python(APP_FACTORY, args, tmp_path, tmp_path / "catalog.sqlite")

    assert loaded == []


#: What the app factories leave to the app's build thread, so that the early tile path
#: (``tileserver/http/early.py``) answers before any of it is loaded.
BUILT_LATER = ("numpy", "anyio", "starlette.applications", "orjson", "tileserver.http.app")


@pytest.mark.parametrize("factory", ["app_from_env", "rsgi_app_from_env"])
def test_app_factory_leaves_the_app_to_the_build_thread(tmp_path: Path, factory: str) -> None:
    args = [factory, *BUILT_LATER]
    loaded = run_python(APP_FACTORY, args, tmp_path, tmp_path / "catalog.sqlite")

    assert loaded == []


def test_first_stored_tile_and_initial_scan_import_no_deferred_module(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    slide = fixture_dir["jpeg_bot"]
    catalog_path = tmp_path / "catalog.sqlite"
    catalog = Catalog(catalog_path)
    scan(catalog, [slide.directory])
    catalog.close()
    tile = f"/slides/{slide.series_uid}/tiles/0/0/0"

    result = run_python(FIRST_TILE, [tile, *DEFERRED], slide.directory, catalog_path)

    assert result == {"status": 200, "loaded": []}


def test_importing_loads_modules_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "import_probe.py").write_text(
        "import threading\nTHREAD = threading.current_thread()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "import_probe", raising=False)

    @importing("import_probe")
    async def handler() -> object:
        return sys.modules["import_probe"].THREAD

    try:
        imported_in = anyio.run(handler)
    finally:
        sys.modules.pop("import_probe", None)

    assert imported_in is not threading.current_thread()  # the event loop's thread
