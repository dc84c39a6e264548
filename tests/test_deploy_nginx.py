"""deploy/nginx.conf: ``nginx -t`` on the file as shipped (its upstream host swapped for a
local address: compose's DNS name does not resolve here), then real nginx with that config,
its TLS block uncommented, in front of a real tileserver and a dead replica: every probe
path of the manifests answers, a dead replica is skipped, X-Forwarded-* reach the server."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from deployfiles import NGINX_CONF, compose, dockerfile_commands, pod_spec
from serverproc import ServerProcess, free_port, serving_cases, stop_process

from fixtures import FixtureSet

UPSTREAM = re.compile(r"server tileserver:8000([^;]*);")
PREFIX = "/wsi"  # the public prefix the test sets, to see it come back in IIIF ids


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert found is not None, "Debian's nginx-light (.ci/run installs it)"
    return found


def private_paths(text: str, workdir: Path) -> str:
    """Temporary files in ``workdir``, so the check needs no root and leaves nothing behind."""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    lines = "".join(f"    {k}_temp_path {workdir / k};\n" for k in kinds)
    return text.replace("http {\n", f"http {{\n{lines}", 1)


def nginx(workdir: Path, conf: Path, *extra: str) -> list[str]:
    pid = f"pid {workdir / 'nginx.pid'};"
    return [nginx_binary(), "-p", f"{workdir}/", "-c", str(conf), "-e", str(workdir / "error.log"),
            "-g", " ".join((*extra, pid))]  # fmt: skip


def nginx_t(workdir: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``text`` with the upstream host made local."""
    conf = workdir / "nginx.conf"
    conf.write_text(private_paths(UPSTREAM.sub(r"server 127.0.0.1:8000\1;", text), workdir))
    argv = [*nginx(workdir, conf), "-t"]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_shipped_config_passes_nginx_t(tmp_path: Path) -> None:
    text = NGINX_CONF.read_text()
    assert len(UPSTREAM.findall(text)) == 1
    done = nginx_t(tmp_path, text)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_nginx_t_refuses_a_broken_config(tmp_path: Path) -> None:
    done = nginx_t(tmp_path, NGINX_CONF.read_text().replace("keepalive 64;", "keepalive;"))
    assert done.returncode != 0


def uncomment_tls(text: str, port: int, cert: Path, key: Path) -> str:
    """The commented TLS server, made live on ``port`` with a throwaway certificate."""
    lines = text.splitlines()
    start = lines.index("    # server {")
    end = lines.index("    # }", start)
    block = [line.replace("# ", "", 1) for line in lines[start : end + 1]]
    live = "\n".join(block).replace("listen 8443 ", f"listen 127.0.0.1:{port} ")
    live = live.replace("/etc/nginx/tls/fullchain.pem", str(cert))
    live = live.replace("/etc/nginx/tls/privkey.pem", str(key))
    return "\n".join([*lines[:start], live, *lines[end + 1 :]]) + "\n"


def self_signed(workdir: Path) -> tuple[Path, Path]:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]  # fmt: skip
    subprocess.run(argv, capture_output=True, check=True)
    return cert, key


class Balancer:
    """nginx with deploy/nginx.conf in front of ``upstreams``, plain and TLS, on loopback."""

    def __init__(self, workdir: Path, upstreams: list[str]) -> None:
        self.port, self.tls_port = free_port(), free_port()
        servers = "\n".join(f"server {u}\\1;" for u in upstreams)
        text = UPSTREAM.sub(servers, NGINX_CONF.read_text())
        text = text.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        text = text.replace('default "";', f'default "{PREFIX}";')
        text = uncomment_tls(text, self.tls_port, *self_signed(workdir))
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(private_paths(text, workdir))
        self.log = workdir / "nginx.out"
        with self.log.open("wb") as out:
            argv = nginx(workdir, self.conf, "daemon off;")
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls_url = f"https://127.0.0.1:{self.tls_port}"

    def wait(self, timeout: float = 20.0) -> Balancer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                httpx.get(f"{self.url}/healthz", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx not answering: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[ServerProcess]:
    with serving_cases(fixture_dir, ["jpeg_bot"], tmp_path_factory.mktemp("replica")) as server:
        yield server


@pytest.fixture(scope="module")
def dead_replica() -> Iterator[str]:
    """A bound, not listening, port: connections to it are refused, and no one takes it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def balancer(
    tmp_path_factory: pytest.TempPathFactory, backend: ServerProcess, dead_replica: str
) -> Iterator[Balancer]:
    started = Balancer(
        tmp_path_factory.mktemp("nginx"), [dead_replica, f"127.0.0.1:{backend.port}"]
    )
    try:
        yield started.wait()
    finally:
        started.stop()


def probe_paths() -> dict[str, str]:
    """Every health path the deploy files point an orchestrator at."""
    container = pod_spec()["containers"][0]
    nginx_check = compose()["services"]["nginx"]["healthcheck"]["test"][-1]
    (image_check,) = [" ".join(c.value) for c in dockerfile_commands() if c.cmd == "HEALTHCHECK"]
    return {
        "k8s liveness": container["livenessProbe"]["httpGet"]["path"],
        "k8s readiness": container["readinessProbe"]["httpGet"]["path"],
        "compose nginx": "/" + nginx_check.split("/", 3)[3],
        "image": re.findall(r"(/\w+)'", image_check)[-1],
    }


@pytest.mark.parametrize("where", ["k8s liveness", "k8s readiness", "compose nginx", "image"])
def test_probe_path_answers_through_the_balancer(balancer: Balancer, where: str) -> None:
    path = probe_paths()[where]
    assert path in ("/healthz", "/readyz")
    answer = httpx.get(f"{balancer.url}{path}")
    assert answer.status_code == 200
    assert answer.json()["status"] in ("ok", "ready")


def test_a_dead_replica_is_skipped(balancer: Balancer) -> None:
    statuses = [httpx.get(f"{balancer.url}/slides").status_code for _ in range(12)]
    assert statuses == [200] * 12
    assert "connect() failed" in balancer.log.read_text()  # nginx did try the dead one


def test_forwarded_headers_reach_the_server(
    balancer: Balancer, fixture_dir: dict[str, FixtureSet]
) -> None:
    slide = fixture_dir["jpeg_bot"].series_uid
    for base in (balancer.url, balancer.tls_url):
        info = httpx.get(f"{base}/iiif/3/{slide}/info.json", verify=False)
        assert info.status_code == 200
        assert info.json()["id"] == f"{base}{PREFIX}/iiif/3/{slide}"
