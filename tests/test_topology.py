"""The shared topology, for real on this machine (``topology.py``): three ``tileserver serve``
processes (two uvicorn, one granian) over one PostgreSQL catalog, one Redis and one S3
bucket, behind nginx. What one process renders another finds in Redis; what one stores
by STOW every one serves; the catalog's scan lock makes them scan one at a time; and a
process killed in the middle of a load test costs no request that nginx can retry (all
but a response whose header had already reached the client). docs/topology.md says more."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from serverproc import ServerProcess, eventually
from topology import Topology, running_topology

import fixtures
from fixtures import FixtureSet
from tileserver.catalog.postgres import SCAN_LOCK

pytestmark = [pytest.mark.slow, pytest.mark.redis]

IN_BUCKET = ("jpeg_bot", "j2k_lossless")
STOWED, COPIED = "jpeg_eot", "rle"  # new to the topology: stored by STOW, copied in
KINDS = ("uvicorn", "uvicorn", "granian")
BOUNDARY = "topologyboundary"


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureSet]:
    made: dict[str, FixtureSet] = fixtures.generate_all(
        tmp_path_factory.mktemp("cases"), [*IN_BUCKET, STOWED, COPIED]
    )
    return made


@pytest.fixture(scope="module")
def topology(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: object,
    cases: dict[str, FixtureSet],
) -> Iterator[Topology]:
    import redis

    url: str = redis_server.url  # type: ignore[attr-defined]
    with redis.Redis.from_url(url) as client:
        client.flushall()  # the session's Redis: nothing another module left behind
    trees = {name: cases[name].directory for name in IN_BUCKET}
    with running_topology(tmp_path_factory.mktemp("topology"), url, trees, KINDS) as top:
        yield top


def counter(base: str, tier: str, event: str) -> int:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = re.search(
        rf'tileserver_cache_events_total{{tier="{tier}",event="{event}"}} (\d+)', text
    )
    return int(found.group(1)) if found else 0


def listed(base: str) -> set[str]:
    return {s["id"] for s in httpx.get(f"{base}/slides", timeout=10).json()["slides"]}


def lists(base: str, slide_id: str) -> bool:
    return slide_id in listed(base)


def test_every_process_lists_the_buckets_slides(
    topology: Topology, cases: dict[str, FixtureSet]
) -> None:
    expected = {cases[name].series_uid for name in IN_BUCKET}
    for server in topology.servers:
        assert listed(server.url) == expected
    assert listed(topology.nginx.url) == expected


def test_a_tile_rendered_by_one_process_is_a_redis_hit_on_another(
    topology: Topology, cases: dict[str, FixtureSet]
) -> None:
    # A uvicorn process renders; the granian one must find the PNG in Redis (l2), as its
    # own in-process cache (l1) has never seen it.
    a, b = topology.servers[0].url, topology.servers[2].url
    path = f"/slides/{cases['j2k_lossless'].series_uid}/tiles/0/1/1?format=png"
    first = httpx.get(a + path, timeout=30)
    assert first.status_code == 200 and first.content[:8] == b"\x89PNG\r\n\x1a\n"
    hits, misses = counter(b, "l2", "hits"), counter(b, "l1", "misses")

    def b_hits() -> bool:  # the l2 write is in the background: poll, do not sleep
        second = httpx.get(b + path, timeout=30)
        return second.content == first.content and counter(b, "l2", "hits") > hits

    assert eventually(b_hits)
    assert counter(b, "l1", "misses") > misses


def test_a_slide_stored_through_one_process_is_served_by_all(
    topology: Topology, cases: dict[str, FixtureSet]
) -> None:
    fs = cases[STOWED]
    stored = _stow(topology.servers[0].url, fs)
    assert stored.status_code == 200, stored.text
    instance = fs.level(0).instances[0]
    col, row = instance.frame_tiles[2][2], instance.frame_tiles[2][3]
    path = f"/slides/{fs.series_uid}/tiles/0/{col}/{row}"
    for server in topology.live():
        assert eventually(partial(lists, server.url, fs.series_uid), timeout=10)
        tile = httpx.get(server.url + path, timeout=30)
        assert tile.status_code == 200 and tile.content == instance.read_frame(2)
    assert any((topology.local_root / "stow").rglob("*.dcm"))


def _stow(base: str, fs: FixtureSet) -> httpx.Response:
    """STOW-RS: every instance of ``fs`` in one multipart/related request."""
    body = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
        for path in fs.paths
    )
    body += f"--{BOUNDARY}--\r\n".encode()
    media = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return httpx.post(
        f"{base}/dicomweb/studies", content=body, headers={"Content-Type": media}, timeout=60
    )


def _scan_waiters(conn: psycopg.Connection[Any]) -> int:
    """Sessions queued on the catalog's scan lock (held by the test, so none granted)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 "
        "AND objid = %s AND objsubid = 1 AND NOT granted",
        (SCAN_LOCK,),
    ).fetchone()
    return int(row[0]) if row else 0


