"""The built-in viewer's pixels in headless Chromium (Debian's, never a downloaded browser).

Each screenshot of a 1:1 view is compared with an independent rendering of the same image
area: the generator's pixels for a fixture (every focal plane and optical path), wsidicom's
``read_region`` for a real slide. Also the landing page, the error page and the favicon.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serverproc import ServerProcess
from viewerpage import (
    best_mean_difference,
    open_viewer,
    pixels_of,
    screenshot,
    settle,
    show_at,
    slide_id,
    viewer_server,
)

from fixtures import FixtureSet

pytestmark = pytest.mark.browser

#: Mean |difference| allowed between a screenshot and the source pixels (JPEG, resampling).
TOLERANCE = 6.0
BOX = (300, 200, 300, 250)


@pytest.fixture(scope="module")
def server(
    fixture_dir: dict[str, FixtureSet], real_slides: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with viewer_server(fixture_dir, real_slides, tmp_path_factory.mktemp("viewer")) as process:
        yield process


def full_resolution_shot(browser: Any, url: str, centre: tuple[int, int]) -> tuple[Any, ...]:
    page = open_viewer(browser, url)
    show_at(page, centre)
    shot, top_left = screenshot(page)
    stats = page.evaluate("({loaded: window.tileStats.loaded, failed: window.tileStats.failed})")
    bad = page.bad
    page.close()
    return shot, top_left, stats, bad


@pytest.mark.parametrize("source", ["dzi", "iiif", "native"])
def test_fixture_view_matches_the_source_pixels(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet], source: str
) -> None:
    fs = fixture_dir["jpeg_bot"]
    url = f"{server.url}/viewer/{fs.series_uid}?source={source}"
    shot, top_left, stats, bad = full_resolution_shot(browser, url, (450, 350))
    assert bad == []
    assert stats["failed"] == 0 and stats["loaded"] > 0
    expected = pixels_of(fs.level_pixels(0))
    assert best_mean_difference(shot, expected, top_left, BOX) < TOLERANCE


def test_real_slide_view_matches_wsidicom(
    browser: Any, server: ServerProcess, real_slides: Path
) -> None:
    from wsidicom import WsiDicom

    url = f"{server.url}/viewer/{slide_id(server, 'gcp-converter-jpeg')}"
    shot, top_left, stats, bad = full_resolution_shot(browser, url, (480, 360))
    assert bad == [] and stats["failed"] == 0
    with WsiDicom.open(real_slides / "gcp-converter-jpeg.dcm") as wsi:

        def expected(x: int, y: int, w: int, h: int) -> np.ndarray:
            return np.asarray(wsi.read_region((x, y), 0, (w, h)).convert("RGB"))

        assert best_mean_difference(shot, expected, top_left, BOX) < TOLERANCE


def plane_differences(
    browser: Any, server: ServerProcess, fs: FixtureSet, z: int, path: int
) -> dict[tuple[int, int], float]:
    """Choose (z, path) in the panel's selectors; the shot against every plane's pixels."""
    page = open_viewer(browser, f"{server.url}/viewer/{fs.series_uid}")
    page.select_option("#focal-plane", str(z))
    page.select_option("#optical-path", str(path))
    page.wait_for_function(
        f"document.body.dataset.plane === '{z},{path}' && document.body.dataset.open === 'true'"
    )
    show_at(page, (250, 190))
    shot, top_left = screenshot(page)
    assert page.bad == [] and page.evaluate("window.tileStats.failed") == 0
    assert page.evaluate("document.body.dataset.source") == ("dzi" if z == path == 0 else "native")
    page.close()
    box = (20 - top_left[0], 20 - top_left[1], 460, 340)  # inside the 500 x 380 image
    return {
        (zz, pp): best_mean_difference(shot, pixels_of(fs.level_pixels(0, pp, zz)), top_left, box)
        for zz in range(3)
        for pp in range(2)
    }


@pytest.mark.parametrize(("z", "path"), [(0, 0), (1, 0), (2, 1), (0, 1)])
def test_focal_plane_and_channel_selectors_show_that_plane(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet], z: int, path: int
) -> None:
    differences = plane_differences(browser, server, fixture_dir["multi_focal_optical"], z, path)
    assert differences[(z, path)] < TOLERANCE
    assert min(differences, key=lambda plane: differences[plane]) == (z, path), differences


def test_area_around_the_slide_has_the_slide_background(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["sparse"]
    page = open_viewer(browser, f"{server.url}/viewer/{fs.series_uid}")
    page.wait_for_function("document.getElementById('viewer').dataset.background")
    show_at(page, (350, 250), zoom=0.6)  # 420 x 300 px in the middle of the canvas
    shot, _ = screenshot(page)
    page.close()
    glass = fs.level_pixels(0)[2, 2].astype(int)  # the generator's background colour
    h, w = shot.shape[:2]
    for x, y in ((w // 2, 30), (w // 2, h - 30), (30, h // 2)):  # clear of the controls
        assert np.abs(shot[y, x].astype(int) - glass).max() <= 3, (x, y, shot[y, x])


def test_absent_tiles_show_the_slide_background(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["sparse"]
    level = fs.level(0)
    *_, col, row = sorted(level.absent_tiles)[0]
    page = open_viewer(browser, f"{server.url}/viewer/{fs.series_uid}")
    centre = (col * level.tile_width + level.tile_width // 2, row * level.tile_height + 64)
    show_at(page, centre)
    shot, top_left = screenshot(page)
    page.close()
    x0, y0 = centre[0] - top_left[0] - 60, centre[1] - top_left[1] - 60
    box = (x0, y0, 120, 120)  # inside the absent tile
    assert best_mean_difference(shot, pixels_of(fs.level_pixels(0)), top_left, box) < 3.0


def test_unknown_slide_gets_an_html_error_page(browser: Any, server: ServerProcess) -> None:
    page = browser.new_page()
    response = page.goto(f"{server.url}/viewer/no-such-slide")
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    heading = page.locator("h1").inner_text()
    reason = page.locator(".reason").inner_text()
    home = page.locator("a[href='/']").count()
    page.close()
    assert heading == "Slide not found" and "no-such-slide" in reason and home >= 1


def test_favicon_is_served_and_pages_request_nothing_missing(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    response = httpx.get(f"{server.url}/favicon.ico")
    assert response.status_code == 200
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO directory
    page = open_viewer(browser, f"{server.url}/viewer/{fixture_dir['jpeg_bot'].series_uid}")
    settle(page)
    page.goto(server.url + "/")
    page.wait_for_selector("#slides a")
    page.wait_for_timeout(500)
    bad = page.bad
    page.close()
    assert bad == []
