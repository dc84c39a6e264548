"""Vendor slides: the real Aperio SVS served by TIFF passthrough, against the same image as
DICOM (``tileserver convert`` keeps its JPEG tiles byte for byte, so both serve identical
bytes), against OpenSlide's DeepZoom (decode and encode per tile, as a Python user builds
it: ``bench/openslide_app.py``), and 2x reductions composed from passthrough tiles.

Targets of the vendor-formats issue: SVS stored tiles within 10% of the DICOM stored-tile
path; Deep Zoom tiles at least 5x OpenSlide's; composed 2x reductions served (cold, each
tile once) faster than OpenSlide renders the same level.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.baselines import free_port
from bench.report import markdown_table, section_preamble, update_section
from bench.wrk import run as run_wrk
from bench.wrk import write_paths

SVS = Path(__file__).resolve().parents[1] / ".." / "shared" / "real-slides"
SVS_NAME = "aperio-cmu1-small-region.svs"


def _wait(base: str, process: subprocess.Popen[bytes], probe: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{base} exited")
        try:
            if httpx.get(base + probe, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base} did not start")


def start_tileserver(slides: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "tileserver.cli", "serve", "--slides", str(slides)]
    argv += ["--port", str(port), "--catalog", str(work / "catalog.sqlite"), "--workers", "2"]
    argv += ["--log-level", "warning", "--rescan-interval", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    _wait(base, process, "/readyz")
    return process, base


def start_openslide(svs: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.openslide_app:app", "--port", str(port)]
    argv += ["--workers", "2", "--log-level", "warning"]
    env = {**os.environ, "BENCH_OPENSLIDE_SLIDE": str(svs)}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    _wait(base, process, "/info")
    return process, base


def rate(base: str, paths: list[str], work: Path, seconds: float, name: str) -> float:
    """wrk at 32 connections over a shuffled list of ``paths`` (after a warm-up pass)."""
    listed = write_paths(work / f"{name}.txt", paths)
    run_wrk(base, listed, 32, 1.0, order="shuffled", work=work)
    return run_wrk(base, listed, 32, seconds, order="shuffled", work=work).rps


async def cold_rate(base: str, paths: list[str]) -> float:
    """Each path once, 8 at a time: tiles a second when every one is a cache miss."""
    gate = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def one(path: str) -> None:
            async with gate:
                (await client.get(path)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in paths))
        return len(paths) / (time.perf_counter() - started)


def grid_paths(template: str, cols: int, rows: int) -> list[str]:
    return [template.format(col=c, row=r) for r in range(rows) for c in range(cols)]


def measure(args: argparse.Namespace, work: Path) -> list[list[str]]:
    svs = SVS / SVS_NAME
    slides = work / "slides"
    (slides / "svs").mkdir(parents=True)
    shutil.copy(svs, slides / "svs" / SVS_NAME)
    convert = [sys.executable, "-m", "tileserver.cli", "convert", str(svs), str(slides / "dcm")]
    subprocess.run([*convert, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    server, base = start_tileserver(slides, work)
    baseline, os_base = start_openslide(svs)
    try:
        listed = httpx.get(f"{base}/slides").json()["slides"]
        ids = {s["name"]: s["id"] for s in listed}
        svs_id = ids[Path(SVS_NAME).stem]
        dcm_id = next(i for n, i in ids.items() if i != svs_id)
        level = listed[0]["levels"][0]
        cols, rows = level["grid"]
        stored = {}
        for name, sid in (("DICOM", dcm_id), ("SVS", svs_id)):
            paths = grid_paths(f"/slides/{sid}/tiles/0/{{col}}/{{row}}", cols, rows)
            stored[name] = [rate(base, paths, work, args.seconds, name) for _ in range(3)]
        dzi_max = int(httpx.get(f"{os_base}/info").json()["levels"]) - 1
        ours = grid_paths(f"/dzi/{svs_id}_files/{dzi_max}/{{col}}_{{row}}.jpeg", cols, rows)
        theirs_cols, theirs_rows = -(-level["width"] // 256), -(-level["height"] // 256)
        theirs = grid_paths(f"/tiles/{dzi_max}/{{col}}_{{row}}.jpeg", theirs_cols, theirs_rows)
        dzi = rate(base, ours, work, args.seconds, "dzi")
        openslide_dzi = rate(os_base, theirs, work, args.seconds, "openslide")
        half_c, half_r = -(-level["width"] // 2 // 240), -(-level["height"] // 2 // 240)
        composed = grid_paths(
            f"/dzi/{svs_id}_files/{dzi_max - 1}/{{col}}_{{row}}.jpeg", half_c, half_r
        )
        half_theirs = grid_paths(
            f"/tiles/{dzi_max - 1}/{{col}}_{{row}}.jpeg",
            -(-level["width"] // 2 // 256),
            -(-level["height"] // 2 // 256),
        )
        cold = asyncio.run(cold_rate(base, composed))
        openslide_cold = asyncio.run(cold_rate(os_base, half_theirs))
    finally:
        for process in (server, baseline):
            process.terminate()
            process.wait(timeout=30)
    svs_rate, dcm_rate = sorted(stored["SVS"])[1], sorted(stored["DICOM"])[1]
    return [
        _row("stored tiles: SVS / DICOM", svs_rate, dcm_rate, "req/s", 0.9, "within 10%"),
        _row("Deep Zoom: tileserver / OpenSlide", dzi, openslide_dzi, "req/s", 5, ">= 5x"),
        _row("2x, cold: composed / OpenSlide", cold, openslide_cold, "tiles/s", 1, ">= 1x"),
    ]


def _row(what: str, ours: float, theirs: float, unit: str, least: float, target: str) -> list[str]:
    verdict = "met" if ours >= least * theirs else "NOT met"
    return [what, f"{ours:,.0f} / {theirs:,.0f} {unit}", f"{ours / theirs:.2f}x", target, verdict]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk seconds per point")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    if not (SVS / SVS_NAME).exists():
        print(f"{SVS / SVS_NAME} not found; skipping")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, Path(tmp))
    for row in rows:
        print(" | ".join(row), flush=True)
    if not args.no_docs:
        body = "\n\n".join(
            [
                section_preamble("Vendor slides: SVS passthrough", "make bench"),
                f"The real `{SVS_NAME}` (2,220 x 2,967 px, 130 JPEG tiles of 240 px) served by "
                "TIFF passthrough, and the same image as DICOM written by `tileserver convert` "
                "(the same JPEG bytes), one tileserver with 2 uvicorn workers; OpenSlide's "
                "`DeepZoomGenerator` behind Starlette with 2 workers (`bench/openslide_app.py`, "
                "256 px tiles, JPEG q90). wrk -t2 -c32 over a shuffled list of every tile of "
                f"the level, {args.seconds:g} s per point (stored tiles: median of 3); cold: "
                "each tile of the level once, 8 at a time, on a fresh server.",
                markdown_table(["what", "measured", "ratio", "target", "verdict"], rows),
            ]
        )
        update_section("vendor", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
