"""Request patterns that mimic real users; each yields the next request a worker sends.

* ``viewer``: pan/zoom sessions, each step a burst of a 3x3 viewport of neighbouring tiles,
  then a pan, a zoom in or a zoom out; over DZI (``/dzi/{id}.dzi``) where the server has
  it, else over the native tile API.
* ``random``: tiles drawn uniformly from every tile of every level (native API).
* ``scan``: an AI pipeline walking level 0 in row-major order through the batch endpoint;
  all workers share one cursor, which wraps around at the end.
"""

from __future__ import annotations

import bisect
import math
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

PATTERNS = ("viewer", "random", "scan")


@dataclass(frozen=True, slots=True)
class Call:
    """One request to send."""

    method: str
    url: str
    json: Any = None


@dataclass(frozen=True, slots=True)
class Pyramid:
    """Tile grids from coarse to fine and the URL of a tile, for one slide and one API."""

    grids: tuple[tuple[int, int], ...]
    url: Callable[[int, int, int], str]


def native_pyramid(slide: Mapping[str, Any]) -> Pyramid:
    """Native ``/slides/{id}/tiles/{level}/{col}/{row}`` (level 0 is the finest)."""
    sid, levels = quote(slide["id"], safe=""), slide["levels"]
    count = len(levels)
    grids = tuple((lv["grid"][0], lv["grid"][1]) for lv in reversed(levels))

    def url(k: int, col: int, row: int) -> str:
        return f"/slides/{sid}/tiles/{count - 1 - k}/{col}/{row}"

    return Pyramid(grids, url)


def dzi_pyramid(slide_id: str, descriptor: str) -> Pyramid:
    """Deep Zoom levels from a ``.dzi`` descriptor (level 0 is 1x1 pixel)."""
    root = ET.fromstring(descriptor)
    size = next(el for el in root if el.tag.endswith("Size"))
    width, height = int(size.attrib["Width"]), int(size.attrib["Height"])
    tile, fmt = int(root.attrib["TileSize"]), root.attrib.get("Format", "jpeg")
    top = math.ceil(math.log2(max(width, height)))
    grids = []
    for level in range(top + 1):
        scale = 2 ** (top - level)
        w, h = math.ceil(width / scale), math.ceil(height / scale)
        grids.append((math.ceil(w / tile), math.ceil(h / tile)))
    sid = quote(slide_id, safe="")

    def url(k: int, col: int, row: int) -> str:
        return f"/dzi/{sid}_files/{k}/{col}_{row}.{fmt}"

    return Pyramid(tuple(grids), url)


async def viewer_pyramid(client: httpx.AsyncClient, slide: Mapping[str, Any]) -> Pyramid:
    """DZI when ``/dzi/{id}.dzi`` answers 200, else the native API."""
    try:
        response = await client.get(f"/dzi/{quote(slide['id'], safe='')}.dzi")
        if response.status_code == 200:
            return dzi_pyramid(slide["id"], response.text)
    except (httpx.HTTPError, ET.ParseError, KeyError, StopIteration, ValueError):
        pass
    return native_pyramid(slide)


def viewer_calls(pyramids: Sequence[Pyramid], rng: random.Random) -> Iterator[Call]:
    """One user's endless session: viewport bursts, then pan or zoom."""
    pyramid = rng.choice(pyramids)
    k = max(0, len(pyramid.grids) - 1 - rng.randint(0, 3))
    cols, rows = pyramid.grids[k]
    col, row = rng.randrange(cols), rng.randrange(rows)
    while True:
        cols, rows = pyramid.grids[k]
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                c, r = col + dc, row + dr
                if 0 <= c < cols and 0 <= r < rows:
                    yield Call("GET", pyramid.url(k, c, r))
        k, col, row = _move(pyramid, k, col, row, rng)


def _move(pyramid: Pyramid, k: int, col: int, row: int, rng: random.Random) -> tuple[int, int, int]:
    action = rng.random()
    finest = len(pyramid.grids) - 1
    if action < 0.25 and k < finest:  # zoom in towards the viewport centre
        nk = k + 1
    elif action < 0.45 and k > max(0, finest - 6):
        nk = k - 1
    else:  # pan by one or two tiles
        cols, rows = pyramid.grids[k]
        col = min(cols - 1, max(0, col + rng.randint(-2, 2)))
        row = min(rows - 1, max(0, row + rng.randint(-2, 2)))
        return k, col, row
    (c0, r0), (c1, r1) = pyramid.grids[k], pyramid.grids[nk]
    return nk, min(c1 - 1, col * c1 // c0), min(r1 - 1, row * r1 // r0)


class RandomTiles:
    """Uniform over every tile of every level of every slide."""

    def __init__(self, slides: Sequence[Mapping[str, Any]]) -> None:
        self.levels = [(s, lv) for s in slides for lv in s["levels"]]
        counts = [lv["grid"][0] * lv["grid"][1] for _, lv in self.levels]
        self.cumulative = [sum(counts[: i + 1]) for i in range(len(counts))]

    def calls(self, rng: random.Random) -> Iterator[Call]:
        while True:
            n = rng.randrange(self.cumulative[-1])
            slide, lv = self.levels[bisect.bisect_right(self.cumulative, n)]
            col, row = rng.randrange(lv["grid"][0]), rng.randrange(lv["grid"][1])
            sid = quote(slide["id"], safe="")
            yield Call("GET", f"/slides/{sid}/tiles/{lv['index']}/{col}/{row}")


class Scan:
    """Level 0 of each slide in row-major order, ``batch_size`` tiles per batch request."""

    def __init__(self, slides: Sequence[Mapping[str, Any]], batch_size: int) -> None:
        self.batches: list[Call] = []
        for slide in slides:
            cols, rows = slide["levels"][0]["grid"]
            tiles = [[0, c, r] for r in range(rows) for c in range(cols)]
            url = f"/slides/{quote(slide['id'], safe='')}/tiles:batch"
            for i in range(0, len(tiles), batch_size):
                body = {"tiles": tiles[i : i + batch_size], "format": "npy"}
                self.batches.append(Call("POST", url, body))
        self.cursor = 0

    def calls(self) -> Iterator[Call]:
        while True:  # one shared cursor: the event loop runs one worker at a time
            call = self.batches[self.cursor % len(self.batches)]
            self.cursor += 1
            yield call
