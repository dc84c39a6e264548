"""Shared benchmark plumbing: timing statistics, page-cache control, machine facts, docs."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
DATA = ROOT / "bench" / "data"
_DOC_INTRO = """# Benchmarks

Numbers from `make bench` (each benchmark rewrites its own section below). Synthetic data is
written once to `bench/data/` (git-ignored). Every figure is from one run on the machine
described in its section; compare runs only on the same machine.
"""


@dataclass(frozen=True)
class Stats:
    """Latency sample summary in microseconds."""

    n: int
    median_us: float
    p99_us: float

    @classmethod
    def of(cls, samples_ns: Sequence[int] | np.ndarray) -> Stats:
        values = np.asarray(samples_ns, dtype=np.float64) / 1000.0
        return cls(len(values), float(np.median(values)), float(np.percentile(values, 99)))


def drop_page_cache() -> bool:
    """Flush dirty pages and drop the page cache; False when not permitted (not root, container)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def warm_file(path: Path, block: int = 1 << 24) -> None:
    """Read ``path`` once so later reads come from the page cache."""
    with path.open("rb", buffering=0) as fp:
        while fp.read(block):
            pass


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem = _command(["free", "-g"]).splitlines()
    total = mem[1].split()[1] if len(mem) > 1 else "?"
    return {
        "cpu": f"{cpu} x {_command(['nproc']).strip()} (nproc)",
        "memory": f"{total} GiB (free -g)",
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def _command(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def section_preamble(title: str, command: str) -> str:
    facts = machine()
    return "\n".join(
        [
            f"## {title}",
            "",
            f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
            f"- machine: {facts['cpu']}, {facts['memory']}, {facts['os']}",
            f"- Python {facts['python']}",
            f"- command: `{command}`",
        ]
    )


def update_section(key: str, body: str, doc: Path = DOC) -> None:
    """Replace the section marked ``key`` in ``doc`` (appended when absent)."""
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else _DOC_INTRO
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
