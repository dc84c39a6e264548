"""Cold start: process start to the first stored tile, with the page cache dropped.

Each run drops the page cache (``echo 1 > /proc/sys/vm/drop_caches``), starts
``tileserver serve`` and requests one tile every 2 ms until one comes back 200 with JPEG
bytes; the clock runs from just before the process is spawned. Two cases: a restart
(the catalog already holds the slide, as in production) and a first start (empty
catalog: the slide is indexed first). Python byte code is cached under
``bench/data/pycache`` (``PYTHONPYCACHEPREFIX``), as an installed package would have it.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.baselines import ROOT, Processes, free_port, tileserver_argv
from bench.report import DATA, drop_page_cache

PYCACHE = DATA / "pycache"


@dataclass(frozen=True)
class ColdStart:
    server: str
    workers: int
    catalog: str  # "built" or "empty"
    runs_ms: tuple[float, ...]
    failures: tuple[str, ...]
    page_cache_dropped: bool

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms) if self.runs_ms else float("nan")


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(PYCACHE)}


def first_tile(port: int, path: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once ``GET path`` answers 200 with a JPEG; raise on exit or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tileserver exited with {process.returncode}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            if response.status == 200 and response.read(2) == b"\xff\xd8":
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(0.002)
    raise RuntimeError(f"no tile from {path} after {timeout}s")


def one_start(
    slides: Path, catalog: Path, path: str, server: str, workers: int, log: Path
) -> float:
    port = free_port()
    argv = tileserver_argv(slides, catalog, port, server, workers)
    with Processes() as procs:
        start = time.perf_counter()
        process = procs.start(argv, log, cwd=ROOT, env=server_env())
        first_tile(port, path, process, timeout=120)
        return (time.perf_counter() - start) * 1000


def measure(
    slides: Path,
    catalog: Path,
    path: str,
    case: tuple[str, int],
    runs: int,
    work: Path,
    *,
    empty: bool,
) -> ColdStart:
    """Median-of-``runs`` cold starts; ``empty`` starts each run from a new catalog. A start
    that fails is recorded with the last line of its log, not retried."""
    server, workers = case
    times, failures, dropped = [], [], True
    for i in range(runs):
        name = f"cold-{server}-{workers}-{'empty' if empty else 'built'}-{i}"
        target = work / f"{name}.sqlite" if empty else catalog
        dropped = drop_page_cache() and dropped
        try:
            times.append(one_start(slides, target, path, server, workers, work / f"{name}.log"))
        except RuntimeError as exc:
            failures.append(f"{exc}: {last_error(work / f'{name}.log')}")
    kind = "empty" if empty else "built"
    return ColdStart(server, workers, kind, tuple(times), tuple(failures), dropped)


def last_error(log: Path) -> str:
    lines = [x for x in log.read_text(errors="replace").splitlines() if "Error" in x]
    return lines[-1].strip() if lines else "(no error logged)"


#: What any tileserver start must import before it can answer: the floor of a cold start.
FLOOR_IMPORTS = "import numpy, sqlite3, anyio, starlette.applications, uvicorn"


def measure_floor(runs: int, work: Path) -> ColdStart:
    """The interpreter and the third-party stack alone, page cache dropped: how much of a
    cold start is not tileserver's own code."""
    argv = [sys.executable, "-c", FLOOR_IMPORTS]
    subprocess.run(argv, env=server_env(), check=True)  # writes the byte-code cache
    times, dropped = [], True
    for _ in range(runs):
        dropped = drop_page_cache() and dropped
        start = time.perf_counter()
        subprocess.run(argv, env=server_env(), check=True, cwd=work)
        times.append((time.perf_counter() - start) * 1000)
    return ColdStart("imports only", 1, "none", tuple(times), (), dropped)


def measure_all(
    slides: Path,
    catalog: Path,
    path: str,
    cases: Sequence[tuple[str, int]],
    runs: int,
    work: Path,
) -> list[ColdStart]:
    """The import floor, then every (server, workers) case with the catalog built, then
    with an empty catalog."""
    out = [measure_floor(runs, work)]
    for case in cases:
        # One uncounted start writes the byte-code cache that the cold starts read.
        one_start(slides, catalog, path, *case, work / "pycache.log")
        out.append(measure(slides, catalog, path, case, runs, work, empty=False))
        out.append(measure(slides, catalog, path, case, runs, work, empty=True))
    return out
