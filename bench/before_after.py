"""The before/after comparison's table (``bench/paired.py``), printed and written to the
``serving-before-after`` section of ``docs/benchmarks.md``.

Run: ``python -m bench.serving_bench --before-ref GIT_REF --before-after-only`` (without
``--before-after-only`` the whole serving benchmark runs too).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.paired import BeforeAfter, Tree, git
from bench.report import markdown_table, section_preamble, update_section
from bench.serving_report import TARGET_CONNECTIONS
from bench.wrk import WrkResult


def describe(tree: Tree) -> str:
    subject = git("log", "-1", "--format=%s", tree.commit)[:72]
    if tree.path is None:
        changes = ", with uncommitted changes in tileserver/" if tree.dirty else ""
        return f"the working tree (HEAD {tree.commit[:10]}{changes})"
    return f"`{tree.ref}` ({tree.commit[:10]}: {subject})"


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _ratios(after: Sequence[WrkResult], before: Sequence[WrkResult]) -> list[float]:
    """after / before, round by round."""
    return [a.rps / b.rps for a, b in zip(after, before, strict=False) if b.rps]


def _share(results: Sequence[WrkResult], nginx: Sequence[WrkResult]) -> str:
    shares = _ratios(results, nginx)
    return f"{_median(shares):.1%}" if shares else "—"


def rows(compared: BeforeAfter) -> list[list[str]]:
    res, nginx = compared.results, compared.results.get("nginx", [])
    out = []
    if nginx:
        rps, p99 = _median([r.rps for r in nginx]), _median([r.p99_ms for r in nginx])
        errors = sum(r.errors for r in nginx)
        out.append(["nginx (static files)", f"{rps:,.0f}", "—", "—", f"{p99:.2f}", "—", "—"])
        out[-1].append(str(errors))
    for server in compared.servers:
        before, after = res.get(f"before-{server}", []), res.get(f"after-{server}", [])
        if not (before and after):
            out.append([f"tileserver ({server})", "not measured", *["—"] * 6])
            continue
        ratios = _ratios(after, before)
        each = ", ".join(f"{v:.2f}" for v in ratios)
        tails = [_median([r.p99_ms for r in side]) for side in (before, after)]
        out.append(
            [
                f"tileserver ({server})",
                f"{_median([r.rps for r in before]):,.0f} → {_median([r.rps for r in after]):,.0f}",
                f"{_median(ratios):.2f}x ({each})",
                f"{_share(before, nginx)} → {_share(after, nginx)}",
                f"{tails[0]:.2f} → {tails[1]:.2f}",
                " / ".join(f"{r.rps / 1000:.1f}k" for r in before),
                " / ".join(f"{r.rps / 1000:.1f}k" for r in after),
                f"{sum(r.errors for r in before)} / {sum(r.errors for r in after)}",
            ]
        )
    return out


HEADER = [
    "server",
    "median req/s (before → after)",
    "after / before (median round; each round)",
    "share of nginx",
    "median p99 ms",
    "before req/s per round",
    "after req/s per round",
    "errors (before / after)",
]


def table(compared: BeforeAfter) -> str:
    return markdown_table(HEADER, rows(compared))


def write(compared: BeforeAfter, rounds: int, duration: float, notes: Sequence[str]) -> None:
    """Print the table and write the ``serving-before-after`` section."""
    text = table(compared)
    print(text, flush=True)
    c = TARGET_CONNECTIONS
    body = [
        section_preamble(
            "Serving: stored tiles before and after",
            f"python -m bench.serving_bench --before-ref {compared.before.ref}"
            + (f" --after-ref {compared.after.ref}" if compared.after.path else ""),
        ),
        "",
        f"Before: {describe(compared.before)}. After: {describe(compared.after)}. Both run "
        "from the same venv (the before tree from a `git worktree`, with `PYTHONPATH` set "
        "to it), each `tileserver serve --workers 2` on its own catalog, side by side with "
        f"nginx (`bench/paired.py`). {rounds} paired rounds: in each, every server in turn "
        f"(the order reversed every other round) gets a 1 s warm-up and `wrk -t2 -c{c}` for "
        f"{duration:g} s over a shuffled list of every level-0 tile; ratios and shares are "
        "taken within each round and the median round kept. The machine is shared and "
        "noisy: read the per-round ratios, not single figures.",
        "",
        text,
    ]
    if notes:
        body += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    update_section("serving-before-after", "\n".join(body))
