"""Two server processes sharing a real Redis: shared hits, invalidation, Redis outages."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess, eventually

from fixtures import FixtureSet


def counter(client: httpx.Client, tier: str, event: str) -> int:
    text = client.get("/metrics").text
    match = re.search(
        rf'tileserver_cache_events_total{{tier="{tier}",event="{event}"}} (\d+)', text
    )
    return int(match.group(1)) if match else 0


@pytest.fixture
def pair(
    tmp_path: Path, redis_url: str, fixture_dir: dict[str, FixtureSet]
) -> Iterator[tuple[httpx.Client, httpx.Client, Path]]:
    root = tmp_path / "slides"
    shutil.copytree(fixture_dir["j2k_lossless"].directory, root / "j2k")
    servers = [
        ServerProcess([root], tmp_path / name, extra_args=["--redis-url", redis_url])
        for name in ("a", "b")
    ]
    for server in servers:
        (tmp_path / server.log.parent.name).mkdir(exist_ok=True)
        server.start()
    clients = [httpx.Client(base_url=s.url, timeout=30) for s in servers]
    try:
        yield clients[0], clients[1], root
    finally:
        for c in clients:
            c.close()
        for s in servers:
            s.stop()


def test_second_process_hits_what_the_first_rendered(
    pair: tuple[httpx.Client, httpx.Client, Path], fixture_dir: dict[str, FixtureSet]
) -> None:
    a, b, _ = pair
    url = f"/slides/{fixture_dir['j2k_lossless'].series_uid}/tiles/0/1/1?format=png"
    first = a.get(url)
    assert first.status_code == 200
    assert eventually(lambda: b.get(url).content == first.content and counter(b, "l2", "hits") >= 1)
    assert counter(b, "l1", "misses") >= 1


def test_changed_file_is_never_served_stale(
    pair: tuple[httpx.Client, httpx.Client, Path], fixture_dir: dict[str, FixtureSet]
) -> None:
    a, b, root = pair
    fs = fixture_dir["j2k_lossless"]
    url = f"/slides/{fs.series_uid}/tiles/0/0/0?format=png"
    before = a.get(url)
    level0 = root / "j2k" / fs.level(0).instances[0].path.name
    stat = level0.stat()
    os.utime(level0, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
    assert eventually(lambda: b.get(url).headers["etag"] != before.headers["etag"])
    hits_before = counter(b, "l2", "hits")
    assert b.get(url).status_code == 200
    purge = a.request("DELETE", f"/cache/slides/{fs.series_uid}")
    assert purge.status_code == 200
    assert counter(b, "l2", "hits") >= hits_before


def test_redis_outage_does_not_interrupt_serving(
    pair: tuple[httpx.Client, httpx.Client, Path],
    fixture_dir: dict[str, FixtureSet],
    redis_server: object,
) -> None:
    a, b, _ = pair
    fs = fixture_dir["j2k_lossless"]
    level = fs.level(0)
    redis_server.stop()  # type: ignore[attr-defined]
    try:
        for row in range(level.tiles_down):
            for col in range(level.tiles_across):
                response = a.get(f"/slides/{fs.series_uid}/tiles/0/{col}/{row}?format=webp")
                assert response.status_code == 200
        assert counter(a, "l2", "errors") >= 1
    finally:
        redis_server.start()  # type: ignore[attr-defined]
    # After the restart, what one process renders is again shared with the other.
    urls = iter(
        f"/slides/{fs.series_uid}/tiles/0/{col}/{row}?format=jpeg"
        for row in range(level.tiles_down)
        for col in range(level.tiles_across)
    )
    assert eventually(lambda: _shared(a, b, next(urls)), timeout=20)


def test_a_purge_redis_cannot_finish_answers_503(
    pair: tuple[httpx.Client, httpx.Client, Path], redis_server: object
) -> None:
    """With Redis frozen (SIGSTOP: connections open, no answers), DELETE /cache says it
    could not purge instead of answering 200 and purging nothing."""
    a, _, _ = pair
    process = redis_server._process  # type: ignore[attr-defined]
    process.send_signal(signal.SIGSTOP)
    try:
        response = a.delete("/cache", timeout=60)
    finally:
        process.send_signal(signal.SIGCONT)
    assert response.status_code == 503
    assert "purge" in response.json()["error"]
    assert eventually(lambda: a.delete("/cache").status_code == 200, timeout=20)


def _shared(a: httpx.Client, b: httpx.Client, url: str) -> bool:
    hits = counter(b, "l2", "hits")
    assert a.get(url).status_code == 200
    time.sleep(0.1)  # the L2 write is in the background
    return b.get(url).status_code == 200 and counter(b, "l2", "hits") > hits
