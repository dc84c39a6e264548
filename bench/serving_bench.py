"""Serving benchmark: tileserver against nginx, a bare ASGI handler, IIPImage and OpenSlide.

One synthetic level of 224x224 = 50,176 JPEG frames of 256 px (``bench/serving_data.py``)
is served by
* nginx: the same frame bytes as static files, tuned as its users tune it (sendfile with
  tcp_nopush, ``bench/nginx.py``): the ceiling;
* a bare handler returning slices of the memory-mapped file (``bench/bare_app.py``), on
  uvicorn and granian (ASGI), and on granian's RSGI interface: the ceiling of a Python
  handler on each server;
* tileserver on uvicorn (the default, ASGI) and granian (RSGI): stored frames at
  ``/slides/{id}/tiles/0/{col}/{row}`` and the same frames as native-level DZI tiles, then
  composed DZI tiles one level down (cold-cache "miss" and repeated "hit" passes);
* IIPImage (``iipsrv`` behind nginx) on a libvips pyramidal TIFF of the same pixels;
* OpenSlide ``DeepZoomGenerator`` behind Starlette (``bench/openslide_app.py``).
Every server gets 2 worker processes on a loopback port and runs alone. Load: ``wrk -t2``
(``bench/wrk.py``) over a shuffled list of every tile, 1 s warm-up then 5 s per point at
1, 32 and 128 connections (c=32, where the targets are set, three times: medians). The
batch endpoint against single-tile requests runs on the uvicorn tileserver. The
stored-tile share targets come from paired rounds (``bench/paired.py``): nginx, the bare
handlers and tileserver all started, loaded in turn at c=32 for 6 s, the share taken
within each round. With ``--before-ref GIT_REF``, tileserver at that ref (a git worktree)
and the working tree are compared the same way (``bench/before_after.py``). Cold starts
(``bench/coldstart.py``) run last, as they drop the page cache. Results, plot and target
verdicts go to the ``serving`` section of ``docs/benchmarks.md``.
Run: ``make bench`` or ``python -m bench.serving_bench [--help]``.
"""

from __future__ import annotations

import argparse
import math
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TypeVar

import httpx

from bench import before_after, coldstart, wrk
from bench.baselines import (
    Processes,
    ensure_debian_packages,
    have,
    start_bare,
    start_iipsrv,
    start_openslide,
    start_tileserver,
    supports_server_option,
)
from bench.batch_compare import batch_vs_single
from bench.nginx import start_nginx
from bench.paired import ORDER, Cpu, check_tile, line, nginx_template, run_before_after, run_paired
from bench.report import warm_file
from bench.serving_data import ServingData, Template, bare_path, grid_paths, prepare, stored_path
from bench.serving_report import TARGET_CONNECTIONS, Point, Run, write_doc

T = TypeVar("T")
#: DZI tiles at the level below the top, each composed from 2x2 stored frames.
WARM_TILES = 1024


