"""Servers for the serving benchmark, each a subprocess group on a free loopback port.

tileserver itself (uvicorn or granian), a bare ASGI handler (``bench/bare_app.py``) for
calibration, IIPImage's ``iipsrv`` (nginx, its front and the static-file ceiling, is in
``bench/nginx.py``),
and OpenSlide's ``DeepZoomGenerator`` behind a minimal Starlette app
(``bench/openslide_app.py``). Debian packages are installed on first use only when
missing, only as root, with service start-up disabled (nothing listens beyond loopback).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IIPSRV = Path("/usr/lib/iipimage-server/iipsrv.fcgi")
PACKAGES = {
    "nginx": "nginx",
    "vips": "libvips-tools",
    "iipsrv": "iipimage-server",
    "wrk": "wrk",
}
_POLICY = Path("/usr/sbin/policy-rc.d")
#: Worker processes for every measured server: one per core on the 2-core bench machine.
WORKERS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def have(tool: str) -> bool:
    if tool == "iipsrv":
        return IIPSRV.exists()
    return shutil.which(tool) is not None


def ensure_debian_packages(tools: Sequence[str], timeout: float = 600) -> dict[str, str]:
    """Install the Debian packages of missing ``tools``; returns tool -> problem for failures."""
    missing = [t for t in tools if not have(t)]
    if not missing:
        return {}
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return {t: "not installed (needs root and apt-get)" for t in missing}
    packages = [PACKAGES[t] for t in missing]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # policy-rc.d 101 keeps the postinst scripts from starting nginx on 0.0.0.0:80.
    added_policy = not _POLICY.exists()
    if added_policy:
        _POLICY.write_text("#!/bin/sh\nexit 101\n")
        _POLICY.chmod(0o755)
    try:
        for argv in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        ):
            subprocess.run(argv, env=env, check=False, timeout=timeout, capture_output=True)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if added_policy:
            _POLICY.unlink(missing_ok=True)
    return {t: f"apt-get install {PACKAGES[t]} failed" for t in missing if not have(t)}


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not answering after {timeout}s")


@dataclass
class Processes:
    """Started subprocesses, each in its own process group (server workers included),
    stopped together on exit: SIGTERM to the group, SIGKILL after 10 s."""

    items: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: Sequence[str], log: Path, **kwargs: object) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process: subprocess.Popen[bytes] = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kwargs,  # type: ignore[call-overload]
            )
        self.items.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.items):
            _signal_group(process, signal.SIGTERM)
        for process in self.items:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # workers the leader left behind
        self.items.clear()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@dataclass(frozen=True)
class Server:
    """A started server: its base URL and its process (the leader of its process group)."""

    url: str
    process: subprocess.Popen[bytes]


def _serve(
    procs: Processes,
    argv_for: Callable[[int], Sequence[str]],
    log: Path,
    ready: str,
    timeout: float = 60,
    **kwargs: object,
) -> Server:
    """Start ``argv_for(port)`` on a free loopback port; return once ``ready`` answers."""
    port = free_port()
    process = procs.start(argv_for(port), log, **kwargs)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + ready, process, timeout)
    return Server(url, process)


def tileserver_argv(
    slides: Path, catalog: Path, port: int, server: str, workers: int = WORKERS
) -> list[str]:
    """``tileserver serve`` as the benchmark runs it (no rescans, quiet logs)."""
    argv = [str(BIN / "tileserver"), "serve", "--slides", str(slides), "--catalog", str(catalog)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    argv += ["--server", server, "--log-level", "warning", "--rescan-interval", "0"]
    return argv


def supports_server_option() -> bool:
    """Whether this tileserver has ``serve --server`` (uvicorn or granian)."""
    done = subprocess.run(
        [str(BIN / "tileserver"), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return "--server" in done.stdout


def tree_env(tree: Path | None) -> dict[str, str] | None:
    """The environment that runs ``tree``'s tileserver package from this venv (its
    dependencies, the tree's code: ``PYTHONPATH`` comes before the editable install), or
    None (inherit) for the working tree itself."""
    return None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}


def index_catalog(slides: Path, catalog: Path, log: Path, tree: Path | None = None) -> None:
    """``tileserver index``: several workers starting on a new catalog can race creating
    it (``database is locked``), so servers start on a built one, as in production."""
    argv = [str(BIN / "tileserver"), "index", "--catalog", str(catalog), str(slides)]
    with log.open("ab") as out:
        subprocess.run(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=300,
            cwd=tree or ROOT,
            env=tree_env(tree),
        )


def start_tileserver(
    procs: Processes,
    slides: Path,
    work: Path,
    server: str,
    workers: int = WORKERS,
    tree: Path | None = None,
) -> Server:
    """``tileserver serve`` on a catalog built first; ``tree``: a checkout whose tileserver
    runs instead of the working tree's (``bench/before_after.py``)."""
    work.mkdir(parents=True, exist_ok=True)
    catalog = work / "catalog.sqlite"
    if not catalog.exists():
        index_catalog(slides, catalog, work / "index.log", tree)
    return _serve(
        procs,
        lambda port: tileserver_argv(slides, catalog, port, server, workers),
        work / f"tileserver-{server}.log",
        "/readyz",
        timeout=120,
        cwd=tree or ROOT,
        env=tree_env(tree),
    )


def asgi_argv(target: str, server: str, port: int, workers: int = WORKERS) -> list[str]:
    """``target`` under uvicorn (uvloop + httptools, as tileserver runs it) or granian."""
    if server in ("granian", "granian-rsgi"):
        interface = "rsgi" if server == "granian-rsgi" else "asgi"
        argv = [str(BIN / "granian"), "--interface", interface, "--workers", str(workers)]
        return [*argv, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", target]
    argv = [sys.executable, "-m", "uvicorn", target, "--workers", str(workers), "--no-access-log"]
    return [*argv, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]


def start_bare(
    procs: Processes,
    server: str,
    dicom: Path,
    index: Path,
    grid: int,
    work: Path,
    workers: int = WORKERS,
) -> Server:
    env = {
        **os.environ,
        "BENCH_BARE_FILE": str(dicom),
        "BENCH_BARE_INDEX": str(index),
        "BENCH_BARE_GRID": str(grid),
    }
    target = "bench.bare_app:rsgi_app" if server == "granian-rsgi" else "bench.bare_app:app"
    return _serve(
        procs,
        lambda port: asgi_argv(target, server, port, workers),
        work / f"bare-{server}.log",
        "/tiles/0/0",
        cwd=ROOT,
        env=env,
    )


def start_openslide(procs: Processes, slide: Path, work: Path) -> Server:
    env = {**os.environ, "BENCH_OPENSLIDE_SLIDE": str(slide)}
    return _serve(
        procs,
        lambda port: asgi_argv("bench.openslide_app:app", "uvicorn", port),
        work / "openslide.log",
        "/info",
        timeout=120,
        cwd=ROOT,
        env=env,
    )


def start_iipsrv(procs: Processes, work: Path, count: int = WORKERS) -> list[int]:
    """``count`` single-threaded iipsrv FastCGI processes (nginx balances over them)."""
    ports = []
    for i in range(count):
        port = free_port()
        env = {
            **os.environ,
            "LOGFILE": str(work / f"iipsrv-{i}.log"),
            "VERBOSITY": "0",
            "JPEG_QUALITY": "90",
            "MAX_IMAGE_CACHE_SIZE": "256",
        }
        argv = [str(IIPSRV), "--bind", f"127.0.0.1:{port}"]
        procs.start(argv, work / f"iipsrv-{i}.out", env=env)
        ports.append(port)
    return ports
