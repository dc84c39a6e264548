"""In-process LRU cache bounded by total bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import NamedTuple


class _Entry(NamedTuple):
    value: bytes
    size: int
    expires: float | None  # time.monotonic() deadline


class MemoryCache:
    """LRU over ``key -> bytes``, at most ``max_bytes`` of keys and values.

    Values larger than ``max_bytes // 8`` are not stored, so one huge image cannot
    flush the working set. Safe to share between threads and tasks: every operation
    is short and synchronous under one lock, never awaiting while holding it.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.max_item_bytes = max_bytes // 8
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._oversized = 0

    async def get(self, key: str) -> bytes | None:
        return self.get_sync(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.set_sync(key, value, ttl)

    async def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [key for key in self._entries if key.startswith(prefix)]
            for key in doomed:
                self._remove(key)
        return len(doomed)

    async def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    async def close(self) -> None:
        await self.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "errors": 0,
                "bytes": self._bytes,
                "items": len(self._entries),
                "evictions": self._evictions,
                "oversized": self._oversized,
            }

    def get_sync(self, key: str) -> bytes | None:
        """``get`` for callers in worker threads."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires is not None and entry.expires <= _now():
                self._remove(key)
                entry = None
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry.value

    def set_sync(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """``set`` for callers in worker threads."""
        size = len(key) + len(value)
        expires = None if ttl is None else _now() + ttl
        with self._lock:
            # A new value replaces the old one even when it is not stored itself.
            self._remove(key)
            if size > self.max_item_bytes or (ttl is not None and ttl <= 0):
                self._oversized += size > self.max_item_bytes
                return
            self._entries[key] = _Entry(bytes(value), size, expires)
            self._bytes += size
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)
                self._evictions += 1

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size


def _now() -> float:
    return time.monotonic()
