"""Memory under worst-case renders: concurrent largest-size IIIF PNGs and npy regions against
one server process, its resident set sampled from /proc. The render budget
(``tileserver/budget.py``) queues what does not fit, so the peak stays under the stated
budget however many such requests arrive; without it, 10 concurrent 5000x5000 PNGs took a
server from 0.39 to 2.1 GB.

A benchmark, not a test: ``make bench`` runs it and records the figures in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.baselines import free_port
from bench.report import markdown_table, section_preamble, update_section
from bench.synthetic import ensure_level

DATA = Path(__file__).parent / "data"
#: What the k8s manifests give a pod (deploy/k8s), and what the peak must stay under.
BUDGET_MIB = 1536
LIMIT_MIB = 2048
SIDE = 5000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """The process's resident set every 20 ms; ``peak`` the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_mib(self.pid))


async def burst(base: str, paths: list[str]) -> dict[int, int]:
    """Every path at once; how many answers of each status."""
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        answers = await asyncio.gather(*(client.get(p) for p in paths))
    statuses: dict[int, int] = {}
    for answer in answers:
        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    return statuses


def start(slides: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "tileserver.cli", "serve", "--slides", str(slides)]
    argv += ["--port", str(port), "--catalog", str(work / "catalog.sqlite")]
    argv += ["--log-level", "warning", "--rescan-interval", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pngs", type=int, default=10, help="concurrent IIIF PNG renders")
    parser.add_argument("--regions", type=int, default=24, help="concurrent npy regions")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    level = ensure_level(DATA, 24, extended_offset_table=True)  # 6144 x 6144 px
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        slides = work / "slides"
        slides.mkdir()
        shutil.copy(level.path, slides / level.path.name)  # a link out of a root is not served
        process, base = start(slides, work)
        try:
            slide = httpx.get(f"{base}/slides").json()["slides"][0]["id"]
            idle = rss_mib(process.pid)
            rows = []
            for name, paths in (
                ("IIIF PNG", [f"/iiif/3/{slide}/{i},{i},{SIDE},{SIDE}/max/0/default.png"
                              for i in range(args.pngs)]),
                ("npy region", [f"/slides/{slide}/region?x={i}&y=0&width={SIDE}&height={SIDE}"
                                f"&format=npy" for i in range(args.regions)]),
            ):  # fmt: skip
                sampler = Sampler(process.pid)
                sampler.start()
                started = time.monotonic()
                statuses = asyncio.run(burst(base, paths))
                seconds = time.monotonic() - started
                sampler.stop.set()
                sampler.join()
                verdict = "met" if sampler.peak < BUDGET_MIB else "NOT met"
                answered = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
                rows.append(
                    [f"{len(paths)} x {name} {SIDE}x{SIDE}", answered, f"{idle:.0f}",
                     f"{sampler.peak:.0f}", f"{seconds:.1f}", verdict]
                )  # fmt: skip
                print(rows[-1], flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
    if not args.no_docs:
        table = markdown_table(
            ["burst", "answers", "idle RSS MiB", "peak RSS MiB", "seconds", f"< {BUDGET_MIB} MiB"],
            rows,
        )
        body = "\n\n".join(
            [
                section_preamble("Memory under worst-case renders", "make bench"),
                "One server process (uvicorn, default settings: --max-output-pixels 25,000,000, "
                "render budget 4 such outputs in flight, 64 waiting at most) over a 6,144 px "
                f"square JPEG level; every request of a burst sent at once; resident set read "
                f"from /proc every 20 ms. Budget: {BUDGET_MIB} MiB peak, under the "
                f"{LIMIT_MIB} MiB the Kubernetes manifests give a pod.",
                table,
            ]
        )
        update_section("memory", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
