"""Blocking client over one keep-alive ``httpx.Client`` pool (thread-safe)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    batches,
    check,
    check_iteration,
    decode_npy,
    decode_png,
    grid_addresses,
    parse_multipart,
    plan_region_at_mpp,
    resize,
)
from tileserver.client._wire import batch_path as _batch
from tileserver.client._wire import region_params as _region
from tileserver.client._wire import slide_path as _path

Batch = list[tuple[TileAddress, Pixels]]


class TileClient:
    """Sync client of one tileserver; ``with TileClient(url) as client: ...``.

    Tiles come back as RGB ``uint8`` arrays decoded by the server (``?format=png`` for
    single tiles, ``npy`` stacks for batches), so the client needs no DICOM codecs.
    Pickling keeps the settings and opens a fresh pool (DataLoader workers).
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
        self.timeout = timeout
        self.max_connections = max_connections
        self.retry = RetryPolicy(retries=retries, backoff=backoff)
        self._http = self._new_pool()
        self._slides: dict[str, SlideInfo] = {}

    def _new_pool(self) -> httpx.Client:
        limits = httpx.Limits(
            max_connections=self.max_connections, max_keepalive_connections=self.max_connections
        )
        return httpx.Client(base_url=self.base_url, timeout=self.timeout, limits=limits)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TileClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_http"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._http = self._new_pool()

    # -- transport ---------------------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request with retries on transient failures; raises ``ServerError`` otherwise."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, url, **kwargs)
            except RETRY_EXCEPTIONS:
                if attempt >= self.retry.retries:
                    raise
                time.sleep(self.retry.delay(attempt))
            else:
                if attempt >= self.retry.retries or not self.retry.retry_status(
                    response.status_code
                ):
                    return check(response)
                time.sleep(self.retry.delay(attempt, response))
            attempt += 1

    # -- slides ------------------------------------------------------------------------------

    def slides(self) -> list[SlideInfo]:
        return [SlideInfo.from_json(s) for s in self.request("GET", "/slides").json()["slides"]]

    def slide(self, slide_id: str) -> SlideInfo:
        info = self._slides.get(slide_id)
        if info is None:
            info = SlideInfo.from_json(self.request("GET", _path(slide_id)).json())
            self._slides[slide_id] = info
        return info

    # -- pixels ------------------------------------------------------------------------------

    def tile(self, slide_id: str, level: int, col: int, row: int) -> Pixels:
        """The tile's valid (unpadded) area, decoded losslessly via PNG."""
        url = f"{_path(slide_id)}/tiles/{level}/{col}/{row}"
        return decode_png(self.request("GET", url, params={"format": "png"}).content)

    def region(
        self, slide_id: str, *, level: int = 0, x: int, y: int, width: int, height: int
    ) -> Pixels:
        """``width`` x ``height`` pixels of ``level`` at level pixels ``(x, y)``."""
        url = f"{_path(slide_id)}/region"
        return decode_npy(
            self.request("GET", url, params=_region(level, x, y, width, height)).content
        )

    def region_at_mpp(
        self, slide_id: str, *, mpp: float, x: int, y: int, width: int, height: int
    ) -> Pixels:
        """``width`` x ``height`` pixels at ``mpp`` micrometres per pixel; ``(x, y)`` in
        level-0 pixels. Reads the coarsest level at least as fine, then resizes."""
        plan = plan_region_at_mpp(self.slide(slide_id), mpp, x, y, width, height)
        pixels = self.region(
            slide_id, level=plan.level, x=plan.x, y=plan.y, width=plan.width, height=plan.height
        )
        return resize(pixels, plan.out_width, plan.out_height)

    def tissue(self, slide_id: str, level: int = 0) -> list[list[int]]:
        """``flags[row][col]``: 1 where a tile of ``level`` holds tissue."""
        params = {"format": "json", "level": str(level)}
        flags: list[list[int]] = self.request(
            "GET", f"{_path(slide_id)}/tissue", params=params
        ).json()["flags"]
        return flags

    def tile_addresses(
        self, slide_id: str, level: int = 0, tissue_only: bool = False
    ) -> list[TileAddress]:
        info = self.slide(slide_id).levels[level]
        return grid_addresses(info, self.tissue(slide_id, level) if tissue_only else None)

    def read_tiles(self, slide_id: str, addresses: Sequence[TileAddress]) -> Pixels:
        """Decoded tiles as one ``(n, h, w, 3)`` stack; edge tiles padded with white."""
        body = batch_body(addresses, "npy")
        return decode_npy(self.request("POST", _batch(slide_id), json=body).content)

    def read_stored(self, slide_id: str, addresses: Sequence[TileAddress]) -> list[StoredTile]:
        """Stored frame bytes (no decoding anywhere) of many tiles in one request."""
        response = self.request("POST", _batch(slide_id), json=batch_body(addresses, "raw"))
        return parse_multipart(response.headers["content-type"], response.content)

    def iter_tiles(
        self,
        slide_id: str,
        level: int = 0,
        batch_size: int = 64,
        tissue_only: bool = True,
        concurrency: int = 4,
    ) -> Iterator[Batch]:
        """Batches of ``(address, pixels)`` over a level in row-major order, with up to
        ``concurrency`` batch requests in flight; ``tissue_only`` skips background tiles.

        ``ValueError`` at once when ``batch_size`` or ``concurrency`` is below 1.
        """
        check_iteration(batch_size, concurrency)
        return self._iter_tiles(slide_id, level, batch_size, tissue_only, concurrency)

    def _iter_tiles(
        self, slide_id: str, level: int, batch_size: int, tissue_only: bool, concurrency: int
    ) -> Iterator[Batch]:
        plan = batches(self.tile_addresses(slide_id, level, tissue_only), batch_size)
        with ThreadPoolExecutor(concurrency, thread_name_prefix="tileclient") as pool:
            pending: list[Future[Pixels]] = []
            try:
                for index, chunk in enumerate(plan):
                    while len(pending) < concurrency and index + len(pending) < len(plan):
                        ahead = plan[index + len(pending)]
                        pending.append(pool.submit(self.read_tiles, slide_id, ahead))
                    stack = pending.pop(0).result()
                    yield list(zip(chunk, stack, strict=True))
            finally:
                for future in pending:
                    future.cancel()