@dataclass
class Bench:
    args: argparse.Namespace
    data: ServingData
    work: Path
    stored: list[Run] = field(default_factory=list)
    composed: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batch_rows: list[list[str]] = field(default_factory=list)
    #: c=32 results per server key, one per interleaved round (``run_paired``).
    paired: dict[str, list[wrk.WrkResult]] = field(default_factory=dict)
    #: CPU time per request in the same rounds (``bench/paired.py``).
    paired_cpu: dict[str, list[Cpu]] = field(default_factory=dict)

    @property
    def grid(self) -> int:
        return self.data.level.grid

    def paths_file(self, name: str, paths: Sequence[str]) -> Path:
        return wrk.write_paths(self.work / f"{name}.paths", paths)

    def grid_paths(self, name: str, template: Template) -> Path:
        return self.paths_file(name, grid_paths(self.grid, template))

    def load(
        self, url: str, paths: Path, connections: int, duration: float = 0, **kw: object
    ) -> wrk.WrkResult:
        seconds = duration or self.args.duration
        return wrk.run(url, paths, connections, seconds, work=self.work, **kw)  # type: ignore[arg-type]

    def warm(self, url: str, paths: Path, **kw: object) -> None:
        seconds = self.args.warmup
        wrk.run(url, paths, TARGET_CONNECTIONS, seconds, work=self.work, seed=99, **kw)  # type: ignore[arg-type]

    def sweep(
        self, key: str, name: str, url: str, template: Template, expected: bytes | None
    ) -> None:
        """Stored tiles (a shuffled list of every tile) at every concurrency, after checking
        one response."""
        problem = check_tile(url + template(1, 1), expected)
        if problem is not None:
            self.notes.append(f"{name} skipped: {problem}")
            return
        paths = self.grid_paths(key, template)
        run = Run(key, name)
        for connections in self.args.concurrency:
            repeats = self.args.repeats if connections == TARGET_CONNECTIONS else 1
            results = []
            for seed in range(1, repeats + 1):
                self.warm(url, paths, order=ORDER)
                results.append(self.load(url, paths, connections, seed=seed, order=ORDER))
                print(f"{name:>42} c={connections:<3} {line(results[-1])}", flush=True)
            kept = wrk.median(results)
            run.points.append(Point(connections, kept, tuple(r.rps for r in results)))
        self.stored.append(run)

    def composed_passes(
        self, key: str, name: str, url: str, template: Template, purge: bool
    ) -> None:
        """Miss: distinct tiles never requested before (each thread walks its own stride of
        a shuffled list); hit: the first ``--hit-tiles`` of those again, in random order.
        Cache hits are counted in the warm-ups only: wrk's counting hook costs it CPU."""
        z_grid = math.ceil(self.grid / 2)
        tiles = [(c, r) for r in range(z_grid) for c in range(z_grid)]
        random.Random(7).shuffle(tiles)
        problem = check_tile(url + template(*tiles[0]), None)  # a warm-up tile: no miss lost
        if problem is not None:
            self.notes.append(f"{name} composed tiles skipped: {problem}")
            return
        warm = self.paths_file(f"{key}-warm", [template(c, r) for c, r in tiles[:WARM_TILES]])
        fresh = [template(c, r) for c, r in tiles[WARM_TILES:]]
        if purge:
            for _ in range(4):  # separate connections, so both workers see one
                httpx.delete(url + "/cache", timeout=30).raise_for_status()
        self.warm(url, warm, order="sequential")
        c = self.args.composed_concurrency
        miss = self.load(url, self.paths_file(f"{key}-miss", fresh), c, order="sequential")
        if sum(miss.issued) > len(fresh):
            self.notes.append(f"{name}: the miss pass wrapped around its {len(fresh)} tiles")
        seen = wrk.consumed(fresh, miss.issued, backlog=c)[: self.args.hit_tiles]
        hit_paths = self.paths_file(f"{key}-hit", seen)
        counts = self.fill_cache(name, url, hit_paths, c, count=purge)
        hit = self.load(url, hit_paths, c)
        self.composed.append(Run(key, name, "miss", [Point(c, miss)], tiles=len(fresh)))
        self.composed.append(Run(key, name, "hit", [Point(c, hit)], len(seen), counts))
        for kind, result in (("miss", miss), ("hit", hit)):
            print(f"{name:>30} {kind:<4} c={c:<3} {line(result)}", flush=True)

    def fill_cache(
        self, name: str, url: str, paths: Path, c: int, count: bool
    ) -> tuple[int, int] | None:
        """Warm-ups on ``paths`` until each worker has (nearly) every tile cached; with
        ``count``, the last warm-up's (hits, misses), with a note when misses remain."""
        for _ in range(3):
            result = self.load(url, paths, c, count_cache=count, duration=self.args.warmup)
            hits, misses = result.cache_hits, result.cache_misses
            if misses <= 0.01 * (hits + misses):
                break
        else:
            self.notes.append(
                f"{name}: the cache had not converged before the hit pass "
                f"({misses:,} misses in {hits + misses:,} responses of the last warm-up)"
            )
        print(f"{name:>30} warm-up cache hits {hits} misses {misses}", flush=True)
        return (hits, misses) if count else None


