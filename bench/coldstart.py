"""Cold start: process start to the first stored tile, with the page cache dropped.

Each run drops the page cache (``echo 1 > /proc/sys/vm/drop_caches``), starts
``tileserver serve`` and requests one tile every 2 ms until one comes back 200 with JPEG
bytes; the clock runs from just before the process is spawned. Two cases: a restart
(the catalog already holds the slide, as in production) and a first start (empty
catalog: the slide is indexed first). A restart answers its first tile on the early path
(``tileserver/http/early.py``), from the tile locator the previous run left in the catalog,
while the app is still loading; a first start has no locator and waits for the app. The
floors: a 4-byte hello app on each server and worker count, and the app's imports alone.
Python byte code is cached under ``bench/data/pycache`` (``PYTHONPYCACHEPREFIX``), as an
installed package would have it.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.baselines import ROOT, Processes, asgi_argv, free_port, tileserver_argv
from bench.report import DATA, drop_page_cache

PYCACHE = DATA / "pycache"


@dataclass(frozen=True)
class ColdStart:
    server: str
    workers: int
    catalog: str  # "built" or "empty"; "hello" and "none" for the floors
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


def timed_start(argv: Callable[[int], list[str]], path: str, log: Path) -> float:
    """Milliseconds from spawning ``argv(port)`` to its first 200 JPEG for ``path``."""
    port = free_port()
    with Processes() as procs:
        start = time.perf_counter()
        process = procs.start(argv(port), log, cwd=ROOT, env=server_env())
        first_tile(port, path, process, timeout=120)
        return (time.perf_counter() - start) * 1000


def one_start(
    slides: Path, catalog: Path, path: str, server: str, workers: int, log: Path
) -> float:
    return timed_start(
        lambda port: tileserver_argv(slides, catalog, port, server, workers), path, log
    )


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
        if empty:  # a new catalog, also when ``work`` is reused
            for stale in work.glob(f"{name}.sqlite*"):
                stale.unlink()
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


#: What the app behind the early path imports (``tileserver/http/early.py``); the early
#: path answers stored tiles without waiting for them.
APP_IMPORTS = "import numpy, sqlite3, anyio, starlette.applications, PIL.Image, pydicom"


def measure_imports(runs: int, work: Path) -> ColdStart:
    """The interpreter and the app's third-party imports alone, page cache dropped."""
    argv = [sys.executable, "-c", APP_IMPORTS]
    subprocess.run(argv, env=server_env(), check=True)  # writes the byte-code cache
    times, dropped = [], True
    for _ in range(runs):
        dropped = drop_page_cache() and dropped
        start = time.perf_counter()
        subprocess.run(argv, env=server_env(), check=True, cwd=work)
        times.append((time.perf_counter() - start) * 1000)
    return ColdStart("imports only", 1, "none", tuple(times), (), dropped)


def measure_floor(server: str, workers: int, runs: int, work: Path) -> ColdStart:
    """``bench/hello_app.py`` on ``server`` with ``workers`` processes: the server's own
    cold start to a first response, the floor under tileserver's."""
    interface = "granian-rsgi" if server == "granian" else server
    target = "bench.hello_app:rsgi_app" if server == "granian" else "bench.hello_app:app"
    log = work / f"hello-{server}-{workers}.log"

    def argv(port: int) -> list[str]:
        return asgi_argv(target, interface, port, workers)

    timed_start(argv, "/", log)  # uncounted: writes the byte-code cache
    times, failures, dropped = [], [], True
    for _ in range(runs):
        dropped = drop_page_cache() and dropped
        try:
            times.append(timed_start(argv, "/", log))
        except RuntimeError as exc:
            failures.append(str(exc))
    return ColdStart(server, workers, "hello", tuple(times), tuple(failures), dropped)


def measure_all(
    slides: Path,
    catalog: Path,
    path: str,
    cases: Sequence[tuple[str, int]],
    runs: int,
    work: Path,
) -> list[ColdStart]:
    """The app's imports alone, then for every (server, workers) case: the hello app (the
    server's floor), tileserver with the catalog built, then with an empty catalog."""
    out = [measure_imports(runs, work)]
    for case in cases:
        out.append(measure_floor(*case, runs, work))
        # One uncounted start writes the byte-code cache that the cold starts read.
        one_start(slides, catalog, path, *case, work / "pycache.log")
        out.append(measure(slides, catalog, path, case, runs, work, empty=False))
        out.append(measure(slides, catalog, path, case, runs, work, empty=True))
    return out
