"""multipart/related (RFC 2387) for DICOMweb: a streaming writer and an incremental parser.

The writer emits framing bytes around parts the caller streams; the parser is a push
parser (``feed`` chunks, get events) so a request body of any size passes through a
bounded buffer, each part's bytes handed on as they arrive. Malformed framing does not
raise from ``feed``: the events before it are returned and the parser keeps the error in
``error``, so a complete part that shares a chunk with a malformed one is not lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from tileserver.errors import InvalidRequestError

#: A part's header block larger than this is rejected.
MAX_HEADER_BYTES = 16 * 1024
#: Bytes before the first boundary: more means the body is not multipart at all (so a
#: large body without framing is refused early instead of read to its end).
MAX_PREAMBLE_BYTES = 64 * 1024


class MultipartError(InvalidRequestError):
    """A request body that is not well-formed multipart."""


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(boundary: str, part_type: str, **params: str) -> str:
    """The ``Content-Type`` of a multipart/related message."""
    extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
    return f'multipart/related; type="{part_type}"{extra}; boundary={boundary}'


def part_header(boundary: str, part_type: str, headers: dict[str, str] | None = None) -> bytes:
    """Bytes that open one part; follow the part's bytes with ``PART_END``."""
    lines = [f"--{boundary}", f"Content-Type: {part_type}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


PART_END = b"\r\n"


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def boundary_of(content_type_value: str) -> tuple[str, dict[str, str]]:
    """(media type, parameters) of a Content-Type value (``boundary`` among the parameters)."""
    media_type, *raw = [p.strip() for p in content_type_value.split(";")]
    params = {}
    for item in raw:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return media_type.lower(), params


@dataclass(frozen=True)
class PartEvent:
    """``start`` (with the part's headers), ``data`` (some of its bytes) or ``end``."""

    kind: Literal["start", "data", "end"]
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""


_PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE, _FAILED = range(6)


class MultipartParser:
    """Incremental parser: ``feed`` body chunks; check ``error`` after each, ``complete`` at
    the end of the body."""

    def __init__(self, boundary: str) -> None:
        if not boundary or len(boundary) > 70:
            raise MultipartError("multipart boundary missing or longer than 70 characters")
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._buffer = bytearray(b"\r\n")  # so a body that opens with the boundary matches
        self._state = _PREAMBLE
        self._skipped = 0  # preamble bytes dropped so far
        self.parts = 0
        #: Why the body is malformed; set once, after which ``feed`` returns no events.
        self.error: MultipartError | None = None

    @property
    def complete(self) -> bool:
        """The closing delimiter was seen."""
        return self._state == _DONE

    @property
    def in_part(self) -> bool:
        return self._state in (_HEADERS, _BODY)

    def feed(self, chunk: bytes) -> list[PartEvent]:
        """The events ``chunk`` completes; those before malformed framing, then ``error``."""
        if self._state == _FAILED:
            return []
        self._buffer += chunk
        events: list[PartEvent] = []
        try:
            while self._step(events):
                pass
        except MultipartError as exc:
            self.error, self._state = exc, _FAILED
            self._buffer.clear()
        return events

    def _step(self, events: list[PartEvent]) -> bool:
        """Advance one state; False when more input is needed."""
        if self._state == _PREAMBLE:
            return self._skip_to_delimiter()
        if self._state == _AFTER_DELIMITER:
            return self._after_delimiter()
        if self._state == _HEADERS:
            return self._headers(events)
        if self._state == _BODY:
            return self._body(events)
        self._buffer.clear()  # epilogue (or, after an error, the rest of the body)
        return False

    def _skip_to_delimiter(self) -> bool:
        index = self._buffer.find(self._delimiter)
        if index < 0:
            drop = max(0, len(self._buffer) - len(self._delimiter) + 1)
            self._skipped += drop
            del self._buffer[:drop]
            if self._skipped > MAX_PREAMBLE_BYTES:
                raise MultipartError(f"no multipart boundary in the first {self._skipped} bytes")
            return False
        del self._buffer[: index + len(self._delimiter)]
        self._state = _AFTER_DELIMITER
        return True

    def _after_delimiter(self) -> bool:
        if len(self._buffer) < 2:
            return False
        if self._buffer.startswith(b"--"):
            self._state = _DONE
            return True
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > 1024:
                raise MultipartError("no line break after a multipart boundary")
            return False
        if self._buffer[:end].strip(b" \t"):
            raise MultipartError("unexpected bytes after a multipart boundary")
        del self._buffer[: end + 2]
        self._state = _HEADERS
        return True

    def _headers(self, events: list[PartEvent]) -> bool:
        if self._buffer.startswith(b"\r\n"):
            end, skip = 0, 2
        else:
            end, skip = self._buffer.find(b"\r\n\r\n"), 4
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    raise MultipartError("multipart part headers too long")
                return False
        headers = {}
        for line in bytes(self._buffer[:end]).decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise MultipartError(f"malformed part header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        del self._buffer[: end + skip]
        self.parts += 1
        events.append(PartEvent("start", headers))
        self._state = _BODY
        return True

    def _body(self, events: list[PartEvent]) -> bool:
        index = self._buffer.find(self._delimiter)
        if index < 0:
            safe = len(self._buffer) - len(self._delimiter) + 1
            if safe > 0:
                events.append(PartEvent("data", data=bytes(self._buffer[:safe])))
                del self._buffer[:safe]
            return False
        if index:
            events.append(PartEvent("data", data=bytes(self._buffer[:index])))
        events.append(PartEvent("end"))
        del self._buffer[: index + len(self._delimiter)]
        self._state = _AFTER_DELIMITER
        return True
