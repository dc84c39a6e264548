"""The per-client rate limit (``--rate-limit``): past a client's burst, requests get a 429
with Retry-After — tiles the stored-tile chain answers included — while another client is
still served; the bucket refills."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess

from fixtures import FixtureSet
from tileserver.http.ratelimit import RateLimit


def test_a_bucket_allows_its_burst_then_refills() -> None:
    now = [100.0]
    limit = RateLimit(per_second=10, burst=3, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b")  # another client has its own bucket
    now[0] += 0.25  # 2.5 tokens back
    assert limit.allow("a") and limit.allow("a") and not limit.allow("a")
    now[0] += 60  # never more than the burst
    assert [limit.allow("a") for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_a_client_past_its_burst_gets_429(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet], server: str
) -> None:
    fs = fixture_dir["jpeg_bot"]
    keys = tmp_path / "keys.txt"
    keys.write_text("key-a read\nkey-b read\n")
    extra = ["--server", server, "--rate-limit", "2", "--api-keys", str(keys)]
    process = ServerProcess([fs.directory], tmp_path, extra_args=extra).start()
    tile = f"{process.url}/slides/{fs.series_uid}/tiles/0/0/0"
    try:
        statuses = [
            httpx.get(tile, headers={"authorization": "Bearer key-a"}).status_code
            for _ in range(12)
        ]
        assert statuses[:3].count(200) >= 2 and statuses[-1] == 429, statuses
        refused = httpx.get(tile, headers={"authorization": "Bearer key-a"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "too many" in refused.json()["error"]
        assert httpx.get(tile, headers={"authorization": "Bearer key-b"}).status_code == 200
        time.sleep(1.2)
        assert httpx.get(tile, headers={"authorization": "Bearer key-a"}).status_code == 200
    finally:
        process.stop()
