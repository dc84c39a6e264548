"""Should stored tiles go through Redis? Compare a Redis GET with a page-cache pread.

Runs a private redis-server on a free loopback port, stores the same frame bytes there and
reads them back, against ``os.pread`` of the same bytes from a file in the page cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import markdown_table, section_preamble, update_section
from tileserver.cache import build_cache, make_key, pack


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_pread(path: Path, offsets: list[int], size: int) -> list[float]:
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        for offset in offsets:
            t0 = time.perf_counter()
            os.pread(fd, size, offset)
            out.append(time.perf_counter() - t0)
        return out
    finally:
        os.close(fd)


async def time_cache(url: str | None, keys: list[str], blob: bytes, l1: bool) -> list[float]:
    cache = build_cache(url, 256 << 20 if l1 else 0, timeout=1.0)
    for key in keys:
        await cache.set(key, blob)
        await cache.flush()  # L2 writes are queued (bounded); wait so none is dropped
    target = cache if l1 else cache.l2
    assert target is not None
    out = []
    for key in keys:
        t0 = time.perf_counter()
        value = await target.get(key)
        out.append(time.perf_counter() - t0)
        assert value == blob
    await cache.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--tile-bytes", type=int, default=12_000)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not installed; skipping")
        return 0
    workdir = Path(tempfile.mkdtemp())
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        rng = np.random.default_rng(0)
        blob = rng.integers(0, 256, args.tile_bytes, dtype=np.uint8).tobytes()
        path = workdir / "frames.bin"
        path.write_bytes(blob * 256)
        offsets = [int(i) * args.tile_bytes for i in rng.integers(0, 256, args.reads)]
        keys = [make_key("bench", i) for i in range(args.reads)]
        url = f"redis://127.0.0.1:{port}/0"
        results = {
            "pread (page cache)": time_pread(path, offsets, args.tile_bytes),
            "in-process LRU (L1)": asyncio.run(
                time_cache(url, keys, pack("image/jpeg", blob), True)
            ),
            "Redis GET (L2, loopback)": asyncio.run(
                time_cache(url, keys, pack("image/jpeg", blob), False)
            ),
        }
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        [name, f"{np.median(v) * 1e6:.1f}", f"{np.percentile(v, 99) * 1e6:.1f}"]
        for name, v in results.items()
    ]
    table = markdown_table(["source", "median µs", "p99 µs"], rows)
    decision = (
        "Decision: stored frames bypass the cache entirely (a `pread` from the page "
        "cache is far cheaper than a Redis round trip); only derived images "
        "(transcoded, cropped, composed, resized) go through L1 and Redis."
    )
    print(table + "\n\n" + decision)
    if not args.no_docs:
        body = section_preamble("Cache: stored tiles and Redis", "make bench")
        summary = (
            f"{args.reads:,} reads of a {args.tile_bytes:,}-byte tile from each source, "
            f"one at a time."
        )
        update_section("cache", f"{body}\n\n{summary}\n\n{table}\n\n{decision}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
