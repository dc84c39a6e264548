"""Asyncio client over one keep-alive ``httpx.AsyncClient`` pool; same API as ``TileClient``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from tileserver.client._wire import (
    RETRY_EXCEPTIONS,
    Pixels,
    RetryPolicy,
    SlideInfo,
    StoredTile,
    TileAddress,
    batch_body,
    batch_path,
    batches,
    check,
    check_iteration,
    decode_npy,
    decode_png,
    grid_addresses,
    parse_multipart,
    plan_region_at_mpp,
    region_params,
    resize,
    slide_path,
)

Batch = list[tuple[TileAddress, Pixels]]


class AsyncTileClient:
    """Async client of one tileserver; ``async with AsyncTileClient(url) as client: ...``.

    Decoding (PNG, npy) and resizing run in worker threads (``asyncio.to_thread``) so the
    event loop keeps serving; multipart parsing (``read_stored``) only slices bytes and
    stays on the loop.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        max_connections: int = 8,
        backoff: float = 0.1,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = RetryPolicy(retries=retries, backoff=backoff)
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, limits=limits)
        self._slides: dict[str, SlideInfo] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncTileClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on transient failures; raises ``ServerError`` otherwise."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, url, **kwargs)
            except RETRY_EXCEPTIONS:
                if attempt >= self.retry.retries:
                    raise
                await asyncio.sleep(self.retry.delay(attempt))
            else:
                if attempt >= self.retry.retries or not self.retry.retry_status(
                    response.status_code
                ):
                    return check(response)
                await asyncio.sleep(self.retry.delay(attempt, response))
            attempt += 1

    async def slides(self) -> list[SlideInfo]:
        response = await self.request("GET", "/slides")
        return [SlideInfo.from_json(s) for s in response.json()["slides"]]

    async def slide(self, slide_id: str) -> SlideInfo:
        info = self._slides.get(slide_id)
        if info is None:
            response = await self.request("GET", slide_path(slide_id))
            info = self._slides[slide_id] = SlideInfo.from_json(response.json())
        return info

    async def tile(self, slide_id: str, level: int, col: int, row: int) -> Pixels:
        """The tile's valid (unpadded) area, decoded losslessly via PNG."""
        url = f"{slide_path(slide_id)}/tiles/{level}/{col}/{row}"
        response = await self.request("GET", url, params={"format": "png"})
        return await asyncio.to_thread(decode_png, response.content)

    async def region(
        self, slide_id: str, *, level: int = 0, x: int, y: int, width: int, height: int
    ) -> Pixels:
        url = f"{slide_path(slide_id)}/region"
        params = region_params(level, x, y, width, height)
        response = await self.request("GET", url, params=params)
        return await asyncio.to_thread(decode_npy, response.content)

    async def region_at_mpp(
        self, slide_id: str, *, mpp: float, x: int, y: int, width: int, height: int
    ) -> Pixels:
        """See ``TileClient.region_at_mpp``."""
        plan = plan_region_at_mpp(await self.slide(slide_id), mpp, x, y, width, height)
        pixels = await self.region(
            slide_id, level=plan.level, x=plan.x, y=plan.y, width=plan.width, height=plan.height
        )
        return await asyncio.to_thread(resize, pixels, plan.out_width, plan.out_height)

    async def tissue(self, slide_id: str, level: int = 0) -> list[list[int]]:
        params = {"format": "json", "level": str(level)}
        response = await self.request("GET", f"{slide_path(slide_id)}/tissue", params=params)
        flags: list[list[int]] = response.json()["flags"]
        return flags

    async def tile_addresses(
        self, slide_id: str, level: int = 0, tissue_only: bool = False
    ) -> list[TileAddress]:
        info = (await self.slide(slide_id)).levels[level]
        flags = await self.tissue(slide_id, level) if tissue_only else None
        return grid_addresses(info, flags)

    async def read_tiles(self, slide_id: str, addresses: Sequence[TileAddress]) -> Pixels:
        body = batch_body(addresses, "npy")
        response = await self.request("POST", batch_path(slide_id), json=body)
        return await asyncio.to_thread(decode_npy, response.content)

    async def read_stored(
        self, slide_id: str, addresses: Sequence[TileAddress]
    ) -> list[StoredTile]:
        body = batch_body(addresses, "raw")
        response = await self.request("POST", batch_path(slide_id), json=body)
        return parse_multipart(response.headers["content-type"], response.content)

    def iter_tiles(
        self,
        slide_id: str,
        level: int = 0,
        batch_size: int = 64,
        tissue_only: bool = True,
        concurrency: int = 4,
    ) -> AsyncIterator[Batch]:
        """Batches of ``(address, pixels)`` in row-major order, ``concurrency`` in flight
        (``async for``); ``ValueError`` at once when a knob is below 1."""
        check_iteration(batch_size, concurrency)
        return self._iter_tiles(slide_id, level, batch_size, tissue_only, concurrency)

    async def _iter_tiles(
        self, slide_id: str, level: int, batch_size: int, tissue_only: bool, concurrency: int
    ) -> AsyncIterator[Batch]:
        plan = batches(await self.tile_addresses(slide_id, level, tissue_only), batch_size)
        pending: list[asyncio.Task[Pixels]] = []
        try:
            for index, chunk in enumerate(plan):
                while len(pending) < concurrency and index + len(pending) < len(plan):
                    ahead = plan[index + len(pending)]
                    pending.append(asyncio.create_task(self.read_tiles(slide_id, ahead)))
                stack = await pending.pop(0)
                yield list(zip(chunk, stack, strict=True))
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
