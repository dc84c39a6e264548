"""Shared fixtures: real slides from shared/, a private Redis server, generated fixture slides."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fixtures import FixtureSet

REAL_SLIDES = Path(__file__).resolve().parents[2] / "shared" / "real-slides"


@pytest.fixture(scope="session")
def real_slides() -> Path:
    """The real-world slide files kept beside the project in ../shared/real-slides."""
    if not REAL_SLIDES.is_dir():
        pytest.skip("../shared/real-slides not present")
    return REAL_SLIDES


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureSet]:
    """Every generated fixture set, written once per session."""
    import fixtures

    sets: dict[str, FixtureSet] = fixtures.generate_all(tmp_path_factory.mktemp("fixtures"))
    return sets


class RedisServer:
    """A private ``redis-server`` on a free port; ``stop``/``start`` simulate an outage."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (same port, empty data) and wait until it answers PING."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [self.binary, *_flags(port=str(self.port), dir=str(self.workdir))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout)

    def stop(self) -> None:
        """Terminate the server; clients see connection errors until ``start``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_ready(self, timeout: float) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")


def _flags(**extra: str) -> list[str]:
    options = {"bind": "127.0.0.1", "save": "", "appendonly": "no", "daemonize": "no", **extra}
    return [arg for name, value in options.items() for arg in (f"--{name}", value)]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of our own (never the system one on 6379); ``.url`` for clients."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed (.ci/run installs it)")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the session Redis, flushed and running before each test that uses it."""
    import redis

    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url


CHROMIUM = Path("/usr/bin/chromium")
# As root with no network: no sandbox, and none of Chromium's background connections.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium under Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread
    while it is open, which would break later tests that start their own loop."""
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: .ci/run installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def load_target(
    tmp_path_factory: pytest.TempPathFactory, fixture_dir: dict[str, FixtureSet]
) -> Iterator[str]:
    """URL of a real server on the jpeg_bot and sparse cases, for the load generators."""
    from serverproc import serving_cases

    workdir = tmp_path_factory.mktemp("load-target")
    with serving_cases(fixture_dir, ("jpeg_bot", "sparse"), workdir) as process:
        yield process.url
