"""The optional access log (``--access-log PATH``, ``-`` for stdout): one JSON object per
request and line, written by the server fronts so that tiles answered by the stored-tile
chain are logged like the app's responses.

Fields: ``time`` (ISO 8601, UTC), ``id`` (the request's ``X-Request-Id``, or one made up),
``method``, ``path``, ``query`` (DICOMweb searches keep only the keys: their values may be
patient names), ``status``, ``bytes`` (body), ``ms`` (from the request to the last body byte
handed to the server), ``client``, ``principal`` (who the access check said made it),
``via`` (``chain`` or ``app``).
"""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qsl

from tileserver.jsonlog import JsonLines


def scrubbed(path: str, query: str) -> str:
    """The query as logged: DICOMweb query values dropped (``PatientName=`` stays)."""
    if not query or not path.startswith("/dicomweb"):
        return query
    return "&".join(f"{key}=" for key, _ in parse_qsl(query, keep_blank_values=True))


class AccessLog(JsonLines):
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
        request_id: str | None = None,
    ) -> None:
        self.write(
            {
                "id": request_id or os.urandom(8).hex(),
                "method": method,
                "path": path,
                "query": scrubbed(path, query),
                "status": status,
                "bytes": size,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "client": client,
                "principal": principal,
                "via": via,
            }
        )
