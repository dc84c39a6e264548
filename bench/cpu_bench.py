"""CPU per stored tile: what one request costs the server, beside the bare handlers.

Throughput on the 2-core bench machine mixes the server's cost with wrk's and with how
the two share the cores; CPU time per request does not. Each server runs with one worker
on the serving benchmark's slide (``bench/serving_data.py``) while ``wrk -t2 -c16``
requests random stored tiles for 5 s; the server's process group's user + system CPU
time (``/proc/<pid>/stat``) over that window, divided by the requests answered, is the
figure; median of 3 runs. Servers: the bare handlers (``bench/bare_app.py``: ASGI on
uvicorn, RSGI on granian) and ``tileserver serve`` on each. Results go to the ``cpu``
section of ``docs/benchmarks.md``. Run: ``make bench`` or ``python -m bench.cpu_bench``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import wrk
from bench.baselines import Processes, ensure_debian_packages, start_bare, start_tileserver
from bench.report import markdown_table, section_preamble, update_section, warm_file
from bench.serving_data import bare_path, grid_paths, prepare, stored_path

RUNS = 3
SECONDS = 5.0
CONNECTIONS = 16
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measure:
    server: str  # "uvicorn" or "granian"
    bare: bool  # the bare handler (``bench/bare_app.py``), else tileserver
    requests_per_s: float
    cpu_us: tuple[float, ...]  # per request, one per run

    @property
    def label(self) -> str:
        return f"{'bare handler' if self.bare else 'tileserver'} {self.server}"

    @property
    def median_us(self) -> float:
        return statistics.median(self.cpu_us)


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of every live process in process group ``group``."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:  # pgrp; utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def measure(server: str, bare: bool, url: str, group: int, paths: Path, work: Path) -> Measure:
    wrk.run(url, paths, CONNECTIONS, 1.0, work=work)  # warm-up
    per_request, rates = [], []
    for seed in range(1, RUNS + 1):
        before = group_cpu_seconds(group)
        result = wrk.run(url, paths, CONNECTIONS, SECONDS, seed=seed, work=work)
        used = group_cpu_seconds(group) - before
        if result.errors or not result.requests:
            raise RuntimeError(f"{server}: {result.errors} errors in {result.requests} requests")
        per_request.append(used / result.requests * 1e6)
        rates.append(result.rps)
    return Measure(server, bare, statistics.median(rates), tuple(per_request))


def report(measures: list[Measure], frames: int) -> str:
    floor = {m.server: m.median_us for m in measures if m.bare}
    rows = []
    for m in measures:
        bare = None if m.bare else floor.get(m.server)
        ratio = f"{m.median_us / bare:.2f}x" if bare else "—"
        runs = " / ".join(f"{v:.1f}" for v in m.cpu_us)
        rows.append([m.label, f"{m.median_us:.1f}", runs, ratio, f"{m.requests_per_s:,.0f}"])
    header = ["server (1 worker)", "CPU µs per tile", "runs", "vs bare handler", "req/s"]
    return "\n\n".join(
        [
            section_preamble("CPU per stored tile", "make bench"),
            f"Random stored tiles of the serving benchmark's {frames:,}-frame level, "
            f"`wrk -t{wrk.threads_for(CONNECTIONS)} -c{CONNECTIONS}`, {SECONDS:g} s per run, "
            f"median of {RUNS}; CPU = user "
            "+ system time of the server's process group from `/proc` (granian's Rust "
            "threads included) over the requests answered (`bench/cpu_bench.py`). "
            "req/s shares the 2 cores with wrk: read the CPU column.",
            markdown_table(header, rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-doc", action="store_true", help="print, do not update the doc")
    args = parser.parse_args(argv)
    missing = ensure_debian_packages(["wrk"])
    if missing:
        print(f"skipped: {missing}")
        return 0
    data = prepare(224)
    level = data.level
    warm_file(level.path)
    measures = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bare_paths = wrk.write_paths(work / "bare.paths", grid_paths(level.grid, bare_path))
        ts_paths = None
        for server, bare in (("uvicorn", "uvicorn"), ("granian", "granian-rsgi")):
            with Processes() as procs:
                started = start_bare(
                    procs, bare, level.path, data.spans, level.grid, work, workers=1
                )
                group = started.process.pid
                measures.append(measure(server, True, started.url, group, bare_paths, work))
            with Processes() as procs:
                started = start_tileserver(procs, level.path.parent, work / "ts", server, workers=1)
                if ts_paths is None:
                    slide_id = httpx.get(f"{started.url}/slides").json()["slides"][0]["id"]
                    ts_paths = wrk.write_paths(
                        work / "ts.paths", grid_paths(level.grid, stored_path(slide_id))
                    )
                group = started.process.pid
                measures.append(measure(server, False, started.url, group, ts_paths, work))
    text = report(measures, level.grid * level.grid)
    print(text)
    if not args.no_doc:
        update_section("cpu", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
