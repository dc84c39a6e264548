"""Behind a reverse proxy: IIIF ids and DICOMweb URLs follow X-Forwarded-Proto/-Host/
-Prefix from a trusted peer, on both servers (the app, not the server, reads them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess, serving_cases

from fixtures import FixtureSet

PROXY_HEADERS = {
    "X-Forwarded-For": "203.0.113.7",  # the client the proxy serves, not a trusted peer
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "slides.example.org",
    "X-Forwarded-Prefix": "/tiles/",
}
PUBLIC = "https://slides.example.org/tiles"
RETRIEVE_URL = "00081190"


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fixture_dir: dict[str, FixtureSet],
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"forwarded-{request.param}")
    with serving_cases(
        fixture_dir, ["jpeg_bot"], workdir, extra_args=["--server", request.param]
    ) as started:
        yield started


def test_iiif_id_follows_a_trusted_proxy(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    slide_id = fixture_dir["jpeg_bot"].series_uid
    info = httpx.get(f"{server.url}/iiif/3/{slide_id}/info.json", headers=PROXY_HEADERS)
    assert info.json()["id"] == f"{PUBLIC}/iiif/3/{slide_id}"
    direct = httpx.get(f"{server.url}/iiif/3/{slide_id}/info.json")
    assert direct.json()["id"] == f"{server.url}/iiif/3/{slide_id}"
    base = httpx.get(f"{server.url}/iiif/3/{slide_id}", headers=PROXY_HEADERS)
    assert base.status_code == 303
    assert base.headers["location"] == f"{PUBLIC}/iiif/3/{slide_id}/info.json"


def test_dicomweb_urls_follow_a_trusted_proxy(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    url = f"{server.url}/dicomweb/studies/{fs.study_uid}/series"
    (series,) = httpx.get(url, headers=PROXY_HEADERS).json()
    expected = f"{PUBLIC}/dicomweb/studies/{fs.study_uid}/series/{fs.series_uid}"
    assert series[RETRIEVE_URL]["Value"] == [expected]
    (direct,) = httpx.get(url).json()
    assert direct[RETRIEVE_URL]["Value"][0].startswith(f"{server.url}/dicomweb/")


def test_an_untrusted_peer_cannot_rename_the_server(
    fixture_dir: dict[str, FixtureSet], tmp_path: Path
) -> None:
    fs = fixture_dir["jpeg_bot"]
    args = ["--server", "granian", "--forwarded-allow-ips", "10.9.9.9"]
    with serving_cases(fixture_dir, ["jpeg_bot"], tmp_path, extra_args=args) as server:
        info = httpx.get(f"{server.url}/iiif/3/{fs.series_uid}/info.json", headers=PROXY_HEADERS)
        assert info.json()["id"] == f"{server.url}/iiif/3/{fs.series_uid}"
        url = f"{server.url}/dicomweb/studies/{fs.study_uid}/series"
        (series,) = httpx.get(url, headers=PROXY_HEADERS).json()
        assert series[RETRIEVE_URL]["Value"][0].startswith(f"{server.url}/dicomweb/")
