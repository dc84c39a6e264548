"""The async load generator: N workers over one keep-alive pool, bounded by time and count."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tileserver.loadtest.results import Recorder
from tileserver.loadtest.scenarios import (
    Call,
    RandomTiles,
    Scan,
    viewer_calls,
    viewer_pyramid,
)

#: Starts one worker's request stream from its own random generator.
CallSource = Callable[[random.Random], Iterator[Call]]


class StartError(Exception):
    """The run could not start: the server did not answer its setup requests."""


@dataclass(frozen=True)
class Plan:
    url: str
    pattern: str
    concurrency: int = 8
    duration_s: float | None = 10.0
    requests: int | None = None
    slides: tuple[str, ...] = ()
    batch_size: int = 32
    timeout_s: float = 30.0
    seed: int = 0
    progress: bool = True


async def run(plan: Plan) -> tuple[Recorder, float]:
    """Send requests until the duration or the count runs out; return what happened."""
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    async with httpx.AsyncClient(base_url=plan.url, timeout=plan.timeout_s, limits=limits) as http:
        try:
            source = await _source(http, plan)
        except httpx.HTTPError as exc:
            raise StartError(f"cannot start against {plan.url}: {_one_line(exc)}") from exc
        recorder = Recorder()
        budget = _Budget(plan.requests, plan.duration_s)
        bar = _progress(plan)
        ticker = asyncio.create_task(_tick(bar, budget, recorder))
        try:
            await asyncio.gather(
                *(
                    _worker(http, source(random.Random(plan.seed + i)), budget, recorder)
                    for i in range(plan.concurrency)
                )
            )
        finally:
            ticker.cancel()
            if bar is not None:
                bar.close()
        return recorder, time.perf_counter() - budget.started


def _one_line(exc: httpx.HTTPError) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _Budget:
    """Hands out permission for one more request while time and count remain."""

    def __init__(self, requests: int | None, duration_s: float | None) -> None:
        self.left = requests
        self.duration_s = duration_s
        self.started = time.perf_counter()

    def take(self) -> bool:
        if self.duration_s is not None and self.elapsed >= self.duration_s:
            return False
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        return True

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


async def _worker(
    http: httpx.AsyncClient, calls: Iterator[Call], budget: _Budget, recorder: Recorder
) -> None:
    while budget.take():
        call = next(calls)
        start = time.perf_counter()
        try:
            response = await http.request(call.method, call.url, json=call.json)
            recorder.add(
                str(response.status_code), time.perf_counter() - start, response.is_success
            )
        except httpx.HTTPError as exc:
            recorder.add(type(exc).__name__, time.perf_counter() - start, False)


async def _source(http: httpx.AsyncClient, plan: Plan) -> CallSource:
    slides = await _slides(http, plan.slides)
    if plan.pattern == "random":
        return RandomTiles(slides).calls
    if plan.pattern == "scan":
        shared = Scan(slides, plan.batch_size).calls()
        return lambda rng: shared
    if plan.pattern == "viewer":
        pyramids = [await viewer_pyramid(http, s) for s in slides]
        return lambda rng: viewer_calls(pyramids, rng)
    raise ValueError(f"unknown pattern {plan.pattern!r}")


async def _slides(http: httpx.AsyncClient, wanted: Sequence[str]) -> list[dict[str, Any]]:
    response = await http.get("/slides")
    response.raise_for_status()
    slides: list[dict[str, Any]] = [s for s in response.json()["slides"] if s["levels"]]
    if wanted:
        by_id = {s["id"]: s for s in slides}
        missing = [w for w in wanted if w not in by_id]
        if missing:
            raise ValueError(f"slides not on the server: {', '.join(missing)}")
        slides = [by_id[w] for w in wanted]
    if not slides:
        raise ValueError("the server has no slides with pyramid levels")
    return slides


def _progress(plan: Plan) -> Any:
    if not (plan.progress and sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    if plan.requests is not None:
        return tqdm(total=plan.requests, unit="req", file=sys.stderr)
    return tqdm(
        total=plan.duration_s, unit="s", file=sys.stderr, bar_format="{l_bar}{bar}| {postfix}"
    )


async def _tick(bar: Any, budget: _Budget, recorder: Recorder) -> None:
    if bar is None:
        return
    while True:
        bar.n = recorder.count if budget.left is not None else round(budget.elapsed, 1)
        rate = recorder.count / max(budget.elapsed, 1e-9)
        bar.set_postfix_str(f"{recorder.count} req, {rate:.0f} req/s, {recorder.errors} errors")
        await asyncio.sleep(0.2)
