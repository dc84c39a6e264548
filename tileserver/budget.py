"""A bound on the pixels being rendered at once, so concurrent large requests queue instead
of exhausting memory: each render holds its pixel count from the budget while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PixelBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.in_use = 0
        self._changed: asyncio.Condition | None = None

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Wait until ``pixels`` fit (a request larger than the budget waits for all of
        it), hold them while the body runs."""
        pixels = min(max(1, pixels), self.capacity)
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.in_use + pixels <= self.capacity)
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
