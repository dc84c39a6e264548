"""In-process cache pieces: keys, envelope, LRU by bytes, tiers, singleflight, the factory."""

from __future__ import annotations

import asyncio
import functools

import pytest

from tileserver import cache
from tileserver.cache import (
    MemoryCache,
    SingleFlight,
    TieredCache,
    build_cache,
    coalesce,
    make_key,
    pack,
    unpack,
    version_prefix,
)
from tileserver.errors import UnsupportedError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- keys and envelope ---------------------------------------------------------------


def test_public_api_is_frozen() -> None:
    assert sorted(cache.__all__) == [
        "Cache",
        "KeyPart",
        "MemoryCache",
        "SingleFlight",
        "TieredCache",
        "build_cache",
        "coalesce",
        "make_key",
        "pack",
        "unpack",
        "version_prefix",
    ]


def test_key_starts_with_readable_version_prefix() -> None:
    key = make_key("1.2.840.99-7", "dzi", "12", "3_4", "jpeg", "90")

    assert key.startswith("ts:1.2.840.99-7:")
    assert key.startswith(version_prefix("1.2.840.99-7"))
    assert len(key) == len("ts:1.2.840.99-7:") + 32


def test_key_parts_are_unambiguous() -> None:
    assert make_key("v", "ab", "c") != make_key("v", "a", "bc")
    assert make_key("v", "a") == make_key("v", "a")


def test_key_parts_may_be_numbers_distinct_from_their_text() -> None:
    key = make_key("v", "tile", 3, 0.5, None)

    assert key == make_key("v", "tile", 3, 0.5, None)
    assert key != make_key("v", "tile", "3", 0.5, None)
    assert make_key("v", 1) != make_key("v", 1.0) != make_key("v", True)


def test_version_prefix_of_one_version_does_not_cover_another() -> None:
    assert not make_key("v10", "x").startswith(version_prefix("v1"))


def test_version_with_separator_or_glob_characters_is_quoted() -> None:
    prefix = version_prefix("a:b*[c]")

    assert prefix.count(":") == 2
    assert not set("*?[]\\") & set(prefix)


@pytest.mark.parametrize("media_type", ["image/jpeg", "application/json", ""])
def test_pack_round_trips(media_type: str) -> None:
    data = b"\xff\xd8payload\x00"

    assert unpack(pack(media_type, data)) == (media_type, data)


@pytest.mark.parametrize("blob", [b"", b"\xe1", b"\xe1\x09short", b"plain bytes"])
def test_unpack_rejects_foreign_blobs(blob: bytes) -> None:
    with pytest.raises(ValueError):
        unpack(blob)


def test_pack_rejects_overlong_media_type() -> None:
    with pytest.raises(ValueError):
        pack("x" * 256, b"")


# --- MemoryCache -----------------------------------------------------------------------


async def test_memory_get_returns_what_set_stored() -> None:
    lru = MemoryCache(10_000)

    await lru.set("k", b"value")

    assert await lru.get("k") == b"value"
    assert await lru.get("other") is None
    stats = lru.stats()
    assert (stats["hits"], stats["misses"], stats["items"]) == (1, 1, 1)
    assert stats["bytes"] == len("k") + len(b"value")


async def test_memory_evicts_least_recently_used_by_bytes() -> None:
    lru = MemoryCache(800)  # items up to 100 bytes; 8 of these fit
    for i in range(8):
        await lru.set(f"k{i}", bytes(98))
    await lru.get("k0")  # k0 is now the most recent; k1 the oldest

    await lru.set("k8", bytes(98))

    assert await lru.get("k1") is None
    assert await lru.get("k0") is not None
    assert await lru.get("k8") is not None
    stats = lru.stats()
    assert stats["bytes"] <= 800
    assert stats["evictions"] == 1


async def test_memory_skips_values_over_an_eighth_of_capacity() -> None:
    lru = MemoryCache(800)

    await lru.set("big", bytes(200))

    assert await lru.get("big") is None
    assert lru.stats()["oversized"] == 1
    assert lru.stats()["bytes"] == 0


async def test_memory_oversized_replacement_drops_the_old_value() -> None:
    lru = MemoryCache(800)
    await lru.set("k", b"old")

    await lru.set("k", bytes(200))

    assert await lru.get("k") is None


async def test_memory_entry_expires_after_ttl() -> None:
    lru = MemoryCache(1000)
    await lru.set("short", b"x", ttl=0.01)
    await lru.set("long", b"y", ttl=60)

    await asyncio.sleep(0.03)

    assert await lru.get("short") is None
    assert await lru.get("long") == b"y"


async def test_memory_delete_prefix_and_clear() -> None:
    lru = MemoryCache(10_000)
    keys_a = [make_key("a", str(i)) for i in range(3)]
    key_b = make_key("b", "0")
    for key in [*keys_a, key_b]:
        await lru.set(key, b"v")

    assert await lru.delete_prefix(version_prefix("a")) == 3
    assert await lru.get(key_b) == b"v"
    assert lru.stats()["items"] == 1

    await lru.clear()
    assert lru.stats()["items"] == lru.stats()["bytes"] == 0


async def test_memory_is_safe_across_threads() -> None:
    lru = MemoryCache(5_000)

    def hammer(n: int) -> None:
        for i in range(500):
            lru.set_sync(f"{n}-{i % 40}", bytes(50))
            lru.get_sync(f"{n}-{(i * 7) % 40}")

    await asyncio.gather(*(asyncio.to_thread(hammer, n) for n in range(4)))

    stats = lru.stats()
    assert 0 < stats["bytes"] <= 5_000
    assert stats["hits"] + stats["misses"] == 2_000


# --- TieredCache ----------------------------------------------------------------------


