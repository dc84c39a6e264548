"""How the batch endpoint splits a request into chunks and streams them (no server)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import anyio
import pytest

from tileserver.errors import CorruptSlideError
from tileserver.http.batch import CHUNK, CHUNK_BYTES, READ_AHEAD, plan_chunks, read_ahead

Address = tuple[int, int, int]
ADDRESSES = [(0, c, 0) for c in range(300)]


def test_small_tiles_are_chunked_by_count() -> None:
    tile_bytes = 256 * 256 * 3
    assert CHUNK * tile_bytes <= CHUNK_BYTES and len(ADDRESSES) > 2 * CHUNK  # the case's premise
    chunks = plan_chunks(ADDRESSES, tile_bytes)
    full, rest = divmod(len(ADDRESSES), CHUNK)
    assert [len(c) for c in chunks] == [CHUNK] * full + ([rest] if rest else [])
    assert [a for c in chunks for a in c] == ADDRESSES


@pytest.mark.parametrize("side", [512, 1024, 2048, 8192])
def test_large_tiles_are_chunked_by_bytes(side: int) -> None:
    tile_bytes = side * side * 3
    chunks = plan_chunks(ADDRESSES, tile_bytes)
    assert all(len(c) * tile_bytes <= max(CHUNK_BYTES, tile_bytes) for c in chunks)
    # As full as the limits allow: every chunk but the last would overflow with one more.
    assert all(len(c) == CHUNK or (len(c) + 1) * tile_bytes > CHUNK_BYTES for c in chunks[:-1])
    assert [a for c in chunks for a in c] == ADDRESSES


def test_an_empty_batch_is_one_empty_chunk() -> None:
    assert plan_chunks([], 3) == [[]]


class Recorder:
    """``work`` and ``emit`` for ``read_ahead``; ``work`` notes how many chunks had been
    emitted when it started, and raises for chunk ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.emitted: list[bytes] = []
        self.started: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def work(self, chunk: Sequence[Address]) -> bytes:
        index = chunk[0][1]
        with self._lock:
            self.started.append((index, len(self.emitted)))
        if index == self.fail_at:
            raise CorruptSlideError(f"chunk {index}")
        return str(index).encode()

    async def emit(self, data: bytes) -> None:
        self.emitted.append(data)
        for _ in range(3):  # let the readers run ahead as far as they may
            await anyio.sleep(0)

    async def read(self, chunk: Sequence[Address]) -> bytes:
        return await anyio.to_thread.run_sync(self.work, chunk)

    def run(self, count: int) -> None:
        anyio.run(read_ahead, [[(0, i, 0)] for i in range(count)], self.read, self.emit)


def test_read_ahead_emits_in_order_and_reads_a_bounded_window_ahead() -> None:
    recorder = Recorder()
    recorder.run(20)
    assert recorder.emitted == [str(i).encode() for i in range(20)]
    assert all(index - emitted <= READ_AHEAD + 1 for index, emitted in recorder.started)


def test_a_failing_chunk_raises_its_error_after_the_chunks_before_it() -> None:
    recorder = Recorder(fail_at=5)
    with pytest.raises(CorruptSlideError, match="chunk 5"):
        recorder.run(20)
    assert recorder.emitted == [str(i).encode() for i in range(5)]
    assert max(index for index, _ in recorder.started) <= 5 + READ_AHEAD + 1
