"""Load-test harness: ``tileserver loadtest URL [--pattern viewer|random|scan] ...``.

Prints a table and optionally writes the JSON result (``--out``); exits 0 when no request
failed, 1 otherwise, 2 on bad arguments or when the server cannot be set up against.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from tileserver.loadtest.results import summary, table
from tileserver.loadtest.runner import Plan, StartError, run
from tileserver.loadtest.scenarios import PATTERNS

__all__ = ["Plan", "build_parser", "main", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tileserver loadtest", description=__doc__)
    parser.add_argument("url", help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--pattern", choices=PATTERNS, default="viewer")
    parser.add_argument("--concurrency", type=int, default=8, help="parallel workers")
    parser.add_argument("--duration", type=float, help="seconds (default 10 without --requests)")
    parser.add_argument("--requests", type=int, help="stop after this many requests")
    parser.add_argument("--slides", nargs="+", default=(), metavar="ID", help="default: all")
    parser.add_argument("--out", type=Path, help="write the JSON result here")
    parser.add_argument("--batch-size", type=int, default=32, help="tiles per scan request")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    duration = args.duration
    if duration is None and args.requests is None:
        duration = 10.0
    for name in ("concurrency", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    return Plan(
        url=args.url.rstrip("/"),
        pattern=args.pattern,
        concurrency=args.concurrency,
        duration_s=duration,
        requests=args.requests,
        slides=tuple(args.slides),
        batch_size=args.batch_size,
        timeout_s=args.timeout,
        seed=args.seed,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = plan_from_args(args)
        recorder, elapsed = asyncio.run(run(plan))
    except (ValueError, OSError, StartError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    result = summary(plan.pattern, recorder, elapsed)
    print(table(result))
    if args.out is not None:
        args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    return 0 if result["errors"] == 0 else 1