async def test_tiered_promotes_l2_hits_into_l1() -> None:
    l1, l2 = MemoryCache(10_000), MemoryCache(10_000)
    tiers = TieredCache(l1, l2)
    await l2.set("k", b"shared")

    assert await tiers.get("k") == b"shared"
    assert await l1.get("k") == b"shared"
    assert await tiers.get("k") == b"shared"

    stats = tiers.stats()
    assert stats["l2_hits"] == 1
    assert stats["l1_misses"] == 1
    assert stats["hits"] == 2


async def test_tiered_set_writes_both_tiers() -> None:
    l1, l2 = MemoryCache(10_000), MemoryCache(10_000)
    tiers = TieredCache(l1, l2)

    await tiers.set("k", b"v")
    await tiers.flush()

    assert await l1.get("k") == await l2.get("k") == b"v"


async def test_tiered_miss_in_both_counts_once() -> None:
    tiers = TieredCache(MemoryCache(1000), MemoryCache(1000))

    assert await tiers.get("absent") is None

    stats = tiers.stats()
    assert (stats["misses"], stats["l1_misses"], stats["l2_misses"]) == (1, 1, 1)


async def test_tiered_without_l2() -> None:
    tiers = TieredCache(MemoryCache(1000))

    await tiers.set("k", b"v")

    assert await tiers.get("k") == b"v"
    assert "l2_hits" not in tiers.stats()


class _StuckL2(MemoryCache):
    """An L2 whose writes wait until released, like a slow Redis."""

    def __init__(self) -> None:
        super().__init__(10_000)
        self.release = asyncio.Event()

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.release.wait()
        await super().set(key, value, ttl)


async def test_tiered_bounds_background_l2_writes() -> None:
    l2 = _StuckL2()
    tiers = TieredCache(MemoryCache(10_000), l2, max_pending=2)

    for i in range(5):
        await tiers.set(f"k{i}", b"v")

    assert tiers.stats()["l2_pending"] == 2
    assert tiers.stats()["l2_dropped"] == 3
    l2.release.set()
    await tiers.flush()
    assert tiers.stats()["l2_pending"] == 0
    assert l2.stats()["items"] == 2


class _BrokenL2(MemoryCache):
    async def get(self, key: str) -> bytes | None:
        raise RuntimeError("bug in a backend")

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        raise RuntimeError("bug in a backend")


async def test_tiered_survives_an_l2_that_raises() -> None:
    tiers = TieredCache(MemoryCache(10_000), _BrokenL2(10_000))

    await tiers.set("k", b"v")
    await tiers.flush()
    await tiers.l1.clear()

    assert await tiers.get("k") is None
    assert tiers.stats()["errors"] == 2


async def test_tiered_delete_prefix_purges_both_tiers() -> None:
    l1, l2 = MemoryCache(10_000), MemoryCache(10_000)
    tiers = TieredCache(l1, l2)
    await tiers.set(make_key("old", "t"), b"v")
    await tiers.set(make_key("new", "t"), b"v")

    assert await tiers.delete_prefix(version_prefix("old")) == 2

    assert await tiers.get(make_key("old", "t")) is None
    assert await tiers.get(make_key("new", "t")) == b"v"


async def test_tiered_close_waits_for_pending_writes() -> None:
    l2 = MemoryCache(10_000)
    tiers = TieredCache(MemoryCache(10_000), l2)
    await tiers.set("k", b"v")

    await tiers.close()

    assert tiers.stats()["l2_pending"] == 0


# --- singleflight ---------------------------------------------------------------------


async def test_coalesce_runs_factory_once_for_concurrent_callers() -> None:
    calls = 0
    gate = asyncio.Event()

    async def render() -> bytes:
        nonlocal calls
        calls += 1
        await gate.wait()
        return b"tile"

    waiters = [asyncio.create_task(coalesce("tile-key", render)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters)

    assert calls == 1
    assert results == [b"tile"] * 50


async def test_coalesce_runs_again_once_the_first_call_finished() -> None:
    calls = 0

    async def render() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await coalesce("again", render) == 1
    assert await coalesce("again", render) == 2


async def test_singleflight_shares_exceptions_and_forgets_them() -> None:
    flight = SingleFlight()
    gate = asyncio.Event()

    async def fail() -> bytes:
        await gate.wait()
        raise ValueError("decode failed")

    waiters = [asyncio.create_task(flight.run("k", fail)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)

    assert all(isinstance(r, ValueError) for r in results)
    assert len(flight) == 0


async def test_singleflight_cancelled_caller_does_not_cancel_the_others() -> None:
    flight = SingleFlight()
    gate = asyncio.Event()

    async def render() -> bytes:
        await gate.wait()
        return b"tile"

    quitter = asyncio.create_task(flight.run("k", render))
    stayer = asyncio.create_task(flight.run("k", render))
    await asyncio.sleep(0)
    quitter.cancel()
    gate.set()

    assert await stayer == b"tile"
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_singleflight_distinct_keys_run_separately() -> None:
    flight = SingleFlight()

    async def render(key: str) -> str:
        await asyncio.sleep(0)
        return key

    results = await asyncio.gather(*(flight.run(k, functools.partial(render, k)) for k in "abc"))

    assert results == ["a", "b", "c"]


# --- build_cache ------------------------------------------------------------------------


async def test_build_cache_without_redis_is_memory_only() -> None:
    tiers = build_cache(None, 1_000)

    assert tiers.l2 is None
    assert tiers.l1.max_bytes == 1_000


def test_build_cache_rejects_unknown_scheme() -> None:
    with pytest.raises(UnsupportedError):
        build_cache("memcached://localhost:11211", 1_000)
