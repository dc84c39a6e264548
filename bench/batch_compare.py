"""The batch endpoint against single-tile requests, on a running tileserver (the serving
benchmark's last table): stored bytes and decoded pixels, each both ways."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from bench.serving_data import Template, stored_path
from tileserver.client import TileClient


def batch_vs_single(url: str, slide_id: str, limit: int, tile_size: int) -> list[list[str]]:
    """Tiles per second over the first ``limit`` level-0 tiles: single requests against
    batches, stored bytes and then decoded pixels (npy both ways; the tile URL has no npy,
    so a decoded single is the tile's rectangle from ``/region``)."""
    with TileClient(url, max_connections=8) as client:
        addresses = client.tile_addresses(slide_id, 0, False)[:limit]
        stored_url = stored_path(slide_id)
        t = tile_size

        def region_url(c: int, r: int) -> str:
            return (
                f"/slides/{slide_id}/region?level=0&x={c * t}&y={r * t}"
                f"&width={t}&height={t}&format=npy"
            )

        async def singles(n: int, template: Template) -> float:
            limits = httpx.Limits(max_connections=8)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
                queue = list(addresses[:n])
                start = time.perf_counter()

                async def worker() -> None:
                    while queue:
                        a = queue.pop()
                        (await http.get(template(a.col, a.row))).raise_for_status()

                await asyncio.gather(*(worker() for _ in range(8)))
                return n / (time.perf_counter() - start)

        def timed(fn: Callable[[], int]) -> float:
            start = time.perf_counter()
            n = fn()
            return n / (time.perf_counter() - start)

        def raw() -> int:
            for i in range(0, len(addresses), 64):
                client.read_stored(slide_id, addresses[i : i + 64])
            return len(addresses)

        def npy() -> int:
            n = 0
            for batch in client.iter_tiles(slide_id, batch_size=64, tissue_only=False):
                n += len(batch)
                if n >= len(addresses):
                    break
            return n

        stored = asyncio.run(singles(len(addresses), stored_url))
        decoded = asyncio.run(singles(min(256, len(addresses)), region_url))
        raw_rate, npy_rate = timed(raw), timed(npy)
    single_npy = "single GET /region ?format=npy, one tile decoded (8 in flight)"
    return [
        ["single GET, stored bytes (8 in flight)", f"{stored:,.0f}", "1.0x"],
        ["batch raw, 64 per request (sequential)", f"{raw_rate:,.0f}", f"{raw_rate / stored:.1f}x"],
        [single_npy, f"{decoded:,.0f}", "1.0x"],
        [
            "batch npy via iter_tiles, 64 per request (4 in flight)",
            f"{npy_rate:,.0f}",
            f"{npy_rate / decoded:.1f}x",
        ],
    ]
