"""The native API over a real socket: a ``tileserver serve`` process and httpx."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serverproc import ServerProcess, eventually, serving_cases
from slidefiles import written_frame

from fixtures import FixtureSet

CASES = ("jpeg_bot", "native_explicit", "j2k_lossless", "sparse", "multi_focal_optical")


@pytest.fixture(scope="module")
def slide_root(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Path:
    root = tmp_path_factory.mktemp("slides")
    for case in CASES:
        shutil.copytree(fixture_dir[case].directory, root / case)
    return root


@pytest.fixture(scope="module")
def server(slide_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process = ServerProcess([slide_root], tmp_path_factory.mktemp("server")).start()
    try:
        yield process.url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def pixels(response: httpx.Response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_slide_list(client: httpx.Client, fixture_dir: dict[str, FixtureSet]) -> None:
    slides = {s["id"]: s for s in client.get("/slides").json()["slides"]}
    for case in CASES:
        entry = slides[fixture_dir[case].series_uid]
        assert entry["path"] == case and entry["name"] == case
        assert entry["size"] == sum(p.stat().st_size for p in fixture_dir[case].paths)
        assert entry["levels"][0]["width"] == fixture_dir[case].level(0).width
    assert slides[fixture_dir["jpeg_bot"].series_uid]["associated"] == [
        "label",
        "overview",
        "thumbnail",
    ]


def test_slide_detail(client: httpx.Client, fixture_dir: dict[str, FixtureSet]) -> None:
    fs = fixture_dir["multi_focal_optical"]
    detail = client.get(f"/slides/{fs.series_uid}").json()
    assert detail["focal_planes"] == pytest.approx(list(fs.level(0).focal_planes_um))
    assert detail["optical_paths"] == list(fs.level(0).optical_paths)
    level = detail["levels"][1]
    assert level["downsample"] == [2.0, 2.0]
    assert level["grid"] == [fs.level(1).tiles_across, fs.level(1).tiles_down]
    assert level["mpp"] == pytest.approx([fs.level(1).pixel_spacing_mm * 1000] * 2)


@pytest.mark.parametrize("case", ["jpeg_bot", "j2k_lossless", "native_explicit"])
def test_stored_tiles_are_the_frame_bytes(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet], case: str
) -> None:
    fs = fixture_dir[case]
    media = {
        "jpeg_bot": "image/jpeg",
        "j2k_lossless": "image/jp2",
        "native_explicit": "application/octet-stream",
    }[case]
    inst = fs.level(0).instances[0]
    for number, (_, _, col, row) in enumerate(inst.frame_tiles):
        response = client.get(f"/slides/{fs.series_uid}/tiles/0/{col}/{row}")
        assert response.status_code == 200
        assert response.headers["content-type"] == media
        assert response.content == inst.read_frame(number)


def test_etag_304_head_and_cache_headers(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    url = f"/slides/{fixture_dir['jpeg_bot'].series_uid}/tiles/0/0/0"
    first = client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and "max-age" in first.headers["cache-control"]
    assert "read;dur=" in first.headers["server-timing"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(first.content)


def test_transcoded_tile_equals_the_source_pixels(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["j2k_lossless"]
    level = fs.level(0)
    col, row = level.tiles_across - 1, level.tiles_down - 1  # an edge tile: cropped
    response = client.get(f"/slides/{fs.series_uid}/tiles/0/{col}/{row}?format=png")
    assert response.headers["content-type"] == "image/png"
    x, y = col * level.tile_width, row * level.tile_height
    assert np.array_equal(pixels(response), fs.level_pixels(0)[y:, x:])


def test_jpeg_edge_tile_is_cropped(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    level = fs.level(0)
    col, row = level.tiles_across - 1, level.tiles_down - 1
    response = client.get(f"/slides/{fs.series_uid}/tiles/0/{col}/{row}?format=jpeg")
    image = pixels(response)
    assert image.shape[:2] == (
        level.height - row * level.tile_height,
        level.width - col * level.tile_width,
    )
    source = fs.level_pixels(0)[row * level.tile_height :, col * level.tile_width :]
    assert np.abs(image.astype(int) - source.astype(int)).mean() < 4


def test_absent_sparse_tile_is_a_background_tile(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    """Painted in the slide's glass colour: the median of the smallest level's border in
    the generator's own pixels."""
    fs = fixture_dir["sparse"]
    smallest = fs.level_pixels(len(fs.levels) - 1)
    border = np.concatenate([smallest[0], smallest[-1], smallest[:, 0], smallest[:, -1]])
    glass = client.get(f"/slides/{fs.series_uid}").json()["background"]
    assert np.abs(np.median(border, axis=0) - glass).max() <= 3
    _, _, col, row = sorted(fs.level(0).absent_tiles)[0]
    response = client.get(f"/slides/{fs.series_uid}/tiles/0/{col}/{row}")
    assert response.status_code == 200
    assert np.abs(pixels(response).astype(int) - glass).max() <= 3  # JPEG of a flat tile


