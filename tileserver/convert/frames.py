"""Frames of one output image, in TILED_FULL order (row by row), one tile row read at once.

A stored tile whose form matches the level's coding is kept byte for byte. Every other
tile (another coding, a form that differs, an edge tile short of full size, as OpenSlide
renders them) is decoded, padded to full tile size with the glass colour and encoded;
a tile a sparse level never stored becomes a frame of the glass colour (TILED_FULL has
a frame for every tile position).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from tileserver import codec
from tileserver.convert.coding import Coding, Pixels, encode, encoded_coding, jpeg_form
from tileserver.errors import TileAbsentError
from tileserver.formats import JPEG, EncodedTile
from tileserver.geometry import Size
from tileserver.slide import Slide

#: Threads making frames; tiles read and made per task.
WORKERS = min(4, os.cpu_count() or 1)
RUN = 16


@dataclass
class Counts:
    """How the frames of one image were made."""

    kept: int = 0  # stored bytes, unchanged
    encoded: int = 0  # decoded and encoded
    filled: int = 0  # absent: the glass colour

    def add(self, other: Counts) -> None:
        self.kept += other.kept
        self.encoded += other.encoded
        self.filled += other.filled


T = TypeVar("T")


def _in_order(futures: Iterable[Future[T]], ahead: int) -> Iterator[T]:
    """Results of ``futures`` in order, submitting at most ``ahead`` before the first is
    taken (frames are streamed: a level is never held whole); pending ones are cancelled
    when the consumer stops."""
    pending: deque[Future[T]] = deque()
    try:
        for future in futures:
            pending.append(future)
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def level_coding(slide: Slide, level: int, lossless: bool) -> Coding:
    """A JPEG level keeps the coding of its stored tiles; any other level is encoded
    (JPEG, or JPEG 2000 lossless with ``lossless``: keeping JPEG tiles adds no loss)."""
    first = _first_stored(slide, level)
    if first is None:
        return encoded_coding(3, lossless)
    if first.media_type == JPEG:
        form = jpeg_form(first.data)
        if form is not None and form.baseline and form.coding is not None:
            return form.coding
    return encoded_coding(1 if first.pixel_format.samples_per_pixel == 1 else 3, lossless)


def _first_stored(slide: Slide, level: int) -> EncodedTile | None:
    grid = slide.levels[level].grid
    for row in range(grid.height):
        tiles = slide.read_tiles(level, [(col, row) for col in range(grid.width)])
        found = next((tile for tile in tiles if tile is not None), None)
        if found is not None:
            return found
    return None


class LevelFrames:
    """The frames of one pyramid level (first focal plane and optical path), made by
    ``workers`` threads a run of tiles at a time (readers are thread-safe; codecs and
    OpenSlide release the GIL) and handed on in order, a bounded number ahead."""

    def __init__(
        self,
        slide: Slide,
        level: int,
        coding: Coding,
        quality: int,
        background: tuple[int, int, int],
        workers: int = WORKERS,
    ) -> None:
        self.slide = slide
        self.level = slide.levels[level]
        self.coding = coding
        self.quality = quality
        self.background = background
        self.workers = workers
        self.counts = Counts()

    @property
    def count(self) -> int:
        return self.level.grid.area

    def __iter__(self) -> Iterator[bytes]:
        fill = encode(self._canvas(), self.coding, self.quality)
        grid = self.level.grid
        runs = [
            [(col, row) for col in range(start, min(start + RUN, grid.width))]
            for row in range(grid.height)
            for start in range(0, grid.width, RUN)
        ]
        with ThreadPoolExecutor(self.workers, thread_name_prefix="convert") as pool:
            futures = (pool.submit(self._run, run, fill) for run in runs)
            for frames, counts in _in_order(futures, 2 * self.workers):
                self.counts.add(counts)
                yield from frames

    def _run(self, tiles: list[tuple[int, int]], fill: bytes) -> tuple[list[bytes], Counts]:
        counts = Counts()
        stored = self.slide.read_tiles(self.level.index, tiles)
        return [self._frame(tile, fill, counts) for tile in stored], counts

    def _frame(self, tile: EncodedTile | None, fill: bytes, counts: Counts) -> bytes:
        if tile is None:
            counts.filled += 1
            return fill
        if self._keeps(tile):
            counts.kept += 1
            return tile.data
        counts.encoded += 1
        pixels = codec.decode(tile)
        return encode(self._padded(pixels), self.coding, self.quality)

    def _keeps(self, tile: EncodedTile) -> bool:
        if tile.transfer_syntax != self.coding.transfer_syntax or tile.media_type != JPEG:
            return False
        form = jpeg_form(tile.data)
        size = self.level.tile_size
        return (
            form is not None
            and form.baseline
            and form.coding == self.coding
            and (form.width, form.height) == (size.width, size.height)
        )

    def _canvas(self) -> Pixels:
        return canvas(self.level.tile_size, self.coding.samples, self.background)

    def _padded(self, pixels: Pixels) -> Pixels:
        out = self._canvas()
        pixels = with_samples(pixels, self.coding.samples)
        height, width = min(pixels.shape[0], out.shape[0]), min(pixels.shape[1], out.shape[1])
        out[:height, :width] = pixels[:height, :width]
        return out


def canvas(size: Size, samples: int, background: tuple[int, int, int]) -> Pixels:
    """An image of ``size`` painted with ``background`` (its mean, for grey)."""
    if samples == 1:
        return np.full((size.height, size.width), round(sum(background) / 3), dtype=np.uint8)
    return np.full((size.height, size.width, 3), background, dtype=np.uint8)


def with_samples(pixels: Pixels, samples: int) -> Pixels:
    """``pixels`` as grey ((H, W)) or RGB ((H, W, 3))."""
    if samples == 1 and pixels.ndim == 3:
        grey: Pixels = pixels.mean(axis=2).round().astype(np.uint8)
        return grey
    if samples == 3 and pixels.ndim == 2:
        return np.repeat(pixels[:, :, np.newaxis], 3, axis=2)
    return pixels


def associated_pixels(slide: Slide, name: str, background: tuple[int, int, int]) -> Pixels:
    """A whole associated image from its tiles or strips (each a small read)."""
    image = slide.associated[name]
    first = codec.decode(slide.read_associated_bytes(name, 0, 0))
    samples = 1 if first.ndim == 2 else 3
    out = canvas(image.size, samples, background)
    for row in range(image.grid.height):
        for col in range(image.grid.width):
            try:
                tile = first if (col, row) == (0, 0) else _decoded(slide, name, col, row)
            except TileAbsentError:
                continue
            x, y = col * image.tile_size.width, row * image.tile_size.height
            part = with_samples(tile, samples)[: image.size.height - y, : image.size.width - x]
            out[y : y + part.shape[0], x : x + part.shape[1]] = part
    return out


def _decoded(slide: Slide, name: str, col: int, row: int) -> Pixels:
    return codec.decode(slide.read_associated_bytes(name, col, row))


class AssociatedFrames:
    """An associated image as one frame (label, overview and thumbnail are small)."""

    def __init__(self, pixels: Pixels, coding: Coding, quality: int) -> None:
        self.pixels = pixels
        self.coding = coding
        self.quality = quality
        self.counts = Counts()
        self.count = 1

    def __iter__(self) -> Iterator[bytes]:
        self.counts.encoded += 1
        yield encode(self.pixels, self.coding, self.quality)
