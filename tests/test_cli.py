"""The ``tileserver`` command as a user meets it: run as a real process wherever the
process matters (exit status, what reaches a terminal, sockets)."""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import pty
import select
import socket
import struct
import subprocess
import sys
import termios
from pathlib import Path

import httpx
import pytest
from serverproc import ServerProcess, free_port

import fixtures
from fixtures import FixtureSet
from tileserver.cli import SERVE_FLAGS, build_parser

TILESERVER = [sys.executable, "-m", "tileserver.cli"]
COMMANDS = ("serve", "index", "validate", "demo", "fixtures", "loadtest")


def tileserver(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TILESERVER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FixtureSet]:
    """Two small fixture slides under one root: a single file set and a split one."""
    root = tmp_path_factory.mktemp("cli-slides")
    return {name: fixtures.CASES[name](root / name) for name in ("jpeg_bot", "split_level")}


@pytest.fixture(scope="module")
def root(cases: dict[str, FixtureSet]) -> Path:
    return cases["jpeg_bot"].directory.parent


# -- options in any order -------------------------------------------------------------


def test_options_are_accepted_before_between_and_after_paths(
    root: Path, cases: dict[str, FixtureSet], tmp_path: Path
) -> None:
    one, two = (str(c.directory) for c in cases.values())
    first = tileserver("validate", "--json", one, two)
    mixed = tileserver("validate", one, "--no-progress", two, "--json")
    assert first.returncode == mixed.returncode == 0, mixed.stderr
    assert json.loads(first.stdout) == json.loads(mixed.stdout)
    catalog = str(tmp_path / "catalog.sqlite")
    before = tileserver("index", "--json", "--catalog", catalog, str(root))
    after = tileserver("index", str(root), "--catalog", catalog, "--json")
    assert before.returncode == after.returncode == 0, after.stderr
    ids = [{s["id"] for s in json.loads(r.stdout)["slides"]} for r in (before, after)]
    assert ids[0] == ids[1] == {c.series_uid for c in cases.values()}


def test_loadtest_takes_options_before_the_url(root: Path, tmp_path: Path) -> None:
    server = ServerProcess([root], tmp_path).start()
    try:
        out = tmp_path / "result.json"
        args = ["--requests", "5", "--no-progress", "--out", str(out), server.url]
        done = tileserver("loadtest", "--pattern", "random", *args)
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["requests"] == 5


# -- --help everywhere, --version -----------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    done = tileserver(command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: tileserver {command}")
    assert done.stderr == ""


