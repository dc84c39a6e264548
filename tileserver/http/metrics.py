"""Prometheus text exposition of request counts, latency histograms and cache counters."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from itertools import accumulate

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sums: dict[str, float] = defaultdict(float)
        self.cache_stats: Callable[[], dict[str, int]] = dict

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(route, method, status)] += 1
            self._buckets[route][bisect_left(BUCKETS, seconds)] += 1
            self._sums[route] += seconds

    def render(self) -> str:
        lines = [
            "# HELP tileserver_requests_total HTTP requests by route, method and status.",
            "# TYPE tileserver_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), n in sorted(self._requests.items()):
                lines.append(
                    f'tileserver_requests_total{{route="{route}",method="{method}",'
                    f'status="{status}"}} {n}'
                )
            lines += [
                "# HELP tileserver_request_seconds Request latency by route.",
                "# TYPE tileserver_request_seconds histogram",
            ]
            for route, per_bucket in sorted(self._buckets.items()):
                counts = list(accumulate(per_bucket))
                for bound, n in zip(BUCKETS, counts, strict=False):
                    lines.append(
                        f'tileserver_request_seconds_bucket{{route="{route}",le="{bound}"}} {n}'
                    )
                lines.append(
                    f'tileserver_request_seconds_bucket{{route="{route}",le="+Inf"}} {counts[-1]}'
                )
                lines.append(f'tileserver_request_seconds_count{{route="{route}"}} {counts[-1]}')
                lines.append(
                    f'tileserver_request_seconds_sum{{route="{route}"}} {self._sums[route]:.6f}'
                )
        lines += [
            "# HELP tileserver_cache_events_total Cache events by tier and outcome.",
            "# TYPE tileserver_cache_events_total counter",
        ]
        for name, value in sorted(self.cache_stats().items()):
            tier, _, outcome = name.partition("_")
            if tier not in ("l1", "l2"):
                tier, outcome = "all", name
            lines.append(
                f'tileserver_cache_events_total{{tier="{tier}",event="{outcome}"}} {value}'
            )
        return "\n".join(lines) + "\n"
