"""Hostile input over raw sockets: every probe of ``hostile_requests.txt`` on uvicorn and granian.

Each probe is sent byte for byte (no client library normalises it) and must get the class of
answer its line names: a 4xx with a JSON reason for bad input, never a 5xx, a traceback or a
hang. The file's head explains its format; a new probe is one line. Also here: the server
timeouts (half-sent request lines, headers and bodies are closed within the configured time).
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serverproc import ServerProcess

import fixtures
from fixtures import FixtureSet

PROBES = Path(__file__).with_name("hostile_requests.txt")
ANSWER_WITHIN = 30.0  # seconds a probe may take before it counts as a hang
TIMEOUT = 2  # --header-timeout and --body-timeout of the servers under test
SERVERS = ("uvicorn", "granian")


@dataclass(frozen=True)
class Probe:
    line: int
    expect: str
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: str | None

    def __str__(self) -> str:
        return f"line {self.line}: {self.method} {self.target[:60]}"


def load_probes(path: Path = PROBES) -> list[Probe]:
    probes = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip() or text.startswith("#"):
            continue
        first, *fields = text.split(" | ")
        expect, method, *target = first.split(" ", 2)
        headers, body = [], None
        for item in fields:
            name, _, value = item.partition(":")
            if name == "body":
                body = value[1:] if value.startswith(" ") else value
            else:
                headers.append((name.strip(), value.strip()))
        probes.append(Probe(number, expect, method, "".join(target), tuple(headers), body))
    return probes


_REPEAT = re.compile(r"\{([^{}]+?)\*(\d+)\}")
_NAME = re.compile(r"\{(\w+)\}")


def expand(text: str, names: dict[str, str]) -> bytes:
    """Placeholders and repetitions, then backslash escapes, as the bytes to send."""
    text = _REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), text)
    text = _NAME.sub(lambda m: names.get(m.group(1), m.group(0)), text)
    return codecs.escape_decode(text.encode("latin-1"))[0]  # type: ignore[no-any-return]


def wire(probe: Probe, names: dict[str, str]) -> bytes:
    """The request as bytes: what the line says, plus Host, Connection: close and a length."""
    lines = [expand(f"{probe.method} {probe.target} HTTP/1.1", names), b"Host: 127.0.0.1"]
    lines += [expand(f"{k}: {v}", names) for k, v in probe.headers]
    lines.append(b"Connection: close")
    body = expand(probe.body, names) if probe.body is not None else b""
    framed = {k.lower() for k, _ in probe.headers} & {"content-length", "transfer-encoding"}
    if probe.body is not None and not framed:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(port: int, data: bytes, timeout: float = ANSWER_WITHIN) -> Answer | None:
    """Send ``data`` and read until the server closes; None when it closes without a word."""
    deadline = time.monotonic() + timeout
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # Refused before the end of the request: read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"no answer within {timeout} s") from None
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError(f"no answer within {timeout} s")
    return parse_answer(received) if received else None


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def check(probe: Probe, answer: Answer | None, server: str) -> None:
    """The answer the probe's line asks for (raises AssertionError saying what differs)."""
    assert answer is not None, f"{probe}: connection closed without an answer"
    status, body = answer.status, answer.body
    assert status < 500, f"{probe}: {status} {body[:300]!r}"
    assert b"Traceback" not in body, f"{probe}: a traceback in the body"
    wanted = {"4xx": 4, "4xx-html": 4, "raw": 4, "2xx": 2, "3xx": 3}.get(probe.expect)
    assert wanted in (None, status // 100), f"{probe}: {status} {body[:300]!r}"
    wanted = wanted or status // 100
    if probe.method == "HEAD" or wanted != 4:
        return
    kind = answer.headers.get("content-type", "")
    if probe.expect == "4xx-html":
        assert kind.startswith("text/html"), f"{probe}: {kind}"
    elif probe.expect == "raw" and server == "granian" and not body:
        pass  # hyper refuses what is not HTTP itself, with an empty body
    else:
        assert "json" in kind, f"{probe}: {status} {kind} {body[:200]!r}"
        assert "error" in json.loads(body) or "00081198" in json.loads(body), f"{probe}"


# -- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slide_set(tmp_path_factory: pytest.TempPathFactory) -> FixtureSet:
    (fs,) = fixtures.generate_all(tmp_path_factory.mktemp("hostile-slides"), ["jpeg_bot"]).values()
    return fs


@pytest.fixture(scope="module")
def names(slide_set: FixtureSet) -> dict[str, str]:
    inst = slide_set.level(0).instances[0]
    other = slide_set.levels[-1].instances[0]
    return {
        "slide": slide_set.series_uid,
        "study": slide_set.study_uid,
        "series": slide_set.series_uid,
        "sop": inst.sop_instance_uid,
        "other_sop": "1.2.3.4.5.6.7.8.9" if other is inst else "1.2.3.4.5",
    }


@pytest.fixture(scope="module", params=SERVERS)
def server(
    request: pytest.FixtureRequest, slide_set: FixtureSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp(f"hostile-{request.param}")
    flags = ["--server", request.param, "--stow-dir", str(work / "stow")]
    flags += ["--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT)]
    flags += ["--max-upload-bytes", "1000000", "--max-part-bytes", "500000"]
    env = {"TILESERVER_RESCAN_INTERVAL": "0"}
    process = ServerProcess([slide_set.directory], work, extra_args=flags, env=env).start()
    try:
        yield process
    finally:
        process.stop()


def server_name(process: ServerProcess) -> str:
    return process.args[process.args.index("--server") + 1]


# -- the corpus ---------------------------------------------------------------------------


def test_the_corpus_parses() -> None:
    probes = load_probes()
    assert len(probes) > 200
    assert {p.expect for p in probes} <= {"4xx", "4xx-html", "raw", "2xx", "3xx", "any"}
    assert all(p.method for p in probes)


@pytest.mark.parametrize("probe", load_probes(), ids=lambda p: f"line{p.line}")
def test_probe(server: ServerProcess, names: dict[str, str], probe: Probe) -> None:
    check(probe, exchange(server.port, wire(probe, names)), server_name(server))
    assert server.process is not None and server.process.poll() is None, "the server died"


# -- timeouts: what a slow or silent client gets ------------------------------------------------

#: Long enough for any server to act on a TIMEOUT-second deadline; a hang never ends.
CLOSED_WITHIN = 10 * TIMEOUT


def closed_after(port: int, data: bytes, trickle: bytes = b"") -> Answer | None:
    """Send ``data`` (then ``trickle`` a byte every 0.2 s) and wait for the server to close."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSED_WITHIN) as sock:
        sock.sendall(data)
        for byte in trickle:
            time.sleep(0.2)
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
        received = b""
        while chunk := read_some(sock):
            received += chunk
    return parse_answer(received) if received else None


def read_some(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        raise AssertionError(f"the connection is still open after {CLOSED_WITHIN} s") from None


HALF_SENT = {
    "request-line": b"GET /slid",
    "headers": b"GET /slides HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: appl",
}


@pytest.mark.parametrize("half", HALF_SENT)
def test_a_half_sent_request_is_closed(server: ServerProcess, half: str) -> None:
    answer = closed_after(server.port, HALF_SENT[half])
    if answer is not None:  # uvicorn says why; granian (hyper) closes without a word
        assert answer.status == 408 and "error" in json.loads(answer.body)
    else:
        assert server_name(server) == "granian"


def test_headers_trickled_past_the_deadline_are_closed(server: ServerProcess) -> None:
    """The deadline covers the whole header block, not each read: a byte every 0.2 s for
    longer than the timeout does not keep the connection."""
    trickle = b"X-Slow: " + b"a" * int(TIMEOUT / 0.2 * 3)
    answer = closed_after(server.port, b"GET /slides HTTP/1.1\r\nHost: x\r\n", trickle)
    assert answer is None or answer.status == 408


# Not on granian: hyper starts its header timer at a connection's first byte, so there a
# connection that never sends one stays open (a limitation of granian; see the README).
@pytest.mark.parametrize("server", ["uvicorn"], indirect=True)
def test_a_silent_connection_is_closed(server: ServerProcess) -> None:
    assert closed_after(server.port, b"") is None


def test_an_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answer = closed_after(server.port, request)
    assert answer is not None and answer.status == 200


def test_a_half_sent_stow_body_is_408_and_leaves_nothing(
    server: ServerProcess, tmp_path: Path
) -> None:
    stow = Path(server.args[server.args.index("--stow-dir") + 1])
    head = (
        "POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
        'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n\r\n'
    )
    part = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 128 + b"DICM" + b"x" * 5000
    answer = closed_after(server.port, head.encode() + part)
    assert answer is not None and answer.status == 408
    assert "--body-timeout" in json.loads(answer.body)["error"]
    assert list((stow / ".incoming").iterdir()) == []
    assert [p.name for p in stow.iterdir()] == [".incoming"]


def test_a_half_sent_body_is_closed(server: ServerProcess, names: dict[str, str]) -> None:
    """Any route reading a body (here the tile batch) gives up on a silent client."""
    head = (
        f"POST /slides/{names['slide']}/tiles:batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    answer = closed_after(server.port, head.encode() + b'{"tiles": [[0, 0')
    assert answer is not None and answer.status == 408
    assert "error" in json.loads(answer.body)
