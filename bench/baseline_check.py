"""Why the serving benchmark's nginx ran below its speed: the old and the tuned nginx side by side.

Servers, all started at once on the serving benchmark's 50,176-tile level: nginx as the
benchmark ran it until 2026-12-06 (``tcp_nopush`` off, no open-file cache) and nginx tuned
(``bench/baselines.py``), each loaded both ways wrk has walked the tiles (uniform random
picks, and a shuffled list of every tile); with ``--tileserver``, tileserver on uvicorn
and granian too (shuffled). Paired rounds, the order reversed every other round, each
load ``wrk -t2 -c32`` after a 1 s warm-up. Per load: req/s, p99, and the CPU time per
request of the server's processes (``/proc``) and of wrk (the kernel's accounting of
finished children). On a machine shared with other work req/s moves with the neighbours,
the CPU per request much less: ``2 cores / (server + wrk CPU per request)`` estimates the
ceiling of an idle 2-core machine. Also TCP segments per request at one connection
(``/proc/net/snmp``, both directions: a request, its response, and any bare ACKs).

Run: ``python -m bench.baseline_check [--rounds 8] [--duration 3] [--tileserver]
[--tileserver-ref GIT_REF]``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import wrk
from bench.baselines import Processes, Server, start_tileserver
from bench.nginx import start_nginx
from bench.paired import children_cpu_seconds, group_cpu_seconds, worktree
from bench.serving_data import Template, grid_paths, prepare, stored_path

CORES = 2


@dataclass(frozen=True)
class Target:
    key: str
    server: Server
    paths: Path
    order: str


@dataclass(frozen=True)
class Sample:
    rps: float
    p99_ms: float
    server_us: float  # CPU per request, the server's processes
    wrk_us: float  # CPU per request, wrk


def tcp_out_segments() -> int:
    lines = [x.split() for x in Path("/proc/net/snmp").read_text().splitlines() if x[:4] == "Tcp:"]
    return int(lines[1][lines[0].index("OutSegs")])


def measure(target: Target, seconds: float, seed: int, work: Path) -> Sample:
    url, pgid = target.server.url, target.server.process.pid
    wrk.run(url, target.paths, 32, 1, order=target.order, seed=99, work=work)
    server0, wrk0 = group_cpu_seconds(pgid), children_cpu_seconds()
    result = wrk.run(url, target.paths, 32, seconds, order=target.order, seed=seed, work=work)
    server_s, wrk_s = group_cpu_seconds(pgid) - server0, children_cpu_seconds() - wrk0
    n = max(1, result.requests)
    return Sample(result.rps, result.p99_ms, 1e6 * server_s / n, 1e6 * wrk_s / n)


def segments_per_request(target: Target, work: Path) -> float:
    """TCP segments sent per request at one connection (the lowest of 3 one-second runs:
    other traffic on the machine only adds)."""
    counts = []
    for seed in (1, 2, 3):
        before = tcp_out_segments()
        result = wrk.run(
            target.server.url, target.paths, 1, 1, order="shuffled", seed=seed, work=work
        )
        counts.append((tcp_out_segments() - before) / max(1, result.requests))
    return min(counts)


def start_all(
    procs: Processes, args: argparse.Namespace, work: Path, tree: Path | None
) -> list[Target]:
    data = prepare(args.grid, want_tiff=False)
    grid, files = data.level.grid, data.level.frames

    def paths(name: str, template: Template) -> Path:
        return wrk.write_paths(work / f"{name}.paths", grid_paths(grid, template))

    nginx_paths = paths("nginx", lambda c, r: f"/tiles/{c}_{r}.jpg")
    targets = []
    for tuned, label in ((False, "nginx before (no tcp_nopush)"), (True, "nginx tuned")):
        server = start_nginx(procs, work, data.static, files=files, tuned=tuned)
        for order in ("random", "shuffled"):
            targets.append(Target(f"{label}, {order}", server, nginx_paths, order))
    for name in args.servers if args.tileserver else ():
        server = start_tileserver(procs, data.level.path.parent, work / name, name, tree=tree)
        slide_id = httpx.get(server.url + "/slides").json()["slides"][0]["id"]
        targets.append(
            Target(f"tileserver {name}", server, paths(name, stored_path(slide_id)), "shuffled")
        )
    return targets


def report(samples: dict[str, list[Sample]], segments: dict[str, float]) -> None:
    print("| load | req/s per round | median req/s | median p99 ms | server CPU µs/req ", end="")
    print("| wrk CPU µs/req | 2-core ceiling est. req/s | TCP segments per request |")
    print("|---|---|---|---|---|---|---|---|")
    for key, rows in samples.items():
        med = [
            float(statistics.median(v))
            for v in zip(*((s.rps, s.p99_ms, s.server_us, s.wrk_us) for s in rows), strict=True)
        ]
        each = " / ".join(f"{s.rps / 1000:.1f}k" for s in rows)
        ceiling = CORES * 1e6 / (med[2] + med[3])
        print(
            f"| {key} | {each} | {med[0]:,.0f} | {med[1]:.2f} | {med[2]:.1f} | {med[3]:.1f} "
            f"| {ceiling:,.0f} | {segments.get(key, float('nan')):.2f} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load")
    parser.add_argument(
        "--tileserver", action="store_true", help="add tileserver (uvicorn, granian)"
    )
    parser.add_argument(
        "--tileserver-ref", metavar="GIT_REF", help="run tileserver from a worktree of GIT_REF"
    )
    args = parser.parse_args(argv)
    args.servers = ["uvicorn", "granian"]
    samples: dict[str, list[Sample]] = {}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="baseline-check-")))
        ref = args.tileserver_ref
        tree = stack.enter_context(worktree("check", ref, work)).path if ref else None
        procs = stack.enter_context(Processes())
        targets = start_all(procs, args, work, tree)
        segments = {t.key: segments_per_request(t, work) for t in targets}
        for round_ in range(1, args.rounds + 1):
            for target in targets if round_ % 2 else targets[::-1]:
                sample = measure(target, args.duration, round_, work)
                samples.setdefault(target.key, []).append(sample)
                print(f"round {round_} {target.key:>40} {sample}", flush=True)
    report({t.key: samples[t.key] for t in targets}, segments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
