"""JSON lines to a file or stdout, thread-safe: the access and audit logs' writer."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any


class JsonLines:
    def __init__(self, target: str) -> None:
        """``target``: a file to append to, or ``-`` for stdout."""
        self._stream: IO[str] = sys.stdout if target == "-" else open(target, "a")  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, fields: dict[str, Any]) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        line = json.dumps({"time": stamp, **fields}, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
