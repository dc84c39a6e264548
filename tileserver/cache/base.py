"""The one cache interface (async, bytes in, bytes out), key layout and value envelope.

A cache never fails a request: implementations swallow their own errors and report them
as misses (``get``) or no-ops (``set``), counting them in ``stats()["errors"]``.

Keys are ``ts:{version}:{digest}``. The version is the slide's content version, kept
readable so that ``delete_prefix(version_prefix(version))`` purges one slide; the digest
covers every other part of the request (level, tile, format, quality ...).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Protocol
from urllib.parse import quote

KEY_PREFIX = "ts:"

#: What a key part may be; numbers and None are tagged with their type, so 1 != "1".
KeyPart = str | int | float | None

#: Envelope layout: magic byte, media-type length byte, ASCII media type, payload.
_MAGIC = 0xE1


class Cache(Protocol):
    """Async bytes cache; no method raises for backend trouble."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


@functools.lru_cache(maxsize=4096)
def version_prefix(version: str) -> str:
    """The prefix shared by every key ``make_key(version, ...)`` produces."""
    # Percent-quoting keeps the prefix injective and free of ':' and glob characters.
    return f"{KEY_PREFIX}{quote(version, safe='')}:"


def make_key(version: str, *parts: KeyPart) -> str:
    """A compact key: readable content version, then a digest of the remaining parts.

    The digest covers ``repr`` of the parts' tuple, which is exact for floats, quotes and
    escapes strings and tells types apart (``1``, ``1.0``, ``"1"``, ``True``), in one hash
    update: the tile fast path computes a key per composed-tile request.
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=16)
    return version_prefix(version) + digest.hexdigest()


def pack(media_type: str, data: bytes) -> bytes:
    """Prefix ``data`` with its media type so a cached blob can be served as is."""
    encoded = media_type.encode("ascii")
    if len(encoded) > 255:
        raise ValueError(f"media type longer than 255 bytes: {media_type[:40]!r}...")
    return bytes((_MAGIC, len(encoded))) + encoded + data


def unpack(blob: bytes) -> tuple[str, bytes]:
    """Inverse of ``pack``; raises ``ValueError`` for a blob ``pack`` did not make."""
    if len(blob) < 2 or blob[0] != _MAGIC or len(blob) < 2 + blob[1]:
        raise ValueError("not a packed cache value")
    end = 2 + blob[1]
    try:
        media_type = blob[2:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ValueError("not a packed cache value") from exc
    return media_type, blob[end:]
