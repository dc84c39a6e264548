"""RedisCache against a real, private redis-server (conftest ``redis_server``/``redis_url``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis

from tileserver.cache import build_cache, make_key, version_prefix
from tileserver.cache.redis import DEFAULT_TTL, RedisCache
from tileserver.errors import CacheUnavailableError

if TYPE_CHECKING:
    from conftest import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

# Generous per-call bound so a loaded CI machine does not turn hits into timeouts.
TIMEOUT = 0.5
BACKOFF = 0.2

OpenCache = Callable[..., RedisCache]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def open_cache(redis_url: str) -> AsyncIterator[OpenCache]:
    """Make RedisCache instances on the test server; all are closed afterwards."""
    made: list[RedisCache] = []

    def make(**options: Any) -> RedisCache:
        made.append(RedisCache(redis_url, **{"timeout": TIMEOUT, "backoff": BACKOFF, **options}))
        return made[-1]

    yield make
    for instance in made:
        await instance.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


async def test_two_instances_share_entries(open_cache: OpenCache) -> None:
    writer, reader = open_cache(), open_cache()
    key = make_key("slide-1", "tile", "0")

    await writer.set(key, b"\x00jpeg bytes\xff")

    assert await reader.get(key) == b"\x00jpeg bytes\xff"
    assert reader.stats()["hits"] == 1
    assert writer.stats()["items"] == 1


async def test_missing_key_is_a_miss(open_cache: OpenCache) -> None:
    store = open_cache()

    assert await store.get(make_key("slide-1", "absent")) is None
    assert store.stats()["misses"] == 1
    assert store.stats()["errors"] == 0


async def test_every_entry_gets_a_ttl(open_cache: OpenCache, raw: redis.Redis) -> None:
    store = open_cache()
    default_key, short_key = make_key("v", "default"), make_key("v", "short")

    await store.set(default_key, b"v")
    await store.set(short_key, b"v", ttl=60)

    assert 0 < raw.pttl(default_key) <= DEFAULT_TTL * 1000
    assert 0 < raw.pttl(short_key) <= 60_000


async def test_delete_prefix_removes_only_that_prefix(
    open_cache: OpenCache, raw: redis.Redis
) -> None:
    store = open_cache(scan_count=7)  # several SCAN batches
    for i in range(40):
        await store.set(make_key("old", str(i)), b"v")
    keep = [make_key("older", "0"), make_key("new", "0")]
    for key in keep:
        await store.set(key, b"v")
    raw.set("foreign", b"not ours")

    assert await store.delete_prefix(version_prefix("old")) == 40

    assert sorted(raw.scan_iter()) == sorted(k.encode() for k in [*keep, "foreign"])


async def test_delete_prefix_matches_glob_characters_literally(
    open_cache: OpenCache, raw: redis.Redis
) -> None:
    store = open_cache()
    await store.set("ts:a*", b"v")
    await store.set("ts:ab", b"v")

    assert await store.delete_prefix("ts:a*") == 1

    assert raw.exists("ts:ab") == 1


async def test_clear_leaves_foreign_keys(open_cache: OpenCache, raw: redis.Redis) -> None:
    store = open_cache()
    await store.set(make_key("v", "0"), b"v")
    raw.set("foreign", b"x")

    await store.clear()

    assert list(raw.scan_iter()) == [b"foreign"]


async def test_outage_is_a_miss_then_recovers(
    open_cache: OpenCache, redis_server: RedisServer
) -> None:
    store = open_cache()
    key = make_key("slide", "tile")
    await store.set(key, b"before")
    assert await store.get(key) == b"before"

    redis_server.stop()
    try:
        assert await store.get(key) is None
        await store.set(key, b"during")  # must not raise
        with pytest.raises(CacheUnavailableError):  # a purge must not claim success
            await store.delete_prefix("ts:")
        errors = store.stats()["errors"]
        assert errors >= 1
        for _ in range(20):  # inside the back-off: no attempts, just misses
            assert await store.get(key) is None
        assert store.stats()["errors"] == errors
        assert store.stats()["skipped"] >= 20
    finally:
        redis_server.start()

    assert await _eventually_round_trips(store, key, b"after")
    assert store.stats()["hits"] >= 2


async def test_server_that_never_ran_costs_only_misses() -> None:
    store = RedisCache("redis://127.0.0.1:1/0", timeout=TIMEOUT, backoff=60)
    try:
        assert await store.get("k") is None
        await store.set("k", b"v")
        assert await store.get("k") is None
        assert store.stats()["errors"] == 1
        assert store.stats()["skipped"] == 2
    finally:
        await store.close()


async def test_server_that_never_answers_times_out_as_a_miss() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read, never reply: a hung Redis
        writer.close()

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    store = RedisCache(f"redis://127.0.0.1:{port}/0", timeout=0.05, backoff=60)
    try:
        assert await store.get("k") is None
        await store.set("k", b"v")
        assert store.stats()["errors"] == 1
        assert store.stats()["misses"] == 1
    finally:
        await store.close()
        silent.close()
        await silent.wait_closed()


async def test_build_cache_shares_redis_between_processes(redis_url: str) -> None:
    first, second = build_cache(redis_url, 100_000), build_cache(redis_url, 100_000)
    key = make_key("slide", "dzi", "10", "0_0")
    try:
        await first.set(key, b"tile")
        await first.flush()

        assert await second.get(key) == b"tile"
        assert second.stats()["l2_hits"] == 1
        assert await second.get(key) == b"tile"
        assert second.stats()["l1_hits"] == 1
    finally:
        await first.close()
        await second.close()


async def _eventually_round_trips(store: RedisCache, key: str, value: bytes) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        await store.set(key, value)
        if await store.get(key) == value:
            return True
        await asyncio.sleep(0.05)
    return False
