"""The access log (``--access-log``): one JSON line per request on uvicorn and granian, for
tiles the stored-tile chain answers as for the app's responses."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess

from fixtures import FixtureSet


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_every_request_is_one_json_line(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet], server: str
) -> None:
    log = tmp_path / "access.jsonl"
    fs = fixture_dir["jpeg_bot"]
    extra = ["--server", server, "--access-log", str(log)]
    process = ServerProcess([fs.directory], tmp_path, extra_args=extra).start()
    tile = f"/slides/{fs.series_uid}/tiles/0/0/0"
    try:
        with httpx.Client(base_url=process.url) as client:
            bodies = [len(client.get(tile).content) for _ in range(3)]
            assert client.get("/slides/nope").status_code == 404
            assert client.get("/slides", params={"q": "1"}).status_code == 200
    finally:
        process.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    tiles = [line for line in lines if line["path"] == tile]
    assert len(tiles) == 3 and all(t["status"] == 200 for t in tiles)
    assert [t["bytes"] for t in tiles] == bodies
    assert {t["via"] for t in tiles} >= {"chain"}  # repeated tiles come from the chain
    missing = next(line for line in lines if line["path"] == "/slides/nope")
    assert missing["status"] == 404 and missing["via"] == "app" and missing["bytes"] > 0
    listing = next(line for line in lines if line["path"] == "/slides")
    assert listing["query"] == "q=1" and listing["client"] == "127.0.0.1"
    assert all({"time", "method", "ms", "principal"} <= set(line) for line in lines)
