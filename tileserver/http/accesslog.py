"""The optional access log (``--access-log PATH``, ``-`` for stdout): one JSON object per
request and line, written by the server fronts so that tiles answered by the stored-tile
chain are logged like the app's responses.

Fields: ``time`` (ISO 8601, UTC), ``method``, ``path``, ``query``, ``status``, ``bytes`` (body),
``ms`` (from the request to the last body byte handed to the server), ``client``,
``principal`` (who the access check said made it), ``via`` (``chain`` or ``app``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO


class AccessLog:
    def __init__(self, target: str) -> None:
        self._stream: IO[str] = sys.stdout if target == "-" else open(target, "a")  # noqa: SIM115
        self._lock = threading.Lock()

    def record(
        self,
        method: str,
        path: str,
        query: str,
        status: int,
        size: int,
        started: float,
        client: str,
        principal: str,
        via: str,
    ) -> None:
        line = json.dumps(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "method": method,
                "path": path,
                "query": query,
                "status": status,
                "bytes": size,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "client": client,
                "principal": principal,
                "via": via,
            },
            separators=(",", ":"),
        )
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
