"""Run ``tileserver serve`` as a real process on a free port, for HTTP tests over a socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from fixtures import FixtureSet


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``tileserver serve`` in a subprocess; ``url`` once ``/readyz`` answers 200."""

    def __init__(
        self,
        slides: Sequence[Path],
        workdir: Path,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"server-{self.port}.log"
        args = [
            sys.executable,
            "-m",
            "tileserver.cli",
            "serve",
            "--port",
            str(self.port),
            "--catalog",
            str(workdir / "catalog.sqlite"),
            "--log-level",
            "warning",
        ]
        for directory in slides:
            args += ["--slides", str(directory)]
        self.args = [*args, *extra_args]
        self.env = {**os.environ, "TILESERVER_RESCAN_INTERVAL": "1", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def eventually(check: Callable[[], bool], timeout: float = 15.0, interval: float = 0.2) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes (for rescans, reconnects)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


@contextmanager
def serving_cases(
    fixture_dir: Mapping[str, FixtureSet],
    cases: Sequence[str],
    workdir: Path,
    **options: Any,
) -> Iterator[ServerProcess]:
    """A server over copies of some fixture cases (one subdirectory each) in ``workdir``."""
    root = workdir / "slides"
    for case in cases:
        shutil.copytree(fixture_dir[case].directory, root / case)
    process = ServerProcess([root], workdir, **options).start()
    try:
        yield process
    finally:
        process.stop()
