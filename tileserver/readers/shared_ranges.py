"""Object reads shared between processes and hosts through Redis: a tile one server fetched
from object storage is a Redis hit on every other, so a repeated tile costs no GET anywhere.

Sync (the readers run in worker threads), with short timeouts; any Redis error counts as a
miss and stops further attempts for ``BACKOFF`` seconds, so a Redis outage costs reads
nothing but the GETs they would have made anyway. Keys carry the object's URI, ETag and
byte range (hashed), so a rewritten object never returns old bytes; entries expire after a
day. Values are the raw bytes, no pickle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "ts:raw:"
TTL_SECONDS = 24 * 3600
TIMEOUT = 0.25
BACKOFF = 1.0


class SharedRanges:
    def __init__(self, url: str) -> None:
        import redis

        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.hits = self.misses = self.errors = 0

    @staticmethod
    def key(uri: str, tag: str, offset: int, length: int) -> str:
        digest = hashlib.sha256(f"{uri}\n{tag}\n{offset}\n{length}".encode()).hexdigest()
        return PREFIX + digest[:40]

    def get(self, key: str) -> bytes | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            data = self._client.get(key)
        except Exception as exc:
            self._failed(exc)
            return None
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        return bytes(data)

    def put(self, key: str, data: bytes) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            self._client.set(key, data, ex=TTL_SECONDS)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.errors += 1
            if time.monotonic() >= self._down_until:
                log.warning(
                    "Redis unavailable for object reads (%r); retrying in %.0fs", exc, BACKOFF
                )
            self._down_until = time.monotonic() + BACKOFF