def run_nginx_and_bare(bench: Bench) -> None:
    level, expected = bench.data.level, bench.data.level.expected(1, 1)
    if have("nginx"):
        with Processes() as procs:
            files = level.grid * level.grid
            url = start_nginx(procs, bench.work, bench.data.static, files=files).url
            bench.sweep("nginx", "nginx (static files)", url, nginx_template, expected)
    bare = [(s, f"bare ASGI handler ({s})") for s in bench.args.servers]
    if "granian" in bench.args.servers:  # tileserver runs on granian's RSGI interface
        bare.append(("granian-rsgi", "bare RSGI handler (granian)"))
    for server, label in bare:
        with Processes() as procs:
            spans, work = bench.data.spans, bench.work
            url = start_bare(procs, server, level.path, spans, level.grid, work).url
            bench.sweep(f"bare-{server}", label, url, bare_path, expected)


def run_tileserver(bench: Bench, server: str) -> str | None:
    """Stored and composed tiles on one server; returns the slide id."""
    level, expected, top = bench.data.level, bench.data.level.expected(1, 1), bench.data.dzi_top
    with Processes() as procs:
        url = start_tileserver(procs, level.path.parent, bench.work / f"ts-{server}", server).url
        slide_id: str = httpx.get(url + "/slides").json()["slides"][0]["id"]
        name = f"tileserver ({server})"
        bench.sweep(
            f"ts-{server}",
            f"{name} /slides/…/tiles/0",
            url,
            stored_path(slide_id),
            expected,
        )
        bench.sweep(
            f"ts-{server}-dzi",
            f"{name} DZI level {top}",
            url,
            lambda c, r: f"/dzi/{slide_id}_files/{top}/{c}_{r}.jpeg",
            expected,
        )
        bench.composed_passes(
            f"ts-{server}",
            name,
            url,
            lambda c, r: f"/dzi/{slide_id}_files/{top - 1}/{c}_{r}.jpeg",
            purge=True,
        )
        if server == "uvicorn":
            limit = bench.args.batch_tiles
            bench.batch_rows = batch_vs_single(url, slide_id, limit, level.tile_size)
    return slide_id


def run_iipimage(bench: Bench) -> None:
    tiff = bench.data.tiff
    if tiff is None or not (have("iipsrv") and have("nginx")):
        bench.notes.append("IIPImage skipped: needs iipsrv, nginx and the pyramidal TIFF")
        return
    top = bench.data.dzi_top
    with Processes() as procs:
        ports = start_iipsrv(procs, bench.work)
        url = start_nginx(procs, bench.work, None, ports).url
        template = lambda c, r: f"/iipsrv?DeepZoom={tiff}_files/{top}/{c}_{r}.jpg"  # noqa: E731
        bench.sweep("iip", f"IIPImage (DZI level {top})", url, template, None)


def run_openslide(bench: Bench) -> None:
    with Processes() as procs:
        url = start_openslide(procs, bench.data.level.path, bench.work).url
        top = int(httpx.get(url + "/info").json()["levels"]) - 1
        name = "OpenSlide DeepZoomGenerator"
        bench.sweep("openslide", f"{name} (DZI level {top})", url, _openslide(top), None)
        bench.composed_passes("openslide", name, url, _openslide(top - 1), purge=False)


def _openslide(z: int) -> Template:
    return lambda c, r: f"/tiles/{z}/{c}_{r}.jpeg"


def warm_page_cache(data: ServingData) -> None:
    warm_file(data.level.path)
    for tile in (data.static / "tiles").iterdir():
        tile.read_bytes()
    if data.tiff is not None:
        warm_file(data.tiff)


def guarded(bench: Bench, what: str, fn: Callable[..., T], *args: object) -> T | None:
    """``fn(*args)``, or None with a note when its server fails: one broken server must not
    lose the other results."""
    try:
        return fn(*args)
    except (RuntimeError, OSError, httpx.HTTPError, subprocess.SubprocessError) as exc:
        bench.notes.append(f"{what} failed: {exc}")
        print(f"{what} failed: {exc}", flush=True)
        return None