def test_region_npy_equals_the_source_pixels(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["native_explicit"]
    source = fs.level_pixels(0)
    x, y, w, h = 50, 30, 300, 250  # spans tile boundaries
    response = client.get(
        f"/slides/{fs.series_uid}/region",
        params={"level": 0, "x": x, "y": y, "width": w, "height": h, "format": "npy"},
    )
    array = np.load(io.BytesIO(response.content))
    assert array.shape == (h, w, 3) and array.dtype == np.uint8
    assert np.array_equal(array, source[y : y + h, x : x + w])


def test_region_beyond_the_image_is_background(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["native_explicit"]
    level = fs.level(0)
    response = client.get(
        f"/slides/{fs.series_uid}/region",
        params={"x": level.width - 10, "y": 0, "width": 40, "height": 20, "format": "npy"},
    )
    array = np.load(io.BytesIO(response.content))
    assert np.array_equal(array[:, :10], fs.level_pixels(0)[:20, -10:])
    glass = client.get(f"/slides/{fs.series_uid}").json()["background"]
    assert (array[:, 10:] == glass).all()


def test_a_region_wholly_outside_the_image_is_a_400(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["native_explicit"]
    level = fs.level(0)
    for x, y in ((level.width, 0), (0, level.height + 5), (-50, 0)):
        response = client.get(
            f"/slides/{fs.series_uid}/region",
            params={"x": x, "y": y, "width": 40, "height": 20, "format": "png"},
        )
        assert response.status_code == 400 and "outside" in response.json()["error"]


@pytest.mark.parametrize(("fmt", "side"), [("jpeg", 65_501), ("webp", 16_384)])
def test_images_wider_than_their_format_allows_are_a_400(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet], fmt: str, side: int
) -> None:
    fs = fixture_dir["native_explicit"]
    response = client.get(
        f"/slides/{fs.series_uid}/region",
        params={"x": 0, "y": 0, "width": side, "height": 1, "format": fmt},
    )
    assert response.status_code == 400 and "a side" in response.json()["error"]
    tall = client.get(f"/iiif/3/{fs.series_uid}/0,0,1,{min(side, 40)}/^1,{side}/0/default.{fmt}")
    assert tall.status_code == 400


def test_thumbnail_and_associated(client: httpx.Client, fixture_dir: dict[str, FixtureSet]) -> None:
    fs = fixture_dir["jpeg_bot"]
    thumb = pixels(client.get(f"/slides/{fs.series_uid}/thumbnail?max=128"))
    assert max(thumb.shape[:2]) == 128
    label = client.get(f"/slides/{fs.series_uid}/associated/label?format=png")
    expected = fs.associated_image("LABEL").pixels
    assert np.abs(pixels(label).astype(int) - expected.astype(int)).mean() < 4


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/slides/unknown", 404),
        ("/slides/{id}/tiles/9/0/0", 404),
        ("/slides/{id}/tiles/0/99/0", 400),
        ("/slides/{id}/tiles/0/0/0?format=bmp", 400),
        ("/slides/{id}/tiles/0/0/0?z=7", 400),
        ("/slides/{id}/region?width=0&height=10", 400),
        ("/slides/{id}/region?x=abc&width=10&height=10", 400),
        ("/slides/{id}/region?width=100000&height=100000", 400),
        ("/slides/{id}/associated/macro", 404),
        ("/slides/{id}/thumbnail?max=-1", 400),
        ("/nowhere", 404),
    ],
)
def test_bad_requests_get_json_4xx_with_cors(
    client: httpx.Client, url: str, status: int, fixture_dir: dict[str, FixtureSet]
) -> None:
    response = client.get(url.format(id=fixture_dir["jpeg_bot"].series_uid))
    assert response.status_code == status
    assert "error" in response.json()
    assert response.headers["access-control-allow-origin"] == "*"


