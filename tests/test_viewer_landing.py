"""The landing page (``/``) in headless Chromium: one card per slide with its thumbnail, and
a search over name, path, study, patient and study date (details read per slide)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serverproc import ServerProcess
from viewerpage import viewer_server

from fixtures import FixtureSet

pytestmark = pytest.mark.browser

FIXTURES = {"jpeg_bot", "sparse", "multi_focal_optical", "split_level"}  # Fixture^Synthetic
REAL = "gcp-converter-jpeg"  # no patient, study or date


@pytest.fixture(scope="module")
def server(
    fixture_dir: dict[str, FixtureSet], real_slides: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with viewer_server(fixture_dir, real_slides, tmp_path_factory.mktemp("landing")) as process:
        yield process


@pytest.fixture(scope="module")
def landing(browser: Any, server: ServerProcess) -> Iterator[Any]:
    """The landing page with every slide's details read."""
    page = browser.new_page()
    page.bad = []
    page.on("response", lambda r: page.bad.append(r.url) if r.status >= 400 else None)
    page.goto(server.url + "/")
    page.wait_for_function("document.body.dataset.detailsLoaded === 'true'", timeout=30_000)
    yield page
    page.close()


def shown(page: Any, query: str = "", since: str = "", until: str = "") -> set[str]:
    page.fill("#query", query)
    page.fill("#date-from", since)
    page.fill("#date-to", until)
    names: list[str] = page.eval_on_selector_all(
        "#slides li:not([hidden]) .name", "ns => ns.map(n => n.textContent)"
    )
    return set(names)


def test_index_lists_slides_with_thumbnails(landing: Any) -> None:
    thumbnails = landing.eval_on_selector_all("#slides img", "is => is.map(i => i.src)")
    links = landing.locator("#slides a[href^='/viewer/']").count()
    assert links == 5 and len(thumbnails) == 5
    assert all("/thumbnail" in src for src in thumbnails)
    assert landing.bad == []


@pytest.mark.parametrize(
    ("query", "since", "until", "expected"),
    [
        ("", "", "", FIXTURES | {REAL}),
        ("sparse", "", "", {"sparse"}),  # name
        ("converter-jpeg.dcm", "", "", {REAL}),  # path
        ("fixture synthetic", "", "", FIXTURES),  # patient name (^ read as a space)
        ("FIXTURE-PATIENT", "", "", FIXTURES),  # patient ID
        ("ACC0001", "", "", FIXTURES),  # accession number
        ("synthetic fixtures", "", "", FIXTURES),  # study description
        ("fixture focal", "", "", {"multi_focal_optical"}),  # every word must match
        ("2024-01-15", "", "", FIXTURES),  # study date, as written on the card
        ("", "2024-01-01", "2024-01-31", FIXTURES),
        ("", "2024-01-16", "", set()),
        ("", "", "2024-01-14", set()),
        ("no such slide", "", "", set()),
    ],
)
def test_search_by_name_study_patient_and_date(
    landing: Any, query: str, since: str, until: str, expected: set[str]
) -> None:
    assert shown(landing, query, since, until) == expected


def test_cards_show_study_patient_and_date(landing: Any) -> None:
    shown(landing)
    meta = landing.locator("#slides li", has_text="sparse").locator(".meta").inner_text()
    assert "tileserver synthetic fixtures" in meta
    assert "Fixture Synthetic" in meta and "2024-01-15" in meta


def test_search_field_is_labelled(landing: Any) -> None:
    for field in ("#query", "#date-from", "#date-to"):
        label = landing.evaluate(f"document.querySelector('{field}').labels[0].textContent.trim()")
        assert label


def test_enter_in_the_search_field_keeps_the_page(browser: Any, server: ServerProcess) -> None:
    page = browser.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#slides a")
    page.evaluate("window.marker = 1")
    page.fill("#query", "sparse")
    page.press("#query", "Enter")
    page.wait_for_timeout(300)
    kept = page.evaluate("window.marker === 1")
    page.close()
    assert kept
