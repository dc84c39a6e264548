"""DICOMweb frames benchmark: single-frame requests vs one 100-frame batch request.

Serves a synthetic 1,024-frame JPEG level (``bench/data/dicomweb/``) with a real
``tileserver serve`` process and times, over one keep-alive connection, WADO-RS frame
requests for random frames: one frame per request, and 100 frames per request (one
multipart/related response, split into parts on the client). Every response's frame
bytes are checked against the written tiles. Run: ``make bench`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom

from bench.report import DATA, Stats, markdown_table, section_preamble, update_section
from bench.synthetic import SyntheticLevel, ensure_level
from tileserver.dicomweb.multipart import MultipartParser, boundary_of

ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
TARGET_BATCH_MS = 200.0
TARGET_SPEEDUP = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(slides: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    args = [sys.executable, "-m", "tileserver.cli", "serve", "--slides", str(slides)]
    args += ["--catalog", str(work / "catalog.sqlite"), "--port", str(port)]
    args += ["--log-level", "warning"]
    env = {**os.environ, "TILESERVER_RESCAN_INTERVAL": "0"}
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def split_parts(response: httpx.Response) -> list[bytes]:
    _, params = boundary_of(response.headers["content-type"])
    parser = MultipartParser(params["boundary"])
    parts: list[bytes] = []
    for event in parser.feed(response.content):
        if event.kind == "start":
            parts.append(b"")
        elif event.kind == "data":
            parts[-1] += event.data
    return parts


def frames_url(level: SyntheticLevel) -> str:
    ds = pydicom.dcmread(level.path, stop_before_pixels=True)
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/"
    )


def expected(level: SyntheticLevel, number: int) -> bytes:
    return level.tiles[int(level.frame_tiles[number - 1])]


def run(
    client: httpx.Client, level: SyntheticLevel, singles: int, batches: int
) -> dict[str, float]:
    base, rng = frames_url(level), np.random.default_rng(7)
    headers = {"Accept": ACCEPT}
    single_ns, batch_ns, mismatches = [], [], 0
    for _ in range(20):  # warm up the connection, the slide and the page cache
        client.get(base + "1", headers=headers)
    for number in rng.integers(1, level.frames + 1, size=singles).tolist():
        start = time.perf_counter_ns()
        parts = split_parts(client.get(base + str(number), headers=headers))
        single_ns.append(time.perf_counter_ns() - start)
        mismatches += parts != [expected(level, number)]
    for _ in range(batches):
        numbers = rng.integers(1, level.frames + 1, size=100).tolist()
        start = time.perf_counter_ns()
        parts = split_parts(client.get(base + ",".join(map(str, numbers)), headers=headers))
        batch_ns.append(time.perf_counter_ns() - start)
        mismatches += parts != [expected(level, n) for n in numbers]
    single, batch = Stats.of(single_ns), Stats.of(batch_ns)
    return {
        "single_median_ms": single.median_us / 1000,
        "single_p99_ms": single.p99_us / 1000,
        "batch_median_ms": batch.median_us / 1000,
        "batch_p99_ms": batch.p99_us / 1000,
        "single_fps": 1e6 / single.median_us,
        "batch_fps": 100 * 1e6 / batch.median_us,
        "mismatches": float(mismatches),
        "singles": float(singles),
        "batches": float(batches),
    }


def report(result: dict[str, float], level: SyntheticLevel, command: str) -> str:
    speedup = result["batch_fps"] / result["single_fps"]
    met = result["batch_median_ms"] < TARGET_BATCH_MS and speedup >= TARGET_SPEEDUP
    rows = [
        [
            "1 frame per request",
            f"{int(result['singles']):,}",
            f"{result['single_median_ms']:.2f}",
            f"{result['single_p99_ms']:.2f}",
            f"{result['single_fps']:,.0f}",
        ],
        [
            "100 frames per request",
            f"{int(result['batches']):,}",
            f"{result['batch_median_ms']:.2f}",
            f"{result['batch_p99_ms']:.2f}",
            f"{result['batch_fps']:,.0f}",
        ],
    ]
    table = markdown_table(["request", "requests", "median ms", "p99 ms", "frames/s"], rows)
    return "\n".join(
        [
            section_preamble("DICOMweb: WADO-RS frames, single vs batch", command),
            "",
            f"{level.frames:,} frames of {level.tile_size}x{level.tile_size} baseline JPEG in one "
            "instance; random frame numbers; `Accept: " + ACCEPT + "`; one keep-alive httpx "
            "connection to a `tileserver serve` process on the same machine; times are end to "
            "end (request, streamed multipart response, client-side split into parts). Bytes "
            f"checked: {int(result['mismatches'])} mismatching responses.",
            "",
            f"Targets: 100-frame batch < {TARGET_BATCH_MS:.0f} ms and batch frames/s >= "
            f"{TARGET_SPEEDUP:.0f}x single-frame requests: **{'met' if met else 'not met'}** "
            f"({result['batch_median_ms']:.1f} ms, {speedup:.1f}x).",
            "",
            table,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA / "dicomweb")
    parser.add_argument("--singles", type=int, default=500)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--no-doc", action="store_true", help="print, do not update the doc")
    args = parser.parse_args(argv)
    level = ensure_level(args.data, 32, extended_offset_table=True)
    with tempfile.TemporaryDirectory() as work:
        process, url = start_server(args.data, Path(work))
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                result = run(client, level, args.singles, args.batches)
        finally:
            process.terminate()
            process.wait(timeout=10)
    text = report(result, level, "make bench")
    print(text)
    if not args.no_doc:
        update_section("dicomweb", text)
    return 1 if result["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
