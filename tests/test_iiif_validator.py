"""The official IIIF validator at compliance level 2, versions 3.0 and 2.0, over HTTP."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess

from fixtures import FixtureSet

VALIDATOR = Path(sys.executable).parent / "iiif-validate.py"


@pytest.fixture(scope="module")
def server(
    fixture_dir: dict[str, FixtureSet], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("iiif-slides")
    for case in ("iiif", "jpeg_bot"):
        shutil.copytree(fixture_dir[case].directory, root / case)
    process = ServerProcess([root], tmp_path_factory.mktemp("iiif-server")).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_validator_passes_level_2(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet], version: str
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(VALIDATOR),
            "--server",
            f"127.0.0.1:{server.port}",
            "--prefix",
            f"iiif/{version[0]}",
            "--identifier",
            fixture_dir["iiif"].series_uid,
            f"--version={version}",
            "--level",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert " 0 failures)" in output


def test_info_json_id_follows_forwarded_headers(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    slide_id = fixture_dir["iiif"].series_uid
    response = httpx.get(
        f"{server.url}/iiif/3/{slide_id}/info.json",
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "slides.example.org",
            "X-Forwarded-Prefix": "/tiles",
        },
    )
    assert response.json()["id"] == f"https://slides.example.org/tiles/iiif/3/{slide_id}"


def test_tiles_and_sizes_match_the_native_pyramid(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["iiif"]
    doc = httpx.get(f"{server.url}/iiif/3/{fs.series_uid}/info.json").json()
    (tiles,) = doc["tiles"]
    assert (tiles["width"], tiles["height"]) == (fs.level(0).tile_width, fs.level(0).tile_height)
    assert tiles["scaleFactors"] == [2**i for i in range(len(fs.levels))]
    assert sorted((s["width"], s["height"]) for s in doc["sizes"]) == sorted(
        (lv.width, lv.height) for lv in fs.levels
    )


def test_stored_frame_request_returns_the_frame_bytes(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    level = fs.level(0)
    region = f"0,0,{level.tile_width},{level.tile_height}"
    response = httpx.get(f"{server.url}/iiif/3/{fs.series_uid}/{region}/max/0/default.jpg")
    assert response.status_code == 200
    assert response.content == level.instances[0].read_frame(0)
    assert response.headers["link"] == '<http://iiif.io/api/image/3/level2.json>;rel="profile"'


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/iiif/3/unknown-id/info.json", 404),
        ("/iiif/4/{id}/info.json", 404),
        ("/iiif/3/{id}/full/max/0/default.tif", 400),
        ("/iiif/3/{id}/full/max/45x/default.jpg", 400),
        ("/iiif/3/{id}/full/20000,20000/0/default.jpg", 400),
    ],
)
def test_iiif_errors(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet], path: str, status: int
) -> None:
    response = httpx.get(server.url + path.format(id=fixture_dir["iiif"].series_uid))
    assert response.status_code == status
    assert "error" in response.json()
    assert response.headers["access-control-allow-origin"] == "*"


def test_base_uri_redirects_and_json_ld_negotiation(
    server: ServerProcess, fixture_dir: dict[str, FixtureSet]
) -> None:
    base = f"{server.url}/iiif/3/{fixture_dir['iiif'].series_uid}"
    redirect = httpx.get(base)
    assert redirect.status_code == 303 and redirect.headers["location"] == base + "/info.json"
    ld = httpx.get(base + "/info.json", headers={"Accept": "application/ld+json"})
    assert ld.headers["content-type"].startswith("application/ld+json")


def test_forwarded_headers_from_an_untrusted_client_are_ignored(
    fixture_dir: dict[str, FixtureSet], tmp_path: Path
) -> None:
    root = tmp_path / "slides"
    shutil.copytree(fixture_dir["iiif"].directory, root / "iiif")
    server = ServerProcess([root], tmp_path, extra_args=["--forwarded-allow-ips", "10.9.9.9"])
    server.start()
    try:
        slide_id = fixture_dir["iiif"].series_uid
        response = httpx.get(
            f"{server.url}/iiif/3/{slide_id}/info.json",
            headers={"X-Forwarded-Host": "evil.example"},
        )
        assert response.json()["id"] == f"{server.url}/iiif/3/{slide_id}"
        assert "Accept" in response.headers["vary"].split(", ")
    finally:
        server.stop()
