"""S3-compatible object storage as a byte source (``s3://BUCKET/KEY``), through obstore.

obstore is a thin Python layer over Rust's ``object_store`` (the client of several cloud
imaging stores): ranged GETs, conditional requests, listing, timeouts and retries with
backoff, credentials from the standard ``AWS_*`` variables, with no event loop of its own
to bridge, so the sync, thread-safe reader protocol maps onto it directly.

An object's identity is its ETag and size. Every read is a ranged GET conditional on that
ETag (``If-Match``), so a rewritten object is refused (``SlideChangedError``) and
re-indexed, never served at the old offsets. Reads are kept in a process-wide LRU bounded
by bytes, so a repeated tile costs no GET and ``read_if_cached`` can answer from memory;
with ``--redis-url`` they are shared through Redis too (``readers/shared_ranges.py``), so a
tile any server fetched costs no GET on the others.
An unreachable or failing store raises ``SourceUnavailableError`` (HTTP 503) for its slides
only. Endpoint, region and credentials come from ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and the rest of
the standard variables), so MinIO, Ceph and the clouds all work; ``AWS_ALLOW_HTTP=true``
for a plain-HTTP endpoint.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from tileserver.errors import CorruptSlideError, SlideChangedError, SourceUnavailableError
from tileserver.readers.shared_ranges import SharedRanges
from tileserver.readers.source import SourceIdentity

#: Bytes of object reads kept in memory per process (``TILESERVER_S3_CACHE_BYTES``).
CACHE_BYTES = int(os.environ.get("TILESERVER_S3_CACHE_BYTES", str(128 << 20)))
#: Read-ahead windows of a walk over small items (``advise``): the first window's size,
#: doubled for each window that follows, up to the largest. Bounded: never a whole object.
FIRST_WINDOW = 64 << 10
MAX_WINDOW = 8 << 20
#: How long an object's identity check (a HEAD) is trusted.
CHECK_SECONDS = 5.0


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise CorruptSlideError(f"{uri}: not an s3://BUCKET/KEY address")
    return bucket, key


_stores: dict[tuple[str, str], Any] = {}
_stores_lock = threading.Lock()


def store(bucket: str) -> Any:
    """One client per bucket and process, configured from the ``AWS_*`` variables."""
    key = (bucket, os.environ.get("AWS_ENDPOINT_URL", ""))  # tests switch endpoints
    with _stores_lock:
        found = _stores.get(key)
        if found is None:
            from obstore.store import S3Store

            found = _stores[key] = S3Store(
                bucket,
                client_options={
                    # Passing client options drops the variable's own effect: carry it over.
                    "allow_http": os.environ.get("AWS_ALLOW_HTTP", "").lower() == "true",
                    "connect_timeout": timedelta(seconds=5),
                    "timeout": timedelta(seconds=30),
                },
                retry_config={
                    "max_retries": 3,
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=2),
                        "base": 2,
                    },
                    "retry_timeout": timedelta(seconds=20),
                },
            )
        return found


def _unavailable(uri: str, exc: Exception) -> SourceUnavailableError:
    return SourceUnavailableError(f"{uri}: object storage unavailable: {type(exc).__name__}")


class _RangeCache:
    """Recent object reads by (uri, tag, offset, length), bounded by bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str, int, int], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, int, int]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[str, str, int, int], data: bytes) -> None:
        if len(data) > self.capacity // 8:
            return  # one read must not flush everything else
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._size += len(data)
            while self._size > self.capacity:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)


RANGES = _RangeCache(CACHE_BYTES)
#: Redis behind ``RANGES`` (``share_through``): reads shared by every server.
SHARED: SharedRanges | None = None


def share_through(redis_url: str | None) -> None:
    """Share object reads through Redis (the server's ``--redis-url``), or stop sharing."""
    global SHARED
    SHARED = SharedRanges(redis_url) if redis_url else None


