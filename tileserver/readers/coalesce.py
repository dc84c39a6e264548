"""Many tiles in few reads: a pure plan that merges nearby frame byte ranges.

``plan_reads`` sorts the frames' byte spans by (file, offset) and merges a span into the
current run when it starts less than ``max_gap`` bytes after the run's end, so one source
read returns a run of adjacent frames (the gap bytes are read and dropped: on any
disk, 64 KiB more in the same request is cheaper than a second request). Runs are capped
at ``max_run`` bytes to bound the memory one read holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_GAP = 64 * 1024
MAX_RUN = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes of one frame: file index (within its level), offset and length."""

    file: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, slots=True)
class ReadRun:
    """One read covering the spans ``members`` (indexes into the planned sequence)."""

    file: int
    offset: int
    length: int
    members: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.offset + self.length


def plan_reads(
    spans: Sequence[Span], max_gap: int = MAX_GAP, max_run: int = MAX_RUN
) -> list[ReadRun]:
    """Group ``spans`` into reads; spans less than ``max_gap`` apart share one read."""
    order = sorted(range(len(spans)), key=lambda i: (spans[i].file, spans[i].offset))
    runs: list[ReadRun] = []
    for i in order:
        span = spans[i]
        last = runs[-1] if runs else None
        if (
            last is not None
            and last.file == span.file
            and span.offset - last.end < max_gap
            and max(last.end, span.end) - last.offset <= max_run
        ):
            end = max(last.end, span.end)
            runs[-1] = ReadRun(last.file, last.offset, end - last.offset, (*last.members, i))
        else:
            runs.append(ReadRun(span.file, span.offset, span.length, (i,)))
    return runs
