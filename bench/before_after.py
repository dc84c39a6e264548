"""The before/after comparison's table (``bench/paired.py``), printed and written to the
``serving-before-after`` section of ``docs/benchmarks.md``.

Run: ``python -m bench.serving_bench --before-ref GIT_REF --before-after-only`` (without
``--before-after-only`` the whole serving benchmark runs too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import textwrap
from collections.abc import Sequence

from bench.paired import BeforeAfter, Tree, git
from bench.report import markdown_table, section_preamble, update_section
from bench.serving_report import TARGET_CONNECTIONS


def describe(tree: Tree) -> str:
    subject = textwrap.shorten(git("log", "-1", "--format=%s", tree.commit), 80, placeholder=" …")
    if tree.path is None:
        changes = ", with uncommitted changes in tileserver/" if tree.dirty else ""
        return f"the working tree (HEAD {tree.commit[:10]}{changes})"
    return f"`{tree.ref}` ({tree.commit[:10]}: {subject})"


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _ratios(after: Sequence[float], before: Sequence[float]) -> list[float]:
    """after / before, round by round."""
    return [a / b for a, b in zip(after, before, strict=False) if b]


def _ratio_cell(after: Sequence[float], before: Sequence[float]) -> str:
    ratios = _ratios(after, before)
    if not ratios:
        return "—"
    return f"{_median(ratios):.2f}x ({', '.join(f'{v:.2f}' for v in ratios)})"


def _sides(compared: BeforeAfter, key: str) -> tuple[list[float], list[float], list[float]]:
    """req/s, p99 ms and server CPU µs per request of ``key``, round by round."""
    results, cpu = compared.rounds.results.get(key, []), compared.rounds.cpu.get(key, [])
    return [r.rps for r in results], [r.p99_ms for r in results], [c.server_us for c in cpu]


def _errors(compared: BeforeAfter, key: str) -> int:
    return sum(r.errors for r in compared.rounds.results.get(key, []))


def rows(compared: BeforeAfter) -> list[list[str]]:
    nginx_rps, nginx_p99, nginx_cpu = _sides(compared, "nginx")
    out = []
    if nginx_rps:
        rps, p99 = f"{_median(nginx_rps):,.0f}", f"{_median(nginx_p99):.2f}"
        cpu = f"{_median(nginx_cpu):.1f}"
        out.append(
            ["nginx (static files)", rps, "—", cpu, "—", "—", p99, str(_errors(compared, "nginx"))]
        )
    for server in compared.servers:
        before, after = _sides(compared, f"before-{server}"), _sides(compared, f"after-{server}")
        name = f"tileserver ({server})"
        if not (before[0] and after[0]):
            out.append([name, "not measured", *["—"] * 6])
            continue
        shares = [
            _median(_ratios(side[0], nginx_rps)) if nginx_rps else 0.0 for side in (before, after)
        ]
        errors = [_errors(compared, f"{side}-{server}") for side in ("before", "after")]
        out.append(
            [
                name,
                f"{_median(before[0]):,.0f} → {_median(after[0]):,.0f}",
                _ratio_cell(after[0], before[0]),
                f"{_median(before[2]):.1f} → {_median(after[2]):.1f}",
                _ratio_cell(after[2], before[2]),
                f"{shares[0]:.1%} → {shares[1]:.1%}" if nginx_rps else "—",
                f"{_median(before[1]):.2f} → {_median(after[1]):.2f}",
                f"{errors[0]} / {errors[1]}",
            ]
        )
    return out


HEADER = [
    "server",
    "median req/s (before → after)",
    "req/s after / before (median round; each round)",
    "server CPU µs per tile (median)",
    "CPU after / before (median round; each round)",
    "share of nginx (median round)",
    "median p99 ms",
    "errors (before / after)",
]


def table(compared: BeforeAfter) -> str:
    return markdown_table(HEADER, rows(compared))


def write(compared: BeforeAfter, args: argparse.Namespace, notes: Sequence[str]) -> None:
    """Print the table and write the ``serving-before-after`` section."""
    text = table(compared)
    print(text, flush=True)
    c, rounds, duration = TARGET_CONNECTIONS, args.paired_rounds, args.paired_duration
    command = f"python -m bench.serving_bench --before-ref {compared.before.ref}"
    command += f" --after-ref {compared.after.ref}" if compared.after.path else ""
    command += " --before-after-only" if args.before_after_only else ""
    load = os.getloadavg()[0]
    body = [
        section_preamble("Serving: stored tiles before and after", command),
        f"- load average (1 min) at the end: {load:.1f} on {os.cpu_count()} cores",
        "",
        f"Before: {describe(compared.before)}. After: {describe(compared.after)}. Both run "
        "from the same venv (the before tree from a `git worktree`, with `PYTHONPATH` set "
        "to it), each `tileserver serve --workers 2` on its own catalog, side by side with "
        f"nginx (`bench/paired.py`). {rounds} paired rounds: in each, every server in turn "
        f"(the order reversed every other round) gets a 1 s warm-up and `wrk -t2 -c{c}` for "
        f"{duration:g} s over a shuffled list of every level-0 tile; ratios and shares are "
        "taken within each round and the median round kept. Server CPU = user + system "
        "time of the server's process group (every worker; granian's runtime threads "
        "included) over the requests answered: on a shared machine it moves far less than "
        "req/s, so it is the figure to compare; a per-round ratio spread of 0.7-1.7x in "
        "req/s has been seen comparing a commit with itself under load.",
        "",
        text,
    ]
    if notes:
        body += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    update_section("serving-before-after", "\n".join(body))
