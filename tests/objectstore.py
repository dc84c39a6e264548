"""A local S3 server (moto in server mode) on a free loopback port, for object-storage tests.

``S3Server.env`` holds the standard ``AWS_*`` variables a client (obstore in tileserver, or
a server process) needs to reach it; ``upload`` copies a local tree under a prefix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from serverproc import free_port


class S3Server:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"moto-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self) -> S3Server:
        moto = Path(sys.executable).parent / "moto_server"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=1)
                return self
            except urllib.error.HTTPError:
                return self  # answering
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        urllib.request.urlopen(request, timeout=10)

    def store(self, bucket: str) -> object:
        from obstore.store import S3Store

        config = {
            "endpoint": self.url,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "region": "us-east-1",
        }
        return S3Store(bucket, config=config, client_options={"allow_http": True})

    def upload(self, bucket: str, tree: Path, prefix: str) -> list[str]:
        """Every file under ``tree`` as ``s3://bucket/prefix/<relative path>``."""
        import obstore

        store, uris = self.store(bucket), []
        for path in sorted(p for p in tree.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(tree).as_posix()}"
            obstore.put(store, key, path.read_bytes())
            uris.append(f"s3://{bucket}/{key}")
        return uris


def use_env(env: dict[str, str]) -> dict[str, str | None]:
    """Set ``env`` in this process; the previous values, for ``restore_env``."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
