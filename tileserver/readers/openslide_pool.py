"""OpenSlide handles shared by a process's worker threads, bounded in number and in reads.

One handle per slide version serves every thread (OpenSlide handles are thread-safe, and
for TIFF-based formats OpenSlide reads in parallel inside one handle); a semaphore per
handle bounds its concurrent reads so one busy slide cannot take every worker. At most
``MAX_OPEN`` handles stay open, least recently used closed first; a handle is never closed
under a read: one retired while in use closes when its last read ends. Every handle shares
one ``OpenSlideCache`` (decoded tiles), as OpenSlide's users are advised to, so the memory
bound is one number whatever the number of slides.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

#: Handles kept open per process.
MAX_OPEN = 32
#: Reads of one handle at a time.
READS_PER_HANDLE = 4
#: Bytes of decoded tiles OpenSlide keeps for all handles together.
CACHE_BYTES = 128 * 1024 * 1024


@dataclass
class _Entry:
    handle: Any
    reads: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(READS_PER_HANDLE)
    )
    in_flight: int = 0
    retired: bool = False


class HandlePool:
    """Open OpenSlide handles by key (a slide version: a changed file is a new key)."""

    def __init__(self, max_open: int = MAX_OPEN, cache_bytes: int = CACHE_BYTES) -> None:
        self.max_open = max_open
        self.cache_bytes = cache_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._cache: Any = None

    @contextmanager
    def borrow(self, key: Hashable, path: str) -> Iterator[Any]:
        """The handle of ``key`` (opening ``path`` when none is open) for one read."""
        entry = self._checkout(key, path)
        try:
            with entry.reads:
                yield entry.handle
        finally:
            self._checkin(entry)

    def discard(self, key: Hashable) -> None:
        """Close the handle of ``key`` (after its reads end): its file changed, or a read
        failed (an OpenSlide handle that reported an error answers nothing after)."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._retire(entry)

    def open_count(self) -> int:
        with self._lock:
            return len(self._entries)

    def close_all(self) -> None:
        with self._lock:
            while self._entries:
                self._retire(self._entries.popitem()[1])

    def _checkout(self, key: Hashable, path: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.in_flight += 1
                self._entries.move_to_end(key)
                return entry
        handle = self._open(path)  # outside the lock: opening may take a while
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(handle)
                self._evict()
            else:  # another thread opened it meanwhile
                handle.close()
            entry.in_flight += 1
            self._entries.move_to_end(key)
            return entry

    def _checkin(self, entry: _Entry) -> None:
        with self._lock:
            entry.in_flight -= 1
            if entry.retired and entry.in_flight == 0:
                entry.handle.close()

    def _evict(self) -> None:
        """Retire least recently used handles beyond ``max_open`` (lock held)."""
        while len(self._entries) > self.max_open:
            self._retire(self._entries.popitem(last=False)[1])

    @staticmethod
    def _retire(entry: _Entry) -> None:
        entry.retired = True
        if entry.in_flight == 0:
            entry.handle.close()

    def _open(self, path: str) -> Any:
        import openslide

        handle = openslide.OpenSlide(path)
        with self._lock:
            if self._cache is None:
                self._cache = openslide.OpenSlideCache(self.cache_bytes)
            cache = self._cache
        handle.set_cache(cache)
        return handle


_pool: HandlePool | None = None
_pool_lock = threading.Lock()


def pool() -> HandlePool:
    """This process's pool, made on first use (after any fork of worker processes)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = HandlePool()
        return _pool
