"""Shared cache in Redis: short timeouts, errors as misses, back-off while Redis is away."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tileserver.cache.base import KEY_PREFIX
from tileserver.errors import CacheUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TTL = 7 * 24 * 3600.0
_GLOB_SPECIAL = "\\*?[]"


class RedisCache:
    """``Cache`` over one Redis database, shared by every server process that points at it.

    Each operation is bounded by ``timeout`` seconds. Any failure (refused connection,
    timeout, server restart) is counted in ``errors`` and answered as a miss or no-op;
    afterwards the cache makes no attempts for ``backoff`` seconds, then lets one request
    probe Redis, so a dead Redis costs nothing per request and a returning one is picked
    up again without a restart. Construct it inside the application lifespan: creating
    the client does no I/O, but it belongs to the running event loop.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.05,
        backoff: float = 1.0,
        default_ttl: float = DEFAULT_TTL,
        purge_timeout: float = 30.0,
        scan_count: int = 1000,
    ) -> None:
        self.timeout = timeout
        self.backoff = backoff
        self.default_ttl = default_ttl
        self.purge_timeout = purge_timeout
        self.scan_count = scan_count
        # One immediate retry hides a pooled connection that went stale across a restart;
        # the outer asyncio timeout still bounds the whole operation.
        self._client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=max(timeout, 1.0),
            socket_connect_timeout=max(timeout, 1.0),
            retry=Retry(NoBackoff(), 1),
        )
        self._retry_at = 0.0
        self._down = False
        self._counts = dict.fromkeys(("hits", "misses", "errors", "skipped", "bytes", "items"), 0)

    async def get(self, key: str) -> bytes | None:
        value: object = None
        if self._may_try():
            _, value = await self._guard(lambda: self._client.get(key), self.timeout)
        else:
            self._counts["skipped"] += 1
        if not isinstance(value, bytes):
            self._counts["misses"] += 1
            return None
        self._counts["hits"] += 1
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store with an expiry (``default_ttl`` unless given) so Redis never fills forever."""
        if not self._may_try():
            self._counts["skipped"] += 1
            return
        px = max(1, round((self.default_ttl if ttl is None else ttl) * 1000))
        ok, _ = await self._guard(lambda: self._client.set(key, value, px=px), self.timeout)
        if ok:
            self._counts["items"] += 1
            self._counts["bytes"] += len(value)

    async def delete_prefix(self, prefix: str) -> int:
        """Unlink every key starting with ``prefix`` (SCAN in batches, never KEYS).

        Always attempted, even during back-off; bounded by ``purge_timeout``. On failure
        ``CacheUnavailableError`` says how many keys went; the rest expire by their TTL.
        """
        pattern = _glob_escape(prefix) + "*"
        deleted = 0

        async def purge() -> None:
            nonlocal deleted
            cursor = 0
            while True:
                cursor, keys = await self._client.scan(cursor, match=pattern, count=self.scan_count)
                if keys:
                    deleted += await self._client.unlink(*keys)
                if cursor == 0:
                    return

        finished, _ = await self._guard(purge, self.purge_timeout)
        if not finished:  # a purge that silently did nothing would be believed
            raise CacheUnavailableError(
                f"Redis did not finish the purge ({deleted} entries removed); "
                "the rest expire by their TTL"
            )
        return deleted

    async def clear(self) -> None:
        """Remove every tileserver key (those ``make_key`` builds); other keys are left alone."""
        await self.delete_prefix(KEY_PREFIX)

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # closing a dead connection must not fail shutdown
            log.debug("error closing Redis client", exc_info=True)

    def stats(self) -> dict[str, int]:
        """``bytes``/``items`` count what this process wrote, not what Redis holds."""
        return dict(self._counts)

    def _may_try(self) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            return False
        if self._down:
            # This caller probes; the others keep skipping until the probe has answered.
            self._retry_at = now + self.backoff
        return True

    async def _guard(
        self, call: Callable[[], Awaitable[T]], timeout: float
    ) -> tuple[bool, T | None]:
        try:
            async with asyncio.timeout(timeout):
                result = await call()
        except Exception as exc:  # any failure is a miss; cancellation still propagates
            self._failed(exc)
            return False, None
        if self._down:
            self._down = False
            self._retry_at = 0.0
            log.info("Redis cache reachable again")
        return True, result

    def _failed(self, exc: Exception) -> None:
        self._counts["errors"] += 1
        if not self._down:
            log.warning("Redis cache unavailable (%r); retrying every %.1fs", exc, self.backoff)
        self._down = True
        self._retry_at = time.monotonic() + self.backoff


def _glob_escape(text: str) -> str:
    """Quote Redis glob metacharacters so SCAN MATCH treats ``text`` literally."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)
