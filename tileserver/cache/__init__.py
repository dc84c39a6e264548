"""One async bytes cache interface; in-process LRU and Redis backends; keys carry content version.

``build_cache`` is called from the application lifespan, which also closes the result.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from tileserver.cache.base import Cache, KeyPart, make_key, pack, unpack, version_prefix
from tileserver.cache.memory import MemoryCache
from tileserver.cache.singleflight import SingleFlight, coalesce
from tileserver.cache.tiered import TieredCache
from tileserver.errors import UnsupportedError

__all__ = [
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

#: Shared (L2) backends by URL scheme, imported only when configured.
L2_BACKENDS: dict[str, str] = {
    "redis": "tileserver.cache.redis:RedisCache",
    "rediss": "tileserver.cache.redis:RedisCache",
    "unix": "tileserver.cache.redis:RedisCache",
}


def build_cache(redis_url: str | None, memory_bytes: int, **l2_options: Any) -> TieredCache:
    """An in-process LRU of ``memory_bytes``, backed by Redis when ``redis_url`` is given."""
    l1 = MemoryCache(memory_bytes)
    if not redis_url:
        return TieredCache(l1)
    return TieredCache(l1, _l2_class(redis_url)(redis_url, **l2_options))


def _l2_class(url: str) -> Callable[..., Cache]:
    scheme = urlsplit(url).scheme
    target = L2_BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted(L2_BACKENDS))
        raise UnsupportedError(f"cache URL scheme {scheme!r} is not one of: {known}")
    module_name, _, attr = target.partition(":")
    return cast(Callable[..., Cache], getattr(importlib.import_module(module_name), attr))