def run_all(bench: Bench) -> list[coldstart.ColdStart]:
    warm_page_cache(bench.data)
    guarded(bench, "nginx / bare handler", run_nginx_and_bare, bench)
    slide_id = None
    for server in bench.args.servers:
        slide_id = (
            guarded(bench, f"tileserver ({server})", run_tileserver, bench, server) or slide_id
        )
    guarded(bench, "paired rounds", run_paired, bench)
    guarded(bench, "IIPImage", run_iipimage, bench)
    guarded(bench, "OpenSlide", run_openslide, bench)
    if slide_id is None or bench.args.cold_runs < 1:
        return []
    return (
        guarded(
            bench,
            "cold start",
            coldstart.measure_all,
            bench.data.level.path.parent,
            bench.work / "ts-uvicorn" / "catalog.sqlite",
            stored_path(slide_id)(bench.grid // 2, bench.grid // 2),
            [("uvicorn", 1), *((server, 2) for server in bench.args.servers)],
            bench.args.cold_runs,
            bench.work,
        )
        or []
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, default=224, help="tiles per side (224: 50,176)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each point")
    parser.add_argument("--concurrency", type=ints, default=[1, 32, 128])
    parser.add_argument("--composed-concurrency", type=int, default=TARGET_CONNECTIONS)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help=f"runs of each c={TARGET_CONNECTIONS} point (the median is kept)",
    )
    parser.add_argument(
        "--paired-rounds",
        type=int,
        default=5,
        help=f"interleaved c={TARGET_CONNECTIONS} rounds behind the stored-tile shares",
    )
    parser.add_argument(
        "--paired-duration",
        type=float,
        default=6.0,
        help="seconds of each paired-round load (after a --warmup)",
    )
    parser.add_argument(
        "--before-ref",
        metavar="GIT_REF",
        help="also compare stored tiles of tileserver at GIT_REF (a git worktree) with the "
        "working tree, in paired rounds on uvicorn and granian",
    )
    parser.add_argument(
        "--after-ref",
        metavar="GIT_REF",
        help="with --before-ref: the after side at GIT_REF instead of the working tree",
    )
    parser.add_argument(
        "--before-after-only",
        action="store_true",
        help="with --before-ref: run only that comparison (a few minutes)",
    )
    parser.add_argument("--cold-runs", type=int, default=3, help="cold starts per case")
    parser.add_argument("--hit-tiles", type=int, default=1000)
    parser.add_argument("--batch-tiles", type=int, default=4096)
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    args = parser.parse_args(argv)
    if (args.after_ref or args.before_after_only) and not args.before_ref:
        parser.error("--after-ref and --before-after-only need --before-ref")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every ``with Processes()``


def compare_trees(bench: Bench) -> None:
    """The before/after comparison (``--before-ref``), written to its own section."""
    compared = guarded(bench, "before/after", run_before_after, bench)
    if compared is not None:
        before_after.write(compared, bench.args, bench.notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    only = args.before_after_only
    tools = ["nginx", "wrk"] if only else ["nginx", "vips", "iipsrv", "wrk"]
    problems = {} if args.no_install else ensure_debian_packages(tools)
    if not have("wrk"):
        print("serving bench skipped: wrk is not installed (Debian package wrk)")
        return 0
    args.servers = ["uvicorn", "granian"] if supports_server_option() else ["uvicorn"]
    started = time.perf_counter()
    data = prepare(args.grid, want_tiff=not only)
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        bench = Bench(args, data, Path(tmp))
        bench.notes += [f"{t}: {p}" for t, p in problems.items()] + list(data.notes)
        if only:
            warm_page_cache(data)
        else:
            cold = run_all(bench)
        if args.before_ref:
            compare_trees(bench)
    if not only:
        write_doc(bench, cold, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
