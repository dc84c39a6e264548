"""dicom-microscopy-viewer (npm) in headless Chromium opens slides from the DICOMweb front.

The page (tests/browser/harness.html) is served from a second local origin, so every
DICOMweb request is cross-origin as it is for Slim: CORS preflights, multipart frames
split by dicomweb-client (JS), frames decoded by dmv's web workers (WASM codecs). The
JavaScript comes from ``npm ci --prefix tests/browser`` (``make venv`` runs it); Chromium
is Debian's, never a downloaded one.
"""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serverproc import serving_cases

from fixtures import FixtureSet

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
NODE_MODULES = BROWSER_DIR / "node_modules"
# Path on the page -> file: dmv's dynamic-import build lives where its workers look for it.
STATIC = {
    "/": BROWSER_DIR / "harness.html",
    "/dicomweb-client.js": NODE_MODULES / "dicomweb-client" / "build" / "dicomweb-client.js",
}
DMV_DIST = NODE_MODULES / "dicom-microscopy-viewer" / "dist" / "dynamic-import"
CASES = ("jpeg_bot", "sparse", "j2k_lossless")
VIEW = (800, 600)  # the harness's #viewer, in CSS pixels
CENTRE = (200, 150, 600, 450)  # x0, y0, x1, y1: away from the overview map and scale bar
pytestmark = pytest.mark.browser


class HarnessHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the harness page and the npm packages' browser builds, nothing else."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".wasm": "application/wasm",
    }

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        if path in STATIC:
            return str(STATIC[path])
        if path.startswith("/static/js/") and "/" not in path.removeprefix("/static/js/"):
            return str(DMV_DIST / path.removeprefix("/static/js/"))
        return str(BROWSER_DIR / "missing")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    if not (DMV_DIST / "dicomMicroscopyViewer.min.js").is_file():
        pytest.fail("npm packages missing: run `make venv` (npm ci --prefix tests/browser)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HarnessHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def dicomweb(
    fixture_dir: dict[str, FixtureSet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("dmv-server")
    with serving_cases(fixture_dir, CASES, workdir) as process:
        yield f"{process.url}/dicomweb"


QUIET = """() => {
    const h = window.harness
    const key = `${h.started}:${h.ended}`
    if (key !== window.lastKey) {
        window.lastKey = key
        window.lastChange = performance.now()
        return false
    }
    return h.started > 0 && h.ended >= h.started && performance.now() - window.lastChange > 500
}"""


def open_in_viewer(
    browser: object, page_url: str, dicomweb: str, fs: FixtureSet
) -> tuple[np.ndarray, dict[str, object], list[str], list[str]]:
    """Open ``fs`` in dmv and wait until no frame is loading; the screenshot, the page's
    counters, failed requests (network errors and statuses >= 400), frame URLs loaded."""
    page = browser.new_page(viewport={"width": VIEW[0], "height": VIEW[1]})  # type: ignore[attr-defined]
    failed: list[str] = []
    frames: list[str] = []

    def on_response(response: object) -> None:
        status, url = response.status, response.url  # type: ignore[attr-defined]
        if status >= 400:
            failed.append(f"{status} {url}")
        elif "/frames/" in url and response.request.method == "GET":  # type: ignore[attr-defined]
            frames.append(url)

    page.on("requestfailed", lambda r: failed.append(f"{r.failure} {r.url}"))
    page.on("response", on_response)
    page.on("pageerror", lambda error: failed.append(f"page error: {error}"))
    page.goto(page_url)
    page.evaluate("(a) => window.openSlide(...a)", [dicomweb, fs.study_uid, fs.series_uid])
    page.wait_for_function(QUIET, polling=100, timeout=30_000)
    page.wait_for_timeout(300)  # one more animation frame paints the last tiles
    shot = page.locator("#viewer").screenshot()
    harness = page.evaluate("window.harness")
    page.close()
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")), harness, failed, frames


@pytest.mark.parametrize("case", CASES)
def test_dmv_loads_a_slide_with_no_failed_request(
    browser: object,
    page_origin: str,
    dicomweb: str,
    fixture_dir: dict[str, FixtureSet],
    case: str,
) -> None:
    fs = fixture_dir[case]
    shot, harness, failed, frames = open_in_viewer(browser, page_origin + "/", dicomweb, fs)

    assert failed == []
    assert harness["errors"] == [] and harness["failed"] == 0
    assert harness["images"] == len(fs.levels) + (
        1 if any(a.kind == "THUMBNAIL" for a in fs.associated) else 0
    )
    assert frames and all(f.startswith(dicomweb) for f in frames)
    assert shot.std() > 10, "the viewer drew nothing"
