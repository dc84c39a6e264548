"""The viewer's controls in headless Chromium: cursor readout, magnification presets, ruler,
shareable links, keyboard shortcuts and the collapsible panel. Each checks the numbers the
control shows against the view's own geometry (OpenSeadragon's coordinates) and the mpp."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serverproc import ServerProcess
from viewerpage import image_at_element, image_zoom, open_viewer, settle, show_at, viewer_server

from fixtures import FixtureSet

pytestmark = pytest.mark.browser

MPP = 0.5  # every fixture case is written at 0.5 um/px
TIMES = "\N{MULTIPLICATION SIGN}"


@pytest.fixture(scope="module")
def server(
    fixture_dir: dict[str, FixtureSet], real_slides: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with viewer_server(fixture_dir, real_slides, tmp_path_factory.mktemp("controls")) as process:
        yield process


@pytest.fixture
def page(browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]) -> Iterator[Any]:
    """The viewer on jpeg_bot (900 x 700 px at 0.5 um/px, three levels)."""
    page = open_viewer(browser, f"{server.url}/viewer/{fixture_dir['jpeg_bot'].series_uid}")
    yield page
    page.close()


def viewer_box(page: Any) -> dict[str, float]:
    box: dict[str, float] = page.locator("#viewer").bounding_box()
    return box


def test_cursor_position_is_shown_in_micrometres(page: Any) -> None:
    show_at(page, (450, 350), zoom=2.0)
    box = viewer_box(page)
    page.mouse.move(box["x"] + 123, box["y"] + 77)
    readout = page.locator("#cursor-position")
    x, y = image_at_element(page, 123, 77)
    assert float(readout.get_attribute("data-x")) == pytest.approx(x, abs=0.5)
    assert float(readout.get_attribute("data-y")) == pytest.approx(y, abs=0.5)
    text = readout.inner_text()
    assert text == f"x {x * MPP:.4g} µm, y {y * MPP:.4g} µm"


def test_magnification_presets_come_from_the_mpp(page: Any) -> None:
    # 0.5 um/px is a 20x scan: 40x would enlarge its pixels, so it is not offered.
    powers = page.eval_on_selector_all("#presets button", "bs => bs.map(b => b.textContent)")
    assert powers == [f"{p}{TIMES}" for p in ("2.5", "5", "10", "20")]
    page.click("#presets button[data-magnification='10']")
    settle(page)
    assert image_zoom(page) == pytest.approx(10 * MPP / 10, rel=0.01)
    assert page.locator("#magnification").inner_text() == f"10{TIMES}"
    pressed = page.eval_on_selector_all(
        "#presets button[aria-pressed='true']", "bs => bs.map(b => b.dataset.magnification)"
    )
    assert pressed == ["10"]


def test_no_presets_for_a_slide_scanned_below_2_5x(browser: Any, server: ServerProcess) -> None:
    slides = httpx.get(f"{server.url}/slides").json()["slides"]
    real = next(s["id"] for s in slides if s["name"] == "gcp-converter-jpeg")  # 16.8 um/px
    page = open_viewer(browser, f"{server.url}/viewer/{real}")
    buttons = page.locator("#presets button").count()
    text = page.locator("#presets").inner_text()
    page.close()
    assert buttons == 0 and "below 2.5" in text


def test_ruler_measures_a_drag_in_micrometres(page: Any) -> None:
    show_at(page, (450, 350), zoom=1.5)
    centre_before = image_at_element(page, 300, 300)
    page.click("#ruler-toggle")
    box = viewer_box(page)
    page.mouse.move(box["x"] + 100, box["y"] + 120)
    page.mouse.down()
    page.mouse.move(box["x"] + 250, box["y"] + 250, steps=5)
    page.mouse.move(box["x"] + 400, box["y"] + 520, steps=5)
    page.mouse.up()
    start, end = image_at_element(page, 100, 120), image_at_element(page, 400, 520)
    expected = math.hypot(end[0] - start[0], end[1] - start[1]) * MPP  # 500 px / 1.5 * 0.5
    output = page.locator("#ruler-length")
    assert float(output.get_attribute("data-length")) == pytest.approx(expected, rel=0.01)
    assert output.inner_text() == f"Measured {expected:.3g} µm"
    assert page.locator("#ruler text").text_content() == f"{expected:.3g} µm"
    # While measuring, a drag draws instead of panning the slide.
    assert image_at_element(page, 300, 300) == pytest.approx(centre_before, abs=0.5)


def test_a_shared_link_restores_slide_centre_zoom_and_plane(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["multi_focal_optical"]
    page = open_viewer(browser, f"{server.url}/viewer/{fs.series_uid}")
    page.select_option("#focal-plane", "2")
    page.select_option("#optical-path", "1")
    page.wait_for_function(
        "document.body.dataset.plane === '2,1' && document.body.dataset.open === 'true'"
    )
    show_at(page, (310, 170), zoom=1.7)
    page.wait_for_function("document.getElementById('share-link').value.includes('zoom=1.7')")
    link = page.locator("#share-link").input_value()
    page.close()

    other = open_viewer(browser, link, width=700, height=520)  # another screen size
    settle(other)
    centre = view_centre(other)
    zoom = image_zoom(other)
    chosen = [other.input_value("#focal-plane"), other.input_value("#optical-path")]
    plane = other.evaluate("document.body.dataset.plane")
    other.close()
    assert link.startswith(f"{server.url}/viewer/{fs.series_uid}#")
    assert centre == pytest.approx((310, 170), abs=1.0)
    assert zoom == pytest.approx(1.7, rel=0.01)
    assert chosen == ["2", "1"] and plane == "2,1"


def test_keyboard_shortcuts_and_their_help(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    page = open_viewer(
        browser, f"{server.url}/viewer/{fixture_dir['multi_focal_optical'].series_uid}"
    )
    page.keyboard.press("?")
    assert page.locator("#help").evaluate("d => d.open")
    keys = page.eval_on_selector_all("#help-keys dt", "ds => ds.map(d => d.textContent)")
    page.keyboard.press("Escape")
    assert not page.locator("#help").evaluate("d => d.open")
    page.focus("#viewer .openseadragon-canvas")  # OpenSeadragon's own keys listen here
    page.keyboard.press("m")
    ruler = page.get_attribute("#ruler-toggle", "aria-pressed")
    page.keyboard.press("Escape")
    ruler_after_escape = page.get_attribute("#ruler-toggle", "aria-pressed")
    page.keyboard.press("z")
    page.wait_for_function(
        "document.body.dataset.plane === '1,0' && document.body.dataset.open === 'true'"
    )
    page.keyboard.press("c")
    page.wait_for_function(
        "document.body.dataset.plane === '1,1' && document.body.dataset.open === 'true'"
    )
    page.keyboard.press("Z")
    page.wait_for_function(
        "document.body.dataset.plane === '0,1' && document.body.dataset.open === 'true'"
    )
    page.keyboard.press("2")  # the second preset, 5x
    settle(page)
    zoom = image_zoom(page)
    page.keyboard.press("p")
    panel_hidden = page.locator("#panel").evaluate("p => p.hidden")
    page.close()
    assert {"?", "m", "p", "h", "1 2 3 4 5", "z Z", "c C", "l", "Esc"} <= set(keys)
    assert ruler == "true" and ruler_after_escape == "false"
    assert zoom == pytest.approx(5 * MPP / 10, rel=0.01)
    assert panel_hidden


def test_keys_typed_into_a_field_are_not_shortcuts(page: Any) -> None:
    page.focus("#share-link")
    page.keyboard.press("m")
    assert page.get_attribute("#ruler-toggle", "aria-pressed") == "false"


@pytest.mark.parametrize(("width", "open_at_start"), [(1200, True), (480, False)])
def test_panel_collapses_on_narrow_screens_and_toggles(
    browser: Any,
    server: ServerProcess,
    fixture_dir: dict[str, FixtureSet],
    width: int,
    open_at_start: bool,
) -> None:
    url = f"{server.url}/viewer/{fixture_dir['jpeg_bot'].series_uid}"
    page = open_viewer(browser, url, width=width, height=700)
    toggle = page.locator("#panel-toggle")
    states = [(page.locator("#panel").is_visible(), toggle.get_attribute("aria-expanded"))]
    toggle.click()
    states.append((page.locator("#panel").is_visible(), toggle.get_attribute("aria-expanded")))
    page.close()
    expanded = "true" if open_at_start else "false"
    collapsed = "false" if open_at_start else "true"
    assert states == [(open_at_start, expanded), (not open_at_start, collapsed)]


def view_centre(page: Any) -> tuple[float, float]:
    size = page.evaluate(
        "() => { const r = document.getElementById('viewer').getBoundingClientRect();"
        " return [r.width / 2, r.height / 2]; }"
    )
    return image_at_element(page, *size)


def test_editing_the_address_hash_moves_the_view(page: Any) -> None:
    page.evaluate("location.hash = '#x=600&y=200&zoom=2'")
    # hashchange is a task of its own: wait for the view to head there, then to arrive.
    page.wait_for_function(
        """() => { const item = window.viewer.world.getItemAt(0);
        return Math.abs(item.viewportToImageZoom(window.viewer.viewport.getZoom(false)) - 2)
            < 0.01; }"""
    )
    settle(page)
    assert view_centre(page) == pytest.approx((600, 200), abs=1.0)
    assert image_zoom(page) == pytest.approx(2.0, rel=0.01)


def test_switching_dzi_to_iiif_keeps_the_view(page: Any) -> None:
    show_at(page, (300, 400), zoom=1.25)
    page.wait_for_function(
        "document.querySelector('#source-toggle a[data-source=iiif]').href.includes('zoom=1.25')"
    )
    page.click("#source-toggle a[data-source=iiif]")
    page.wait_for_function(
        "document.body.dataset.source === 'iiif' && document.body.dataset.open === 'true'"
    )
    settle(page)
    assert view_centre(page) == pytest.approx((300, 400), abs=1.0)
    assert image_zoom(page) == pytest.approx(1.25, rel=0.01)


def test_a_nonsense_address_hash_still_opens_the_slide(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["multi_focal_optical"]
    url = f"{server.url}/viewer/{fs.series_uid}#x=abc&y=&zoom=-3&z=99&path=-1"
    page = open_viewer(browser, url)
    settle(page)
    plane = page.evaluate("document.body.dataset.plane")
    failed = page.evaluate("window.tileStats.failed")
    bad = page.bad
    page.close()
    assert plane == "2,0"  # the last focal plane, the first path
    assert failed == 0 and bad == []


def test_plane_selectors_only_for_what_the_slide_has_several_of(
    browser: Any, server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    seen = {}
    for case in ("jpeg_bot", "multi_focal_optical", "split_level"):
        page = open_viewer(browser, f"{server.url}/viewer/{fixture_dir[case].series_uid}")
        seen[case] = [page.is_visible(s) for s in ("#focal-plane", "#optical-path")]
        page.close()
    assert seen == {
        "jpeg_bot": [False, False],
        "multi_focal_optical": [True, True],
        "split_level": [False, True],  # two optical paths, one focal plane
    }
