"""Serving benchmark: tileserver against nginx, OpenSlide and IIPImage on the same image.

One synthetic 8192x8192 level of 256x256 JPEG tiles (``bench/synthetic.py``) is served as
* tileserver: stored DICOM frames, ``GET /slides/{id}/tiles/0/{col}/{row}``;
* nginx: the same frame bytes as static files (the ceiling);
* OpenSlide ``DeepZoomGenerator`` behind Starlette (``bench/openslide_app.py``);
* IIPImage (``iipsrv`` FastCGI behind nginx), DeepZoom requests on a pyramidal JPEG TIFF
  of the same pixels made with libvips (``vips tiffsave --tile --pyramid``).
Every server runs one process on a loopback port; the load is uniform random level-0
tiles from ``httpx.AsyncClient`` keep-alive workers, a fixed time per concurrency.
Also measured: the batch endpoint's tiles/s against single-tile requests.
Run: ``make bench`` or ``python -m bench.serving_bench [--help]``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import random
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.baselines import (
    Processes,
    ensure_debian_packages,
    have,
    start_iipsrv,
    start_nginx,
    start_openslide,
    start_tileserver,
)
from bench.rawhttp import Connection
from bench.report import DATA, ROOT, markdown_table, section_preamble, update_section
from bench.synthetic import SyntheticLevel, ensure_level
from tileserver.client import TileAddress, TileClient
from tileserver.loadtest.results import Recorder, summary

PLOT = ROOT / "docs" / "serving-latency.png"
Template = Callable[[int, int], str]


def prepare(grid: int) -> tuple[SyntheticLevel, Path, Path | None]:
    """The DICOM level, its tiles as static files, and (with vips) the pyramidal TIFF."""
    level = ensure_level(DATA / "serving" / f"dicom-{grid}", grid, extended_offset_table=True)
    static = DATA / "serving" / f"static-{grid}"
    if not (static / "tiles" / "done").exists():
        (static / "tiles").mkdir(parents=True, exist_ok=True)
        for row in range(grid):
            for col in range(grid):
                (static / "tiles" / f"{col}_{row}.jpg").write_bytes(level.expected(col, row))
        (static / "tiles" / "done").touch()
    tiff = DATA / "serving" / f"pyramid-{grid}.tif"
    if not tiff.exists() and have("vips"):
        _write_tiff(level, tiff)
    return level, static, tiff if tiff.exists() else None


def _write_tiff(level: SyntheticLevel, tiff: Path) -> None:
    size = level.grid * level.tile_size
    full = np.empty((size, size, 3), dtype=np.uint8)
    for row in range(level.grid):
        for col in range(level.grid):
            tile = np.asarray(Image.open(io.BytesIO(level.expected(col, row))).convert("RGB"))
            t = level.tile_size
            full[row * t : (row + 1) * t, col * t : (col + 1) * t] = tile
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / "flat.tif"
        Image.fromarray(full).save(flat)
        argv = ["vips", "tiffsave", str(flat), str(tiff), "--tile", "--pyramid"]
        argv += ["--compression", "jpeg", "-Q", "90", "--tile-width", "256"]
        argv += ["--tile-height", "256"]
        subprocess.run(argv, check=True, timeout=600)


async def hammer(
    base: str, template: Template, grid: int, concurrency: int, duration: float
) -> dict[str, Any]:
    """Uniform random level-0 tiles for ``duration`` seconds from ``concurrency`` workers,
    each on its own keep-alive connection (``bench/rawhttp.py``)."""
    recorder = Recorder()
    start = time.perf_counter()

    async def worker(seed: int) -> None:
        rng, connection = random.Random(seed), Connection(base)
        try:
            while time.perf_counter() - start < duration:
                url = template(rng.randrange(grid), rng.randrange(grid))
                t0 = time.perf_counter()
                try:
                    status, size = await connection.get(url)
                    ok = 200 <= status < 300 and size > 0
                    recorder.add(str(status), time.perf_counter() - t0, ok)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    recorder.add(type(exc).__name__, time.perf_counter() - t0, False)
                    await connection.close()
        finally:
            await connection.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return summary("random", recorder, time.perf_counter() - start)


def templates(
    urls: dict[str, str], tiff: Path | None, grid: int, slide_id: str, dz_levels: int
) -> dict[str, tuple[str, Template]]:
    top = math.ceil(math.log2(grid * 256))
    out: dict[str, tuple[str, Template]] = {
        "tileserver": (urls["tileserver"], lambda c, r: f"/slides/{slide_id}/tiles/0/{c}/{r}"),
        "nginx static": (urls["nginx"], lambda c, r: f"/tiles/{c}_{r}.jpg"),
        "OpenSlide DeepZoom": (
            urls["openslide"],
            lambda c, r: f"/tiles/{dz_levels - 1}/{c}_{r}.jpeg",
        ),
    }
    if tiff is not None and "iip" in urls:
        out["IIPImage"] = (
            urls["iip"],
            lambda c, r: f"/iipsrv?DeepZoom={tiff}_files/{top}/{c}_{r}.jpg",
        )
    return out


def check_jpeg(base: str, template: Template) -> str | None:
    try:
        response = httpx.get(base + template(1, 1), timeout=30)
    except httpx.HTTPError as exc:
        return str(exc)
    if response.status_code != 200 or not response.content.startswith(b"\xff\xd8"):
        return f"{response.status_code} {response.headers.get('content-type')}"
    return None


def batch_vs_single(url: str, slide_id: str, grid: int) -> list[list[str]]:
    """Tiles per second reading every level-0 tile: single requests against batches."""
    addresses = [TileAddress(0, c, r) for r in range(grid) for c in range(grid)]
    rows = []
    with TileClient(url, max_connections=8) as client:
        path = f"/slides/{slide_id}/tiles/0"

        async def singles(n: int, suffix: str) -> float:
            limits = httpx.Limits(max_connections=8)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
                queue = list(addresses[:n])
                start = time.perf_counter()

                async def worker() -> None:
                    while queue:
                        a = queue.pop()
                        (await http.get(f"{path}/{a.col}/{a.row}{suffix}")).raise_for_status()

                await asyncio.gather(*(worker() for _ in range(8)))
                return n / (time.perf_counter() - start)

        def timed(fn: Callable[[], int]) -> float:
            start = time.perf_counter()
            n = fn()
            return n / (time.perf_counter() - start)

        def raw() -> int:
            for i in range(0, len(addresses), 64):
                client.read_stored(slide_id, addresses[i : i + 64])
            return len(addresses)

        def npy() -> int:
            batches = client.iter_tiles(slide_id, batch_size=64, tissue_only=False, concurrency=4)
            return sum(len(b) for b in batches)

        stored = asyncio.run(singles(len(addresses), ""))
        decoded = asyncio.run(singles(min(256, len(addresses)), "?format=png"))
        rows.append(["single GET, stored bytes (8 in flight)", f"{stored:,.0f}", "1.0x"])
        rows.append(["batch raw, 64 per request (sequential)", f"{timed(raw):,.0f}", ""])
        rows.append(["single GET ?format=png, decoded (8 in flight)", f"{decoded:,.0f}", "1.0x"])
        rows.append(
            ["batch npy via iter_tiles, 64 per request (4 in flight)", f"{timed(npy):,.0f}", ""]
        )
    rows[1][2] = f"{float(rows[1][1].replace(',', '')) / stored:.1f}x"
    rows[3][2] = f"{float(rows[3][1].replace(',', '')) / decoded:.1f}x"
    return rows


def plot(results: dict[str, list[tuple[int, dict[str, Any]]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in results.items():
        xs = [c for c, _ in points]
        for ax, key in zip(axes, ("p50", "p99"), strict=True):
            ax.plot(xs, [r["latency_ms"][key] for _, r in points], marker="o", label=name)
    for ax, key in zip(axes, ("p50", "p99"), strict=True):
        ax.set(
            xscale="log", yscale="log", xlabel="concurrent clients", ylabel=f"{key} latency (ms)"
        )
        ax.set_xticks([c for c, _ in next(iter(results.values()))])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle("Random 256x256 level-0 JPEG tiles, one server process each, loopback")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run_servers(
    args: argparse.Namespace, level: SyntheticLevel, static: Path, tiff: Path | None, work: Path
) -> tuple[dict[str, list[tuple[int, dict[str, Any]]]], list[list[str]], list[str]]:
    procs, notes = Processes(), []
    try:
        urls = {"tileserver": start_tileserver(procs, level.path.parent, work / "ts")}
        urls["openslide"] = start_openslide(procs, level.path, work)
        iip_port = start_iipsrv(procs, work) if (tiff is not None and have("iipsrv")) else None
        if have("nginx"):
            urls["nginx"] = start_nginx(procs, work, static, iip_port)
            if iip_port is not None:
                urls["iip"] = urls["nginx"]
        slide_id = httpx.get(urls["tileserver"] + "/slides").json()["slides"][0]["id"]
        dz_levels = httpx.get(urls["openslide"] + "/info").json()["levels"]
        results: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for name, (base, template) in templates(
            urls, tiff, level.grid, slide_id, dz_levels
        ).items():
            problem = check_jpeg(base, template)
            if problem is not None:
                notes.append(f"{name} skipped: {problem}")
                continue
            asyncio.run(hammer(base, template, level.grid, 4, args.warmup))
            results[name] = []
            for concurrency in args.concurrency:
                result = asyncio.run(hammer(base, template, level.grid, concurrency, args.duration))
                print(
                    f"{name:>20} c={concurrency:<3} {result['rps']:>8.0f} req/s "
                    f"p50 {result['latency_ms']['p50']:.2f} ms {result['status_counts']}"
                )
                results[name].append((concurrency, result))
        batch_rows = batch_vs_single(urls["tileserver"], slide_id, level.grid)
        return results, batch_rows, notes
    finally:
        procs.stop()


def write_doc(
    args: argparse.Namespace, results: Any, batch_rows: Any, notes: list[str], plotted: bool
) -> None:
    rows = [
        [
            name,
            str(c),
            f"{r['rps']:,.0f}",
            *(f"{r['latency_ms'][k]:.2f}" for k in ("p50", "p90", "p99")),
            str(r["errors"]),
        ]
        for name, points in results.items()
        for c, r in points
    ]
    grid = args.grid
    body = [
        section_preamble(
            "Serving: tileserver vs nginx, OpenSlide, IIPImage",
            "make bench (python -m bench.serving_bench)",
        ),
        "",
        f"One {grid * 256}x{grid * 256} level of {grid * grid} 256x256 baseline JPEG tiles "
        "(`bench/synthetic.py`), served by each server as one process on loopback: "
        "tileserver (stored DICOM frames, 1 uvicorn worker), nginx 1 worker (the same bytes "
        "as static files: the ceiling), OpenSlide `DeepZoomGenerator` behind Starlette "
        "(decode + JPEG re-encode per tile, 1 uvicorn worker), IIPImage `iipsrv` (FastCGI "
        "behind the same nginx, DeepZoom requests on a libvips pyramidal JPEG TIFF, q90). "
        f"Load: uniform random level-0 tiles, one keep-alive connection per client (a minimal "
        f"asyncio HTTP/1.1 client, `bench/rawhttp.py`), {args.duration:g} s per "
        f"point after a {args.warmup:g} s warm-up; the load generator is one Python process on "
        "the same machine, competing with the server for CPU: read the nginx row as the "
        "ceiling of this client and machine, and compare servers within a run.",
        "",
        markdown_table(
            ["server", "concurrency", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"], rows
        ),
        "",
    ]
    if plotted:
        body += [f"![latency vs concurrency]({PLOT.name})", ""]
    body += [
        "### Batch endpoint vs single-tile requests (tileserver)",
        "",
        f"Every level-0 tile ({grid * grid}) once; the decoded single-tile row reads the "
        "first 256.",
        "",
        markdown_table(["mode", "tiles/s", "vs single"], batch_rows),
    ]
    if notes:
        body += ["", *(f"- {n}" for n in notes)]
    update_section("serving", "\n".join(body))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, default=32, help="tiles per side")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16, 64]
    )
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    args = parser.parse_args(argv)
    notes = (
        []
        if args.no_install
        else [f"{t}: {p}" for t, p in ensure_debian_packages(["nginx", "vips", "iipsrv"]).items()]
    )
    level, static, tiff = prepare(args.grid)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        results, batch_rows, more = run_servers(args, level, static, tiff, Path(tmp))
    plotted = plot(results, PLOT)
    write_doc(args, results, batch_rows, notes + more, plotted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