def test_version_is_the_installed_distribution() -> None:
    done = tileserver("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"tileserver {importlib.metadata.version('tileserver')}"


# -- one-line reasons and exit statuses -----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("validate", "/nonexistent"),
        ("index", "/nonexistent", "--catalog", "/tmp/unused.sqlite"),
        ("serve", "--slides", "/nonexistent"),
        ("serve", "--port", "70000"),
        ("serve", "--workers", "0"),
        ("fixtures", "/tmp/unused", "--case", "no_such_case"),
        ("frobnicate",),
    ],
    ids=["validate", "index", "serve-slides", "port", "workers", "fixtures-case", "command"],
)
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...]) -> None:
    done = tileserver(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "error" in lines[0], done.stderr
    if "/nonexistent" in args:
        assert "/nonexistent: no such" in lines[0]


def test_validate_without_slides_exits_1_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a slide")
    done = tileserver("validate", str(tmp_path))
    assert done.returncode == 1
    assert "no slide in" in done.stderr and "1 files skipped" in done.stderr


def test_a_busy_port_is_one_line_and_prints_no_url(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = tileserver("serve", "--port", str(port), "--catalog", str(tmp_path / "c.sqlite"))
    assert done.returncode == 1
    assert "http://" not in done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"tileserver serve: error: 127.0.0.1:{port}: cannot listen: Address already in use"
    )


def test_the_url_is_printed_once_the_port_is_bound(root: Path, tmp_path: Path) -> None:
    port = free_port()
    argv = [*TILESERVER, "serve", "--slides", str(root), "--port", str(port)]
    argv += ["--catalog", str(tmp_path / "c.sqlite"), "--log-level", "warning"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        # Printed only after the bind: a connection made right now is accepted.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert line == f"tileserver: viewer at http://127.0.0.1:{port}/\n"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert err == "", err  # --log-level warning: nothing else on a clean start


# -- slides named by name, path and UID -----------------------------------------------


def test_validate_names_slides_by_name_path_and_uid(cases: dict[str, FixtureSet]) -> None:
    split = cases["split_level"]
    report = json.loads(tileserver("validate", str(split.directory), "--json").stdout)
    (slide,) = report["slides"]
    assert (slide["name"], slide["path"], slide["id"]) == (
        "split_level",
        str(split.directory),
        split.series_uid,
    )
    text = tileserver("validate", str(split.directory)).stdout
    assert f"slide split_level: {split.directory}\n  id {split.series_uid}\n" in text


def test_index_names_slides_by_name_path_and_uid(
    root: Path, cases: dict[str, FixtureSet], tmp_path: Path
) -> None:
    done = tileserver("index", str(root), "--catalog", str(tmp_path / "c.sqlite"))
    assert done.returncode == 0, done.stderr
    for name, case in cases.items():
        assert f"  {name}: " in done.stdout
        line = next(li for li in done.stdout.splitlines() if li.startswith(f"  {name}: "))
        assert f"path {name}" in line and f"id {case.series_uid}" in line
    report = json.loads(
        tileserver("index", str(root), "--catalog", str(tmp_path / "c.sqlite"), "--json").stdout
    )
    assert {(s["name"], s["path"]) for s in report["slides"]} == {(n, n) for n in cases}


# -- progress bars: on a terminal only ------------------------------------------------


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (80 columns, as a real one has); stderr text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=slave)
    output = b""
    try:
        while process.poll() is None or select.select([master], [], [], 0)[0]:
            if select.select([master], [], [], 0.1)[0]:
                output += os.read(master, 65536)
    finally:
        os.close(slave)
        os.close(master)
    return process.wait(), output.decode(errors="replace")


@pytest.mark.parametrize("command", ["validate", "index"])
def test_long_work_shows_a_bar_on_a_terminal_only(command: str, root: Path, tmp_path: Path) -> None:
    def run(*extra: str) -> tuple[int, str]:
        catalog = tmp_path / f"c{len(extra)}{extra[:1]}.sqlite"
        args = [*TILESERVER, command, str(root), *extra]
        return _on_a_terminal([*args, "--catalog", str(catalog)] if command == "index" else args)

    status, bar = run()
    assert status == 0
    files = sum(1 for p in root.rglob("*") if p.is_file())
    label = "validating" if command == "validate" else "indexing"
    assert bar.startswith(f"\r{label}:   0%|") and f" 0/{files} [" in bar  # the total is known
    assert bar.endswith("\r")  # and the bar is wiped once done
    for quiet in ("--no-progress", "--json"):
        assert run(quiet) == (0, "")
    piped = tileserver(
        command,
        str(root),
        *(["--catalog", str(tmp_path / "p.sqlite")] if command == "index" else []),
    )
    assert piped.returncode == 0 and piped.stderr == ""


# -- help written for users -----------------------------------------------------------


def test_help_describes_the_commands_for_users() -> None:
    text = tileserver("--help").stdout
    assert "argv" not in text and "library calls" not in text
    for command in COMMANDS:
        assert f"\n    {command} " in text  # listed with a summary
    assert "examples:" in text


def test_every_serve_flag_explains_itself_and_names_its_variable() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    helps = {a.option_strings[0]: a.help or "" for a in serve._actions if a.option_strings}
    for flag, _, _ in SERVE_FLAGS:
        variable = "TILESERVER_" + flag[2:].replace("-", "_").upper()
        assert helps[flag].endswith(f"[{variable}]") and len(helps[flag]) > len(variable) + 12


def test_help_needs_no_heavy_imports() -> None:
    """``tileserver --help`` (and so every command's start) loads no numpy, pydicom or
    fixtures: the parser is built from the standard library alone."""
    code = "import json, sys; from tileserver.cli import build_parser; build_parser(); "
    code += "print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules = set(json.loads(done.stdout))
    assert not modules & {"numpy", "pydicom", "PIL", "fixtures", "tqdm", "uvicorn"}
