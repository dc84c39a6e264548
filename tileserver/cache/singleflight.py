"""Request coalescing: concurrent callers for one key share a single computation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class SingleFlight:
    """In-flight computations by key; a key is forgotten as soon as its computation ends.

    The factory runs as its own task, so a caller that gives up (client disconnect)
    does not cancel the work the other callers are waiting for. Exceptions are shared
    too, and the next call after a failure starts afresh. The factory should write the
    cache itself, so a caller arriving just after it finishes finds the cached value.
    """

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        future = self._calls.get(key)
        # A future left behind by a closed event loop (tests, reloads) is never awaited.
        if future is None or future.get_loop() is not asyncio.get_running_loop():
            future = asyncio.ensure_future(factory())
            self._calls[key] = future
            future.add_done_callback(lambda done: self._forget(key, done))
        return cast(T, await asyncio.shield(future))

    def __len__(self) -> int:
        return len(self._calls)

    def _forget(self, key: str, done: asyncio.Future[Any]) -> None:
        if self._calls.get(key) is done:
            del self._calls[key]
        if not done.cancelled():
            done.exception()  # retrieved here so an unawaited failure is not logged


_default = SingleFlight()


async def coalesce(key: str, factory: Callable[[], Awaitable[T]]) -> T:
    """Run ``factory`` once for all concurrent callers asking for ``key``; share its result."""
    return await _default.run(key, factory)
