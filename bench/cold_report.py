"""The cold-start part of the serving benchmark's report: target lines and the table."""

from __future__ import annotations

from collections.abc import Sequence

from bench.coldstart import ColdStart
from bench.report import markdown_table


def cold_targets(cold: Sequence[ColdStart]) -> list[str]:
    target = "First tile after a cold start < 200 ms"
    cases = [case for case in cold if case.catalog == "built"]
    if not cases:
        return [f"{target}: not measured (no cold starts run)"]
    lines = []
    for case in cases:
        label = f"{target} ({case.server}, {case.workers} worker(s), catalog built)"
        if not case.page_cache_dropped:
            lines.append(f"{label}: not measured (page cache not dropped)")
        elif case.failures:
            lines.append(f"{label}: **not met** ({len(case.failures)} failed starts)")
        else:
            ok = case.median_ms < 200
            floor = next(
                (
                    f.median_ms
                    for f in cold
                    if f.catalog == "hello"
                    and f.runs_ms
                    and (f.server, f.workers) == (case.server, case.workers)
                ),
                None,
            )
            beside = f" (the server's own floor: {floor:.0f} ms)" if floor is not None else ""
            verdict = "**met**" if ok else "**not met**"
            lines.append(f"{label}: median {case.median_ms:.0f} ms{beside}, {verdict}.")
    return lines


CATALOG_LABELS = {
    "built": "built (restart)",
    "empty": "empty (first index)",
    "hello": "— (`bench/hello_app.py`: the server's own floor)",
    "none": "— (`python -c` importing the app's numpy, Pillow, pydicom, Starlette)",
}


def cold_table(cold: Sequence[ColdStart]) -> str:
    rows = [
        [
            case.server,
            str(case.workers),
            CATALOG_LABELS[case.catalog],
            ", ".join(f"{t:.0f}" for t in case.runs_ms) or "—",
            f"{case.median_ms:.0f}" if case.runs_ms else "—",
            "; ".join(case.failures) or "0",
            "yes" if case.page_cache_dropped else "**no** (not permitted)",
        ]
        for case in cold
    ]
    header = ["server", "workers", "catalog", "runs ms", "median ms", "failed starts"]
    return markdown_table([*header, "page cache dropped"], rows)
