"""Two tiers: the in-process LRU in front of an optional shared cache."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from tileserver.cache.base import Cache
from tileserver.cache.memory import MemoryCache
from tileserver.errors import CacheUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


class TieredCache:
    """``get`` tries L1 then L2 (promoting L2 hits into L1); ``set`` writes both.

    L2 writes run in the background so a response never waits for Redis, but at most
    ``max_pending`` of them at once: beyond that a write is dropped (and counted),
    which a cache may always do. L2 failures never reach the caller.
    """

    def __init__(self, l1: MemoryCache, l2: Cache | None = None, *, max_pending: int = 64) -> None:
        self.l1 = l1
        self.l2 = l2
        self.max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()
        self._counts = dict.fromkeys(("hits", "misses", "l2_dropped", "l2_raised"), 0)

    async def get(self, key: str) -> bytes | None:
        value = await self.l1.get(key)
        if value is None and self.l2 is not None:
            value = await self._guarded(self.l2.get(key), None)
            if value is not None:
                await self.l1.set(key, value)
        self._counts["hits" if value is not None else "misses"] += 1
        return value

    def get_local(self, key: str) -> bytes | None:
        """L1 only, without awaiting: for the tile fast path on the event loop. A miss is
        not counted here; the request that follows counts it."""
        value = self.l1.get_sync(key)
        if value is not None:
            self._counts["hits"] += 1
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.l1.set(key, value, ttl)
        if self.l2 is None:
            return
        if len(self._pending) >= self.max_pending:
            self._counts["l2_dropped"] += 1
            return
        task = asyncio.create_task(self._l2_set(self.l2, key, value, ttl))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def delete_prefix(self, prefix: str) -> int:
        """Purge both tiers; returns entries removed, counting each tier separately."""
        # A queued write landing after the purge would bring a purged entry back.
        await self.flush()
        removed = await self.l1.delete_prefix(prefix)
        if self.l2 is not None:
            removed += await self._guarded(self.l2.delete_prefix(prefix), 0, purge=True)
        return removed

    async def clear(self) -> None:
        await self.flush()
        await self.l1.clear()
        if self.l2 is not None:
            await self._guarded(self.l2.clear(), None, purge=True)

    async def flush(self) -> None:
        """Wait for the background L2 writes queued so far."""
        if self._pending:
            await asyncio.gather(*self._pending)

    async def close(self) -> None:
        await self.flush()
        await self.l1.close()
        if self.l2 is not None:
            await self._guarded(self.l2.close(), None)

    def stats(self) -> dict[str, int]:
        """Overall ``hits``/``misses`` plus every tier's counters prefixed ``l1_``/``l2_``."""
        out = dict(self._counts)
        out.update({f"l1_{name}": value for name, value in self.l1.stats().items()})
        if self.l2 is not None:
            out.update({f"l2_{name}": value for name, value in self.l2.stats().items()})
        out["l2_pending"] = len(self._pending)
        out["errors"] = out.get("l2_errors", 0) + out["l2_raised"]
        out["bytes"] = out["l1_bytes"]
        out["items"] = out["l1_items"]
        return out

    async def _l2_set(self, l2: Cache, key: str, value: bytes, ttl: float | None) -> None:
        await self._guarded(l2.set(key, value, ttl), None)

    async def _guarded(self, call: Awaitable[T], default: T, purge: bool = False) -> T:
        # Our backends never raise, but L2 is any ``Cache``; its bugs must not fail requests.
        # A purge is the exception: the caller must learn that it did not happen.
        try:
            return await call
        except CacheUnavailableError:
            if purge:
                raise
            return default
        except Exception:
            self._counts["l2_raised"] += 1
            log.warning("L2 cache raised", exc_info=True)
            return default
