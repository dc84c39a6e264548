"""The shared topology on loopback, every part started here: N ``tileserver serve``
processes over one PostgreSQL catalog, one Redis cache and one S3 bucket (moto), behind
nginx as the load balancer. ``tests/test_topology.py`` uses it.

nginx is configured here, not from deploy/nginx.conf: its process, ports and temp files
must be the test's own. The proxy settings are those a deployment needs for the claim the
test makes (a replica killed mid-run costs no request), see ``nginx_conf``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from objectstore import S3Server
from pgserver import running_cluster
from serverproc import ServerProcess, free_port, stop_process

#: nginx's temporary directories, each moved under the test's own prefix.
_TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_conf(prefix: Path, port: int, upstreams: Sequence[int]) -> str:
    """A load balancer on ``port`` over the loopback ``upstreams``.

    A replica that refuses a connection, drops one mid-request (``error``), times out, or
    answers 502/503 is skipped and the request sent to the next, up to every replica:
    nginx does this only for idempotent methods, so a STOW POST is never sent twice.
    The connect timeout is short because a dead replica on loopback refuses at once; a
    slow one is a busy one. Kept-alive upstream connections need HTTP/1.1 and an empty
    Connection header."""
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstreams
    )
    temps = "\n".join(f"    {k}_temp_path {prefix / k};" for k in _TEMP_KINDS)
    return f"""worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temps}
    upstream tileservers {{
{servers}
        keepalive 32;
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_next_upstream error timeout http_502 http_503;
    proxy_next_upstream_tries {len(upstreams)};
    proxy_next_upstream_timeout 10s;
    proxy_connect_timeout 1s;
    proxy_read_timeout 30s;
    client_max_body_size 1g;
    proxy_request_buffering off;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://tileservers; }}
    }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert found is not None, "Debian's nginx-light is missing (.ci/run installs it)"
    return found


class Nginx:
    """nginx in the foreground (``daemon off``), a child of the test, under ``prefix``."""

    def __init__(self, prefix: Path, upstreams: Sequence[int]) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.error_log = prefix / "error.log"
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(nginx_conf(prefix, self.port, upstreams))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Nginx:
        # -e: nginx opens its error log before reading the config; keep that one ours too.
        argv = [nginx_binary(), "-p", f"{self.prefix}/", "-c", str(self.conf),
                "-e", str(self.error_log), "-g", "daemon off;"]  # fmt: skip
        with (self.prefix / "nginx.out").open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log_text()}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx not answering: {self.log_text()}")

    def log_text(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class Topology:
    """What the tests reach: the balancer, the replicas and the shared parts behind them."""

    nginx: Nginx
    servers: list[ServerProcess]
    catalog_url: str
    redis_url: str
    s3: S3Server
    local_root: Path  # the folder every replica serves beside the bucket (STOW lands here)
    bucket_root: str  # s3://BUCKET/PREFIX
    kinds: list[str] = field(default_factory=list)  # "uvicorn" or "granian", per server

    def live(self) -> list[ServerProcess]:
        return [s for s in self.servers if s.process is not None and s.process.poll() is None]


def server_args(shared: dict[str, str], kind: str) -> list[str]:
    """The flags every replica shares, plus its HTTP server."""
    args = [arg for name, value in shared.items() for arg in (f"--{name}", value)]
    return [*args, "--rescan-interval", "1", "--server", kind]


def check_catalog(url: str, folders: int) -> None:
    """The replicas' initial scan reached the PostgreSQL database, not a file of that name
    (which a ``--catalog`` folded into a ``Path`` would make: ``postgresql:/...``)."""
    import psycopg

    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('files') IS NOT NULL").fetchone()
        rows = (
            conn.execute("SELECT count(*) FROM files").fetchone() if exists and exists[0] else None
        )
    if rows is None or rows[0] < folders:
        _remove_folded_catalog(url)
        raise RuntimeError(
            f"the servers did not index into the PostgreSQL catalog {url} (files: {rows}): "
            "is --catalog postgresql://... kept a URL by the CLI and Settings?"
        )


def _remove_folded_catalog(url: str) -> None:
    """The SQLite files a folded URL made in the working directory (ours: by port)."""
    folded = Path(url).parent  # postgresql:/postgres@127.0.0.1:PORT, relative
    shutil.rmtree(folded, ignore_errors=True)
    with contextlib.suppress(OSError):
        folded.parent.rmdir()  # postgresql:, when no other run's files are in it


@contextmanager
def running_topology(
    workdir: Path, redis_url: str, bucket_trees: dict[str, Path], kinds: Sequence[str]
) -> Iterator[Topology]:
    """Everything started, and everything stopped afterwards, also when a start fails.

    ``bucket_trees``: folders uploaded to the bucket, each under its name; ``kinds``: the
    HTTP server of each replica."""
    with ExitStack() as stack:
        s3 = S3Server(workdir).start()
        stack.callback(s3.stop)
        s3.create_bucket("slides")
        for name, tree in bucket_trees.items():
            s3.upload("slides", tree, f"wsi/{name}")
        cluster = stack.enter_context(running_cluster())
        catalog_url = cluster.create_database("topology")
        local = workdir / "local"
        (local / "stow").mkdir(parents=True)
        shared = {
            "slides": "s3://slides/wsi",
            "catalog": catalog_url,
            "redis-url": redis_url,
            "stow-dir": str(local / "stow"),
        }
        servers = [
            ServerProcess([local], workdir, extra_args=server_args(shared, kind), env=s3.env)
            for kind in kinds
        ]
        for server in servers:
            stack.callback(server.stop)
        with ThreadPoolExecutor(len(servers)) as pool:  # started side by side: quicker
            list(pool.map(ServerProcess.start, servers))
        check_catalog(catalog_url, len(bucket_trees))
        nginx_dir = workdir / "nginx"
        nginx_dir.mkdir()
        balancer = Nginx(nginx_dir, [s.port for s in servers])
        stack.callback(balancer.stop)
        balancer.start()
        yield Topology(
            balancer, servers, catalog_url, redis_url, s3, local, shared["slides"], list(kinds)
        )
