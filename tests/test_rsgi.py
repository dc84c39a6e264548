"""``serve --server granian`` runs the app on granian's RSGI interface: the tile fast path
answers natively and everything else crosses the RSGI -> ASGI bridge. These tests hit a
real granian process over a socket and check that both routes behave like the ASGI app
(bytes, headers, HEAD, 304, path decoding, request bodies in, streamed bodies out)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serverproc import serving_cases
from slidefiles import written_frame

from fixtures import FixtureSet


@pytest.fixture(scope="module")
def granian(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("rsgi")
    args = ["--server", "granian", "--workers", "1"]
    with (
        serving_cases(fixture_dir, ["jpeg_bot"], workdir, extra_args=args) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield client


def test_fast_path_and_bridge_give_the_same_tile(
    granian: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    url = f"/slides/{fs.series_uid}/tiles/0/1/1"
    bridged = granian.get(url, params={"z": 0})  # a query string always takes the full app
    fast = granian.get(url)  # the slide is open and the bytes cached: the fast path
    assert fast.content == bridged.content == written_frame(fs, 1, 1)
    assert fast.headers["server-timing"].startswith("read;dur=")  # the fast path's only phase
    assert "index" in bridged.headers["server-timing"]  # the full app's phases
    for header in ("content-type", "etag", "cache-control", "access-control-allow-origin"):
        assert fast.headers[header] == bridged.headers[header], header
    assert int(fast.headers["content-length"]) == len(fast.content)
    assert "Server-Timing" in fast.headers["access-control-expose-headers"]


def test_head_and_conditional_requests(
    granian: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    url = f"/slides/{fs.series_uid}/tiles/0/2/1"
    etag = granian.get(url).headers["etag"]
    head = granian.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(written_frame(fs, 2, 1))
    again = granian.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag


def test_paths_are_decoded_once(granian: httpx.Client, fixture_dir: dict[str, FixtureSet]) -> None:
    fs = fixture_dir["jpeg_bot"]
    encoded = fs.series_uid.replace(".", "%2E")
    assert granian.get(f"/slides/{encoded}").json()["id"] == fs.series_uid
    missing = granian.get("/slides/x%2541")
    assert missing.status_code == 404 and "'x%41'" in missing.json()["error"]


def test_request_bodies_reach_the_app(
    granian: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    tiles = [[0, 0, 0], [0, 3, 2], [0, 1, 1]]
    response = granian.post(
        f"/slides/{fs.series_uid}/tiles:batch", json={"tiles": tiles, "format": "raw"}
    )
    assert response.status_code == 200
    for _, col, row in tiles:
        assert written_frame(fs, col, row) in response.content
    bad = granian.post(f"/slides/{fs.series_uid}/tiles:batch", content=b"{")
    assert bad.status_code == 400 and bad.headers["access-control-allow-origin"] == "*"


def test_streamed_responses_arrive_whole(
    granian: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    instance = fs.level(0).instances[0]
    url = (
        f"/dicomweb/studies/{fs.study_uid}/series/{fs.series_uid}"
        f"/instances/{instance.sop_instance_uid}"
    )
    response = granian.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    assert Path(instance.path).read_bytes() in response.content
    frames = granian.get(f"{url}/frames/1,2", headers={"Accept": "multipart/related; type=*"})
    assert frames.status_code == 200
    assert instance.read_frame(0) in frames.content and instance.read_frame(1) in frames.content
