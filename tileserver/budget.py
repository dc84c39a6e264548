"""A bound on the pixels being rendered at once, so concurrent large requests queue instead
of exhausting memory: each render holds its pixel count from the budget while it runs. The
queue is bounded too: a render that would wait behind ``max_waiting`` others, or longer than
``max_wait`` seconds, is turned away (``OverloadedError``: 503 with ``Retry-After``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tileserver.errors import OverloadedError


class PixelBudget:
    def __init__(self, capacity: int, max_waiting: int = 64, max_wait: float = 20.0) -> None:
        self.capacity = max(1, capacity)
        self.max_waiting, self.max_wait = max_waiting, max_wait
        self.in_use = 0
        self.waiting = 0
        self._changed: asyncio.Condition | None = None

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Wait until ``pixels`` fit (a request larger than the budget waits for all of
        it), hold them while the body runs."""
        pixels = min(max(1, pixels), self.capacity)
        changed = self._condition()
        async with changed:
            if self.in_use + pixels > self.capacity and self.waiting >= self.max_waiting:
                raise OverloadedError(f"{self.waiting} renders are waiting already")
            self.waiting += 1
            try:
                async with asyncio.timeout(self.max_wait):
                    await changed.wait_for(lambda: self.in_use + pixels <= self.capacity)
            except TimeoutError:
                raise OverloadedError(f"no room to render within {self.max_wait:g} s") from None
            finally:
                self.waiting -= 1
            self.in_use += pixels
        try:
            yield
        finally:
            async with changed:
                self.in_use -= pixels
                changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on first use, inside the serving event loop
            self._changed = asyncio.Condition()
        return self._changed
