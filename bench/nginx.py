"""nginx for the serving benchmark: static tile files (the ceiling), and the FastCGI front
of IIPImage. Tuned as nginx's own users tune a static tile server (``_nginx_conf``); the
configuration the benchmark ran until 2026-12-06 stays available (``tuned=False``) for
``bench/baseline_check.py``.
"""

from __future__ import annotations

import resource
import shutil
from collections.abc import Sequence
from pathlib import Path

from bench.baselines import WORKERS, Processes, Server, _serve


def start_nginx(
    procs: Processes,
    work: Path,
    static_root: Path | None,
    iip_ports: Sequence[int] = (),
    files: int = 0,
    tuned: bool = True,
) -> Server:
    """nginx (``WORKERS`` processes) on one loopback port: ``/tiles/`` static files from
    ``static_root`` (``files`` of them), ``/iipsrv`` FastCGI to the iipsrv processes.
    ``tuned=False``: as the benchmark ran it until 2026-12-06 (``bench/baseline_check.py``)."""

    def argv(port: int) -> list[str]:
        temp = work / f"nginx-{port}"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (temp / name).mkdir(parents=True, exist_ok=True)
        conf = temp / "nginx.conf"
        conf.write_text(_nginx_conf(temp, port, static_root, iip_ports, files, tuned))
        nginx = shutil.which("nginx") or "nginx"
        return [nginx, "-c", str(conf), "-p", str(temp), "-g", "daemon off;"]

    return _serve(procs, argv, work / "nginx.log", "/ok")


#: Descriptors an nginx worker keeps for other uses than its open-file cache.
_NGINX_SPARE_FILES = 2048


def nginx_file_cache(files: int) -> tuple[int, int]:
    """(``worker_rlimit_nofile``, ``open_file_cache max``, 0 for off) for ``files`` tiles.

    The cache holds one descriptor per file in each worker, within the hard descriptor
    limit (which a worker may reach unprivileged). It is on only when every tile fits: at
    50,176 tiles under a 20,000-descriptor limit, a cache of a third of them measured
    slower than none (each miss opens a file and closes an evicted one: 15.3 against 14.2
    CPU µs per tile, median of 8 paired rounds on 2026-12-06), so it is left off there."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = files + _NGINX_SPARE_FILES
    fits = 0 < files <= hard - _NGINX_SPARE_FILES
    return hard, files if fits else 0


def nginx_setup(files: int) -> str:
    """The tuned nginx configuration in words, for the report."""
    _, cached = nginx_file_cache(files)
    cache = (
        f"an open-file cache of {cached:,} files"
        if cached
        else "no open-file cache (the tiles outnumber the descriptor limit, and a partial "
        "cache measured slower)"
    )
    return (
        f"`worker_processes {WORKERS}`, `sendfile` with `tcp_nopush`, no access log, "
        f"`keepalive_requests 1000000`, {cache}"
    )


def _nginx_conf(
    temp: Path,
    port: int,
    static_root: Path | None,
    iip_ports: Sequence[int],
    files: int,
    tuned: bool = True,
) -> str:
    """Tuned as nginx's own users tune a static tile server: sendfile with ``tcp_nopush``
    (headers and file leave in one segment, not two: half the loopback packets), an
    open-file cache when every tile fits in it, no access log, long keep-alive."""
    locations = ['location = /ok { return 200 "ok"; }']
    upstream = ""
    if static_root is not None:
        locations.append(f"location /tiles/ {{ root {static_root}; types {{ image/jpeg jpg; }} }}")
    if iip_ports:
        servers = " ".join(f"server 127.0.0.1:{p};" for p in iip_ports)
        upstream = f"upstream iip {{ {servers} }}"
        locations.append(
            "location /iipsrv { fastcgi_pass iip; "
            "fastcgi_param QUERY_STRING $query_string; "
            "fastcgi_param REQUEST_METHOD $request_method; "
            "fastcgi_param REQUEST_URI $request_uri; "
            "fastcgi_param SERVER_PROTOCOL $server_protocol; }"
        )
    body = "\n        ".join(locations)
    nofile, cached = nginx_file_cache(files)
    cached = cached if tuned else 0
    cache = f"open_file_cache max={cached} inactive=600s;" if cached else "open_file_cache off;"
    nopush = "on" if tuned else "off"
    return f"""worker_processes {WORKERS};
worker_rlimit_nofile {nofile};
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush {nopush};
    tcp_nodelay on;
    keepalive_requests 1000000;
    {cache}
    open_file_cache_valid 600s;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    {upstream}
    server {{
        listen 127.0.0.1:{port};
        {body}
    }}
}}
"""
