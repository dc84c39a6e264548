"""The built-in viewer with an access check on: opened from a signed link
(``POST /auth/sign``'s "viewer"), it loads the slide, its tiles of every plane, thumbnail and
associated images with no credential and no failed request; unsigned, the slide is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from serverproc import ServerProcess
from viewerpage import open_viewer, settle

from fixtures import FixtureSet

KEY = "viewer-test-signing-key"


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("signed-viewer")
    keys = work / "keys.txt"
    keys.write_text("reader-key read\n")
    extra = ["--api-keys", str(keys), "--url-signing-key", KEY]
    slides = [fixture_dir[c].directory for c in ("jpeg_bot", "multi_focal_optical")]
    process = ServerProcess(slides, work, extra_args=extra).start()
    try:
        yield process
    finally:
        process.stop()


def _signed_viewer(server: ServerProcess, slide_id: str, source: str = "") -> str:
    signed = httpx.post(
        f"{server.url}/auth/sign",
        json={"slide": slide_id, "expires_in": 600},
        headers={"authorization": "Bearer reader-key"},
    ).json()
    return f"{server.url}{signed['viewer']}{source}"


@pytest.mark.browser
@pytest.mark.parametrize("source", ["", "&source=iiif"])
def test_a_signed_viewer_link_needs_no_credential(
    browser: Any, guarded: ServerProcess, fixture_dir: dict[str, FixtureSet], source: str
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    page = open_viewer(browser, _signed_viewer(guarded, sid, source))
    try:
        settle(page)
        assert page.bad == [], page.bad
        assert page.evaluate("document.body.dataset.tilesFailed || '0'") == "0"
    finally:
        page.close()


@pytest.mark.browser
def test_other_planes_load_through_the_signed_link(
    browser: Any, guarded: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    sid = fixture_dir["multi_focal_optical"].series_uid
    page = open_viewer(browser, _signed_viewer(guarded, sid) + "#z=2&path=1")
    try:
        settle(page)
        assert page.bad == [], page.bad
    finally:
        page.close()


def test_the_viewer_of_an_unsigned_link_is_refused(
    guarded: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    sid = fixture_dir["jpeg_bot"].series_uid
    assert httpx.get(f"{guarded.url}/viewer/{sid}").status_code == 401
    assert httpx.get(f"{guarded.url}/slides/{sid}").status_code == 401
    assert httpx.get(f"{guarded.url}/static/viewer/signed.js").status_code == 200