def test_the_catalogs_scan_lock_makes_processes_scan_one_at_a_time(
    topology: Topology, cases: dict[str, FixtureSet]
) -> None:
    fs = cases[COPIED]
    with psycopg.connect(topology.catalog_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (SCAN_LOCK,))
        shutil.copytree(fs.directory, topology.local_root / "copied")
        # Each process's next rescan finds the lock taken and queues for it; until the
        # holder lets go, none of them scans, so none has indexed the new folder.
        live = topology.live()
        assert eventually(lambda: _scan_waiters(holder) == len(live), timeout=15)
        assert all(fs.series_uid not in listed(s.url) for s in live)
        holder.execute("SELECT pg_advisory_unlock(%s)", (SCAN_LOCK,))
    for server in live:
        assert eventually(partial(lists, server.url, fs.series_uid), timeout=15)


def _metrics_tiles(base: str) -> int:
    """Tile requests a process has answered (every route with 'tiles' in its name)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    counts = re.findall(r'tileserver_requests_total\{route="[^"]*tiles[^"]*",[^}]*\} (\d+)', text)
    return sum(int(n) for n in counts)


def _unread_requests(port: int) -> int:
    """Connections to ``port`` on loopback holding bytes its process has not read: requests
    in flight on it (nginx sends one request at a time per upstream connection)."""
    local = f"0100007F:{port:04X}"
    pending = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        rx_queue = int(fields[4].split(":")[1], 16)
        pending += fields[1] == local and fields[3] == "01" and rx_queue > 0  # 01: established
    return pending


def _freeze_then_kill(victim: ServerProcess) -> int:
    """SIGSTOP, then SIGKILL once requests wait on it; how many were in flight.

    A plain SIGKILL mostly lands between two of its requests (0 to 2 in flight in trial
    runs); frozen first, the process surely dies with requests on it, as a hung process
    killed by its supervisor does."""
    assert victim.process is not None
    victim.process.send_signal(signal.SIGSTOP)
    eventually(lambda: _unread_requests(victim.port) >= 4, timeout=3, interval=0.05)
    in_flight = _unread_requests(victim.port)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    return in_flight


def test_a_process_killed_mid_load_test_costs_no_retriable_request(
    topology: Topology, tmp_path: Path
) -> None:
    victim = topology.servers[1]  # a uvicorn one: a single process, no worker left behind
    out = tmp_path / "results.json"
    argv = [sys.executable, "-m", "tileserver.cli", "loadtest", topology.nginx.url,
            "--pattern", "random", "--concurrency", "16", "--duration", "6",
            "--timeout", "30", "--seed", "7", "--no-progress", "--out", str(out)]  # fmt: skip
    before = _metrics_tiles(victim.url)
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Mid-run: the victim is answering the load test's tiles when it dies.
        assert eventually(lambda: _metrics_tiles(victim.url) > before + 20, timeout=20)
        in_flight = _freeze_then_kill(victim)
        assert load.poll() is None  # the run goes on after the kill
        printed, _ = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    result = json.loads(out.read_text())
    phases = _victim_failures(topology.nginx.log_text(), victim.port)
    print(f"{in_flight} in flight; load test: {result}; nginx log: {dict(phases)}")  # -rP
    assert result["requests"] > 0, printed
    assert in_flight > 0 and phases["awaiting header"] >= in_flight
    # No HTTP error at all: each request in flight on the victim was retried on another
    # process. The one kind nginx cannot retry is a response already passed on to the
    # client (header sent, body cut): those, and only those, may fail.
    assert [s for s in result["status_counts"] if s.isdigit()] == ["200"]
    assert result["errors"] == phases["body cut"], (result, dict(phases))


#: How nginx's error log says where a request met the dead upstream.
PHASES = {
    "refused": "while connecting to upstream",
    "sending": "while sending request to upstream",
    "awaiting header": "while reading response header from upstream",
    "body cut": "while reading upstream",
}


def _victim_failures(log: str, port: int) -> Counter[str]:
    """nginx's error-log lines about the upstream on ``port``, by phase."""
    found: Counter[str] = Counter()
    for line in log.splitlines():
        if f"127.0.0.1:{port}" in line and "[error]" in line:
            found.update(k for k, text in PHASES.items() if text in line)
    return found