class S3Object:
    """One object as indexed (``ByteSource``)."""

    def __init__(self, identity: SourceIdentity) -> None:
        self._identity = identity
        self._bucket, self._key = split(identity.uri)
        self._window: tuple[int, bytes] | None = None  # a read-ahead span (``advise``)
        self._checked = (-CHECK_SECONDS, False)  # (monotonic time, changed)

    @property
    def identity(self) -> SourceIdentity:
        return self._identity

    def read(self, offset: int, length: int) -> bytes:
        if length == 0:
            return b""
        key = (self._identity.uri, self._identity.tag, offset, length)
        data = RANGES.get(key) or self._from_window(offset, length)
        if data is None and self._follows_window(offset):
            self._next_window(offset, length)
            data = self._from_window(offset, length)
        if data is None:
            data = self._shared_or_get(offset, length)
            RANGES.put(key, data)
        return data

    def _shared_or_get(self, offset: int, length: int) -> bytes:
        """From the other servers' reads (Redis), else one ranged GET shared with them."""
        shared = SHARED
        if shared is None:
            return self._get(offset, length)
        key = shared.key(self._identity.uri, self._identity.tag, offset, length)
        data = shared.get(key)
        if data is None or len(data) != length:
            data = self._get(offset, length)
            shared.put(key, data)
        return data

    def read_if_cached(self, offset: int, length: int) -> bytes | None:
        return RANGES.get((self._identity.uri, self._identity.tag, offset, length))

    def changed(self) -> bool:
        at, changed = self._checked
        now = time.monotonic()
        if now - at < CHECK_SECONDS:
            return changed
        try:
            changed = identity_now(self._identity.uri) != self._identity
        except SourceUnavailableError:
            return False  # unreachable is not changed: reads answer 503 meanwhile
        except SlideChangedError:
            changed = True  # deleted
        self._checked = (now, changed)
        return changed

    def advise(self, offset: int, length: int) -> None:
        """Start a read-ahead window at ``offset``: reads just past it fetch the next one,
        twice as large (up to ``MAX_WINDOW``)."""
        if self._window is None or not self._follows_window(offset):
            self._fetch_window(offset, min(length, FIRST_WINDOW))

    def close(self) -> None:
        self._window = None

    def _follows_window(self, offset: int) -> bool:
        if self._window is None:
            return False
        start, data = self._window
        return start <= offset < start + 3 * len(data)

    def _next_window(self, offset: int, length: int) -> None:
        assert self._window is not None
        self._fetch_window(offset, max(length, min(MAX_WINDOW, 2 * len(self._window[1]))))

    def _fetch_window(self, offset: int, length: int) -> None:
        length = min(length, self._identity.size - offset)
        if length > 0:
            self._window = (offset, self._get(offset, length))

    def _from_window(self, offset: int, length: int) -> bytes | None:
        window = self._window
        if window is None:
            return None
        start, data = window
        if start <= offset and offset + length <= start + len(data):
            return data[offset - start : offset - start + length]
        return None

    def _get(self, offset: int, length: int) -> bytes:
        from obstore import get
        from obstore.exceptions import NotFoundError, PreconditionError

        options = {"range": (offset, offset + length), "if_match": self._identity.tag}
        try:
            data = bytes(get(store(self._bucket), self._key, options=options).bytes())  # type: ignore[arg-type]
        except PreconditionError as exc:
            raise SlideChangedError(f"{self._identity.uri} changed since it was indexed") from exc
        except NotFoundError as exc:
            raise SlideChangedError(f"{self._identity.uri} is gone") from exc
        except Exception as exc:  # timeouts, refused connections, 5xx after retries
            raise _unavailable(self._identity.uri, exc) from exc
        if len(data) != length:
            raise CorruptSlideError(f"{self._identity.uri} is shorter than its index")
        return data


def identity_now(uri: str) -> SourceIdentity:
    """The object's identity now (a HEAD); ``SlideChangedError`` when it is gone."""
    from obstore import head
    from obstore.exceptions import NotFoundError

    bucket, key = split(uri)
    try:
        meta = head(store(bucket), key)
    except NotFoundError as exc:
        raise SlideChangedError(f"{uri} is gone") from exc
    except Exception as exc:
        raise _unavailable(uri, exc) from exc
    return SourceIdentity(uri, int(meta["size"]), str(meta["e_tag"] or meta["last_modified"]))


def list_sources(root: str) -> Iterator[SourceIdentity]:
    """Every object under ``root`` (``s3://bucket/prefix``), in key order; hidden names
    (a path part starting with ".") left out, as on disk."""
    from obstore import list as list_objects

    bucket, prefix = split(root)
    prefix = prefix.rstrip("/")
    try:
        chunks = list(list_objects(store(bucket), prefix=prefix or None))
    except Exception as exc:
        raise _unavailable(root, exc) from exc
    metas = sorted((meta for chunk in chunks for meta in chunk), key=lambda m: m["path"])
    for meta in metas:
        path = meta["path"]
        if any(part.startswith(".") for part in path.split("/")):
            continue
        tag = str(meta["e_tag"] or meta["last_modified"])
        yield SourceIdentity(f"s3://{bucket}/{path}", int(meta["size"]), tag)