def test_preflight_allows_accept_and_authorization(client: httpx.Client) -> None:
    response = client.options(
        "/slides",
        headers={
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Accept, Authorization",
        },
    )
    assert response.status_code == 204
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "accept" in allowed and "authorization" in allowed
    assert response.headers["access-control-allow-origin"] == "*"


def test_json_is_gzipped(client: httpx.Client) -> None:
    response = client.get("/slides", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["slides"]


def test_metrics_count_requests_per_route(client: httpx.Client) -> None:
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'tileserver_requests_total{route="/healthz",method="GET",status="200"}' in text
    assert "tileserver_request_seconds_bucket" in text
    assert "tileserver_cache_events_total" in text


def test_new_and_removed_files_are_picked_up_without_restart(
    client: httpx.Client, slide_root: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["rle"]
    shutil.copytree(fs.directory, slide_root / "rle")
    assert eventually(lambda: client.get(f"/slides/{fs.series_uid}").status_code == 200)
    shutil.rmtree(slide_root / "rle")
    assert eventually(lambda: client.get(f"/slides/{fs.series_uid}").status_code == 404)


def test_file_truncated_or_deleted_under_a_running_server(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    """No rescan runs (interval 0): the next request notices and re-indexes by itself."""
    root = tmp_path / "slides"
    shutil.copytree(fixture_dir["jpeg_bot"].directory, root / "a")
    shutil.copytree(fixture_dir["native_explicit"].directory, root / "b")
    server = ServerProcess([root], tmp_path, env={"TILESERVER_RESCAN_INTERVAL": "0"}).start()
    a, b = fixture_dir["jpeg_bot"], fixture_dir["native_explicit"]
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            before = {fs.series_uid: c.get(f"/slides/{fs.series_uid}").json() for fs in (a, b)}
            (root / "a" / a.level(0).instances[0].path.name).unlink()
            with (root / "b" / b.level(0).instances[0].path.name).open("r+b") as f:
                f.truncate(2000)
            for fs in (a, b):
                detail = c.get(f"/slides/{fs.series_uid}").json()
                # The lost full-resolution level is gone; the next level serves as level 0.
                assert len(detail["levels"]) == len(before[fs.series_uid]["levels"]) - 1
                assert detail["levels"][0]["width"] == fs.level(1).width
                tile = c.get(f"/slides/{fs.series_uid}/tiles/0/0/0")
                assert tile.status_code == 200
                assert tile.content == fs.level(1).instances[0].read_frame(0)
    finally:
        server.stop()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_derived_images_embed_the_slide_icc_profile(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet], fmt: str
) -> None:
    fs = fixture_dir["jpeg_bot"]
    response = client.get(
        f"/slides/{fs.series_uid}/region",
        params={"x": 0, "y": 0, "width": 100, "height": 80, "format": fmt},
    )
    import pydicom

    profile = Image.open(io.BytesIO(response.content)).info.get("icc_profile")
    header = pydicom.dcmread(fs.level(0).paths[0], stop_before_pixels=True)
    assert profile == bytes(header.OpticalPathSequence[0].ICCProfile)


def test_granian_serves_the_same_app(tmp_path: Path, fixture_dir: dict[str, FixtureSet]) -> None:
    fs = fixture_dir["jpeg_bot"]
    with serving_cases(
        fixture_dir, ["jpeg_bot"], tmp_path, extra_args=["--server", "granian", "--workers", "2"]
    ) as server:
        tile = httpx.get(f"{server.url}/slides/{fs.series_uid}/tiles/0/0/0")
        assert tile.content == fs.level(0).instances[0].read_frame(0)
        error = httpx.get(f"{server.url}/slides/unknown")
        assert error.status_code == 404 and error.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("kind", ["tiles", "dzi"])
def test_fast_path_answers_exactly_like_the_full_app(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet], kind: str
) -> None:
    fs = fixture_dir["jpeg_bot"]
    if kind == "tiles":
        url = f"/slides/{fs.series_uid}/tiles/0/1/1"
    else:
        top = int(np.ceil(np.log2(max(fs.level(0).width, fs.level(0).height))))
        url = f"/dzi/{fs.series_uid}_files/{top}/1_1.jpeg"
    # A query string always takes the full app; the plain URL takes the fast path once
    # the slide is open and its bytes are cached (a bare "?" is no query string).
    full = client.get(url + ("?z=0" if kind == "tiles" else "?_=1"))
    route = "/slides/{slide_id}/tiles" if kind == "tiles" else "/dzi/{slide_id}_files"
    counted = _requests_counted(client, route)
    fast = client.get(url)
    assert fast.status_code == full.status_code == 200
    assert fast.headers["server-timing"].startswith("read;dur=")  # the fast path's
    assert not full.headers["server-timing"].startswith("read;dur=")
    assert _requests_counted(client, route) == counted + 1
    assert fast.content == full.content == written_frame(fs, 1, 1)
    for header in ("content-type", "etag", "cache-control", "access-control-allow-origin"):
        assert fast.headers[header] == full.headers[header], header
    if kind == "tiles":
        assert client.get(url, headers={"If-None-Match": fast.headers["etag"]}).status_code == 304


def _requests_counted(client: httpx.Client, route: str) -> int:
    """``tileserver_requests_total`` of GET 200 answers on routes starting ``route``."""
    total = 0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'tileserver_requests_total{{route="{route}') and (
            'method="GET",status="200"' in line
        ):
            total += int(line.rsplit(" ", 1)[1])
    return total


