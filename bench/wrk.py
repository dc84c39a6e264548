"""Load generation with ``wrk``: tile paths from a file, results as JSON from a ``done()`` hook.

The Lua script reads one URL path per line (``WRK_PATHS``) into a table. ``random`` order
picks uniformly with a per-thread seed (``WRK_SEED`` + thread index), so runs repeat;
``sequential`` order gives thread ``k`` of ``T`` the paths ``k, k+T, k+2T, ...``, so one
pass requests every path at most once (the cold-cache "miss" runs) and reports how many
each thread issued; ``shuffled`` first shuffles the table (one permutation per
``WRK_SEED``, the same in every thread) and then walks it as ``sequential`` does, so every
path is requested once before any is repeated (the stored-tile runs: a shuffled list of
every level-0 tile). With ``WRK_CACHE=1`` a ``response()`` hook sorts 200 responses into
cache hits and misses by their ``Server-Timing`` header (a miss has an ``encode`` phase);
that hook costs wrk some CPU, so only the composed-tile warm-ups use it, never a measured run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

_MARKER = "WRK_JSON "

SCRIPT = r"""
local order = os.getenv("WRK_ORDER") or "random"
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

function init(args)
  paths = {}
  for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
  nthreads = tonumber(os.getenv("WRK_THREADS"))
  local seed = tonumber(os.getenv("WRK_SEED"))
  if order == "shuffled" then
    math.randomseed(seed)  -- the same seed in every thread: one permutation, shared
    for i = #paths, 2, -1 do
      local j = math.random(i)
      paths[i], paths[j] = paths[j], paths[i]
    end
  end
  math.randomseed(seed + id)
  issued, hits, misses = 0, 0, 0
end

function request()
  local i
  if order == "random" then
    i = math.random(#paths)
  else
    i = (issued * nthreads + id) % #paths + 1
  end
  issued = issued + 1
  return wrk.format(nil, paths[i])
end

if os.getenv("WRK_CACHE") == "1" then
  function response(status, headers, body)
    if status == 200 then
      local timing = headers["server-timing"] or headers["Server-Timing"] or ""
      if string.find(timing, "encode", 1, true) then misses = misses + 1 else hits = hits + 1 end
    end
  end
end

function done(summary, latency, requests)
  local issued_by, hit, miss = {}, 0, 0
  for _, t in ipairs(threads) do
    issued_by[#issued_by + 1] = string.format("%d", t:get("issued"))
    hit = hit + t:get("hits")
    miss = miss + t:get("misses")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %.1f, "p90": %.1f, "p99": %.1f, "max": %.1f, "mean": %.1f}, ' ..
    '"issued": [%s], "cache_hits": %d, "cache_misses": %d}\n',
    summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, table.concat(issued_by, ","), hit, miss))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms), errors and per-thread request counts."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    issued: tuple[int, ...]
    cache_hits: int
    cache_misses: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @classmethod
    def parse(cls, stdout: str) -> WrkResult:
        line = next((x for x in stdout.splitlines() if x.startswith(_MARKER)), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{stdout[-2000:]}")
        raw = json.loads(line[len(_MARKER) :])
        latency = {k: v / 1000.0 for k, v in raw["latency_us"].items()}
        return cls(
            requests=int(raw["requests"]),
            seconds=raw["duration_us"] / 1e6,
            p50_ms=latency["p50"],
            p90_ms=latency["p90"],
            p99_ms=latency["p99"],
            max_ms=latency["max"],
            errors=sum(raw["errors"].values()),
            issued=tuple(raw["issued"]),
            cache_hits=raw["cache_hits"],
            cache_misses=raw["cache_misses"],
        )


def median(results: Sequence[WrkResult]) -> WrkResult:
    """Each figure the median over repeated runs (errors summed), so one noisy run moves
    neither throughput nor tail latency."""
    if len(results) == 1:
        return results[0]
    mid = sorted(results, key=lambda r: r.rps)[len(results) // 2]

    def med(values: Sequence[float]) -> float:
        return float(statistics.median(values))

    return replace(
        mid,
        p50_ms=med([r.p50_ms for r in results]),
        p90_ms=med([r.p90_ms for r in results]),
        p99_ms=med([r.p99_ms for r in results]),
        max_ms=max(r.max_ms for r in results),
        errors=sum(r.errors for r in results),
    )


def threads_for(connections: int) -> int:
    """wrk threads for ``connections``: one per core of the 2-core bench machine."""
    return min(2, connections)


def write_paths(path: Path, paths: Sequence[str]) -> Path:
    path.write_text("".join(f"{p}\n" for p in paths))
    return path


def run(
    base_url: str,
    paths_file: Path,
    connections: int,
    duration: float,
    *,
    order: str = "random",
    seed: int = 1,
    count_cache: bool = False,
    work: Path,
) -> WrkResult:
    """``wrk -t{threads_for(c)} -c{c} -d{duration}`` over the paths in ``paths_file``."""
    threads = threads_for(connections)
    script = work / "paths.lua"
    if not script.exists():
        script.write_text(SCRIPT)
    env = {
        **os.environ,
        "WRK_PATHS": str(paths_file),
        "WRK_ORDER": order,
        "WRK_THREADS": str(threads),
        "WRK_SEED": str(seed),
        "WRK_CACHE": "1" if count_cache else "0",
    }
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s"]
    argv += ["-s", str(script), base_url]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr[-2000:]}")
    return WrkResult.parse(done.stdout)


def consumed(paths: Sequence[str], issued: Sequence[int], backlog: int = 0) -> list[str]:
    """The paths a ``sequential`` run requested (each thread's stride), less the last
    ``backlog`` per thread, which may still have been in flight when wrk stopped."""
    threads, out = len(issued), []
    for k, n in enumerate(issued):
        out += [paths[(j * threads + k) % len(paths)] for j in range(max(0, n - backlog))]
    return out
