"""Servers for the serving benchmark, each a subprocess on a free loopback port.

tileserver itself, nginx (static tile files, and FastCGI to IIPImage), IIPImage's
``iipsrv``, and OpenSlide's ``DeepZoomGenerator`` behind a minimal Starlette app
(``bench/openslide_app.py``). Debian packages are installed on first use only when
missing, only as root, with service start-up disabled (nothing listens beyond loopback).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
IIPSRV = Path("/usr/lib/iipimage-server/iipsrv.fcgi")
PACKAGES = {"nginx": "nginx", "vips": "libvips-tools", "iipsrv": "iipimage-server"}
_POLICY = Path("/usr/sbin/policy-rc.d")


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
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering after {timeout}s")


@dataclass
class Processes:
    """Started subprocesses, stopped together (terminate, then kill after 10 s)."""

    items: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: Sequence[str], log: Path, **kwargs: object) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                **kwargs,  # type: ignore[call-overload]
            )
        self.items.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.items):
            process.terminate()
        for process in self.items:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.items.clear()


def start_tileserver(procs: Processes, slides: Path, work: Path) -> str:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tileserver.cli", "serve", "--slides", str(slides)]
    argv += ["--catalog", str(work / "catalog.sqlite"), "--port", str(port)]
    argv += ["--log-level", "warning", "--workers", "1", "--rescan-interval", "0"]
    process = procs.start(argv, work / "tileserver.log", cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", process)
    return url


def start_openslide(procs: Processes, slide: Path, work: Path) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.openslide_app:app", "--port", str(port)]
    argv += ["--host", "127.0.0.1", "--log-level", "warning", "--workers", "1"]
    env = {**os.environ, "BENCH_OPENSLIDE_SLIDE": str(slide)}
    process = procs.start(argv, work / "openslide.log", cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/info", process)
    return url


def start_iipsrv(procs: Processes, work: Path) -> int:
    port = free_port()
    env = {
        **os.environ,
        "LOGFILE": str(work / "iipsrv.log"),
        "VERBOSITY": "0",
        "JPEG_QUALITY": "90",
        "MAX_IMAGE_CACHE_SIZE": "256",
    }
    procs.start([str(IIPSRV), "--bind", f"127.0.0.1:{port}"], work / "iipsrv.out", env=env)
    return port


def start_nginx(procs: Processes, work: Path, static_root: Path, iip_port: int | None) -> str:
    """nginx on one loopback port: ``/tiles/`` static, ``/iipsrv`` FastCGI to iipsrv."""
    port = free_port()
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "nginx" / name).mkdir(parents=True, exist_ok=True)
    iip = ""
    if iip_port is not None:
        iip = """
        location /iipsrv {
            fastcgi_pass iip;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
        }"""
    conf = work / "nginx" / "nginx.conf"
    temp = work / "nginx"
    conf.write_text(
        f"""worker_processes 1;
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    upstream iip {{ server 127.0.0.1:{iip_port or 9}; }}
    server {{
        listen 127.0.0.1:{port};
        location /tiles/ {{ root {static_root}; types {{ image/jpeg jpg; }} }}
        location = /ok {{ return 200 "ok"; }}{iip}
    }}
}}
"""
    )
    nginx = shutil.which("nginx") or "nginx"
    process = procs.start(
        [nginx, "-c", str(conf), "-p", str(temp), "-g", "daemon off;"], temp / "stdout.log"
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/ok", process)
    return url
