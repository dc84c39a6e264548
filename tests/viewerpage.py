"""Helpers for the viewer's browser tests: a server over a few slides, and pages of the
built-in viewer driven through Playwright's page object (typed loosely: ``Any``)."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from serverproc import ServerProcess

from fixtures import FixtureSet

CASES = ("jpeg_bot", "sparse", "multi_focal_optical", "split_level")
REAL = "gcp-converter-jpeg.dcm"


@contextmanager
def viewer_server(
    fixture_dir: dict[str, FixtureSet], real_slides: Path, workdir: Path
) -> Iterator[ServerProcess]:
    """``tileserver serve`` over three fixture cases and one real DICOM slide."""
    root = workdir / "slides"
    for case in CASES:
        shutil.copytree(fixture_dir[case].directory, root / case)
    shutil.copy(real_slides / REAL, root / REAL)
    process = ServerProcess([root], workdir).start()
    try:
        yield process
    finally:
        process.stop()


def slide_id(server: ServerProcess, name: str) -> str:
    slides = httpx.get(f"{server.url}/slides").json()["slides"]
    return str(next(s["id"] for s in slides if s["name"] == name))


def open_viewer(browser: Any, url: str, width: int = 900, height: int = 700) -> Any:
    """A page on ``url`` once OpenSeadragon has opened the slide; ``page.bad`` collects
    failed requests and responses >= 400 (the favicon included)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.bad = []
    page.on("requestfailed", lambda request: page.bad.append(request.url))
    page.on("response", lambda r: page.bad.append(r.url) if r.status >= 400 else None)
    page.goto(url)
    page.wait_for_function("document.body.dataset.open === 'true'", timeout=30_000)
    return page


def settle(page: Any) -> None:
    """Wait for the view to stop moving and every tile in view to be drawn."""
    page.wait_for_function(
        """() => {
        const vp = window.viewer.viewport;
        return vp.getZoom(true) === vp.getZoom(false)
            && vp.getCenter(true).equals(vp.getCenter(false));
    }""",
        timeout=30_000,
    )
    page.wait_for_timeout(300)
    page.wait_for_function(
        "window.viewer.world.getItemAt(0) && window.viewer.world.getItemAt(0).getFullyLoaded()",
        timeout=30_000,
    )
    page.wait_for_timeout(300)


def show_at(page: Any, centre: tuple[float, float], zoom: float = 1.0) -> None:
    """Centre level-0 pixel ``centre`` at ``zoom`` screen pixels per image pixel."""
    page.evaluate(
        """([x, y, zoom]) => {
        const vp = window.viewer.viewport, item = window.viewer.world.getItemAt(0);
        vp.zoomTo(item.imageToViewportZoom(zoom), null, true);
        vp.panTo(item.imageToViewportCoordinates(new OpenSeadragon.Point(x, y)), true);
    }""",
        [centre[0], centre[1], zoom],
    )
    settle(page)


def image_at_element(page: Any, x: float, y: float) -> tuple[float, float]:
    """The level-0 pixel under the viewer element's point (x, y)."""
    point = page.evaluate(
        """([x, y]) => {
        const p = window.viewer.world.getItemAt(0).viewerElementToImageCoordinates(
            new OpenSeadragon.Point(x, y));
        return [p.x, p.y];
    }""",
        [x, y],
    )
    return float(point[0]), float(point[1])


def image_zoom(page: Any) -> float:
    return float(
        page.evaluate(
            """() => window.viewer.world.getItemAt(0).viewportToImageZoom(
            window.viewer.viewport.getZoom(true))"""
        )
    )


def screenshot(page: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """The viewer element's pixels and the level-0 pixel at its top-left corner."""
    left, top = image_at_element(page, 0, 0)
    shot = page.locator("#viewer").screenshot()
    image = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    return image, (round(left), round(top))


Expected = Callable[[int, int, int, int], np.ndarray]


def best_mean_difference(
    shot: np.ndarray, expected_at: Expected, top_left: tuple[int, int], box: tuple[int, ...]
) -> float:
    """Mean |difference| of a box of the shot, allowing OpenSeadragon's sub-pixel placement."""
    x0, y0, w, h = box
    ours = shot[y0 : y0 + h, x0 : x0 + w].astype(int)
    scores = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            theirs = expected_at(top_left[0] + x0 + dx, top_left[1] + y0 + dy, w, h)
            scores.append(float(np.abs(ours - theirs.astype(int)).mean()))
    return min(scores)


def pixels_of(array: np.ndarray) -> Expected:
    def expected(x: int, y: int, w: int, h: int) -> np.ndarray:
        return array[y : y + h, x : x + w]

    return expected
