"""OpenSeadragon in headless Chromium (Debian's, never a downloaded browser) against the server.

The screenshot of a zoomed-in view is compared with an independent rendering of the same
image area: the generator's pixels for a fixture, wsidicom's ``read_region`` for a real slide.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serverproc import ServerProcess

from fixtures import FixtureSet

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(
    fixture_dir: dict[str, FixtureSet], real_slides: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("viewer-slides")
    shutil.copytree(fixture_dir["jpeg_bot"].directory, root / "jpeg_bot")
    shutil.copy(real_slides / "gcp-converter-jpeg.dcm", root / "gcp-converter-jpeg.dcm")
    process = ServerProcess([root], tmp_path_factory.mktemp("viewer-server")).start()
    try:
        yield process
    finally:
        process.stop()


def view_at_full_resolution(
    browser: object, url: str, centre: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int], dict[str, int]]:
    """Open ``url``, show image pixels 1:1 around ``centre``; screenshot and top-left pixel."""
    page = browser.new_page(viewport={"width": 900, "height": 700})  # type: ignore[attr-defined]
    failed_requests: list[str] = []
    page.on("requestfailed", lambda request: failed_requests.append(request.url))
    page.on("response", lambda r: failed_requests.append(r.url) if r.status >= 400 else None)
    page.goto(url)
    page.wait_for_function("document.body.dataset.open === 'true'", timeout=30_000)
    page.evaluate(
        """([x, y]) => {
        const vp = window.viewer.viewport;
        vp.zoomTo(vp.imageToViewportZoom(1.0), null, true);
        vp.panTo(vp.imageToViewportCoordinates(new OpenSeadragon.Point(x, y)), true);
    }""",
        list(centre),
    )
    page.wait_for_timeout(300)
    page.wait_for_function("window.viewer.world.getItemAt(0).getFullyLoaded()", timeout=30_000)
    page.wait_for_timeout(300)
    top_left = page.evaluate("""() => {
        const p = window.viewer.viewport.viewerElementToImageCoordinates(
            new OpenSeadragon.Point(0, 0));
        return [p.x, p.y];
    }""")
    shot = page.locator("#viewer").screenshot()
    stats = page.evaluate("({loaded: window.tileStats.loaded, failed: window.tileStats.failed})")
    page.close()
    assert failed_requests == []
    image = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    return image, (round(top_left[0]), round(top_left[1])), stats


def best_mean_difference(
    shot: np.ndarray, expected_at: object, top_left: tuple[int, int], box: tuple[int, int, int, int]
) -> float:
    """Mean |difference| of a central box, allowing OpenSeadragon's sub-pixel placement."""
    x0, y0, w, h = box
    ours = shot[y0 : y0 + h, x0 : x0 + w].astype(int)
    scores = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            theirs = expected_at(top_left[0] + x0 + dx, top_left[1] + y0 + dy, w, h)  # type: ignore[operator]
            scores.append(float(np.abs(ours - theirs.astype(int)).mean()))
    return min(scores)


@pytest.mark.parametrize("source", ["dzi", "iiif"])
def test_fixture_view_matches_the_source_pixels(
    browser: object, server: ServerProcess, fixture_dir: dict[str, FixtureSet], source: str
) -> None:
    fs = fixture_dir["jpeg_bot"]
    url = f"{server.url}/viewer/{fs.series_uid}?source={source}"
    shot, top_left, stats = view_at_full_resolution(browser, url, (450, 350))
    assert stats["failed"] == 0 and stats["loaded"] > 0
    pixels = fs.level_pixels(0)

    def expected(x: int, y: int, w: int, h: int) -> np.ndarray:
        return pixels[y : y + h, x : x + w]

    assert best_mean_difference(shot, expected, top_left, (300, 200, 300, 250)) < 6.0


def test_real_slide_view_matches_wsidicom(
    browser: object, server: ServerProcess, real_slides: Path
) -> None:
    import httpx
    from wsidicom import WsiDicom

    slides = httpx.get(f"{server.url}/slides").json()["slides"]
    slide_id = next(s["id"] for s in slides if s["name"] == "gcp-converter-jpeg")
    shot, top_left, stats = view_at_full_resolution(
        browser, f"{server.url}/viewer/{slide_id}", (480, 360)
    )
    assert stats["failed"] == 0
    with WsiDicom.open(real_slides / "gcp-converter-jpeg.dcm") as wsi:

        def expected(x: int, y: int, w: int, h: int) -> np.ndarray:
            return np.asarray(wsi.read_region((x, y), 0, (w, h)).convert("RGB"))

        assert best_mean_difference(shot, expected, top_left, (300, 200, 300, 250)) < 6.0


def test_index_lists_slides_with_thumbnails(browser: object, server: ServerProcess) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(server.url + "/")
    page.wait_for_selector("#slides a[href^='/viewer/']")
    links = page.locator("#slides a[href^='/viewer/']").count()
    thumbnails = page.evaluate(
        "Array.from(document.querySelectorAll('#slides img')).map(i => i.src)"
    )
    page.close()
    assert links >= 2
    assert all("/thumbnail" in src for src in thumbnails) and thumbnails
