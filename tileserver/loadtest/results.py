"""Latency and status bookkeeping, the JSON result and the printed table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Recorder:
    """What every finished request left behind."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    def add(self, status: str, seconds: float, ok: bool) -> None:
        self.latencies_s.append(seconds)
        self.statuses[status] += 1
        if not ok:
            self.errors += 1

    @property
    def count(self) -> int:
        return len(self.latencies_s)


def summary(pattern: str, recorder: Recorder, duration_s: float) -> dict[str, Any]:
    """The result document: exactly the keys documented in ``docs/loadtest.md``."""
    values = np.asarray(recorder.latencies_s, dtype=np.float64) * 1000.0

    def pct(q: float) -> float:
        return round(float(np.percentile(values, q)), 3) if values.size else 0.0

    return {
        "pattern": pattern,
        "requests": recorder.count,
        "errors": recorder.errors,
        "rps": round(recorder.count / duration_s, 2) if duration_s > 0 else 0.0,
        "duration_s": round(duration_s, 3),
        "latency_ms": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": round(float(values.max()), 3) if values.size else 0.0,
        },
        "status_counts": dict(sorted(recorder.statuses.items())),
    }


def table(result: dict[str, Any]) -> str:
    latency = result["latency_ms"]
    rows = [
        ("pattern", result["pattern"]),
        ("requests", str(result["requests"])),
        ("errors", str(result["errors"])),
        ("duration", f"{result['duration_s']:.2f} s"),
        ("throughput", f"{result['rps']:.1f} req/s"),
        *((f"latency {k}", f"{latency[k]:.2f} ms") for k in ("p50", "p90", "p99", "max")),
        *((f"status {k}", str(v)) for k, v in result["status_counts"].items()),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