def test_fast_path_serves_composed_tiles_from_the_in_process_cache(
    client: httpx.Client, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["native_explicit"]
    top = int(np.ceil(np.log2(max(fs.level(0).width, fs.level(0).height))))
    url = f"/dzi/{fs.series_uid}_files/{top - 2}/0_0.png"  # no stored level that size
    full = client.get(url + "?_=1")  # the app renders it and fills the cache
    assert "encode" in full.headers["server-timing"]
    fast = client.get(url)  # answered before routing, from the in-process cache
    assert fast.headers["server-timing"].startswith("read;dur=")
    assert fast.content == full.content and fast.headers["etag"] == full.headers["etag"]
    assert fast.headers["content-type"] == "image/png"


@pytest.mark.parametrize("server_name", ["uvicorn", "granian"])
def test_restricted_cors_origins_hold_on_the_tile_fast_path(
    fixture_dir: dict[str, FixtureSet], tmp_path: Path, server_name: str
) -> None:
    """With named origins the answer depends on Origin: every tile response, the fast
    path's included, says so (Vary) and allows only a listed origin."""
    fs = fixture_dir["jpeg_bot"]
    viewer = "https://viewer.example"
    args = ["--server", server_name, "--cors-origins", viewer]
    with serving_cases(fixture_dir, ["jpeg_bot"], tmp_path, extra_args=args) as server:
        url = f"{server.url}/slides/{fs.series_uid}/tiles/0/1/1"
        httpx.get(url)  # opens the slide: later requests take the fast path
        for _ in range(2):
            allowed = httpx.get(url, headers={"Origin": viewer})
            assert allowed.headers["server-timing"].startswith("read;")  # the fast path
            assert allowed.headers["access-control-allow-origin"] == viewer
            assert "Origin" in allowed.headers["vary"]
            other = httpx.get(url, headers={"Origin": "https://elsewhere.example"})
            assert "access-control-allow-origin" not in other.headers
            assert "Origin" in other.headers["vary"]
