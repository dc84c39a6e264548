"""A private PostgreSQL cluster for tests: Debian's ``initdb`` and ``pg_ctl`` in a temp dir.

Never the machine's own server: the cluster listens on 127.0.0.1 only, on a free port, and
on a Unix socket inside its own directory. ``initdb`` refuses to run as root, so as root
the cluster belongs to the ``postgres`` user (Debian's package creates it) and its tools
run through ``runuser``. ``pg_cluster`` (session) starts one cluster; ``fresh_database``
gives each caller a new empty database on it (``postgresql://`` URL).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import free_port

#: Durability is not under test: the cluster skips fsync and lives in a temp dir.
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
_names = itertools.count()


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian's layout), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


class PgCluster:
    """One ``initdb``-made cluster on a free port; ``start``/``stop`` may be repeated."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        # Not under pytest's temp dirs: those are root's, mode 0700, closed to ``postgres``.
        self.workdir = Path(tempfile.mkdtemp(prefix="tileserver-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "server.log"
        self._user = _cluster_user()
        if self._user is not None:
            os.chown(self.workdir, self._user.pw_uid, self._user.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        options = {
            **_SETTINGS,
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = '{value}'\n" for key, value in options.items())

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop (clients see their connections drop). ``immediate`` may lose the last
        commits (the cluster runs without synchronous commits); ``fast`` keeps them."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = name or f"test_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.workdir)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise subprocess.CalledProcessError(
                result.returncode, command, result.stdout, result.stderr + log
            )


def _cluster_user() -> pwd.struct_passwd | None:
    """Who runs the cluster: ``postgres`` when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root without a postgres user: .ci/run installs postgresql")


@contextlib.contextmanager
def running_cluster() -> Iterator[PgCluster]:
    """A started private cluster, stopped and removed afterwards."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql")
    cluster = PgCluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One private PostgreSQL cluster for the whole session."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def pg_database(pg_cluster: PgCluster) -> str:
    """A fresh database per test module: its ``postgresql://`` URL."""
    return pg_cluster.create_database()
