"""An optional per-client rate limit (``--rate-limit N``: N requests a second, bursts of
2N), checked by the stored-tile chain for every request, so tiles answered before the app
count too. A client is its credential's principal when it has one, else its address (the
peer's: behind a proxy, set the limit at the proxy instead). Per process: with several
workers each keeps its own buckets. Standard library only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimit:
    #: Clients remembered; the least recently seen are forgotten past this.
    MAX_CLIENTS = 65536

    def __init__(
        self,
        per_second: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_second
        self._clock = clock
        self.burst = burst if burst is not None else 2 * per_second
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, time)
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        """Take one request's token from ``client``'s bucket; False when it is empty."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self.MAX_CLIENTS:
                del self._buckets[next(iter(self._buckets))]
        return allowed

    def retry_after(self) -> int:
        return max(1, round(1 / self.rate))
